import numpy as np
import pytest
import torch
from PIL import Image

from mlcore.augment import IMAGENET_MEAN, eval_transform, strong_transform, weak_transform

GRAY = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 28, 28), dtype=np.uint8))
PHOTO = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8))


@pytest.mark.parametrize("make", [weak_transform, strong_transform, eval_transform])
@pytest.mark.parametrize("image", [GRAY, PHOTO], ids=["gray-tensor", "rgb-pil"])
def test_transforms_give_normalised_rgb_of_the_requested_size(make, image):
    output = make(32)(image)
    assert output.shape == (3, 32, 32) and output.dtype == torch.float32
    assert output.min() < 0 < output.max()  # normalised around the mean, not in [0, 1]


@pytest.mark.parametrize("make", [weak_transform, strong_transform])
def test_random_transforms_differ_between_calls(make):
    transform = make(32)
    torch.manual_seed(0)
    outputs = [transform(PHOTO) for _ in range(4)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_eval_transform_is_deterministic_and_normalises_with_imagenet_stats():
    transform = eval_transform(32)
    assert torch.equal(transform(PHOTO), transform(PHOTO))
    mean_gray = torch.full((3, 32, 32), 0, dtype=torch.uint8)
    expected = -torch.tensor(IMAGENET_MEAN) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(transform(mean_gray)[:, 0, 0], expected, atol=1e-5)


def test_grayscale_can_stay_single_channel():
    assert weak_transform(32, grayscale_to_rgb=False)(GRAY).shape == (1, 32, 32)
    assert eval_transform(28, grayscale_to_rgb=False)(GRAY).shape == (1, 28, 28)


def test_colour_distort_changes_colours_and_can_be_switched_off():
    flat = Image.new("RGB", (32, 32), (120, 60, 30))
    plain = strong_transform(32, color_distort=False, erasing_p=0.0)
    distorted = strong_transform(32, distort_strength=0.8, erasing_p=0.0)
    torch.manual_seed(0)
    # Flip and crop leave a flat image flat, so only the colour jitter can move its pixels.
    assert all(torch.equal(plain(flat), plain(flat)) for _ in range(3))
    assert any(not torch.equal(distorted(flat), plain(flat)) for _ in range(5))
