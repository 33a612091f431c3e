"""The offline data sets the demo is built from, read through mlcore's loaders (one reader of
the Fashion-MNIST files in the project, and only labeling/ml imports mlcore)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlcore.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DEFAULT_ROOT, load_fashion_mnist

__all__ = ["FASHION_MNIST_DEFAULT_ROOT", "fashion_mnist_train"]


def fashion_mnist_train(directory: str | Path, count: int) -> Iterator[tuple[np.ndarray, str]]:
    """The first `count` training images, as (28x28 uint8 array, class name) pairs."""
    images, labels = load_fashion_mnist(directory, "train")
    for index in range(min(count, len(images))):
        yield images[index], FASHION_MNIST_CLASSES[int(labels[index])]
