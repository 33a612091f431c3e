"""Semi-supervised: Mean Teacher vs supervised on the same 3,000 Fashion-MNIST labels.

Protocol 4 of shared/DATA.md: 5% of the 60,000 train labels (3,000, seeded) are kept, the other
57,000 images are unlabeled. Both arms train the same network (bench.common.backbone) for the same
number of SGD steps with the same labeled batches, learning-rate schedule and student
augmentation; Mean Teacher (mlcore.mean_teacher, Tarvainen & Valpola 2017) adds an unlabeled
batch per step and the consistency cost to its EMA teacher. Test error on the whole t10k split
(never trained on) for the supervised network, the Mean Teacher student and its teacher (the
paper reports the teacher).

The augmentations are written here on whole batches (flip, reflected shift, brightness and
contrast jitter, random erasing: the geometric and photometric kinds of mlcore.augment's
strong/weak transforms) because per-image torchvision transforms cost more than the tiny
network's forward pass on two cores. The supervised arm sees the student's (strong) view, as
mlcore.augment prescribes for plain supervised training. Compute is not equal: each Mean Teacher
step also processes an unlabeled batch and a teacher forward pass (about 2.5x the work).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench import common
from mlcore.config import TrainConfig
from mlcore.mean_teacher import MeanTeacherConfig, make_teacher, train_mean_teacher
from mlcore.train import fit

LABELED = 3000


@dataclass(frozen=True)
class Budget:
    epochs: int  # passes over the 3,000 labels; both arms take the same steps
    rampup_epochs: float
    test_size: int | None


FULL = Budget(epochs=30, rampup_epochs=5.0, test_size=None)
QUICK = Budget(epochs=4, rampup_epochs=1.0, test_size=2000)


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Each image translated by up to ``max_shift`` px in x and y (reflect-padded)."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, :]
    return padded[torch.arange(batch)[:, None, None], 0, rows, cols].unsqueeze(1)


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def weak_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The teacher's view: horizontal flip and a shift of up to 2 px."""
    return _shift(_flip(x, generator), generator, 2)


def strong_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The student's view: flip, shift up to 4 px, brightness and contrast jitter (+-30%),
    and with probability 0.5 an erased rectangle of 2-20% of the image (filled with 0)."""
    x = _shift(_flip(x, generator), generator, 4)
    batch, _, height, width = x.shape
    contrast = 1.0 + (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5) * 0.6
    brightness = (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5) * 0.6
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness * mean).clamp_(0.0, 1.0)
    area = (0.02 + 0.18 * torch.rand(batch, generator=generator)) * height * width
    aspect = torch.exp((torch.rand(batch, generator=generator) - 0.5) * 2 * np.log(3.0))
    erase_h = (area * aspect).sqrt().clamp(1, height).long()
    erase_w = (area / aspect).sqrt().clamp(1, width).long()
    top = (torch.rand(batch, generator=generator) * (height - erase_h + 1)).long()
    left = (torch.rand(batch, generator=generator) * (width - erase_w + 1)).long()
    rows = torch.arange(height)[None, :]
    cols = torch.arange(width)[None, :]
    inside = ((rows >= top[:, None]) & (rows < (top + erase_h)[:, None]))[:, :, None] & (
        (cols >= left[:, None]) & (cols < (left + erase_w)[:, None])
    )[:, None, :]
    erase = (torch.rand(batch, generator=generator) < 0.5)[:, None, None]
    return x.masked_fill((inside & erase).unsqueeze(1), 0.0)


def run(*, quick: bool, seed: int) -> dict:
    threads = common.limit_threads()
    budget = QUICK if quick else FULL
    train_images, train_labels = common.fashion_mnist("train")
    test_images, test_labels = common.fashion_mnist("test")
    if budget.test_size is not None:
        rows = common.fixed_subset(len(test_labels), budget.test_size, seed=seed + 7)
        test_images, test_labels = test_images[rows], test_labels[rows]
    labeled_rows = common.fixed_subset(len(train_labels), LABELED, seed=seed)
    unlabeled_mask = np.ones(len(train_labels), dtype=bool)
    unlabeled_mask[labeled_rows] = False
    labeled_images, labels = train_images[labeled_rows], train_labels[labeled_rows]
    unlabeled_images = train_images[unlabeled_mask]
    train = TrainConfig(
        epochs=budget.epochs,
        batch_size=common.BATCH_SIZE,
        lr=common.LEARNING_RATE,
        device="cpu",
        seed=seed,
    )

    started = time.perf_counter()
    supervised = common.new_network(common.NUM_CLASSES, seed=seed + 1)
    fit(
        supervised,
        common.TensorBatches(
            labeled_images,
            labels,
            batch_size=common.BATCH_SIZE,
            shuffle=True,
            seed=seed + 2,
            views=strong_view,
        ),
        train=train,
    )
    supervised_seconds = time.perf_counter() - started

    started = time.perf_counter()
    student = common.new_network(common.NUM_CLASSES, seed=seed + 1)
    teacher = make_teacher(student)
    labeled_loader = common.TensorBatches(
        labeled_images,
        labels,
        batch_size=common.BATCH_SIZE,
        shuffle=True,
        seed=seed + 2,
        views=(strong_view, weak_view),
    )
    unlabeled_loader = common.TensorBatches(
        unlabeled_images,
        None,
        batch_size=common.BATCH_SIZE,
        shuffle=True,
        seed=seed + 3,
        views=(strong_view, weak_view),
        drop_last=True,
    )
    config = MeanTeacherConfig(
        ema_decay=0.99,
        consistency_weight=10.0,
        rampup_epochs=budget.rampup_epochs,
        steps_per_epoch=len(labeled_loader),
    )
    history = train_mean_teacher(
        student, teacher, labeled_loader, unlabeled_loader, config=config, train=train
    )
    mean_teacher_seconds = time.perf_counter() - started

    errors = {
        name: 1.0 - common.accuracy(common.predict(model, test_images), test_labels)
        for name, model in (
            ("supervised", supervised),
            ("mean_teacher_student", student),
            ("mean_teacher_teacher", teacher),
        )
    }
    reduction = (errors["supervised"] - errors["mean_teacher_teacher"]) / errors["supervised"]
    return common.rounded(
        {
            "network": common.backbone(common.NUM_CLASSES).__dict__,
            "torch_threads": threads,
            "labeled": LABELED,
            "unlabeled": int(unlabeled_mask.sum()),
            "unlabeled_seen": len(history) * config.steps_per_epoch * common.BATCH_SIZE,
            "test_size": len(test_labels),
            "epochs_over_labels": budget.epochs,
            "steps": budget.epochs * config.steps_per_epoch,
            "mean_teacher": {
                "ema_decay": config.ema_decay,
                "consistency_weight": config.consistency_weight,
                "rampup_epochs": config.rampup_epochs,
            },
            "test_error": errors,
            "relative_error_reduction_teacher_vs_supervised": reduction,
            "seconds": {"supervised": supervised_seconds, "mean_teacher": mean_teacher_seconds},
            "final_consistency_loss": history[-1]["consistency_loss"],
        }
    )
