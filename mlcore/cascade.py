"""Two-stage OHEM cascade (METHOD.md, "OHEM + cascade").

Online Hard Example Mining (Shrivastava, Gupta, Girshick: "Training Region-based Object
Detectors with Online Hard Example Mining", CVPR 2016) computes the loss of every candidate in a
batch and back-propagates only the hardest. The method this product follows turns that into a
cascade, in the spirit of AdaBoost cascades from detection: stage 1 (DenseNet161 in production)
trains on whole batches of A; in each step the B samples with the largest stage-1 loss train
stage 2 (ResNet50), which therefore specialises in what stage 1 finds hard. At inference an item
is positive only if both stages say so (AND), which trades a little recall for a lot of
precision under heavy imbalance (reported: +21% precision, -4.3% recall against stage 1 alone).

Departures from the paper:
- OHEM in the paper selects hard RoIs for the *same* network (a read-only copy scores them);
  here the hard examples of stage 1 train a *second* network, as METHOD.md describes. Stage 1
  itself still trains on the whole batch.
- Hard examples are ranked by stage 1's training-mode loss of that step, before its update,
  detached (no gradient flows from stage 2 into stage 1).
- A short last batch passes ``ceil(len * hard_b / batch_a)`` samples, keeping the B/A ratio.
- Labels in doubt (``stage2_exclude``: under noise review, flagged by O2U) are never selected for
  stage 2, though they still train stage 1: on a noisy rare class the hardest samples are where
  the wrong labels are (issue 7: a third of stage 2's positives were wrong labels).
- Per-stage thresholds are chosen on validation data by :func:`choose_thresholds`, which
  searches stage-1 thresholds at the positives' scores and, for each, the best stage-2 threshold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlcore.config import TrainConfig, resolve_device, seed_everything
from mlcore.mean_teacher import MeanTeacherConfig, MeanTeacherLoop
from mlcore.metrics import threshold_for_precision, threshold_for_recall
from mlcore.resume import TrainingState
from mlcore.train import (
    EpochCallback,
    call_on_epoch,
    make_optimizer,
    make_scheduler,
    predict_proba,
)

__all__ = [
    "CascadeConfig",
    "CascadeScores",
    "cascade_decision",
    "cascade_predict",
    "choose_thresholds",
    "ohem_select",
    "train_cascade",
]


def ohem_select(losses: torch.Tensor, *, b: int) -> torch.Tensor:
    """Indices (b,) of the ``b`` largest values of ``losses`` (A,), largest first.

    ``losses`` should be detached per-sample losses; 1 <= b <= A.
    """
    if losses.ndim != 1:
        raise ValueError(f"losses must have shape (A,), got {tuple(losses.shape)}")
    if not 1 <= b <= losses.shape[0]:
        raise ValueError(f"b must be in [1, {losses.shape[0]}], got {b}")
    return torch.topk(losses.detach(), k=b, largest=True, sorted=True).indices


@dataclass(frozen=True)
class CascadeConfig:
    """``batch_a``: the loader's batch size (checked); ``hard_b``: how many of each batch train
    stage 2. ``stage2_lr``: stage 2's learning rate (defaults to the TrainConfig's)."""

    batch_a: int = 64
    hard_b: int = 16
    stage2_lr: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.hard_b <= self.batch_a:
            raise ValueError(
                f"need 1 <= hard_b <= batch_a, got hard_b={self.hard_b}, batch_a={self.batch_a}"
            )
        if self.stage2_lr is not None and self.stage2_lr <= 0:
            raise ValueError(f"stage2_lr must be > 0, got {self.stage2_lr}")

    def hard_count(self, batch_len: int) -> int:
        """How many samples of a batch of ``batch_len`` go to stage 2."""
        if batch_len >= self.batch_a:
            return self.hard_b
        return max(1, math.ceil(batch_len * self.hard_b / self.batch_a))


def _stage1_supervised_step(
    stage1: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """One cross-entropy step of stage 1 on labeled ``images``; returns the per-sample losses
    (detached) of the forward pass before the update."""
    per_sample = F.cross_entropy(stage1(images), labels, reduction="none")
    optimizer.zero_grad(set_to_none=True)
    per_sample.mean().backward()
    optimizer.step()
    return per_sample.detach()


def _exclusion_lookup(stage2_exclude: Collection[int] | np.ndarray | None) -> torch.Tensor:
    """Sorted unique dataset indices (K,) int64 from a set, list or array of indices."""
    if stage2_exclude is None:
        return torch.empty(0, dtype=torch.int64)
    values = np.asarray(
        list(stage2_exclude) if not isinstance(stage2_exclude, np.ndarray) else stage2_exclude
    )
    if values.dtype == bool:
        # A boolean mask would silently become the indices 0 and 1.
        raise ValueError("stage2_exclude takes dataset indices, not a boolean mask")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"stage2_exclude must hold integer dataset indices, got {values.dtype}")
    return torch.from_numpy(np.unique(values.astype(np.int64).ravel()))


def train_cascade(
    stage1: nn.Module,
    stage2: nn.Module,
    loader: Iterable[Any],
    *,
    config: CascadeConfig,
    train: TrainConfig,
    unlabeled_loader: Iterable[Any] | None = None,
    mean_teacher: MeanTeacherConfig | None = None,
    stage1_teacher: nn.Module | None = None,
    on_epoch: EpochCallback | None = None,
    stage2_exclude: Collection[int] | np.ndarray | None = None,
    resume: TrainingState | None = None,
    on_checkpoint: Callable[[TrainingState], Any] | None = None,
) -> list[dict[str, float]]:
    """Train both stages together for ``train.epochs`` epochs; returns one dict per epoch.

    loader: yields ``(images (A, C, H, W), labels (A,), indices (A,))`` with dataset indices;
    items labeled -1 are skipped. Each step: stage-1 forward on the labeled batch, per-sample
    cross-entropy, stage-1 SGD update on the mean; the ``hard_b`` highest of those (detached)
    losses among the samples not in ``stage2_exclude`` select the samples for one stage-2 SGD
    step. Both stages use ``make_optimizer`` and a cosine schedule.

    stage2_exclude: dataset indices (as the loader yields them) of labels in doubt, e.g. under
    noise review or flagged by O2U. They still train stage 1, where each is one of A samples
    averaged and stage 1's job is recall (a flagged rare positive is often a true one), but they
    never reach stage 2: OHEM's top-B is exactly where wrong labels concentrate (on the noisy
    rare task every labeled positive and 96% of the flipped labels were among the hardest), so
    there one wrong label weighs A/B times more and is picked every epoch. A batch whose labeled
    samples are all excluded skips stage 2's step; otherwise stage 2 gets
    ``min(hard_count, eligible)`` samples.

    Mean Teacher for stage 1 (METHOD.md's cold start): pass ``mean_teacher`` (a
    MeanTeacherConfig), ``stage1_teacher`` (``make_teacher(stage1)``) and ``unlabeled_loader``.
    Both loaders then yield ``((student_view, teacher_view), y, idx)`` (``data.TwoViews``) and
    stage 1 trains through ``mean_teacher.MeanTeacherLoop``, the same step code as
    ``train_mean_teacher`` (two heads unless ``logit_distance_cost=None``: stage 1 must then
    expose ``forward_with_features`` and ``embedding_dim``); the hard samples (ranked by the
    student's cross-entropy on its class head) reach stage 2 as their student views. Deploy
    ``stage1_teacher`` as stage 1 afterwards, as the paper evaluates the teacher.

    The history holds epoch, stage1_loss, stage2_loss (means over steps that ran), hard_mean_loss
    (mean stage-1 cross-entropy of the selected samples), batch_mean_loss (of all labeled
    samples), stage2_excluded (labeled samples kept from stage 2 this epoch), lr, seconds, and
    with Mean Teacher consistency_loss, logit_distance, consistency_weight and ema_decay.
    ``on_epoch(epoch, metrics)`` returning False or raising ``TrainingCancelled`` stops after
    that epoch.

    Resuming (supervised training only): after each epoch that ``on_epoch`` let continue,
    ``on_checkpoint(state)`` receives a :class:`mlcore.resume.TrainingState` (both stages,
    optimizers, schedules, the global and the loader's random generators, the history); passing
    it back as ``resume`` (with the same networks, loader and configs) goes on from the next
    epoch and ends with the networks an uninterrupted run would have. The returned history
    includes the resumed epochs. With Mean Teacher the unlabeled stream's position is not
    part of the state, so there is no checkpoint and ``resume`` is refused.
    """
    use_teacher = mean_teacher is not None
    if use_teacher and (stage1_teacher is None or unlabeled_loader is None):
        raise ValueError("mean_teacher needs stage1_teacher and unlabeled_loader")
    if not use_teacher and (stage1_teacher is not None or unlabeled_loader is not None):
        raise ValueError("stage1_teacher and unlabeled_loader are used only with mean_teacher")
    batch_size = getattr(loader, "batch_size", None)
    if batch_size is not None and batch_size != config.batch_a:
        raise ValueError(
            f"loader batch size {batch_size} differs from CascadeConfig.batch_a {config.batch_a}"
        )
    if use_teacher and (resume is not None or on_checkpoint is not None):
        raise ValueError("resuming is supported for supervised training only (no Mean Teacher)")
    excluded = _exclusion_lookup(stage2_exclude)
    seed_everything(train.seed)
    device = resolve_device(train.device)
    stage1.to(device)
    stage2.to(device)
    steps_per_epoch = max(1, len(loader))  # type: ignore[arg-type]
    total_steps = train.epochs * steps_per_epoch
    teacher_loop: MeanTeacherLoop | None = None
    if use_teacher:
        assert mean_teacher is not None and stage1_teacher is not None
        assert unlabeled_loader is not None
        teacher_loop = MeanTeacherLoop(
            stage1,
            stage1_teacher,
            unlabeled_loader,
            config=mean_teacher,
            train=train,
            total_steps=total_steps,
            device=device,
        )
        optimizer1 = teacher_loop.optimizer
    else:
        optimizer1 = make_optimizer(stage1, train)
        scheduler1 = make_scheduler(optimizer1, total_steps=total_steps)
    optimizer2 = make_optimizer(
        stage2, train if config.stage2_lr is None else replace(train, lr=config.stage2_lr)
    )
    scheduler2 = make_scheduler(optimizer2, total_steps=total_steps)
    history: list[dict[str, float]] = []
    loader_generator = getattr(loader, "generator", None)
    first_epoch = 0
    if resume is not None:
        stage1.load_state_dict(resume.modules["stage1"])
        stage2.load_state_dict(resume.modules["stage2"])
        optimizer1.load_state_dict(resume.optimizers["stage1"])
        optimizer2.load_state_dict(resume.optimizers["stage2"])
        scheduler1.load_state_dict(resume.schedulers["stage1"])
        scheduler2.load_state_dict(resume.schedulers["stage2"])
        torch.set_rng_state(resume.rng["torch"])
        if loader_generator is not None and "loader" in resume.rng:
            loader_generator.set_state(resume.rng["loader"])
        history = [dict(epoch) for epoch in resume.history]
        first_epoch = resume.epochs_done
    for epoch in range(first_epoch, train.epochs):
        started = time.perf_counter()
        lr = optimizer1.param_groups[0]["lr"]
        stage1.train()
        stage2.train()
        sums = {"stage1_loss": 0.0, "batch_mean_loss": 0.0}
        stage2_sums = {"stage2_loss": 0.0, "hard_mean_loss": 0.0}
        teacher_sums = {"consistency_loss": 0.0, "logit_distance": 0.0}
        n_steps = n_stage2_steps = n_excluded = 0
        for step, batch in enumerate(loader):
            inputs, labels, indices = batch
            labels = torch.as_tensor(labels)
            labeled = labels >= 0
            if not labeled.any():
                continue
            if teacher_loop is not None:
                if not isinstance(inputs, list | tuple) or len(inputs) != 2:
                    raise ValueError(
                        "with mean_teacher the loader must yield ((student_view, teacher_view), "
                        "y, idx): use data.TwoViews"
                    )
                result = teacher_loop.step(batch, progress=epoch + step / steps_per_epoch)
                images, labels, indices = result.inputs, result.labels, result.indices.cpu()
                per_sample = result.class_losses
                stage1_loss = result.loss
                teacher_sums["consistency_loss"] += result.consistency_loss
                teacher_sums["logit_distance"] += result.logit_distance
            else:
                if isinstance(inputs, list | tuple):
                    raise ValueError("two views per image need mean_teacher; pass one view")
                images = inputs[labeled].to(device, non_blocking=True)
                labels = labels[labeled].to(device)
                indices = torch.as_tensor(indices)[labeled]
                per_sample = _stage1_supervised_step(stage1, optimizer1, images, labels)
                scheduler1.step()
                stage1_loss = float(per_sample.mean())
            sums["stage1_loss"] += stage1_loss
            sums["batch_mean_loss"] += float(per_sample.mean())
            n_steps += 1

            eligible = torch.nonzero(~torch.isin(indices.cpu(), excluded)).flatten().to(device)
            n_excluded += len(labels) - len(eligible)
            if len(eligible) > 0:
                count = min(config.hard_count(len(labels)), len(eligible))
                hard = eligible[ohem_select(per_sample[eligible], b=count)]
                stage2_loss = F.cross_entropy(stage2(images[hard]), labels[hard])
                optimizer2.zero_grad(set_to_none=True)
                stage2_loss.backward()
                optimizer2.step()
                # Stepped only with its optimizer: a skipped batch (rare) leaves stage 2's
                # learning rate a little above zero at the end, never ahead of its steps.
                scheduler2.step()
                stage2_sums["stage2_loss"] += float(stage2_loss.detach())
                stage2_sums["hard_mean_loss"] += float(per_sample[hard].mean())
                n_stage2_steps += 1
        metrics: dict[str, float] = {"epoch": epoch}
        for name, total in sums.items():
            metrics[name] = total / n_steps if n_steps else float("nan")
        for name, total in stage2_sums.items():
            metrics[name] = total / n_stage2_steps if n_stage2_steps else float("nan")
        metrics["stage2_excluded"] = n_excluded
        if teacher_loop is not None:
            for name, total in teacher_sums.items():
                metrics[name] = total / n_steps if n_steps else float("nan")
            metrics["consistency_weight"] = teacher_loop.consistency_weight
            metrics["ema_decay"] = teacher_loop.ema_decay
        metrics["lr"] = lr
        metrics["seconds"] = time.perf_counter() - started
        history.append(metrics)
        if not call_on_epoch(on_epoch, epoch, metrics):
            break
        if on_checkpoint is not None:
            rng = {"torch": torch.get_rng_state()}
            if loader_generator is not None:
                rng["loader"] = loader_generator.get_state()
            on_checkpoint(
                TrainingState(
                    epochs_done=epoch + 1,
                    modules={"stage1": stage1.state_dict(), "stage2": stage2.state_dict()},
                    optimizers={
                        "stage1": optimizer1.state_dict(),
                        "stage2": optimizer2.state_dict(),
                    },
                    schedulers={
                        "stage1": scheduler1.state_dict(),
                        "stage2": scheduler2.state_dict(),
                    },
                    rng=rng,
                    history=[dict(item) for item in history],
                )
            )
    return history


@dataclass(frozen=True)
class CascadeScores:
    """Positive-class probabilities of each stage, ``stage1`` (N,) and ``stage2`` (N,), in
    dataset order, and ``decision`` (N,) bool = stage1 >= t1 AND stage2 >= t2."""

    stage1: np.ndarray
    stage2: np.ndarray
    decision: np.ndarray


def cascade_decision(
    stage1_scores: np.ndarray, stage2_scores: np.ndarray, *, thresholds: tuple[float, float]
) -> np.ndarray:
    """(N,) bool: both stages at or above their thresholds."""
    t1, t2 = thresholds
    return (np.asarray(stage1_scores) >= t1) & (np.asarray(stage2_scores) >= t2)


def cascade_predict(
    stage1: nn.Module,
    stage2: nn.Module,
    loader: Iterable[Any],
    *,
    device: torch.device | str,
    positive_index: int = 1,
    thresholds: tuple[float, float] = (0.5, 0.5),
) -> CascadeScores:
    """Score ``loader`` with both stages and apply the AND decision.

    loader yields ``(images, labels_or_-1, indices)``; the result is in dataset-index order.
    """
    p1 = predict_proba(stage1, loader, device=device)[:, positive_index]
    p2 = predict_proba(stage2, loader, device=device)[:, positive_index]
    return CascadeScores(
        stage1=p1, stage2=p2, decision=cascade_decision(p1, p2, thresholds=thresholds)
    )


def _weighted_counts(y: np.ndarray, w: np.ndarray, decision: np.ndarray) -> tuple[float, float]:
    tp = float(w[decision & y].sum())
    fp = float(w[decision & ~y].sum())
    return tp, fp


def choose_thresholds(
    stage1_scores: np.ndarray,
    stage2_scores: np.ndarray,
    y_true: np.ndarray,
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, float]:
    """Per-stage thresholds (t1, t2) for the AND cascade, chosen on validation data.

    stage1_scores, stage2_scores, y_true (binary), sample_weight: shape (N,). Give exactly one
    target. With ``target_precision`` the pair maximises recall among pairs whose (weighted)
    precision reaches the target; returns ``(inf, inf)`` when no pair does. With
    ``target_recall`` the pair maximises precision among pairs whose recall reaches it.
    Candidate t1 values are the positives' stage-1 scores (raising t1 between two positives only
    removes negatives); for each, t2 comes from :mod:`mlcore.metrics` on the items passing t1.
    """
    if (target_precision is None) == (target_recall is None):
        raise ValueError("give exactly one of target_precision and target_recall")
    s1 = np.asarray(stage1_scores, dtype=np.float64)
    s2 = np.asarray(stage2_scores, dtype=np.float64)
    y = np.asarray(y_true)
    if not (s1.shape == s2.shape == y.shape) or s1.ndim != 1:
        raise ValueError(
            f"stage1_scores, stage2_scores and y_true must share one (N,) shape, got "
            f"{s1.shape}, {s2.shape}, {y.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be binary (0/1 or bool)")
    y = y.astype(bool)
    w = np.ones_like(s1) if sample_weight is None else np.asarray(sample_weight, np.float64)
    total_positive = float(w[y].sum())
    if total_positive <= 0:
        raise ValueError("choose_thresholds needs at least one positive with non-zero weight")

    best: tuple[float, float, float, float] | None = None  # (objective, tie-break, t1, t2)
    for t1 in np.unique(s1[y & (w > 0)]):
        passing = s1 >= t1
        if target_precision is not None:
            t2 = threshold_for_precision(
                y[passing],
                s2[passing],
                target_precision=target_precision,
                sample_weight=w[passing],
            )
            if math.isinf(t2):
                continue
        else:
            reachable = float(w[passing & y].sum())
            needed = target_recall * total_positive  # type: ignore[operator]
            if reachable < needed - 1e-9:
                continue
            t2 = threshold_for_recall(
                y[passing],
                s2[passing],
                target_recall=min(1.0, needed / reachable),
                sample_weight=w[passing],
            )
        tp, fp = _weighted_counts(y, w, cascade_decision(s1, s2, thresholds=(t1, t2)))
        recall = tp / total_positive
        precision = tp / (tp + fp) if tp + fp > 0 else 0.0
        candidate = (
            (recall, precision, float(t1), float(t2))
            if target_precision is not None
            else (precision, recall, float(t1), float(t2))
        )
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        return (math.inf, math.inf)
    return (best[2], best[3])
