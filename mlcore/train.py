"""Supervised training and prediction loops in the shape of torchvision's classification reference.

Plain functions: ``make_optimizer``, ``train_one_epoch``, ``evaluate``/``predict_proba`` under
``torch.inference_mode()``, and ``fit`` that strings them together with a cosine learning-rate
schedule and a progress callback. Departures from the reference: configs are frozen dataclasses
passed explicitly (no argparse namespace), loaders yield ``(x, y, index)`` with ``y = -1`` for
unlabeled items (skipped by the loss), per-sample weights are supported (for re-weighted or
cleaned labels), and predictions come back as NumPy arrays in dataset order whatever the loader's
shuffling.

Progress and cancellation: ``fit(on_epoch=...)`` calls ``on_epoch(epoch, metrics)`` after each
epoch; returning ``False`` or raising :class:`TrainingCancelled` stops training cleanly (the
history so far is returned); any other exception propagates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mlcore.config import TrainConfig, resolve_device, seed_everything

__all__ = [
    "EpochCallback",
    "TrainingCancelled",
    "call_on_epoch",
    "evaluate",
    "fit",
    "make_optimizer",
    "make_scheduler",
    "predict_logits",
    "predict_proba",
    "per_sample_losses",
    "train_one_epoch",
]

EpochCallback = Callable[[int, dict[str, float]], bool | None]


class TrainingCancelled(Exception):  # noqa: N818 - reads as an event, like StopIteration
    """Raise from an ``on_epoch`` callback to stop training and keep what was learned."""


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum; weight decay on weights only (not on BatchNorm or biases).

    Decaying normalisation scales and biases only shrinks them toward zero without regularising
    the function, which is why torchvision's reference exempts them too.
    """
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim > 1 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)


