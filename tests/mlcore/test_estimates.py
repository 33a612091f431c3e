"""Invariants of mlcore.estimates: strata follow the scores and the thresholds, Neyman allocation
is proportional to N_h S_h within its bounds, the Horvitz-Thompson estimates are exact on a
census and unbiased over repeated audits, the intervals cover a known truth in simulation, and
the forecasts move the right way."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore import estimates


def _pool(n: int = 6000, prevalence: float = 0.02, seed: int = 0):
    """Scores (N,) from a model that separates positives imperfectly, truth (N,) 0/1."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(n, dtype=np.int64)
    truth[rng.choice(n, size=int(round(n * prevalence)), replace=False)] = 1
    logits = np.where(truth == 1, rng.normal(2.0, 1.5, n), rng.normal(-3.0, 1.5, n))
    return 1.0 / (1.0 + np.exp(-logits)), truth


def _audit(strata, truth, decision, *, labels, seed, batches=3):
    sample = np.empty(0, dtype=np.int64)
    for step in range(1, batches + 1):
        wanted = estimates.audit_allocation(
            strata, sample, truth[sample], total=labels * step // batches, decision=decision
        )
        sample = np.concatenate(
            [sample, estimates.audit_draw(strata, wanted, already=sample, seed=seed * 10 + step)]
        )
    return sample


def test_strata_respect_cut_points_and_minimum_size():
    scores, _ = _pool()
    strata = estimates.score_strata(scores, n_strata=6, cut_points=[0.7], min_size=50)
    assert 0.7 in strata.edges
    assert strata.sizes.sum() == len(scores)
    assert (strata.sizes >= 50).all()
    # Every stratum lies on one side of the threshold.
    for h in range(strata.count):
        inside = scores[strata.index == h]
        assert (inside >= 0.7).all() or (inside < 0.7).all()
    # Strata are ordered by score.
    assert np.all(np.diff(strata.mean_scores) > 0)
    single = estimates.score_strata(scores, n_strata=1)
    assert single.count == 1 and single.sizes[0] == len(scores)


def test_strata_split_by_a_decision_that_is_no_threshold_on_the_score():
    """The cascade ranks by min(stage 1, stage 2) and calls positive when both pass their own
    thresholds: images called positive and negative share score ranges. Split by the decision,
    no stratum mixes them, the mean scores stay the scores' (not the shifted key's), and the
    same edges with the same decision give the same strata back."""
    rng = np.random.default_rng(1)
    s1, s2 = rng.uniform(size=5000), rng.uniform(size=5000)
    scores, decision = np.minimum(s1, s2), (s1 >= 0.2) & (s2 >= 0.9)
    plain = estimates.score_strata(scores, n_strata=6, cut_points=[0.2, 0.9])
    mixed = [h for h in range(plain.count) if 0 < decision[plain.index == h].mean() < 1]
    assert mixed  # without the split, the decision straddles strata
    split = estimates.score_strata(scores, n_strata=6, cut_points=[0.2, 0.9], decision=decision)
    assert split.sizes.sum() == len(scores)
    for h in range(split.count):
        called = decision[split.index == h]
        assert called.all() or not called.any()
        assert split.mean_scores[h] == pytest.approx(scores[split.index == h].mean())
    again = estimates.strata_from_edges(scores, split.edges, decision=decision)
    assert np.array_equal(again.index, split.index)
    # Thresholds as the 20,000-label benchmark cascade chose them (stage 1 above stage 2): a
    # handful of images called negative score above both cut points, a stratum too small that
    # must merge downwards, never into the images called positive; and a decision calling
    # fewer than min_size images positive still keeps them apart.
    for t1, t2 in ((0.9965, 0.9815), (0.2, 0.999)):
        called = (s1 >= t1) & (s2 >= t2)
        strata = estimates.score_strata(
            scores, n_strata=8, cut_points=[t1, t2], min_size=10, decision=called
        )
        assert strata.sizes.sum() == len(scores) and (strata.sizes > 0).all()
        for h in range(strata.count):
            inside = called[strata.index == h]
            assert inside.all() or not inside.any()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimates.score_strata(scores * 2, decision=decision)


