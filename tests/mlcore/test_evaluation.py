"""Metrics not graded on their own answers (mlcore.evaluation, mlcore.pipeline.evaluate_cascade):
synthetic validation sets with known scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from mlcore.cascade import cascade_decision, choose_thresholds
from mlcore.evaluation import crossfit_cascade, proportion_interval, stratified_folds
from mlcore.pipeline import FALLBACK_THRESHOLDS, evaluate_cascade

TARGET = 0.95


def _noise(n: int = 400, positives: int = 12, seed: int = 3):
    """Scores that know nothing (the labels are independent of both stages), except that one
    lucky positive happens to top both: enough for an in-sample threshold search."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=bool)
    y[rng.choice(n, positives, replace=False)] = True
    s1, s2 = rng.random(n) * 0.99, rng.random(n) * 0.99
    lucky = np.flatnonzero(y)[0]
    s1[lucky] = s2[lucky] = 0.999
    return s1, s2, y


def _separable(positives: int, negatives: int, seed: int = 0):
    """Every positive scores above every negative on both stages."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(positives, bool), np.zeros(negatives, bool)]
    s1 = np.where(y, 0.6 + 0.4 * rng.random(len(y)), 0.4 * rng.random(len(y)))
    s2 = np.where(y, 0.6 + 0.4 * rng.random(len(y)), 0.4 * rng.random(len(y)))
    return s1, s2, y


def test_each_image_is_decided_by_thresholds_chosen_on_the_other_fold():
    s1, s2, y = _noise()
    crossed = crossfit_cascade(s1, s2, y, target_precision=TARGET, seed=0)
    assert sorted(set(crossed.fold.tolist())) == [0, 1]
    for fold in crossed.per_fold:
        report = crossed.fold == fold["fold"]
        choose = ~report
        t1, t2 = choose_thresholds(s1[choose], s2[choose], y[choose], target_precision=TARGET)
        if math.isinf(t1):
            t1, t2 = FALLBACK_THRESHOLDS
            assert fold["found"] is False
        assert fold["thresholds"] == pytest.approx([t1, t2], abs=1e-6)
        # The decisions on this fold come from the other fold's thresholds, not its own.
        expected = cascade_decision(s1[report], s2[report], thresholds=(t1, t2))
        assert (crossed.cascade[report] == expected).all()
        assert fold["chosen_on"] == int(choose.sum()) and fold["reported_on"] == int(report.sum())


def test_noise_reaches_the_target_in_sample_but_not_where_it_is_reported():
    s1, s2, y = _noise()
    thresholds, metrics = evaluate_cascade(s1, s2, y, target_precision=TARGET)
    # Graded on its own answers, the noise looks perfect: some pair calls one positive alone.
    assert metrics["thresholds"]["found"] is True
    in_sample = cascade_decision(s1, s2, thresholds=thresholds)
    assert (in_sample & y).sum() >= 1 and (in_sample & ~y).sum() == 0
    # Reported on the images the thresholds were not chosen on, it is what it is.
    cascade = metrics["cascade"]
    assert cascade["tp"] + cascade["fn"] == int(y.sum()) == cascade["positives"]
    assert cascade["tp"] + cascade["fp"] == cascade["predicted_positive"]
    assert cascade["precision"] is None or cascade["precision"] < TARGET
    assert metrics["target"]["reached"] is False
    assert metrics["evaluation"]["folds"][0]["chosen_on"] < len(y)


def test_the_interval_is_wilsons_from_scipy_and_has_the_counts_behind_it():
    s1, s2, y = _separable(positives=3, negatives=60)
    _thresholds, metrics = evaluate_cascade(s1, s2, y, target_precision=TARGET)
    for name in ("stage1", "stage2", "cascade", "stage1_alone_at_target"):
        rates = metrics[name]
        tp, fp, fn = rates["tp"], rates["fp"], rates["fn"]
        assert tp + fn == 3
        if tp + fp:
            expected = binomtest(tp, tp + fp).proportion_ci(0.95, method="wilson")
            assert rates["precision_ci"] == pytest.approx([expected.low, expected.high], abs=1e-6)
            assert rates["precision"] == pytest.approx(tp / (tp + fp), abs=1e-6)
        expected = binomtest(tp, tp + fn).proportion_ci(0.95, method="wilson")
        assert rates["recall_ci"] == pytest.approx([expected.low, expected.high], abs=1e-6)


def test_target_reached_only_when_the_lower_bound_supports_it():
    # Three positives, perfectly separated: whatever is called positive is right (precision 1
    # on the reported fold), yet 1-3 true positives cannot show 0.95.
    s1, s2, y = _separable(positives=3, negatives=60)
    _thresholds, metrics = evaluate_cascade(s1, s2, y, target_precision=TARGET)
    cascade, target = metrics["cascade"], metrics["target"]
    assert cascade["fp"] == 0 and cascade["tp"] >= 1
    assert cascade["precision"] == 1.0
    assert cascade["precision_ci"][0] < TARGET
    assert target["precision_lower"] == cascade["precision_ci"][0]
    assert target["reached"] is False
    # Three hundred positives, separated as well: the interval now supports the target.
    s1, s2, y = _separable(positives=300, negatives=600, seed=1)
    _thresholds, metrics = evaluate_cascade(s1, s2, y, target_precision=TARGET)
    assert metrics["cascade"]["precision_ci"][0] >= TARGET
    assert metrics["target"]["reached"] is True


def test_folds_share_out_the_rare_class():
    y = np.r_[np.ones(5, bool), np.zeros(96, bool)]
    fold = stratified_folds(y, folds=2, seed=4)
    assert sorted([int((fold[y] == f).sum()) for f in (0, 1)]) == [2, 3]
    assert abs(int((fold == 0).sum()) - int((fold == 1).sum())) <= 1
    assert (stratified_folds(y, folds=2, seed=4) == fold).all()  # seeded: repeatable


def test_proportion_interval_edges():
    assert proportion_interval(0, 0) is None
    low, high = proportion_interval(3, 3)
    assert 0.4 < low < 0.5 and high == pytest.approx(1.0)
    with pytest.raises(ValueError):
        proportion_interval(4, 3)
