"""Temperature scaling (mlcore.calibration): an over-confident model gets T > 1 and a lower NLL,
an under-confident one T < 1, and the scores' order never changes."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.calibration import apply_temperature, fit_temperature, negative_log_likelihood


def _calibrated_logits(seed: int, n: int = 2000, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution: labels are drawn from it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in probs])
    return logits, labels


def test_over_confident_logits_get_a_temperature_above_one_and_a_lower_nll():
    logits, labels = _calibrated_logits(0)
    over_confident = logits * 3.0
    temperature = fit_temperature(over_confident, labels)
    assert temperature > 1.5
    # The true temperature is 3: the fit finds it within sampling error.
    assert temperature == pytest.approx(3.0, rel=0.2)
    before = negative_log_likelihood(over_confident, labels)
    after = negative_log_likelihood(over_confident, labels, temperature=temperature)
    assert after < before - 0.1


def test_under_confident_logits_get_a_temperature_below_one():
    logits, labels = _calibrated_logits(1)
    temperature = fit_temperature(logits * 0.3, labels)
    assert temperature < 0.6


def test_fitted_temperature_is_the_nll_minimum():
    logits, labels = _calibrated_logits(2, n=500)
    temperature = fit_temperature(logits * 2.0, labels)
    best = negative_log_likelihood(logits * 2.0, labels, temperature=temperature)
    for other in (temperature * 0.9, temperature * 1.1, 1.0):
        assert best <= negative_log_likelihood(logits * 2.0, labels, temperature=other) + 1e-9


def test_apply_temperature_keeps_the_order_and_sums_to_one():
    logits, _ = _calibrated_logits(3, n=50)
    probs = apply_temperature(logits * 4.0, temperature=2.5)
    assert probs.shape == logits.shape
    assert np.allclose(probs.sum(axis=1), 1.0)
    raw = apply_temperature(logits * 4.0, temperature=1.0)
    assert np.array_equal(probs.argmax(axis=1), raw.argmax(axis=1))
    # Softer: the top probability of every row comes down.
    assert (probs.max(axis=1) <= raw.max(axis=1) + 1e-12).all()


def test_binary_positive_scores_keep_their_order():
    # What the cascade thresholds: with two classes, p(positive) is monotone in the logit gap.
    logits, _ = _calibrated_logits(4, n=200, classes=2)
    calibrated = apply_temperature(logits, temperature=3.0)[:, 1]
    raw = apply_temperature(logits, temperature=1.0)[:, 1]
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(raw, kind="stable"))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(np.zeros(5), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.zeros((3, 2)), temperature=0.0)