def test_called_negatives_cut_by_rank_on_a_second_opinion():
    """With ``negatives_by``, the images the decision calls negative are cut by rank on those
    values (the top RANKED_TOP_SHARE, then strata twice as large), whatever their scale; the
    called positives keep their score strata and cut points; mean scores stay the model's; the
    same edges with the same inputs give the same strata; a second opinion needs a decision
    and [0, 1]."""
    rng = np.random.default_rng(3)
    n = 20_000
    scores = rng.uniform(size=n) * 0.6
    decision = np.zeros(n, dtype=bool)
    decision[:500] = True
    scores[:500] = 0.7 + 0.3 * rng.uniform(size=500)
    # A second opinion on a squeezed scale (a class-balanced probe moved to a rare prior).
    opinion = 0.001 + 0.01 * rng.uniform(size=n)
    strata = estimates.score_strata(
        scores, n_strata=8, cut_points=[0.9], decision=decision, negatives_by=opinion
    )
    negatives = ~decision
    top = [h for h in range(strata.count) if not decision[strata.index == h].any()][-1]
    members = strata.index == top
    # The top stratum of the called negatives: the share they rank highest by the opinion.
    share = estimates.RANKED_TOP_SHARE
    assert members.sum() == int(np.ceil(share * negatives.sum()))
    assert opinion[members].min() >= opinion[negatives & ~members].max()
    sizes = [
        int(strata.sizes[h]) for h in range(strata.count) if not decision[strata.index == h].any()
    ]
    assert sizes[-2] == pytest.approx(sizes[-1], rel=0.05)  # the next share: twice the top
    for h in range(strata.count):
        inside = decision[strata.index == h]
        assert inside.all() or not inside.any()
        assert strata.mean_scores[h] == pytest.approx(scores[strata.index == h].mean())
    assert any(
        decision[strata.index == h].all() and strata.mean_scores[h] > 0.9
        for h in range(strata.count)
    )
    again = estimates.strata_from_edges(
        scores, strata.edges, decision=decision, negatives_by=opinion
    )
    assert np.array_equal(again.index, strata.index)
    with pytest.raises(ValueError, match="needs a decision"):
        estimates.score_strata(scores, negatives_by=opinion)
    with pytest.raises(ValueError, match=r"negatives_by must lie in \[0, 1\]"):
        estimates.score_strata(scores, decision=decision, negatives_by=opinion + 1)


def test_precision_interval_is_clopper_pearson_for_one_called_positive_stratum():
    """The precision interval's ends come from the Clopper-Pearson pair of posteriors of the
    cells called positive: for one such stratum, much larger than its sample, they are the
    exact binomial interval of its labels (scipy's binomtest), not Jeffreys' narrower one,
    which put the interval below a precision near 1 in 8% of the benchmark's audits."""
    from scipy import stats

    n_called, n_other = 1_000_000, 1_000
    decision = np.r_[np.ones(n_called, bool), np.zeros(n_other, bool)]
    scores = np.where(decision, 0.99, 0.01)
    strata = estimates.score_strata(scores, n_strata=2, decision=decision)
    sample = np.r_[np.arange(150), n_called + np.arange(100)]
    labels = np.r_[np.ones(148), np.zeros(2), np.zeros(100)].astype(np.int64)
    result = estimates.estimate_pool(
        strata, sample, labels, decisions={"m": decision}, draws=20_000, seed=1
    )
    interval = result.decisions["m"].precision
    exact = stats.binomtest(148, 150).proportion_ci(confidence_level=0.95, method="exact")
    jeffreys_high = stats.beta.ppf(0.975, 148.5, 2.5)
    assert interval.estimate == pytest.approx(148 / 150)
    assert interval.low == pytest.approx(exact.low, abs=1e-3)
    assert interval.high == pytest.approx(exact.high, abs=5e-4)
    assert interval.high > jeffreys_high + 1e-3


def test_prior_shift_keeps_ranks_and_moves_the_scale():
    from mlcore.probe import prior_shifted

    balanced = np.array([0.1, 0.5, 0.9, 0.99])
    shifted = prior_shifted(balanced, 0.01)
    assert np.all(np.diff(shifted) > 0)
    # Odds times the prior odds: 0.5 (odds 1) becomes odds 0.01.
    assert shifted[1] == pytest.approx(0.01 / 1.01)
    with pytest.raises(ValueError, match="odds"):
        prior_shifted(balanced, 0.0)


