"""Triage's miss rate (mlcore.estimates.triage_error): the exact interval, its coverage by
simulation, the labels a clean audit needs to reach a bound, and the pause rule."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore import estimates


def test_exact_interval_matches_the_clopper_pearson_closed_form():
    # 0 of n: the upper end is 1 - (alpha / 2) ** (1 / n), the lower end 0.
    for n in (10, 73, 500):
        interval = estimates.exact_rate_interval(0, n)
        assert interval.estimate == 0.0 and interval.low == 0.0
        assert interval.high == pytest.approx(1.0 - 0.025 ** (1.0 / n), rel=1e-9)
    # n of n: the mirror image.
    full = estimates.exact_rate_interval(20, 20)
    assert full.high == 1.0 and full.low == pytest.approx(0.025 ** (1.0 / 20), rel=1e-9)
    # No labels: unknown, [0, 1].
    empty = estimates.exact_rate_interval(0, 0)
    assert np.isnan(empty.estimate) and (empty.low, empty.high) == (0.0, 1.0)


@pytest.mark.parametrize("rate, labels", [(0.01, 300), (0.05, 80), (0.002, 2000)])
def test_interval_covers_the_true_miss_rate(rate, labels):
    """Simulated audits of an accepted set whose true miss rate is `rate`: the 95% interval
    contains it in at least 95% of 2,000 audits (the exact interval is conservative)."""
    rng = np.random.default_rng(0)
    errors = rng.binomial(labels, rate, size=2000)
    covered = [
        estimates.exact_rate_interval(int(k), labels).contains(rate) for k in errors.tolist()
    ]
    assert np.mean(covered) >= 0.95


def test_labels_until_bound_is_the_smallest_clean_audit_under_the_bound():
    more = estimates.labels_until_bound(0, 0, bound=0.05)
    assert estimates.exact_rate_interval(0, more).high <= 0.05
    assert estimates.exact_rate_interval(0, more - 1).high > 0.05
    # With a miss already seen, more clean labels are needed; none once under the bound.
    assert estimates.labels_until_bound(1, more, bound=0.05) > 0
    assert estimates.labels_until_bound(0, more, bound=0.05) == 0
    with pytest.raises(ValueError):
        estimates.labels_until_bound(0, 10, bound=0.0)


def test_pause_rule_waits_for_the_warm_up_unless_the_lower_end_is_out():
    warm = estimates.labels_until_bound(0, 0, bound=0.05)  # 72 at 95%
    # Warming up: the upper end is above the bound whatever the labels say; no pause.
    early = estimates.triage_error(accepted=1000, labels=20, errors=0, bound=0.05)
    assert early.rate.high > 0.05 and estimates.triage_verdict(early) is None
    assert early.more_labels_clean == warm - 20
    # Clear evidence at any size: even the lower end above the bound.
    bad = estimates.triage_error(accepted=1000, labels=20, errors=8, bound=0.05)
    assert estimates.triage_verdict(bad) == "lower_bound"
    # Warmed up and clean: no pause; one miss too many: the upper end leaves the bound.
    clean = estimates.triage_error(accepted=1000, labels=warm, errors=0, bound=0.05)
    assert estimates.triage_verdict(clean) is None
    missed = estimates.triage_error(accepted=1000, labels=warm, errors=2, bound=0.05)
    assert missed.rate.estimate < 0.05 < missed.rate.high
    assert estimates.triage_verdict(missed) == "upper_bound"
    # The accepted set's missed positives scale the rate's interval.
    assert missed.missed.high == pytest.approx(1000 * missed.rate.high)
    # No bound, no rule.
    assert estimates.triage_verdict(estimates.triage_error(accepted=10, labels=5, errors=5)) is None


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        estimates.exact_rate_interval(3, 2)
    with pytest.raises(ValueError):
        estimates.exact_rate_interval(0, 5, confidence=1.0)
    with pytest.raises(ValueError):
        estimates.triage_error(accepted=5, labels=6, errors=0)
