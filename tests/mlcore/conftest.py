"""Tiny seeded data shared by the mlcore tests (CPU, a few hundred pixels per image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlcore.data import ArrayImageDataset

# The tensors here are tiny: thread start-up and spin-waiting cost more than they save, and on a
# shared 2-core machine several threads per test process made the suite 3x slower.
torch.set_num_threads(1)


def make_square_images(
    count: int, *, size: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Dark noise images; class 1 has a bright square in the middle. Perfectly separable.

    Returns images (count, size, size) uint8 and labels (count,) int64 with both classes present.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (count, size, size), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % 2
    rng.shuffle(labels)
    quarter = size // 4
    images[labels == 1, quarter : size - quarter, quarter : size - quarter] = 250
    return images, labels


@pytest.fixture(autouse=True)
def _media_root() -> None:
    """mlcore writes no Django media: this overrides the root conftest's fixture of the same name,
    which needs pytest-django's ``settings``, so these tests also run with ``-p no:django``."""


@pytest.fixture
def square_dataset() -> ArrayImageDataset:
    images, labels = make_square_images(64)
    return ArrayImageDataset(images, labels)