def test_neyman_allocation_is_proportional_within_bounds():
    sizes = np.array([1000, 1000, 100])
    spreads = np.array([0.1, 0.2, 0.4])
    n = estimates.neyman_allocation(sizes, spreads, 140, minimum=0)
    assert n.sum() == 140
    # N_h S_h = 100, 200, 40 -> 40, 80, 16 of 136... scaled to 140: 41.2, 82.4, 16.5
    assert list(n) == [41, 82, 17]
    # A floor is kept, the cap (the stratum's size) is never exceeded, the total is kept.
    capped = estimates.neyman_allocation(sizes, np.array([0.0, 0.0, 1.0]), 300, minimum=5)
    assert capped[2] == 100 and capped.sum() == 300 and (capped[:2] >= 5).all()
    floored = estimates.neyman_allocation(sizes, spreads, 140, floor=[90, 0, 0])
    assert floored[0] >= 90 and floored.sum() == 140
    assert estimates.neyman_allocation(sizes, spreads, 10_000).tolist() == sizes.tolist()


def test_hand_computed_stratified_estimate():
    # Stratum 0: 100 items, 10 sampled, 1 positive; stratum 1: 10 items, 5 sampled, 4 positive.
    scores = np.concatenate([np.linspace(0.0, 0.4, 100), np.linspace(0.6, 1.0, 10)])
    strata = estimates.score_strata(scores, n_strata=1, cut_points=[0.5], min_size=1)
    assert strata.sizes.tolist() == [100, 10]
    sample = np.array([*range(0, 100, 10), 100, 101, 102, 103, 104])
    labels = np.array([1] + [0] * 9 + [1, 1, 1, 1, 0])
    decision = scores >= 0.5
    result = estimates.estimate_pool(strata, sample, labels, decisions={"model": decision})
    assert result.positives.estimate == pytest.approx(100 * 1 / 10 + 10 * 4 / 5)
    assert result.prevalence.estimate == pytest.approx(18 / 110)
    model = result.decisions["model"]
    assert model.predicted_positive == 10
    assert model.true_positives.estimate == pytest.approx(8.0)
    assert model.precision.estimate == pytest.approx(0.8)
    assert model.recall.estimate == pytest.approx(8 / 18)
    for interval in (result.prevalence, model.precision, model.recall):
        assert interval.low <= interval.estimate <= interval.high
    # Positives seen bound the count from below.
    assert result.positives.low >= labels.sum()


def test_census_is_exact():
    scores, truth = _pool(n=800)
    decision = scores >= 0.5
    strata = estimates.score_strata(scores, n_strata=4, cut_points=[0.5])
    result = estimates.estimate_pool(
        strata, np.arange(len(truth)), truth, decisions={"model": decision}, known_positives=3
    )
    tp = int((truth.astype(bool) & decision).sum())
    assert result.prevalence.estimate == pytest.approx(truth.mean())
    assert result.prevalence.width == 0
    assert result.decisions["model"].precision.estimate == pytest.approx(tp / decision.sum())
    assert result.decisions["model"].recall.estimate == pytest.approx(tp / truth.sum())
    assert result.decisions["model"].recall.width == 0
    assert result.unlabeled_positives.estimate == pytest.approx(truth.sum() - 3)


def test_estimates_are_unbiased_and_intervals_cover():
    scores, truth = _pool(n=5000, prevalence=0.02, seed=3)
    decision = scores >= 0.6
    strata = estimates.score_strata(scores, n_strata=6, cut_points=[0.6])
    tp = int((truth.astype(bool) & decision).sum())
    truth_values = {
        "prevalence": truth.mean(),
        "precision": tp / decision.sum(),
        "recall": tp / truth.sum(),
    }
    points, covered = {k: [] for k in truth_values}, dict.fromkeys(truth_values, 0)
    runs = 150
    for seed in range(runs):
        sample = _audit(strata, truth, decision, labels=300, seed=seed)
        result = estimates.estimate_pool(
            strata, sample, truth[sample], decisions={"model": decision}, draws=1000, seed=seed
        )
        found = {
            "prevalence": result.prevalence,
            "precision": result.decisions["model"].precision,
            "recall": result.decisions["model"].recall,
        }
        for name, interval in found.items():
            points[name].append(interval.estimate)
            covered[name] += interval.contains(truth_values[name])
    # Prevalence is a Horvitz-Thompson total: unbiased; its mean over the runs is within
    # 3 standard errors of the truth.
    values = np.array(points["prevalence"])
    assert abs(values.mean() - truth_values["prevalence"]) < 3 * values.std() / np.sqrt(runs)
    for name in truth_values:
        assert covered[name] / runs >= 0.9, (name, covered[name] / runs)


