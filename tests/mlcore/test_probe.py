"""Invariants of mlcore.probe: the logistic probe on frozen features ranks planted positives
first, chooses C by cross-validation only when there are enough labels, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore import probe


def _separable(n: int = 1200, positives: int = 40, dim: int = 32, seed: int = 0):
    """Unit-norm-ish embeddings; positives are shifted along one direction (planted)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = np.zeros(n, dtype=np.int64)
    planted = rng.choice(n, size=positives, replace=False)
    y[planted] = 1
    x[planted, 0] += 8.0
    return x, y, planted


def test_probe_ranks_planted_positives_first():
    x, y, planted = _separable()
    train = np.arange(0, len(y), 2)  # half the labels; the other half is the pool
    fitted = probe.fit_linear_probe(x[train], y[train], seed=0)
    assert fitted.n_positive == int(y[train].sum())
    assert fitted.n_negative == len(train) - fitted.n_positive
    pool_positives = set(planted.tolist()) - set(train.tolist())
    ranking = probe.probe_rank(fitted, x, k=len(pool_positives), exclude=train)
    assert not set(ranking.indices.tolist()) & set(train.tolist())
    assert set(ranking.indices.tolist()) == pool_positives
    assert np.all(np.diff(ranking.scores) <= 0)
    assert ranking.scores == pytest.approx(fitted.predict_proba(x[ranking.indices]), abs=1e-6)


def test_probe_cross_validates_C_only_with_enough_labels():
    x, y, _ = _separable(positives=60)
    cross_validated = probe.fit_linear_probe(x, y, seed=1)
    assert cross_validated.C in probe.ProbeConfig().C_grid
    assert cross_validated.cv_average_precision is not None
    assert 0.5 < cross_validated.cv_average_precision <= 1.0
    few = np.concatenate([np.flatnonzero(y == 1)[:4], np.flatnonzero(y == 0)[:200]])
    fixed = probe.fit_linear_probe(x[few], y[few], seed=1)
    assert fixed.C == probe.ProbeConfig().C and fixed.cv_average_precision is None
    # Balanced class weights: four positives among 200 still get high scores.
    assert fixed.predict_proba(x[few[:4]]).min() > 0.5


def test_probe_is_seeded_and_normalises_its_input():
    x, y, _ = _separable(seed=2)
    first = probe.fit_linear_probe(x, y, seed=5).predict_proba(x)
    again = probe.fit_linear_probe(x, y, seed=5).predict_proba(x)
    assert first.tolist() == again.tolist()
    # L2-normalised inside: scaling the embeddings changes nothing.
    scaled = probe.fit_linear_probe(3.0 * x, y, seed=5).predict_proba(7.0 * x)
    assert scaled == pytest.approx(first, abs=1e-6)


def test_probe_refuses_one_class_and_bad_shapes():
    x, y, _ = _separable(n=50, positives=5)
    with pytest.raises(ValueError, match="positives and negatives"):
        probe.fit_linear_probe(x, np.zeros(50, dtype=np.int64), seed=0)
    with pytest.raises(ValueError, match="shape"):
        probe.fit_linear_probe(x, y[:10], seed=0)
    with pytest.raises(ValueError, match="0 \\(negative\\) or 1"):
        probe.fit_linear_probe(x, y * 2, seed=0)


def test_predict_rate_moves_the_balanced_probabilities_to_the_labels_odds():
    x, y, _ = _separable()
    fitted = probe.fit_linear_probe(x, y, seed=0)
    assert fitted.labels_odds == pytest.approx(40 / 1160)
    balanced = fitted.predict_proba(x)
    rates = fitted.predict_rate(x)
    assert np.allclose(rates, probe.prior_shifted(balanced, 40 / 1160))
    # The same ranking, on the scale of the labels' rate: far lower than the balanced scores.
    assert np.array_equal(np.argsort(rates, kind="stable"), np.argsort(balanced, kind="stable"))
    assert rates.mean() < balanced.mean() / 2
