import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcore.augment import eval_transform, strong_transform, weak_transform
from mlcore.data import (
    FASHION_MNIST_CLASSES,
    ArrayImageDataset,
    ImageDataset,
    ImageDecodeError,
    ImageRecord,
    TwoViews,
    load_fashion_mnist,
    make_loader,
)


@pytest.mark.parametrize(("split", "count"), [("train", 60000), ("test", 10000)])
def test_fashion_mnist_sizes_and_labels(split, count):
    images, labels = load_fashion_mnist(split=split)
    assert images.shape == (count, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (count,) and labels.dtype == np.int64
    assert np.array_equal(np.bincount(labels), np.full(10, count // 10))
    assert len(FASHION_MNIST_CLASSES) == 10
    assert 0 < images.mean() < 255  # real pixels, not an empty buffer


def test_fashion_mnist_missing_directory_says_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def _png_bytes(mode: str, color) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (20, 12), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_dataset_decodes_files_and_bytes_to_rgb(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(_png_bytes("RGB", (255, 0, 0)))
    transparent = _png_bytes("RGBA", (0, 0, 0, 0))
    records = [ImageRecord(path, label=1), ImageRecord(transparent), ImageRecord(str(path), 0)]
    dataset = ImageDataset(records)
    image, label, index = dataset[0]
    assert image.shape == (3, 12, 20)
    assert (label, index) == (1, 0)
    assert torch.allclose(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    clear, label, index = dataset[1]
    assert (label, index) == (-1, 1)
    assert torch.allclose(clear, torch.ones_like(clear))  # transparency becomes white
    assert dataset.labels.tolist() == [1, -1, 0]
    resized = ImageDataset(records, transform=eval_transform(32))[2][0]
    assert resized.shape == (3, 32, 32)


def test_image_dataset_names_the_corrupt_file(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_png_bytes("RGB", (1, 2, 3))[:40])
    dataset = ImageDataset([ImageRecord(broken), ImageRecord(truncated), ImageRecord(b"junk")])
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        dataset[0]
    with pytest.raises(ImageDecodeError, match="truncated.png"):
        dataset[1]
    with pytest.raises(ImageDecodeError, match="4 bytes"):
        dataset[2]
    with pytest.raises(ImageDecodeError, match="not found"):
        ImageDataset([ImageRecord(Path(tmp_path / "gone.png"))])[0]


def test_array_dataset_items_and_validation():
    images = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    labels = np.array([0, -1, 2, 1])
    dataset = ArrayImageDataset(images, labels)
    image, label, index = dataset[2]
    assert image.shape == (1, 5, 6) and image.dtype == torch.float32
    assert torch.allclose(image[0] * 255, torch.from_numpy(images[2]).float())
    assert (label, index) == (2, 2)
    assert dataset[1][1] == -1
    assert ArrayImageDataset(images)[0][1] == -1
    rgb = ArrayImageDataset(np.zeros((2, 8, 8, 3), np.uint8), transform=strong_transform(16))
    assert rgb[0][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="uint8"):
        ArrayImageDataset(images.astype(np.float32), labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        ArrayImageDataset(images, labels[:3])


def test_two_views_give_two_differently_augmented_tensors():
    images = np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype=np.uint8)
    dataset = ArrayImageDataset(
        images, transform=TwoViews(strong_transform(32), weak_transform(32))
    )
    (student, teacher), label, index = dataset[0]
    assert student.shape == teacher.shape == (3, 32, 32)
    assert not torch.equal(student, teacher)
    batch = next(iter(make_loader(dataset, batch_size=3, shuffle=False, seed=0)))
    assert batch[0][0].shape == (3, 3, 32, 32) and batch[0][1].shape == (3, 3, 32, 32)


def test_make_loader_shuffles_reproducibly_from_the_seed(square_dataset):
    def order(seed: int) -> list[int]:
        loader = make_loader(square_dataset, batch_size=8, shuffle=True, seed=seed)
        return torch.cat([batch[2] for batch in loader]).tolist()

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)) == list(range(len(square_dataset)))
    last = make_loader(square_dataset, batch_size=10, shuffle=False, seed=0, drop_last=True)
    assert len(last) == 6


@pytest.mark.bad_input
def test_decompression_bomb_is_a_clear_decode_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes("RGB", (0, 0, 0)))
    # Lower Pillow's limit instead of writing a gigantic file: 20x12 now counts as a bomb.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(ImageDecodeError, match=r"bomb.png.*too large"):
        ImageDataset([ImageRecord(path)])[0]
