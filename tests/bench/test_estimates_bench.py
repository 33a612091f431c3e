"""bench estimates' own arithmetic: the uniform baseline's classic intervals, the labels it needs
for a width (interpolated, or extrapolated past the pool and said so), the audited threshold."""

from __future__ import annotations

import numpy as np
import pytest

from bench import estimates as bench
from mlcore import estimates


def test_uniform_baseline_uses_exact_intervals_of_the_sampled_proportions():
    truth = np.array([1] * 10 + [0] * 990)
    decision = np.zeros(1000, dtype=bool)
    decision[:5] = True  # catches half of the positives
    census = bench._uniform_audit(truth, decision, labels=1000, seed=0)
    assert census["prevalence"].estimate == pytest.approx(0.01)
    assert census["recall"].estimate == pytest.approx(0.5)
    assert census["precision"].estimate == pytest.approx(1.0)
    assert census["recall"].low < 0.5 < census["recall"].high
    # Clopper-Pearson for 5 of 10 (scipy.stats.binomtest): about 0.187 to 0.813.
    assert census["recall"].low == pytest.approx(0.187, abs=1e-3)
    # No sampled positive: recall is unknown, the interval is all of [0, 1].
    none = bench._uniform_audit(np.zeros(1000, dtype=int), decision, labels=100, seed=0)
    assert np.isnan(none["recall"].estimate) and none["recall"].width == 1.0


def test_labels_for_a_width_interpolates_and_says_when_it_extrapolates():
    grid = np.array([100, 1000, 10_000])
    widths = np.array([0.4, 0.2, 0.1])  # halves per decade: width ~ n^-0.301
    needed, extrapolated = bench._labels_for(grid, widths, 0.2)
    assert needed == pytest.approx(1000) and not extrapolated
    between, _ = bench._labels_for(grid, widths, np.sqrt(0.2 * 0.1))
    assert between == pytest.approx(np.sqrt(1000 * 10_000))
    beyond, extrapolated = bench._labels_for(grid, widths, 0.05)
    assert extrapolated and beyond == pytest.approx(100_000)
    first, extrapolated = bench._labels_for(grid, widths, 0.5)
    assert first == 100 and not extrapolated


def test_the_audited_threshold_has_the_best_f1_on_validation():
    y = np.array([0, 0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert bench._f1_threshold(y, scores) == pytest.approx(0.4)


def _scored(n_neg=900, n_pos=100):
    rng = np.random.default_rng(0)
    truth = np.r_[np.zeros(n_neg), np.ones(n_pos)].astype(np.int8)
    score = np.r_[rng.uniform(0, 0.6, n_neg), rng.uniform(0.4, 1, n_pos)]
    return {
        "truth": truth,
        "cascade_score": score,
        # The cascade's AND decision is not a threshold on the ranking score: keep it as given.
        "cascade_decision": score >= 0.5,
        "cascade_cut_points": [0.5],
        "probe_score": score,
        "probe_cut_points": [0.7],
        # What run() adds: the probe's labeled set's odds of a positive and the second opinion.
        "probe_prior_odds": n_pos / n_neg,
        "second_opinion": 1.0 - score,
    }


def test_the_bootstrap_population_has_the_asked_size_and_prevalence_and_keeps_each_images_pair():
    scored = _scored()
    pool = bench._population(scored, "cascade", 0.001, 200_000, seed=3)
    assert len(pool["scores"]) == 200_000 and int(pool["truth"].sum()) == 200
    # Every drawn item is one scored image: its score, decision and truth travel together.
    assert np.array_equal(pool["decision"], pool["scores"] >= 0.5)
    assert (pool["scores"][pool["truth"] == 1] >= 0.4).all()
    assert pool["distinct_positives"] <= 100 and pool["cut_points"] == [0.5]
    assert np.allclose(pool["second_opinion"], 1.0 - pool["scores"])
    probe = bench._population(scored, "probe", 0.01, 50_000, seed=3)
    assert np.array_equal(probe["decision"], probe["scores"] >= 0.7)
    assert int(probe["truth"].sum()) == 500


def test_population_zero_audits_the_scored_images_themselves():
    pool = bench._population(_scored(), "cascade", 0.1, 0, seed=0)
    assert len(pool["scores"]) == 1000 and int(pool["truth"].sum()) == 100
    assert pool["distinct_positives"] == 100


def test_the_labeled_validation_and_scored_rows_are_disjoint_and_carry_positives():
    budget = bench.QUICK
    rows = bench._rows(budget, seed=0)
    every = np.concatenate(list(rows.values()))
    assert len(np.unique(every)) == len(every)
    _, classes = bench.common.fashion_mnist("train")
    y = bench.common.to_binary(classes, bench.POSITIVE_CLASSES)
    assert int(y[rows["source"]].sum()) == budget.source_positives
    assert int(y[rows["train"]].sum()) == max(5, round(budget.train_negatives / 99))


def _bound_pool(ranking_of_a):
    """1,000 images: 20 called positive (10 of them positive); of the called negatives, 100
    ranked ``ranking_of_a`` (stratum A, 10 missed positives) and 880 ranked 0.1 (none)."""
    truth = np.zeros(1000, dtype=np.int64)
    decision = np.zeros(1000, dtype=bool)
    decision[:20] = True
    truth[:10] = 1
    ranking = np.full(1000, 0.1)
    ranking[20:120] = ranking_of_a
    truth[20:30] = 1
    scores = np.where(decision, 0.9, 0.05)
    strata = estimates.strata_from_edges(
        scores, np.array([-np.inf, 0.3, 2.0, np.inf]), decision=decision, negatives_by=ranking
    )
    assert list(strata.sizes) == [880, 100, 20]
    return {"truth": truth, "decision": decision}, strata, ranking


def test_the_design_bound_is_neymans_variance_with_the_true_rates():
    pool, strata, ranking = _bound_pool(0.5)
    bound = bench._design_bound(pool, strata, ranking, labels=100)
    # Var(FN) >= (100 sqrt(0.1 * 0.9))^2 / 100 = 9; recall 1/2 of T = 20 at p = 0.02: uniform
    # sampling needs m = R (1 - R) T^2 / (p R^2 Var) = 2,222.2 labels, so 100 / m = 0.045.
    assert bound["missed_positives"] == 10
    assert bound["missed_per_stratum"] == [0, 10, 0]
    assert bound["best_ratio_any_allocation_on_these_strata"] == pytest.approx(0.045)
    # A ranking with ties inside A can do no better than A's strata.
    assert bound["best_ratio_any_design_on_this_ranking"] == pytest.approx(0.045)


def test_a_ranking_that_puts_the_misses_first_has_no_variance_left():
    values = np.full(100, 0.5)
    values[:10] = 0.6  # the ten missed positives rank above the rest of A
    pool, strata, ranking = _bound_pool(values)
    bound = bench._design_bound(pool, strata, ranking, labels=100)
    assert bound["best_ratio_any_allocation_on_these_strata"] == pytest.approx(0.045)
    assert bound["best_ratio_any_design_on_this_ranking"] == 0.0


def test_the_second_opinion_reads_the_app_embedders_input_size():
    from labeling.ml.recall import INPUT_SIZE

    assert bench.SECOND_OPINION_SIZE == INPUT_SIZE