def make_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up, then cosine decay to zero at ``total_steps``."""
    total_steps = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _unpack(batch: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    if not isinstance(batch, list | tuple) or len(batch) != 3:
        raise ValueError("loaders must yield (inputs, labels, indices) batches")
    inputs, labels, indices = batch
    return inputs, torch.as_tensor(labels), torch.as_tensor(indices)


def _single_view(inputs: Any) -> torch.Tensor:
    if isinstance(inputs, list | tuple):
        raise ValueError(
            "this loop takes one view per image; use mean_teacher for TwoViews datasets"
        )
    return inputs


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device | str,
    sample_weights: np.ndarray | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """One pass of cross-entropy training; returns the mean (weighted) loss per labeled sample.

    sample_weights: shape (len(dataset),), indexed by the dataset index each item carries; the
    batch loss is sum(w * ce) / sum(w). Items labeled -1 are ignored. ``scheduler`` is stepped
    after every optimizer step.
    """
    device = torch.device(device)
    weights = None if sample_weights is None else torch.as_tensor(sample_weights).float()
    model.train()
    total_loss, total_weight = 0.0, 0.0
    for batch in loader:
        inputs, labels, indices = _unpack(batch)
        labeled = labels >= 0
        if not labeled.any():
            continue
        inputs = _single_view(inputs)[labeled].to(device, non_blocking=True)
        labels = labels[labeled].to(device)
        losses = F.cross_entropy(model(inputs), labels, reduction="none")
        if weights is None:
            batch_weights = torch.ones_like(losses)
        else:
            batch_weights = weights[indices[labeled]].to(device)
        weight_sum = batch_weights.sum()
        if weight_sum <= 0:
            continue
        loss = (losses * batch_weights).sum() / weight_sum
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += float(loss.detach()) * float(weight_sum)
        total_weight += float(weight_sum)
    return total_loss / total_weight if total_weight else float("nan")


@torch.inference_mode()
def predict_logits(
    model: nn.Module, loader: Iterable[Any], *, device: torch.device | str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (N, C), labels (N,) and dataset indices (N,), sorted by dataset index."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    all_logits, all_labels, all_indices = [], [], []
    try:
        for batch in loader:
            inputs, labels, indices = _unpack(batch)
            logits = model(_single_view(inputs).to(device, non_blocking=True))
            all_logits.append(logits.float().cpu())
            all_labels.append(labels.cpu())
            all_indices.append(indices.cpu())
    finally:
        model.train(was_training)
    if not all_logits:
        raise ValueError("the loader yielded no batches")
    indices = torch.cat(all_indices).numpy()
    order = np.argsort(indices, kind="stable")
    return (
        torch.cat(all_logits).numpy()[order],
        torch.cat(all_labels).numpy().astype(np.int64)[order],
        indices[order],
    )


def predict_proba(
    model: nn.Module, loader: Iterable[Any], *, device: torch.device | str
) -> np.ndarray:
    """Softmax probabilities of shape (N, C), row i for the item with the i-th smallest index.

    For a loader over a whole dataset that is simply dataset order, whatever the shuffling.
    """
    logits, _, _ = predict_logits(model, loader, device=device)
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def per_sample_losses(
    model: nn.Module, loader: Iterable[Any], *, device: torch.device | str
) -> np.ndarray:
    """Cross-entropy of each item against its label, shape (N,), in index order; NaN if no label."""
    logits, labels, _ = predict_logits(model, loader, device=device)
    losses = np.full(len(labels), np.nan, dtype=np.float32)
    labeled = labels >= 0
    if labeled.any():
        losses[labeled] = F.cross_entropy(
            torch.from_numpy(logits[labeled]), torch.from_numpy(labels[labeled]), reduction="none"
        ).numpy()
    return losses


def evaluate(
    model: nn.Module, loader: Iterable[Any], *, device: torch.device | str
) -> dict[str, float]:
    """Mean cross-entropy and accuracy over the labeled items of ``loader``."""
    logits, labels, _ = predict_logits(model, loader, device=device)
    labeled = labels >= 0
    if not labeled.any():
        return {"loss": float("nan"), "accuracy": float("nan")}
    logits_t = torch.from_numpy(logits[labeled])
    labels_t = torch.from_numpy(labels[labeled])
    return {
        "loss": float(F.cross_entropy(logits_t, labels_t)),
        "accuracy": float((logits_t.argmax(1) == labels_t).float().mean()),
    }


def call_on_epoch(on_epoch: EpochCallback | None, epoch: int, metrics: dict[str, float]) -> bool:
    """Run the callback; False means stop."""
    if on_epoch is None:
        return True
    try:
        return on_epoch(epoch, metrics) is not False
    except TrainingCancelled:
        return False


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    *,
    train: TrainConfig,
    val_loader: DataLoader | None = None,
    on_epoch: EpochCallback | None = None,
    sample_weights: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``train.epochs`` epochs of SGD with a cosine schedule.

    Returns one dict per completed epoch: epoch, train_loss, lr, seconds, and val_loss /
    val_accuracy when ``val_loader`` is given. The model is left on ``train.device``.
    """
    seed_everything(train.seed)
    device = resolve_device(train.device)
    model.to(device)
    optimizer = make_optimizer(model, train)
    steps_per_epoch = max(1, len(train_loader))
    scheduler = make_scheduler(optimizer, total_steps=train.epochs * steps_per_epoch)
    history: list[dict[str, float]] = []
    for epoch in range(train.epochs):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(
            model,
            train_loader,
            optimizer,
            device=device,
            sample_weights=sample_weights,
            scheduler=scheduler,
        )
        metrics: dict[str, float] = {"epoch": epoch, "train_loss": train_loss, "lr": lr}
        if val_loader is not None:
            for name, value in evaluate(model, val_loader, device=device).items():
                metrics[f"val_{name}"] = value
        metrics["seconds"] = time.perf_counter() - started
        history.append(metrics)
        if not call_on_epoch(on_epoch, epoch, metrics):
            break
    return history
