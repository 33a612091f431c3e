"""Datasets over Image rows: (image id, storage name) in, tensors out, read through Django storage.

Files are opened through `default_storage`, so the same code reads local disk or an S3 bucket.
A file that is missing or does not decode never kills a job: the item comes back with `ok=False`
and the error text, the batch carries on, and the caller records the error for that image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from django.core.files.storage import Storage, default_storage
from torch.utils.data import DataLoader, Dataset

from mlcore.augment import eval_transform
from mlcore.data import ImageDecodeError, decode_image


@dataclass(frozen=True)
class ImageRow:
    image_id: int
    name: str  # the storage name of the file (Image.file.name)


class ImageRowDataset(Dataset):
    """Item i: (tensor (3, size, size), image id, ok, error text)."""

    def __init__(
        self,
        rows: Sequence[ImageRow],
        *,
        transform: Callable[[Any], torch.Tensor],
        input_size: int,
        storage: Storage | None = None,
    ) -> None:
        self.rows = list(rows)
        self.transform = transform
        self.input_size = input_size
        self.storage = storage or default_storage

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool, str]:
        row = self.rows[index]
        try:
            with self.storage.open(row.name, "rb") as handle:
                data = handle.read()
            image = decode_image(data)
            return self.transform(image), row.image_id, True, ""
        except (ImageDecodeError, OSError, ValueError) as error:
            # A placeholder keeps the batch shape; `ok=False` keeps it out of the results.
            placeholder = torch.zeros(3, self.input_size, self.input_size)
            return placeholder, row.image_id, False, f"{type(error).__name__}: {error}"


def scoring_loader(
    rows: Sequence[ImageRow],
    *,
    input_size: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> DataLoader:
    """Batches in row order (no shuffling: scoring is inference), decoded in `num_workers`
    processes while the model runs, pinned for a faster host-to-GPU copy on CUDA."""
    dataset = ImageRowDataset(rows, transform=eval_transform(input_size), input_size=input_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
