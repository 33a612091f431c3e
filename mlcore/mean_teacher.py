"""Mean Teacher semi-supervised training (Tarvainen & Valpola, NeurIPS 2017).

The student learns cross-entropy on labeled images plus a consistency cost, the squared distance
between its softmax and the teacher's, on labeled and unlabeled images alike; the teacher's
weights are the exponential moving average (EMA) of the student's, and the two see independently
augmented views of each image (``data.TwoViews``; the student gets ``augment.strong_transform``,
the teacher ``augment.weak_transform``). The consistency weight ramps up with a sigmoid schedule
``exp(-5 (1 - t)^2)``, and the EMA decay starts low (``min(decay, 1 - 1/(step + 1))``, the paper's
code) so the teacher is not stuck near its random initialisation.

Departures: ``softmax_mse_consistency`` sums the squared differences over classes and averages
over the batch (the paper's code divides by the number of classes too, so its weight 100 on
CIFAR-10 equals 10 here); BatchNorm running statistics of the teacher are the EMA of the student's
(the paper's code lets the teacher keep its own), which keeps the teacher's statistics on the same
scale as the weights it averages; one epoch is one pass over the unlabeled loader, with the labeled
loader cycled, unless ``steps_per_epoch`` says otherwise.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mlcore.config import TrainConfig, resolve_device, seed_everything
from mlcore.train import EpochCallback, call_on_epoch, evaluate, make_optimizer, make_scheduler

__all__ = [
    "MeanTeacherConfig",
    "ema_update",
    "make_teacher",
    "mean_teacher_step",
    "sigmoid_rampup",
    "softmax_mse_consistency",
    "train_mean_teacher",
]


@dataclass(frozen=True)
class MeanTeacherConfig:
    """ema_decay: the teacher's EMA decay (0.99 in the paper's ramp-up, 0.999 after);
    ema_decay_after_rampup: switch to this decay once the ramp-up ends (None keeps ema_decay);
    consistency_weight: the maximum weight of the consistency cost; rampup_epochs: sigmoid
    ramp-up length; steps_per_epoch: None = one pass over the unlabeled loader."""

    ema_decay: float = 0.99
    consistency_weight: float = 10.0
    rampup_epochs: float = 5.0
    ema_decay_after_rampup: float | None = None
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        for name in ("ema_decay", "ema_decay_after_rampup"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.consistency_weight < 0 or self.rampup_epochs < 0:
            raise ValueError("consistency_weight and rampup_epochs must be >= 0")


def sigmoid_rampup(epoch: float, rampup_epochs: float) -> float:
    """exp(-5 (1 - t)^2) with t = clip(epoch / rampup_epochs, 0, 1); 1.0 when no ramp-up."""
    if rampup_epochs <= 0:
        return 1.0
    t = min(max(epoch / rampup_epochs, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def softmax_mse_consistency(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of ||softmax(student) - softmax(teacher)||^2; logits (N, C) -> scalar.

    The teacher side is detached: gradients flow to the student only.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"shapes differ: {student_logits.shape} vs {teacher_logits.shape}")
    student = torch.softmax(student_logits, dim=1)
    teacher = torch.softmax(teacher_logits.detach(), dim=1)
    return ((student - teacher) ** 2).sum(dim=1).mean()


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of the student with gradients off (updated only by :func:`ema_update`)."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, *, decay: float) -> None:
    """teacher = decay * teacher + (1 - decay) * student, for parameters and float buffers.

    Integer buffers (BatchNorm's batch counter) are copied. ``decay=0`` makes the teacher an
    exact copy of the student.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    teacher_params = dict(teacher.named_parameters())
    for name, student_param in student.named_parameters():
        teacher_params[name].mul_(decay).add_(student_param.detach(), alpha=1.0 - decay)
    teacher_buffers = dict(teacher.named_buffers())
    for name, student_buffer in student.named_buffers():
        target = teacher_buffers[name]
        if target.is_floating_point():
            target.mul_(decay).add_(student_buffer, alpha=1.0 - decay)
        else:
            target.copy_(student_buffer)


def _split_views(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(inputs, list | tuple) or len(inputs) != 2:
        raise ValueError("Mean Teacher loaders must yield ((student_view, teacher_view), y, idx)")
    return inputs[0], inputs[1]


def mean_teacher_step(
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    labeled_batch: Any,
    unlabeled_batch: Any,
    *,
    consistency_weight: float,
    ema_decay: float,
    device: torch.device | str,
) -> dict[str, float]:
    """One optimisation step; returns loss, class_loss and consistency_loss (floats).

    Batches are ``((student_view, teacher_view), y, idx)``; the cross-entropy uses the labeled
    batch's items with y >= 0 only, the consistency cost every item of both batches. The teacher
    runs in train mode (its dropout is part of the noise, as in the paper) without gradients, and
    is EMA-updated after the student's step.
    """
    device = torch.device(device)
    (labeled_student, labeled_teacher), labels, _ = labeled_batch
    (unlabeled_student, unlabeled_teacher), _, _ = unlabeled_batch
    labels = torch.as_tensor(labels).to(device)
    student_inputs = torch.cat([labeled_student, unlabeled_student]).to(device)
    teacher_inputs = torch.cat([labeled_teacher, unlabeled_teacher]).to(device)
    student.train()
    teacher.train()
    student_logits = student(student_inputs)
    with torch.no_grad():
        teacher_logits = teacher(teacher_inputs)
    labeled_logits = student_logits[: len(labels)]
    has_label = labels >= 0
    if has_label.any():
        class_loss = F.cross_entropy(labeled_logits[has_label], labels[has_label])
    else:
        class_loss = student_logits.sum() * 0.0
    consistency_loss = softmax_mse_consistency(student_logits, teacher_logits)
    loss = class_loss + consistency_weight * consistency_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    ema_update(teacher, student, decay=ema_decay)
    return {
        "loss": float(loss.detach()),
        "class_loss": float(class_loss.detach()),
        "consistency_loss": float(consistency_loss.detach()),
    }


def _cycle(loader: DataLoader) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("a Mean Teacher loader yielded no batches")


def train_mean_teacher(
    student: nn.Module,
    teacher: nn.Module,
    labeled_loader: DataLoader,
    unlabeled_loader: DataLoader,
    *,
    config: MeanTeacherConfig,
    train: TrainConfig,
    on_epoch: EpochCallback | None = None,
    val_loader: DataLoader | None = None,
) -> list[dict[str, float]]:
    """Train ``student`` (SGD, cosine schedule from ``train``) and its EMA ``teacher``.

    Returns one dict per epoch: epoch, loss, class_loss, consistency_loss (epoch means),
    consistency_weight, ema_decay, lr, seconds, and with ``val_loader`` (single-view items)
    val_student_accuracy and val_teacher_accuracy. ``on_epoch`` works as in ``train.fit``.
    """
    seed_everything(train.seed)
    device = resolve_device(train.device)
    student.to(device)
    teacher.to(device)
    optimizer = make_optimizer(student, train)
    steps_per_epoch = config.steps_per_epoch or max(1, len(unlabeled_loader))
    scheduler = make_scheduler(optimizer, total_steps=train.epochs * steps_per_epoch)
    labeled_batches = _cycle(labeled_loader)
    unlabeled_batches = _cycle(unlabeled_loader)
    history: list[dict[str, float]] = []
    global_step = 0
    for epoch in range(train.epochs):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        sums = {"loss": 0.0, "class_loss": 0.0, "consistency_loss": 0.0}
        weight = decay = 0.0
        for step in range(steps_per_epoch):
            progress = epoch + step / steps_per_epoch
            weight = config.consistency_weight * sigmoid_rampup(progress, config.rampup_epochs)
            base_decay = config.ema_decay
            if config.ema_decay_after_rampup is not None and progress >= config.rampup_epochs:
                base_decay = config.ema_decay_after_rampup
            decay = min(base_decay, 1.0 - 1.0 / (global_step + 1))
            losses = mean_teacher_step(
                student,
                teacher,
                optimizer,
                next(labeled_batches),
                next(unlabeled_batches),
                consistency_weight=weight,
                ema_decay=decay,
                device=device,
            )
            scheduler.step()
            global_step += 1
            for key, value in losses.items():
                sums[key] += value
        metrics: dict[str, float] = {
            "epoch": epoch,
            **{key: value / steps_per_epoch for key, value in sums.items()},
            "consistency_weight": weight,
            "ema_decay": decay,
            "lr": lr,
        }
        if val_loader is not None:
            metrics["val_student_accuracy"] = evaluate(student, val_loader, device=device)[
                "accuracy"
            ]
            metrics["val_teacher_accuracy"] = evaluate(teacher, val_loader, device=device)[
                "accuracy"
            ]
        metrics["seconds"] = time.perf_counter() - started
        history.append(metrics)
        if not call_on_epoch(on_epoch, epoch, metrics):
            break
    return history
