"""Metrics that are not graded on their own answers: cross-fitted thresholds and intervals.

The cascade's thresholds are chosen on the frozen validation split for a target precision
(:func:`mlcore.cascade.choose_thresholds`). Reporting precision and recall at those thresholds
on the same images flatters the model: with a handful of positives the search can always find a
pair that calls exactly the top one or two positives and nothing else, and then reports
"precision 1.000" from one true positive. Here every reported decision comes from thresholds
chosen on *other* images, by K-fold cross-fitting (Chernozhukov et al. 2018 use the word for
the same idea in estimation): the items are dealt into K folds stratified by class; for each
fold the thresholds are chosen on the other folds and applied to this one; the counts of every
fold are summed. The result estimates how well "choose thresholds on labeled data, then apply
them" works on images it has not seen, which is what the deployed thresholds (chosen on the
whole split) do in the pool. With K = 2 each threshold choice sees half the data, so the
estimate is slightly pessimistic for the deployed thresholds; that is the safe side.

Every rate comes with its counts and a Wilson score interval (``scipy.stats.binomtest``'s
``proportion_ci``), which keeps its coverage for the small counts a rare class gives (3 true
positives out of 3 is a 95% interval of [0.44, 1.0], not "precision 1.000"). A target counts
as reached only when the interval's lower bound is at or above it.

Arrays in, arrays and plain dicts out; no database, no Django.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import binomtest

from mlcore.cascade import cascade_decision, choose_thresholds
from mlcore.metrics import threshold_for_precision

__all__ = [
    "CrossFit",
    "crossfit_cascade",
    "proportion_interval",
    "rates_with_intervals",
    "stratified_folds",
]

DEFAULT_CONFIDENCE = 0.95
DEFAULT_FOLDS = 2
INTERVAL_METHOD = "Wilson score interval (scipy.stats.binomtest(...).proportion_ci)"


def proportion_interval(
    successes: int, trials: int, *, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / trials``; None when ``trials`` is 0."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    successes, trials = int(successes), int(trials)
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return None
    interval = binomtest(successes, trials).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return float(interval.low), float(interval.high)


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def rates_with_intervals(
    y_true: np.ndarray, decision: np.ndarray, *, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, Any]:
    """Precision and recall of binary ``decision`` against ``y_true`` (both (N,) bool), with the
    counts behind them and their intervals: precision = tp / (tp + fp), recall = tp / (tp + fn);
    a rate with a zero denominator is None, and so is its interval."""
    y = np.asarray(y_true, dtype=bool)
    d = np.asarray(decision, dtype=bool)
    if y.shape != d.shape or y.ndim != 1:
        raise ValueError(f"y_true and decision must share one (N,) shape, got {y.shape}, {d.shape}")
    tp = int((d & y).sum())
    fp = int((d & ~y).sum())
    fn = int((~d & y).sum())
    precision_ci = proportion_interval(tp, tp + fp, confidence=confidence)
    recall_ci = proportion_interval(tp, tp + fn, confidence=confidence)
    return {
        "precision": _rounded(tp / (tp + fp)) if tp + fp else None,
        "recall": _rounded(tp / (tp + fn)) if tp + fn else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "predicted_positive": tp + fp,
        "positives": tp + fn,
        "precision_ci": [_rounded(v) for v in precision_ci] if precision_ci else None,
        "recall_ci": [_rounded(v) for v in recall_ci] if recall_ci else None,
    }


def stratified_folds(
    y_true: np.ndarray, *, folds: int = DEFAULT_FOLDS, seed: int = 0
) -> np.ndarray:
    """A fold index in [0, folds) per item, (N,) int: positives and negatives are each shuffled
    (seeded) and dealt in turn, so every fold gets its share of the rare class. Positives are
    dealt first from fold 0, negatives continue where the positives stopped, so the fold sizes
    differ by at most one."""
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    y = np.asarray(y_true, dtype=bool)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    start = 0
    for members in (np.flatnonzero(y), np.flatnonzero(~y)):
        members = rng.permutation(members)
        fold[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return fold


@dataclass
class CrossFit:
    """Out-of-fold decisions, (N,) bool each: ``cascade`` (stage 1 AND stage 2 at the pair chosen
    on the other folds), ``stage1`` and ``stage2`` (each stage at its own threshold of that
    pair), ``single`` (stage 1 alone at the lowest threshold reaching the target on the other
    folds); ``fold`` (N,) the fold of each item; ``per_fold`` what each fold's choice saw."""

    cascade: np.ndarray
    stage1: np.ndarray
    stage2: np.ndarray
    single: np.ndarray
    fold: np.ndarray
    per_fold: list[dict[str, Any]] = field(default_factory=list)


def crossfit_cascade(
    s1: np.ndarray,
    s2: np.ndarray,
    y_true: np.ndarray,
    *,
    target_precision: float,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    fallback: tuple[float, float] = (0.5, 0.5),
) -> CrossFit:
    """Decisions on each item from thresholds chosen without it.

    s1, s2: (N,) positive-class probabilities of the two stages; y_true: (N,) binary. For each
    fold the thresholds come from :func:`choose_thresholds` on the other folds (``fallback``
    when no pair reaches ``target_precision`` there, as the deployed thresholds do) and decide
    the fold's items."""
    s1 = np.asarray(s1, dtype=np.float64)
    s2 = np.asarray(s2, dtype=np.float64)
    y = np.asarray(y_true).astype(bool)
    if not (s1.shape == s2.shape == y.shape) or s1.ndim != 1:
        raise ValueError(f"s1, s2, y must share one (N,) shape, got {s1.shape}, {s2.shape}")
    fold = stratified_folds(y, folds=folds, seed=seed)
    out = {name: np.zeros(len(y), dtype=bool) for name in ("cascade", "stage1", "stage2", "single")}
    per_fold: list[dict[str, Any]] = []
    for f in range(folds):
        report, choose = fold == f, fold != f
        t1 = t2 = single_t = math.inf
        if y[choose].any():
            t1, t2 = choose_thresholds(
                s1[choose], s2[choose], y[choose], target_precision=target_precision
            )
            single_t = threshold_for_precision(
                y[choose], s1[choose], target_precision=target_precision
            )
        found = not (math.isinf(t1) or math.isinf(t2))
        if not found:
            t1, t2 = fallback
        out["cascade"][report] = cascade_decision(s1[report], s2[report], thresholds=(t1, t2))
        out["stage1"][report] = s1[report] >= t1
        out["stage2"][report] = s2[report] >= t2
        # No single threshold reaching the target: stage 1 alone calls nothing positive.
        out["single"][report] = s1[report] >= single_t
        per_fold.append(
            {
                "fold": f,
                "chosen_on": int(choose.sum()),
                "chosen_on_positives": int((choose & y).sum()),
                "reported_on": int(report.sum()),
                "reported_on_positives": int((report & y).sum()),
                "thresholds": [_rounded(t1), _rounded(t2)],
                "found": found,
            }
        )
    return CrossFit(fold=fold, per_fold=per_fold, **out)
