"""The bridge from the model comparison page (labeling.selectors.model_comparison) to mlcore:
PR curves of several versions on the same labeled validation images, and the Wilson interval of
a rate. Plain arrays in, JSON-ready dicts out.
"""

from __future__ import annotations

import numpy as np

from mlcore.evaluation import DEFAULT_CONFIDENCE, INTERVAL_METHOD, proportion_interval
from mlcore.evaluation import rates_with_intervals as _rates
from mlcore.metrics import average_precision, pr_curve

__all__ = ["CURVE_POINTS", "INTERVAL_METHOD", "interval", "validation_curve"]

# A curve is drawn from at most this many points: enough for a 600 px chart, small enough to
# ship in the API answer. The thinning keeps the first and last points.
CURVE_POINTS = 200


def interval(successes: int, trials: int) -> list[float] | None:
    """The 95% Wilson interval of successes / trials (None when trials is 0)."""
    found = proportion_interval(successes, trials, confidence=DEFAULT_CONFIDENCE)
    return [round(found[0], 6), round(found[1], 6)] if found else None


def _thin(recall: np.ndarray, precision: np.ndarray) -> list[list[float]]:
    # scikit-learn's curve runs from high recall to (0, 1); reversed it is drawn left to right.
    order = np.arange(len(recall))[::-1]
    if len(order) > CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(order) - 1, CURVE_POINTS).round().astype(int))
        order = order[keep]
    return [[round(float(recall[i]), 4), round(float(precision[i]), 4)] for i in order]


def validation_curve(scores: np.ndarray, decisions: np.ndarray, y: np.ndarray) -> dict:
    """One version on the labeled validation images: its PR curve over the ranking score, its
    AP, and the operating point of its deployed decision (stage 1 AND stage 2 over their
    thresholds) with counts and intervals. scores (N,) float, decisions (N,) bool, y (N,) bool
    with at least one positive."""
    y = np.asarray(y, dtype=bool)
    curve = pr_curve(y, scores)
    return {
        "points": _thin(curve.recall, curve.precision),
        "ap": round(average_precision(y, scores), 6),
        "operating": _rates(y, np.asarray(decisions, dtype=bool), confidence=DEFAULT_CONFIDENCE),
    }
