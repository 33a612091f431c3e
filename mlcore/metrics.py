"""Precision/recall metrics for a rare positive class, with prevalence reweighting.

The product's bar is stated at the pool's prevalence ("recall at 95% precision when 1% of the
pool is positive", METHOD.md: a model at 99% validation accuracy still floods production with
false positives). Validation sets are usually far richer in positives than the pool, so the
functions here accept ``sample_weight`` and :func:`prevalence_weights` reweights negatives until
the weighted positive share equals the pool's prevalence. Recall does not depend on negative
weights; precision does.

Conventions: ``y_true`` is a binary array of shape (N,) (0/1 or bool, 1 = positive), ``scores``
is a float array of shape (N,) where larger means "more positive", and an item is predicted
positive when ``score >= threshold``. Curves and average precision come from scikit-learn;
the threshold searches are written here because they must return the *lowest* threshold that
reaches a precision target (the one with the most recall), which scikit-learn does not offer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

__all__ = [
    "PR",
    "PRCurve",
    "average_precision",
    "plot_pr_curves",
    "pr_curve",
    "precision_recall_at",
    "prevalence_weights",
    "recall_at_precision",
    "threshold_for_precision",
    "threshold_for_recall",
]


@dataclass(frozen=True)
class PR:
    """Precision and recall at one threshold, with the (possibly weighted) counts behind them.

    ``precision`` is ``nan`` when nothing is predicted positive (0/0), ``recall`` is ``nan`` when
    there are no positives.
    """

    precision: float
    recall: float
    tp: float
    fp: float
    fn: float


class PRCurve(NamedTuple):
    """scikit-learn's precision-recall curve: ``precision`` and ``recall`` of shape (T + 1,),
    ``thresholds`` of shape (T,) increasing. Unpacks as ``precision, recall, thresholds``."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