def test_precision_covers_when_the_images_called_positive_are_nearly_all_positive():
    """A cascade-like decision (AND of two stages, ranked by the smaller score) whose strata of
    images called positive hold a large, all-positive one that the audit sees through a few
    labels: the precision interval must still contain the truth. With the prior Beta(a, b)
    there too (one phantom negative against 20 positive labels), it covered about half the time
    in the benchmark; the cell's prior follows the decision."""
    rng = np.random.default_rng(5)
    n = 40_000
    truth = (rng.uniform(size=n) < 0.02).astype(np.int64)
    s1 = np.where(truth == 1, rng.beta(8, 1, n), rng.beta(1, 30, n))
    s2 = np.where(truth == 1, rng.beta(9, 1, n), rng.beta(1, 20, n))
    # A few negatives look positive to both stages: precision is high but not 1.
    fooled = rng.choice(np.flatnonzero(truth == 0), size=12, replace=False)
    s1[fooled], s2[fooled] = 0.97, 0.99
    scores, decision = np.minimum(s1, s2), (s1 >= 0.6) & (s2 >= 0.6)
    strata = estimates.score_strata(scores, cut_points=[0.6], decision=decision)
    precision = (truth.astype(bool) & decision).sum() / decision.sum()
    assert 0.95 < precision < 1.0
    runs, covered = 60, 0
    for seed in range(runs):
        sample = _audit(strata, truth, decision, labels=400, seed=seed)
        result = estimates.estimate_pool(
            strata, sample, truth[sample], decisions={"model": decision}, draws=1000, seed=seed
        )
        covered += result.decisions["model"].precision.contains(precision)
    assert covered / runs >= 0.9, covered / runs


def test_a_confident_all_positive_stratum_is_not_starved_and_precision_covers():
    """Two strata of images called positive, as the benchmark's cascade makes them: a small one
    of middling scores (rate 0.7) and a large one the model scores 0.9999+ (rate 0.995). The
    first labels of the large one are all positive, so with the working rate's ``r (1 - r)`` the
    sequential Neyman allocation gave it 5 of 400 labels and precision covered in 53 of 60
    audits (0.88); with the posterior's ``E[p (1 - p)]`` (stratum_variances) it gets about 80
    and covers in 57 of 60."""
    rng = np.random.default_rng(7)
    n_a, n_b, n_neg = 300, 1600, 48_100
    low = rng.beta(0.3, 30, n_neg)
    scores = np.concatenate([rng.uniform(0.5, 0.99, n_a), 1 - 10 ** rng.uniform(-6, -4, n_b), low])
    truth = np.concatenate(
        [
            rng.uniform(size=n_a) < 0.7,
            rng.uniform(size=n_b) < 0.995,
            rng.uniform(size=n_neg) < np.minimum(low * 0.6, 1.0),
        ]
    ).astype(np.int64)
    decision = np.arange(len(scores)) < n_a + n_b
    strata = estimates.score_strata(scores, cut_points=[0.5, 0.9999], decision=decision)
    big = strata.count - 1
    assert strata.sizes[big] == n_b and strata.sizes[big - 1] == n_a
    precision = truth[decision].mean()
    runs, covered, held = 60, 0, []
    for seed in range(runs):
        sample = _audit(strata, truth, decision, labels=400, seed=seed, batches=4)
        held.append(np.sum(strata.index[sample] == big))
        result = estimates.estimate_pool(
            strata, sample, truth[sample], decisions={"model": decision}, draws=1000, seed=seed
        )
        covered += result.decisions["model"].precision.contains(precision)
    assert np.mean(held) >= 40, np.mean(held)
    assert covered / runs >= 0.9, covered / runs
    # The posterior variance shrinks as all-positive labels come, but stays above r (1 - r).
    inside = np.flatnonzero(strata.index == big)
    few = estimates.stratum_variances(strata, inside[:5], np.ones(5), decision=decision)[big]
    many = estimates.stratum_variances(strata, inside[:500], np.ones(500), decision=decision)[big]
    rate = estimates.stratum_rates(strata, inside[:5], np.ones(5))[big]
    assert many < few and few > 10 * rate * (1 - rate)


