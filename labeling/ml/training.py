"""Training the OHEM cascade on a project's labels: Image rows in, networks and metrics out.

The service (`labeling.services.training`) decides WHICH images train and validate; this module
turns those rows into loaders over Django storage and calls mlcore:

- stage 1 and stage 2 train together with `mlcore.cascade.train_cascade` (OHEM: the hardest B of
  each batch of A train stage 2), with Mean Teacher for stage 1 over the unlabeled pool when the
  pool has unlabeled images (Tarvainen & Valpola 2017; the teacher is deployed as stage 1, as
  the paper evaluates the teacher);
- thresholds are chosen on the frozen validation split with `mlcore.cascade.choose_thresholds`
  for a target precision (the pair with the most recall among pairs reaching it);
- a loss-prediction module (Yoo & Kweon 2019) is fitted afterwards on stage 1's frozen features
  so the next selection round can rank the pool by predicted loss.

Departures, and why:
- Binary task: the schema's positive class against all the others (label 1 vs 0), so
  `positive_index` is always 1 whatever the schema's order of classes.
- The LP module is trained AFTER the cascade, on detached features of the deployed stage 1, with
  the margin ranking loss against stage 1's per-sample cross-entropy. The paper trains it jointly
  with the target network (and stops the gradient late); training it on a frozen network keeps
  the cascade training exactly mlcore's and costs a few cheap epochs over pooled features.
- When no threshold pair reaches the target precision on validation, the thresholds fall back to
  0.5 / 0.5 and the metrics say so (`thresholds.reached = false`): the version is still stored
  and comparable, but it should not be promoted on that basis.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from django.core.files.storage import Storage, default_storage
from torch.utils.data import Dataset

from labeling.ml.datasets import ImageRow
from mlcore.augment import eval_transform, strong_transform, weak_transform
from mlcore.backbones import Classifier, build_backbone
from mlcore.cascade import CascadeConfig, cascade_decision, choose_thresholds, train_cascade
from mlcore.config import (
    BackboneConfig,
    TrainConfig,
    config_to_dict,
    cpu_small_stage1,
    cpu_small_stage2,
    full_stage1,
    full_stage2,
    resolve_device,
    seed_everything,
)
from mlcore.data import ImageDecodeError, TwoViews, decode_image, make_loader
from mlcore.loss_prediction import LossPredictionModule, margin_ranking_loss
from mlcore.mean_teacher import MeanTeacherConfig, make_teacher
from mlcore.metrics import (
    average_precision,
    plot_pr_curves,
    pr_curve,
    precision_recall_at,
    threshold_for_precision,
)
from mlcore.train import predict_logits

POSITIVE_INDEX = 1
LP_HIDDEN = 64
PRESETS = ("cpu_tiny", "cpu_small", "full")
FALLBACK_THRESHOLDS = (0.5, 0.5)


@dataclass(frozen=True)
class LabeledRow:
    image_id: int
    name: str  # storage name of the file
    label: int  # 1 = the schema's positive class, 0 = any other class


@dataclass(frozen=True)
class CascadeTrainingSpec:
    """What to build and how to train it (the job's cleaned parameters)."""

    preset: str = "cpu_small"
    input_size: int = 32
    cbam: bool = True
    epochs: int = 3
    batch_a: int = 32
    hard_b: int = 8
    lr: float = 0.05
    mean_teacher: bool = True
    target_precision: float = 0.95
    lp_epochs: int = 3
    seed: int = 0
    device: str = "auto"

    def backbones(self) -> tuple[BackboneConfig, BackboneConfig]:
        if self.preset == "full":
            stage1, stage2 = full_stage1(2, cbam=self.cbam), full_stage2(2, cbam=self.cbam)
        elif self.preset == "cpu_tiny":
            # Two small CNNs (half and quarter width): the end-to-end test and the CPU demo
            # loop, where minutes of two shared cores are all there is.
            stage1 = BackboneConfig(name="small_cnn", cbam=self.cbam, width_mult=0.5)
            stage2 = BackboneConfig(name="small_cnn", cbam=self.cbam, width_mult=0.25)
        elif self.preset == "cpu_small":
            stage1, stage2 = (
                cpu_small_stage1(2, cbam=self.cbam),
                cpu_small_stage2(2, cbam=self.cbam),
            )
        else:
            raise ValueError(f"unknown preset {self.preset!r}; use one of {PRESETS}")
        return (
            replace(stage1, input_size=self.input_size),
            replace(stage2, input_size=self.input_size),
        )


@dataclass
class CascadeTrainingOutcome:
    stage1: Classifier
    stage2: Classifier
    loss_prediction: LossPredictionModule
    thresholds: tuple[float, float]
    metrics: dict[str, Any]
    pr_curve_png: bytes
    history: list[dict[str, float]]
    unreadable: list[int] = field(default_factory=list)  # image ids whose files did not decode
    seconds: float = 0.0


class StorageImageDataset(Dataset):
    """Item i: (transform(image), label, i), files read through Django storage.

    A file that does not decode becomes a zero image labeled -1 (the training loops skip -1, and
    evaluation drops it): one bad file never stops a training job. Its image id is recorded in
    `unreadable` (filled in this process: the loaders run with num_workers=0)."""

    def __init__(
        self,
        rows: Sequence[ImageRow],
        labels: Sequence[int] | None,
        *,
        transform: Callable[[Any], Any],
        input_size: int,
        two_views: bool,
        storage: Storage | None = None,
    ) -> None:
        self.rows = list(rows)
        self.labels = list(labels) if labels is not None else [-1] * len(self.rows)
        self.transform = transform
        self.input_size = input_size
        self.two_views = two_views
        self.storage = storage or default_storage
        self.unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = self.rows[index]
        try:
            with self.storage.open(row.name, "rb") as handle:
                image = decode_image(handle.read())
            return self.transform(image), self.labels[index], index
        except (ImageDecodeError, OSError, ValueError):
            self.unreadable.add(row.image_id)
            blank = torch.zeros(3, self.input_size, self.input_size)
            return ((blank, blank.clone()) if self.two_views else blank), -1, index


def _finite(value: float) -> float | None:
    """JSON-safe: NaN / infinity become None (PostgreSQL's JSON has no NaN)."""
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 6)