def _validate(
    y_true: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    sample_weight: np.ndarray | Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (y_true as bool, scores as float64, weights as float64) or raise ValueError."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(
            f"y_true and scores must be 1-D, got shapes {y.shape} and {s.shape}; "
            "pass the positive-class column of (N, C) probabilities"
        )
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.shape[0]} items but scores has {s.shape[0]}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be binary (0/1 or bool); map the positive class to 1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    if sample_weight is None:
        w = np.ones_like(s)
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != s.shape:
            raise ValueError(f"sample_weight has shape {w.shape}, expected {s.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("sample_weight must be finite and non-negative")
    return y.astype(bool), s, w


def precision_recall_at(
    y_true: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    *,
    threshold: float,
    sample_weight: np.ndarray | Sequence[float] | None = None,
) -> PR:
    """Precision and recall when items with ``scores >= threshold`` are called positive.

    y_true: (N,) binary. scores: (N,) float. sample_weight: optional (N,) non-negative weights
    (e.g. :func:`prevalence_weights`); counts in the result are weighted sums.
    """
    y, s, w = _validate(y_true, scores, sample_weight)
    predicted = s >= threshold
    tp = float(w[predicted & y].sum())
    fp = float(w[predicted & ~y].sum())
    fn = float(w[~predicted & y].sum())
    precision = tp / (tp + fp) if tp + fp > 0 else math.nan
    recall = tp / (tp + fn) if tp + fn > 0 else math.nan
    return PR(precision=precision, recall=recall, tp=tp, fp=fp, fn=fn)


def pr_curve(
    y_true: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    *,
    sample_weight: np.ndarray | Sequence[float] | None = None,
) -> PRCurve:
    """The precision-recall curve (scikit-learn's ``precision_recall_curve``).

    y_true: (N,) binary with at least one positive. scores: (N,). Returns a :class:`PRCurve`.
    """
    y, s, w = _validate(y_true, scores, sample_weight)
    if not y.any():
        raise ValueError("pr_curve needs at least one positive in y_true")
    precision, recall, thresholds = precision_recall_curve(y, s, sample_weight=w)
    return PRCurve(precision=precision, recall=recall, thresholds=thresholds)


def average_precision(
    y_true: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    *,
    sample_weight: np.ndarray | Sequence[float] | None = None,
) -> float:
    """Average precision (scikit-learn's step-wise area under the PR curve, no interpolation).

    y_true: (N,) binary with at least one positive. scores: (N,).
    """
    y, s, w = _validate(y_true, scores, sample_weight)
    if not y.any():
        raise ValueError("average_precision needs at least one positive in y_true")
    return float(average_precision_score(y, s, sample_weight=w))


def _cumulative_counts(
    y: np.ndarray, s: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and weighted tp, fp when predicting ``s >= threshold``."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted, w_sorted = s[order], y[order], w[order]
    tp = np.cumsum(w_sorted * y_sorted)
    fp = np.cumsum(w_sorted * ~y_sorted)
    # Keep the last position of each run of tied scores: a threshold takes all ties or none.
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    return s_sorted[last_of_run], tp[last_of_run], fp[last_of_run]


def threshold_for_precision(
    y_true: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    *,
    target_precision: float,
    sample_weight: np.ndarray | Sequence[float] | None = None,
) -> float:
    """The lowest threshold whose (weighted) precision on these scores is ``>= target_precision``.

    y_true: (N,) binary. scores: (N,). The lowest such threshold has the most recall among those
    meeting the target (precision is not monotonic in the threshold, so every candidate is
    checked). Returns ``math.inf`` when no threshold reaches the target (calling nothing positive
    is then the only way to avoid the false positives); callers should test ``math.isinf``.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    y, s, w = _validate(y_true, scores, sample_weight)
    if not y.any():
        return math.inf
    thresholds, tp, fp = _cumulative_counts(y, s, w)
    predicted = tp + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
    # A relative tolerance so a target of exactly 0.95 is met by 19/20 despite rounding.
    reaching = (precision >= target_precision - 1e-12) & (tp > 0)
    if not reaching.any():
        return math.inf
    return float(thresholds[np.flatnonzero(reaching)[-1]])


def threshold_for_recall(
    y_true: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    *,
    target_recall: float,
    sample_weight: np.ndarray | Sequence[float] | None = None,
) -> float:
    """The highest threshold whose (weighted) recall is ``>= target_recall``.

    y_true: (N,) binary with at least one positive. scores: (N,). Recall only falls as the
    threshold rises, so the highest threshold meeting the target has the best precision among
    those meeting it. Always reachable (the lowest score gives recall 1).
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    y, s, w = _validate(y_true, scores, sample_weight)
    total_positive = float(w[y].sum())
    if total_positive <= 0:
        raise ValueError("threshold_for_recall needs at least one positive with non-zero weight")
    thresholds, tp, _ = _cumulative_counts(y, s, w)
    reaching = tp / total_positive >= target_recall - 1e-12
    return float(thresholds[np.flatnonzero(reaching)[0]])


def prevalence_weights(y_true: np.ndarray | Sequence[int], *, prevalence: float) -> np.ndarray:
    """Per-item weights (N,) giving positives weight 1 and negatives a common weight chosen so
    that the weighted positive share equals ``prevalence``.

    With P positives and M negatives the negative weight is ``P (1 - prevalence) / (prevalence M)``:
    a validation set with 30% positives evaluated "at the pool's 1% prevalence" counts each
    negative about 42 times. Needs both classes present.
    """
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    y = np.asarray(y_true)
    if y.ndim != 1 or (y.size and not np.isin(y, (0, 1)).all()):
        raise ValueError("y_true must be a 1-D binary array")
    y = y.astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"prevalence reweighting needs both classes, got {positives} positives "
            f"and {negatives} negatives"
        )
    negative_weight = positives * (1.0 - prevalence) / (prevalence * negatives)
    return np.where(y, 1.0, negative_weight)


def recall_at_precision(
    y_true: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    *,
    precision: float,
    prevalence: float | None = None,
) -> float:
    """The best recall among thresholds whose precision is ``>= precision``; 0.0 when none is.

    y_true: (N,) binary with at least one positive. scores: (N,). With ``prevalence`` the
    precision is computed at that positive share (:func:`prevalence_weights`), which is how the
    bar "recall at 95% precision at the pool's 1% prevalence" is measured.
    """
    weights = None if prevalence is None else prevalence_weights(y_true, prevalence=prevalence)
    threshold = threshold_for_precision(
        y_true, scores, target_precision=precision, sample_weight=weights
    )
    if math.isinf(threshold):
        return 0.0
    return precision_recall_at(y_true, scores, threshold=threshold, sample_weight=weights).recall


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray] | PRCurve],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """Write a PNG of one or more PR curves; returns the path written.

    curves: name -> (precision, recall) arrays of equal length (a :class:`PRCurve` works too).
    Uses matplotlib's Agg backend through an explicit Figure, so no display or global pyplot
    state is touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_pr_curves needs at least one curve")
    figure = Figure(figsize=(5.5, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        precision, recall = np.asarray(curve[0]), np.asarray(curve[1])
        if precision.shape != recall.shape:
            raise ValueError(f"curve {name!r}: precision and recall shapes differ")
        axes.step(recall, precision, where="post", label=name)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="lower left")
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, format="png")
    return output