def test_allocation_favours_uncertain_strata_and_is_updated_by_labels():
    scores, truth = _pool(n=6000, seed=1)
    decision = scores >= 0.5
    strata = estimates.score_strata(scores, n_strata=5, cut_points=[0.5])
    first = estimates.audit_allocation(strata, [], [], total=200, decision=decision)
    assert first.sum() == 200 and (first >= 2).all()
    # Per item, the strata with middling scores get more labels than the lowest one.
    rate = first / strata.sizes
    assert rate[1:].max() > rate[0]
    sample = estimates.audit_draw(strata, first, seed=0)
    assert len(np.unique(sample)) == 200
    assert (np.bincount(strata.index[sample], minlength=strata.count) == first).all()
    # All negatives in the lowest stratum: later labels move away from it, never below the
    # labels it already holds.
    labels = truth[sample].copy()
    labels[strata.index[sample] == 0] = 0
    second = estimates.audit_allocation(strata, sample, labels, total=400, decision=decision)
    assert second.sum() == 400 and (second >= first).all()
    more = estimates.audit_draw(strata, second, already=sample, seed=1)
    assert not set(more.tolist()) & set(sample.tolist())
    assert len(more) == 200


def test_forecast_needs_more_labels_for_narrower_intervals():
    scores, truth = _pool(n=6000, seed=2)
    decision = scores >= 0.5
    strata = estimates.score_strata(scores, n_strata=6, cut_points=[0.5])
    sample = _audit(strata, truth, decision, labels=200, seed=0)
    result = estimates.estimate_pool(strata, sample, truth[sample], decisions={"m": decision})
    now = result.decisions["m"].recall.width
    wide = estimates.labels_for_width(
        strata, sample, truth[sample], width=now * 0.8, decision=decision, current_width=now
    )
    narrow = estimates.labels_for_width(
        strata, sample, truth[sample], width=now * 0.4, decision=decision, current_width=now
    )
    assert 0 < wide < narrow <= strata.pool_size - len(sample)
    assert (
        estimates.labels_for_width(
            strata, sample, truth[sample], width=now * 2, decision=decision, current_width=now
        )
        == 0
    )
    prevalence = estimates.labels_for_width(
        strata, sample, truth[sample], width=result.prevalence.width / 2, metric="prevalence"
    )
    assert prevalence > 0


def test_labels_to_find_follows_the_yield_and_the_pool():
    forecast = estimates.labels_to_find(10, 100, wanted=5)
    assert forecast.yield_rate == pytest.approx(0.1)
    assert forecast.low < forecast.expected < forecast.high
    assert forecast.expected == pytest.approx(5 / (10.5 / 101))
    capped = estimates.labels_to_find(10, 100, wanted=50, remaining=4.0)
    assert capped.capped and capped.wanted == 4.0
    none_found = estimates.labels_to_find(0, 100, wanted=1)
    assert none_found.expected > 100


def test_bad_input_is_refused():
    scores, truth = _pool(n=500)
    strata = estimates.score_strata(scores, n_strata=3)
    with pytest.raises(ValueError, match="twice"):
        estimates.estimate_pool(strata, [1, 1], [0, 0])
    with pytest.raises(ValueError, match="0 .negative. or 1"):
        estimates.estimate_pool(strata, [1, 2], [0, 2])
    with pytest.raises(ValueError, match="outside"):
        estimates.estimate_pool(strata, [10_000], [0])
    with pytest.raises(ValueError, match="shape"):
        estimates.estimate_pool(strata, [1], [0], decisions={"m": np.ones(3, dtype=bool)})
    with pytest.raises(ValueError, match="NaN"):
        estimates.score_strata(np.array([0.1, np.nan]))
    # A stratum without audit labels leaves the point estimates undefined, not wrong.
    partial = estimates.estimate_pool(strata, [int(np.argmax(scores))], [1])
    assert np.isnan(partial.prevalence.estimate)