def _pr(y: np.ndarray, scores_pass: np.ndarray) -> dict[str, float | None]:
    """Precision and recall of a boolean decision."""
    decision = scores_pass.astype(bool)
    tp = int((decision & y).sum())
    fp = int((decision & ~y).sum())
    fn = int((~decision & y).sum())
    return {
        "precision": _finite(tp / (tp + fp)) if tp + fp else None,
        "recall": _finite(tp / (tp + fn)) if tp + fn else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def evaluate_cascade(
    s1: np.ndarray, s2: np.ndarray, y: np.ndarray, *, target_precision: float
) -> tuple[tuple[float, float], dict[str, Any]]:
    """Thresholds chosen on validation and the metrics of each stage and of the cascade.

    s1, s2: (N,) positive-class probabilities; y: (N,) bool. Returns ((t1, t2), metrics)."""
    t1, t2 = choose_thresholds(s1, s2, y, target_precision=target_precision)
    reached = not (math.isinf(t1) or math.isinf(t2))
    if reached:
        rule = (
            f"chosen on the validation split: among (t1, t2) pairs whose cascade precision "
            f"reaches {target_precision}, the one with the highest recall "
            f"(mlcore.cascade.choose_thresholds)"
        )
    else:
        t1, t2 = FALLBACK_THRESHOLDS
        rule = (
            f"no threshold pair reaches precision {target_precision} on the validation split; "
            f"fallback {FALLBACK_THRESHOLDS[0]} / {FALLBACK_THRESHOLDS[1]}"
        )
    cascade_score = np.minimum(s1, s2)
    single_t = threshold_for_precision(y, s1, target_precision=target_precision)
    single = precision_recall_at(y, s1, threshold=single_t) if not math.isinf(single_t) else None
    metrics = {
        "task": "positive class vs the rest (binary)",
        "target_precision": target_precision,
        "thresholds": {
            "stage1": _finite(t1),
            "stage2": _finite(t2),
            "reached": reached,
            "rule": rule,
        },
        "stage1": {
            "ap": _finite(average_precision(y, s1)),
            "threshold": _finite(t1),
            **_pr(y, s1 >= t1),
        },
        "stage2": {
            "ap": _finite(average_precision(y, s2)),
            "threshold": _finite(t2),
            **_pr(y, s2 >= t2),
        },
        "cascade": {
            "ap": _finite(average_precision(y, cascade_score)),
            "score": "min(p1, p2)",
            **_pr(y, cascade_decision(s1, s2, thresholds=(t1, t2))),
        },
        # The baseline the method compares against: stage 1 alone at the target precision.
        "stage1_alone_at_target": {
            "threshold": _finite(single_t),
            "precision": _finite(single.precision) if single else None,
            "recall": _finite(single.recall) if single else None,
        },
    }
    return (float(t1), float(t2)), metrics


def _pr_png(s1: np.ndarray, s2: np.ndarray, y: np.ndarray, *, title: str) -> bytes:
    curves = {
        "stage 1": pr_curve(y, s1),
        "stage 2": pr_curve(y, s2),
        "cascade min(p1, p2)": pr_curve(y, np.minimum(s1, s2)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_pr_curves(curves, Path(tmp) / "pr.png", title=title)
        return path.read_bytes()


def _fit_loss_prediction(
    stage1: Classifier, loader, *, epochs: int, lr: float, device: torch.device, seed: int
) -> LossPredictionModule:
    """The LP module on stage 1's frozen features (see the module docstring)."""
    seed_everything(seed)
    module = LossPredictionModule(list(stage1.feature_channels), hidden=LP_HIDDEN).to(device)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    stage1.eval()
    for _ in range(epochs):
        module.train()
        for inputs, labels, _ in loader:
            labels = torch.as_tensor(labels)
            keep = labels >= 0
            if keep.sum() < 2:
                continue
            with torch.no_grad():
                logits, features = stage1.forward_with_features(inputs[keep].to(device))
                targets = F.cross_entropy(logits, labels[keep].to(device), reduction="none")
            loss = margin_ranking_loss(module([f.detach() for f in features]), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return module.eval()


def _scores(model: Classifier, loader, device: torch.device) -> np.ndarray:
    logits, _, _ = predict_logits(model, loader, device=device)
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()[:, POSITIVE_INDEX]


def train_cascade_on_rows(
    *,
    train_rows: Sequence[LabeledRow],
    unlabeled_rows: Sequence[ImageRow],
    validation_rows: Sequence[LabeledRow],
    spec: CascadeTrainingSpec,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    title: str = "validation",
) -> CascadeTrainingOutcome:
    """Train, deploy the teacher as stage 1, choose thresholds on validation, fit the LP module.

    `on_epoch(epoch, metrics)` runs after each epoch; an exception it raises (a cancelled job)
    propagates and nothing is returned."""
    started = time.perf_counter()
    device = resolve_device(spec.device)
    seed_everything(spec.seed)
    config1, config2 = spec.backbones()
    stage1, stage2 = build_backbone(config1), build_backbone(config2)
    size = spec.input_size
    use_teacher = spec.mean_teacher and len(unlabeled_rows) > 0
    views = TwoViews(strong_transform(size), weak_transform(size)) if use_teacher else None
    train_set = StorageImageDataset(
        [ImageRow(r.image_id, r.name) for r in train_rows],
        [r.label for r in train_rows],
        transform=views or strong_transform(size),
        input_size=size,
        two_views=use_teacher,
    )
    # A last batch of one sample would break BatchNorm; drop it when there is more than a batch.
    loader = make_loader(
        train_set,
        batch_size=spec.batch_a,
        shuffle=True,
        seed=spec.seed,
        drop_last=len(train_set) > spec.batch_a,
    )
    train_kwargs: dict[str, Any] = {}
    if use_teacher:
        unlabeled_set = StorageImageDataset(
            unlabeled_rows, None, transform=views, input_size=size, two_views=True
        )
        teacher = make_teacher(stage1)
        train_kwargs = {
            "unlabeled_loader": make_loader(
                unlabeled_set,
                batch_size=spec.batch_a,
                shuffle=True,
                seed=spec.seed + 1,
                drop_last=len(unlabeled_set) > spec.batch_a,
            ),
            "mean_teacher": MeanTeacherConfig(rampup_epochs=max(1.0, spec.epochs / 2)),
            "stage1_teacher": teacher,
        }
    history = train_cascade(
        stage1,
        stage2,
        loader,
        config=CascadeConfig(batch_a=spec.batch_a, hard_b=spec.hard_b),
        train=TrainConfig(
            epochs=spec.epochs,
            batch_size=spec.batch_a,
            lr=spec.lr,
            device=str(device),
            seed=spec.seed,
        ),
        on_epoch=on_epoch,
        **train_kwargs,
    )
    if use_teacher:
        stage1 = train_kwargs["stage1_teacher"]
    stage1.eval()
    stage2.eval()

    eval_set = StorageImageDataset(
        [ImageRow(r.image_id, r.name) for r in validation_rows],
        [r.label for r in validation_rows],
        transform=eval_transform(size),
        input_size=size,
        two_views=False,
    )
    eval_loader = make_loader(eval_set, batch_size=64, shuffle=False, seed=spec.seed)
    s1 = _scores(stage1, eval_loader, device)
    s2 = _scores(stage2, eval_loader, device)
    readable = np.array([r.image_id not in eval_set.unreadable for r in validation_rows])
    y = np.array([r.label == 1 for r in validation_rows])[readable]
    s1, s2 = s1[readable], s2[readable]
    if not y.any() or y.all():
        raise ValueError(
            "the readable validation images must include both classes to measure the model"
        )
    thresholds, metrics = evaluate_cascade(s1, s2, y, target_precision=spec.target_precision)
    png = _pr_png(s1, s2, y, title=title)

    lp_set = StorageImageDataset(
        [ImageRow(r.image_id, r.name) for r in train_rows],
        [r.label for r in train_rows],
        transform=eval_transform(size),
        input_size=size,
        two_views=False,
    )
    lp_loader = make_loader(lp_set, batch_size=spec.batch_a, shuffle=True, seed=spec.seed + 2)
    loss_prediction = _fit_loss_prediction(
        stage1, lp_loader, epochs=spec.lp_epochs, lr=0.01, device=device, seed=spec.seed
    )
    metrics["validation"] = {
        "size": int(len(y)),
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
        "unreadable": int((~readable).sum()),
    }
    metrics["backbones"] = {"stage1": config_to_dict(config1), "stage2": config_to_dict(config2)}
    metrics["mean_teacher"] = use_teacher
    metrics["history"] = [
        {key: _finite(value) for key, value in epoch.items()} for epoch in history
    ]
    unreadable = sorted(train_set.unreadable | eval_set.unreadable)
    return CascadeTrainingOutcome(
        stage1=stage1.cpu(),
        stage2=stage2.cpu(),
        loss_prediction=loss_prediction.cpu(),
        thresholds=thresholds,
        metrics=metrics,
        pr_curve_png=png,
        history=history,
        unreadable=unreadable,
        seconds=time.perf_counter() - started,
    )
