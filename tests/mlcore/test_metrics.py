"""Invariants of mlcore.metrics: agreement with scikit-learn, thresholds that really reach their
targets, prevalence reweighting that gives the stated positive share."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score

from mlcore import metrics


def _scored_set(seed: int, n: int = 400, positive_share: float = 0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_share).astype(int)
    # Positives score higher on average, with overlap so thresholds matter.
    scores = rng.normal(loc=y * 1.5, scale=1.0)
    return y, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn_with_and_without_weights(seed):
    y, scores = _scored_set(seed)
    weights = np.random.default_rng(seed + 10).random(len(y)) + 0.1
    assert metrics.average_precision(y, scores) == pytest.approx(average_precision_score(y, scores))
    assert metrics.average_precision(y, scores, sample_weight=weights) == pytest.approx(
        average_precision_score(y, scores, sample_weight=weights)
    )


def test_precision_recall_at_matches_sklearn_counts():
    y, scores = _scored_set(3)
    result = metrics.precision_recall_at(y, scores, threshold=0.7)
    predicted = (scores >= 0.7).astype(int)
    assert result.precision == pytest.approx(precision_score(y, predicted))
    assert result.recall == pytest.approx(recall_score(y, predicted))
    assert result.tp + result.fn == y.sum()
    assert result.tp + result.fp == predicted.sum()


@pytest.mark.parametrize("target", [0.6, 0.8, 0.9, 0.95])
def test_threshold_for_precision_reaches_target_and_is_the_lowest(target):
    y, scores = _scored_set(4, n=600)
    threshold = metrics.threshold_for_precision(y, scores, target_precision=target)
    assert math.isfinite(threshold)
    reached = metrics.precision_recall_at(y, scores, threshold=threshold)
    assert reached.precision >= target
    # Every lower distinct threshold misses the target (so this one has the most recall).
    for lower in np.unique(scores[scores < threshold]):
        assert metrics.precision_recall_at(y, scores, threshold=lower).precision < target


def test_threshold_for_precision_with_prevalence_weights_reaches_weighted_target():
    y, scores = _scored_set(5, n=800)
    weights = metrics.prevalence_weights(y, prevalence=0.05)
    threshold = metrics.threshold_for_precision(
        y, scores, target_precision=0.9, sample_weight=weights
    )
    reached = metrics.precision_recall_at(y, scores, threshold=threshold, sample_weight=weights)
    assert reached.precision >= 0.9
    unweighted = metrics.threshold_for_precision(y, scores, target_precision=0.9)
    # Rarer positives need a stricter threshold for the same precision.
    assert threshold >= unweighted


def test_threshold_for_precision_returns_inf_when_unreachable():
    y = np.array([0, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6])  # the top item is a negative: precision <= 2/3
    assert metrics.threshold_for_precision(y, scores, target_precision=0.99) == math.inf
    assert metrics.recall_at_precision(y, scores, precision=0.99) == 0.0


@pytest.mark.parametrize("target", [0.5, 0.9, 1.0])
def test_threshold_for_recall_reaches_target_and_is_the_highest(target):
    y, scores = _scored_set(6)
    threshold = metrics.threshold_for_recall(y, scores, target_recall=target)
    assert metrics.precision_recall_at(y, scores, threshold=threshold).recall >= target
    higher = np.unique(scores[scores > threshold])
    if higher.size:
        assert metrics.precision_recall_at(y, scores, threshold=higher[0]).recall < target


@pytest.mark.parametrize("prevalence", [0.001, 0.01, 0.2, 0.7])
def test_prevalence_weights_give_stated_positive_share(prevalence):
    y, _ = _scored_set(7)
    weights = metrics.prevalence_weights(y, prevalence=prevalence)
    share = weights[y == 1].sum() / weights.sum()
    assert share == pytest.approx(prevalence)
    assert np.all(weights[y == 1] == 1.0)


def test_recall_at_precision_falls_at_low_prevalence():
    y, scores = _scored_set(8, n=1000)
    at_validation_share = metrics.recall_at_precision(y, scores, precision=0.8)
    at_pool_share = metrics.recall_at_precision(y, scores, precision=0.8, prevalence=0.01)
    assert 0.0 < at_validation_share <= 1.0
    assert at_pool_share < at_validation_share


def test_pr_curve_matches_sklearn_and_plot_writes_png(tmp_path):
    y, scores = _scored_set(9)
    curve = metrics.pr_curve(y, scores)
    assert curve.precision.shape == curve.recall.shape
    assert curve.thresholds.shape[0] == curve.precision.shape[0] - 1
    path = metrics.plot_pr_curves(
        {"model": curve, "random": (np.array([0.3, 0.3]), np.array([1.0, 0.0]))},
        tmp_path / "pr.png",
        title="PR",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        ([0, 1], [0.1], "items"),
        ([0, 2], [0.1, 0.2], "binary"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(y, scores, message):
    with pytest.raises(ValueError, match=message):
        metrics.average_precision(y, scores)


def test_prevalence_weights_need_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        metrics.prevalence_weights(np.ones(5, dtype=int), prevalence=0.01)
