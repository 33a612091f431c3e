"""Loss prediction for active learning (Yoo & Kweon, "Learning Loss for Active Learning", 2019).

A small module reads feature maps from several stages of the target network (global average
pool, a fully-connected layer and ReLU per map, concatenated, then one linear layer) and predicts
each sample's loss. It is trained with a pairwise ranking loss, not a regression: the real losses
shrink as training goes on, and selection only needs their order. Each batch of B is split into
B/2 pairs; a pair costs ``max(0, margin - sign(l_i - l_j) * (p_i - p_j))``, zero when the
predicted order agrees with the true one by more than the margin. The target losses are detached.
After ``stop_gradient_after_epoch`` the features fed to the module are detached so the ranking
loss no longer shapes the target network (the paper stops it after 120 of 200 epochs).

Departures: pairs are (i, i + B/2) rather than the paper's (i, B-1-i) mirror (the batch is
shuffled, so either is a random pairing); with an odd batch the last sample sits out; ties in the
true loss count as "second larger", as in the paper's code; unlabeled items (y = -1) are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlcore.config import TrainConfig, resolve_device, seed_everything
from mlcore.train import EpochCallback, call_on_epoch, make_optimizer, make_scheduler

__all__ = [
    "LossPredictionConfig",
    "LossPredictionModule",
    "margin_ranking_loss",
    "predict_losses",
    "train_with_loss_prediction",
]


class LossPredictionModule(nn.Module):
    """features [(N, C_i, H_i, W_i)] -> predicted loss (N,).

    feature_channels: C_i of each tapped map (``Classifier.feature_channels``).
    """

    def __init__(self, feature_channels: list[int], hidden: int = 128) -> None:
        super().__init__()
        if not feature_channels:
            raise ValueError("feature_channels must name at least one feature map")
        self.feature_channels = list(feature_channels)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True))
            for channels in feature_channels
        )
        self.out = nn.Linear(hidden * len(feature_channels), 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} feature maps, got {len(features)}")
        pooled = [
            branch(feature.mean(dim=(2, 3)) if feature.ndim == 4 else feature)
            for branch, feature in zip(self.branches, features)
        ]
        return self.out(torch.cat(pooled, dim=1)).squeeze(1)


def margin_ranking_loss(
    pred_loss: torch.Tensor, target_loss: torch.Tensor, *, margin: float = 1.0
) -> torch.Tensor:
    """Mean over the B/2 pairs (i, i + B/2) of max(0, margin - sign(t_i - t_j) * (p_i - p_j)).

    pred_loss, target_loss: shape (B,). ``target_loss`` is detached. Returns a scalar; zero for
    B < 2.
    """
    if pred_loss.shape != target_loss.shape or pred_loss.ndim != 1:
        raise ValueError(f"expected two (B,) tensors, got {pred_loss.shape}, {target_loss.shape}")
    half = pred_loss.shape[0] // 2
    if half == 0:
        return pred_loss.sum() * 0.0
    target = target_loss.detach()
    pred_diff = pred_loss[:half] - pred_loss[half : 2 * half]
    target_diff = target[:half] - target[half : 2 * half]
    sign = torch.where(target_diff > 0, 1.0, -1.0).to(pred_diff.dtype)
    return torch.clamp(margin - sign * pred_diff, min=0.0).mean()


@dataclass(frozen=True)
class LossPredictionConfig:
    """margin and weight of the ranking loss (the paper: 1.0 and 1.0), the module's hidden
    width, and the epoch after which features reach the module detached (None: never)."""

    margin: float = 1.0
    weight: float = 1.0
    hidden: int = 128
    stop_gradient_after_epoch: int | None = None


def _forward_with_features(model: nn.Module, x: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
    if not hasattr(model, "forward_with_features"):
        raise TypeError("the target model must provide forward_with_features (a Classifier)")
    return model.forward_with_features(x)


def train_with_loss_prediction(
    model: nn.Module,
    lp_module: LossPredictionModule,
    loader: Iterable[Any],
    *,
    config: LossPredictionConfig,
    train: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Jointly train the target model and the loss-prediction module (one SGD optimizer).

    total = mean CE + config.weight * margin_ranking_loss(predicted, per-sample CE).
    Returns one dict per epoch: epoch, loss, class_loss, ranking_loss, lr, seconds.
    """
    seed_everything(train.seed)
    device = resolve_device(train.device)
    model.to(device)
    lp_module.to(device)
    both = nn.ModuleList([model, lp_module])
    optimizer = make_optimizer(both, train)
    steps = max(1, len(loader)) if hasattr(loader, "__len__") else 1
    scheduler = make_scheduler(optimizer, total_steps=train.epochs * steps)
    history: list[dict[str, float]] = []
    for epoch in range(train.epochs):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        detach = (
            config.stop_gradient_after_epoch is not None
            and epoch >= config.stop_gradient_after_epoch
        )
        both.train()
        sums = {"loss": 0.0, "class_loss": 0.0, "ranking_loss": 0.0}
        batches = 0
        for inputs, labels, _ in loader:
            labels = torch.as_tensor(labels)
            labeled = labels >= 0
            if labeled.sum() < 2:
                continue
            x = inputs[labeled].to(device)
            y = labels[labeled].to(device)
            logits, features = _forward_with_features(model, x)
            per_sample = F.cross_entropy(logits, y, reduction="none")
            if detach:
                features = [feature.detach() for feature in features]
            predicted = lp_module(features)
            ranking = margin_ranking_loss(predicted, per_sample, margin=config.margin)
            class_loss = per_sample.mean()
            loss = class_loss + config.weight * ranking
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            sums["loss"] += float(loss.detach())
            sums["class_loss"] += float(class_loss.detach())
            sums["ranking_loss"] += float(ranking.detach())
            batches += 1
        metrics: dict[str, float] = {
            "epoch": epoch,
            **{key: value / max(1, batches) for key, value in sums.items()},
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        history.append(metrics)
        if not call_on_epoch(on_epoch, epoch, metrics):
            break
    return history


@torch.inference_mode()
def predict_losses(
    model: nn.Module,
    lp_module: LossPredictionModule,
    loader: Iterable[Any],
    *,
    device: torch.device | str,
) -> np.ndarray:
    """Predicted loss of every item, shape (N,), in dataset-index order (labels not needed)."""
    device = torch.device(device)
    modes = (model.training, lp_module.training)
    model.eval()
    lp_module.eval()
    predictions, all_indices = [], []
    try:
        for inputs, _, indices in loader:
            _, features = _forward_with_features(model, inputs.to(device))
            predictions.append(lp_module(features).float().cpu())
            all_indices.append(torch.as_tensor(indices).cpu())
    finally:
        model.train(modes[0])
        lp_module.train(modes[1])
    if not predictions:
        raise ValueError("the loader yielded no batches")
    indices = torch.cat(all_indices).numpy()
    return torch.cat(predictions).numpy()[np.argsort(indices, kind="stable")]
