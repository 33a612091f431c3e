"""Datasets, loaders and the Fashion-MNIST reader: images in, ``(tensor, label, index)`` out.

Every dataset item is ``(image_tensor, label, index)`` where ``label`` is ``-1`` for an unlabeled
image and ``index`` is the item's position in its dataset, so predictions gathered from a shuffled
loader can be put back in dataset order. With :class:`TwoViews` as the transform the first element
is a pair ``(student_view, teacher_view)`` (Mean Teacher, Tarvainen & Valpola 2017: the two
networks see independently augmented copies of one image).

Two datasets: :class:`ImageDataset` decodes files or bytes with Pillow (the web app's pool), and
:class:`ArrayImageDataset` wraps uint8 arrays (the fast path for Fashion-MNIST benchmarks: no
decoding, the transform receives a uint8 tensor of shape (C, H, W)).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT_ROOT",
    "ArrayImageDataset",
    "ImageDataset",
    "ImageDecodeError",
    "ImageRecord",
    "TwoViews",
    "decode_image",
    "load_fashion_mnist",
    "make_loader",
]

UNLABELED = -1

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

Transform = Callable[[Any], Any]


class ImageDecodeError(ValueError):
    """An image file or byte string that Pillow cannot decode; the message names the source."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot decode image {source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class ImageRecord:
    """One image of a pool: a path or raw encoded bytes, an optional class index and a weight."""

    source: str | Path | bytes | Callable[[], bytes]
    label: int | None = None
    weight: float = 1.0


def _describe(source: str | Path | bytes | Callable[[], bytes]) -> str:
    if callable(source):
        return getattr(source, "description", repr(source))
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return str(source)


def decode_image(source: str | Path | bytes | Callable[[], bytes]) -> Image.Image:
    """Decode a path, encoded bytes or a reader (a callable returning the bytes: how the web
    app hands over files in its storage) to an RGB Pillow image.

    Raises :class:`ImageDecodeError` naming the source for a missing, truncated or non-image
    file (Pillow's own errors do not say which file failed inside a batch).
    """
    name = _describe(source)
    try:
        if callable(source):
            source = source()
        stream: Any = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        with Image.open(stream) as image:
            # load() forces a full decode here so truncated files fail now, not inside a transform.
            image.load()
            if image.mode in ("RGBA", "LA", "P"):
                # Transparent backgrounds (e.g. Tux Paint stamps) become white, not black.
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise ImageDecodeError(name, "file not found") from error
    except Image.DecompressionBombError as error:
        # A tiny file claiming a gigantic canvas: refused before it can exhaust memory.
        raise ImageDecodeError(name, f"image too large ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(name, str(error) or type(error).__name__) from error


def _default_to_tensor(image: Any) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as tvf

    tensor = tvf.to_image(image)
    return tvf.to_dtype(tensor, torch.float32, scale=True)


class ImageDataset(Dataset):
    """Images decoded from files or bytes with Pillow (always RGB).

    Item ``i`` is ``(transform(image), label or -1, i)``. Without a transform the image becomes a
    float tensor in [0, 1] of shape (3, H, W).
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Transform | None = None) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        record = self.records[index]
        image = decode_image(record.source)
        output = self.transform(image) if self.transform is not None else _default_to_tensor(image)
        label = UNLABELED if record.label is None else int(record.label)
        return output, label, index

    @property
    def labels(self) -> np.ndarray:
        """Labels as an int64 array of shape (N,), -1 for unlabeled records."""
        return np.array(
            [UNLABELED if r.label is None else int(r.label) for r in self.records], dtype=np.int64
        )

    @property
    def weights(self) -> np.ndarray:
        """Per-record weights as a float32 array of shape (N,)."""
        return np.array([r.weight for r in self.records], dtype=np.float32)


class ArrayImageDataset(Dataset):
    """uint8 images held in memory.

    images: shape (N, H, W) (grayscale) or (N, H, W, C), dtype uint8.
    labels: shape (N,), int64, -1 marks an unlabeled image; None means all unlabeled.
    The transform receives a uint8 tensor of shape (C, H, W) (torchvision v2 transforms accept
    it directly); without one the item is a float tensor in [0, 1].
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        transform: Transform | None = None,
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if images.ndim == 3:
            images = images[:, :, :, None]
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N,H,W) or (N,H,W,C), got {images.shape}")
        if labels is None:
            labels = np.full(len(images), UNLABELED, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
        # Stored channels-first once so each item is a zero-copy view.
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image = self.images[index]
        if self.transform is not None:
            output = self.transform(image)
        else:
            output = image.to(torch.float32) / 255.0
        return output, int(self.labels[index]), index


class TwoViews:
    """A transform returning ``(transform_student(x), transform_teacher(x))`` for Mean Teacher."""

    def __init__(self, transform_student: Transform, transform_teacher: Transform) -> None:
        self.transform_student = transform_student
        self.transform_teacher = transform_teacher

    def __call__(self, image: Any) -> tuple[Any, Any]:
        return self.transform_student(image), self.transform_teacher(image)

    def __repr__(self) -> str:
        return f"TwoViews(student={self.transform_student!r}, teacher={self.transform_teacher!r})"


_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def load_fashion_mnist(
    root: str | Path = FASHION_MNIST_DEFAULT_ROOT, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Read Fashion-MNIST from its gzip'd IDX files.

    Returns images of shape (N, 28, 28) uint8 and labels of shape (N,) int64 in 0..9;
    N = 60000 for ``split="train"``, 10000 for ``split="test"`` (alias ``"t10k"``).
    Raises FileNotFoundError telling what to install when the files are missing.
    """
    split = "test" if split == "t10k" else split
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    image_path, label_path = (root / name for name in _FASHION_FILES[split])
    for path in (image_path, label_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {path} not found. Install it with "
                "`apt-get install dataset-fashion-mnist` (files go to "
                f"{FASHION_MNIST_DEFAULT_ROOT}) or pass the directory holding the IDX files."
            )
    with gzip.open(image_path, "rb") as handle:
        image_bytes = handle.read()
    with gzip.open(label_path, "rb") as handle:
        label_bytes = handle.read()
    # IDX headers: magic 2051 + count + rows + cols (16 bytes), magic 2049 + count (8 bytes).
    image_magic, count, rows, cols = np.frombuffer(image_bytes[:16], dtype=">i4")
    label_magic, label_count = np.frombuffer(label_bytes[:8], dtype=">i4")
    if image_magic != 2051 or label_magic != 2049 or count != label_count:
        raise ValueError(f"{image_path} / {label_path} are not a matching IDX image/label pair")
    images = np.frombuffer(image_bytes, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    labels = np.frombuffer(label_bytes, dtype=np.uint8, offset=8).astype(np.int64)
    return images.copy(), labels


def _seed_worker(worker_id: int) -> None:
    # Each worker derives NumPy/random seeds from torch's per-worker seed (itself derived from the
    # loader's generator), so augmentations are reproducible with num_workers > 0.
    import random

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds come from ``seed`` alone."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        persistent_workers=False,
    )
