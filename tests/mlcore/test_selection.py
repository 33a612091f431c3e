"""Invariants of mlcore.selection: each strategy returns the right set in the right order."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore import selection


def _probs(seed: int = 0, n: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


ABSOLUTE = selection.BandConfig(mode="absolute")


def test_absolute_band_is_exactly_the_items_above_high_or_inside_band():
    p = _probs()
    ranking = selection.confidence_band(p, config=ABSOLUTE)
    chosen = ranking.indices
    expected = set(np.flatnonzero((p >= 0.9) | ((p >= 0.3) & (p <= 0.6))).tolist())
    assert set(chosen.tolist()) == expected
    assert len(chosen) == len(expected)
    # Interleaved: the first two picks are the most confident item and the top of the band.
    assert chosen[0] == np.argmax(np.where(p >= 0.9, p, -1))
    assert chosen[1] == np.argmax(np.where((p >= 0.3) & (p <= 0.6), p, -1))
    assert ranking.is_high.tolist() == (p[chosen] >= 0.9).tolist()
    assert ranking.thresholds.high == 0.9 and ranking.thresholds.band == (0.3, 0.6)
    assert ranking.thresholds.n_high == int((p >= 0.9).sum())


def test_absolute_band_accepts_class_probabilities_and_custom_thresholds():
    p = _probs(1)
    two_class = np.stack([1 - p, p], axis=1)
    config = selection.BandConfig(mode="absolute", high=0.95, band=(0.1, 0.2))
    chosen = selection.confidence_band(two_class, config=config).indices
    expected = set(np.flatnonzero((p >= 0.95) | ((p >= 0.1) & (p <= 0.2))).tolist())
    assert set(chosen.tolist()) == expected


def _rare_scores(n: int = 3000, seed: int = 0) -> np.ndarray:
    """An early model at a rare prevalence: almost every score far below 0.3."""
    return np.random.default_rng(seed).beta(0.5, 40.0, size=n)


def test_quantile_band_selects_exactly_k_where_the_absolute_band_selects_fewer():
    p = _rare_scores()
    k = 200
    absolute = selection.select("confidence_band", k=k, p_pos=p, band_config=ABSOLUTE)
    assert len(absolute) < k // 10  # the accident the quantile mode exists to prevent
    result = selection.select("confidence_band", k=k, p_pos=p)
    assert len(result) == k == len(set(result.indices.tolist()))
    thresholds = result.band_thresholds
    assert thresholds.mode == "quantile" and thresholds.n_candidates == len(p)
    # The high group is exactly the top 1% of the scores.
    top = np.argsort(-p, kind="stable")[: thresholds.n_high]
    assert thresholds.n_high == 30
    assert set(top.tolist()) <= set(result.indices.tolist())
    assert thresholds.high == p[top].min()
    assert set(result.per_item_rule) == {selection.RULE_HIGH, selection.RULE_BAND}
    for index, rule, reason in zip(
        result.indices, result.per_item_rule, result.per_item_reason, strict=True
    ):
        if rule == selection.RULE_HIGH:
            assert p[index] >= thresholds.high and reason.startswith("high score (top 1%)")
        else:
            low, high = thresholds.band
            assert low <= p[index] <= high < thresholds.high
            assert reason.startswith("uncertain band")


def test_quantile_band_grows_to_fill_k_and_stops_at_the_candidates():
    p = _rare_scores(n=500)
    config = selection.BandConfig(high_share=0.01, band_share=0.02)
    small = selection.confidence_band(p, config=config)
    assert (small.thresholds.n_high, small.thresholds.n_band) == (5, 10)
    grown = selection.confidence_band(p, config=config, k=300)
    assert (grown.thresholds.n_high, grown.thresholds.n_band) == (5, 295)
    everything = selection.select("confidence_band", k=10_000, p_pos=p, band_config=config)
    assert sorted(everything.indices.tolist()) == list(range(500))


def test_quantile_band_is_centred_on_band_center_and_orders_nearest_first():
    p = np.arange(100) / 100  # item i scores i / 100
    config = selection.BandConfig(high_share=0.05, band_share=0.11, band_center=0.5)
    ranking = selection.confidence_band(p, config=config)
    band = ranking.indices[~ranking.is_high]
    assert sorted(band.tolist()) == list(range(45, 56))
    assert band[0] == 50  # nearest 0.5 first
    assert sorted(ranking.indices[ranking.is_high].tolist()) == [95, 96, 97, 98, 99]
    assert ranking.thresholds.band == (0.45, 0.55)
    assert ranking.thresholds.high == 0.95
    # A centre inside the high group: the band slides down to just below it.
    near_top = selection.confidence_band(
        p, config=selection.BandConfig(high_share=0.05, band_share=0.1, band_center=0.99)
    )
    assert sorted(near_top.indices[~near_top.is_high].tolist()) == list(range(85, 95))


def test_quantiles_are_over_the_candidates_and_ignore_calibration():
    p = _rare_scores(n=1000, seed=3)
    labeled = np.arange(0, 1000, 4)
    result = selection.select("confidence_band", k=120, p_pos=p, exclude=labeled)
    assert result.band_thresholds.n_candidates == 750
    assert not set(result.indices.tolist()) & set(labeled.tolist())
    # Quantiles survive any increasing map of the scores (temperature scaling is one), when the
    # band's centre is mapped too.
    sharpened = selection.select(
        "confidence_band",
        k=120,
        p_pos=p**3,
        exclude=labeled,
        band_config=selection.BandConfig(band_center=0.5**3),
    )
    assert sharpened.indices.tolist() == result.indices.tolist()


def test_band_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mode"):
        selection.BandConfig(mode="relative")
    with pytest.raises(ValueError, match="high_share"):
        selection.BandConfig(high_share=1.5)
    with pytest.raises(ValueError, match="band"):
        selection.BandConfig(band=(0.6, 0.3))


def test_loss_top_k_returns_the_k_largest_in_order():
    losses = np.array([0.1, 3.0, 0.5, 2.0, 0.0])
    assert selection.loss_top_k(losses, k=3).tolist() == [1, 3, 2]


def test_union_has_no_duplicates_contains_both_and_interleaves():
    a = np.array([5, 1, 2, 3])
    b = np.array([1, 9, 8])
    merged = selection.union(a, b)
    assert len(merged) == len(set(merged.tolist()))
    assert set(merged.tolist()) == {1, 2, 3, 5, 8, 9}
    assert merged.tolist() == [5, 1, 9, 2, 8, 3]
    # Under a budget both lists still contribute.
    cut = selection.union(np.arange(100), np.arange(100, 110), k=6)
    assert set(cut.tolist()) == {0, 100, 1, 101, 2, 102}


def test_random_sample_is_seeded_distinct_and_respects_exclusion():
    first = selection.random_sample(50, k=20, seed=3, exclude=np.arange(10))
    again = selection.random_sample(50, k=20, seed=3, exclude=np.arange(10))
    assert first.tolist() == again.tolist()
    assert len(set(first.tolist())) == 20
    assert first.min() >= 10
    assert len(selection.random_sample(5, k=20, seed=0)) == 5


def test_entropy_and_margin_pick_the_most_uncertain():
    p = np.array([0.5, 0.99, 0.45, 0.01, 0.7])
    assert selection.entropy_top_k(p, k=2).tolist() == [0, 2]
    assert selection.margin_top_k(p, k=3).tolist() == [0, 2, 4]
    three_class = np.array([[0.34, 0.33, 0.33], [0.9, 0.05, 0.05], [0.5, 0.45, 0.05]])
    assert selection.entropy_top_k(three_class, k=1).tolist() == [0]
    assert selection.margin_top_k(three_class, k=2).tolist() == [0, 2]


def test_select_band_union_loss_contains_both_sides_and_excludes_labeled():
    rng = np.random.default_rng(4)
    p = rng.random(300)
    losses = rng.random(300)
    labeled = np.arange(0, 300, 3)
    result = selection.select(
        "band_union_loss",
        k=40,
        p_pos=p,
        predicted_loss=losses,
        exclude=labeled,
        band_config=ABSOLUTE,
    )
    chosen = result.indices
    assert len(chosen) == 40 == len(set(chosen.tolist()))
    assert not set(chosen.tolist()) & set(labeled.tolist())
    in_band = (p >= 0.9) | ((p >= 0.3) & (p <= 0.6))
    loss_order = [i for i in np.argsort(-losses, kind="stable") if i % 3]
    assert loss_order[0] in chosen
    assert in_band[chosen].sum() >= 20
    assert len(result.per_item_reason) == 40
    assert result.strategy == "band_union_loss"


def test_band_union_loss_fills_k_in_quantile_mode_and_names_each_rule():
    p = _rare_scores(n=2000, seed=5)
    losses = np.random.default_rng(6).random(2000)
    result = selection.select("band_union_loss", k=300, p_pos=p, predicted_loss=losses)
    assert len(result) == 300 == len(set(result.indices.tolist()))
    rules = np.asarray(result.per_item_rule)
    # Round-robin: the loss list's top items all get in (some through the band as well, and
    # those are named by the band's rule), and so do the band's.
    assert set(np.argsort(-losses, kind="stable")[:140].tolist()) <= set(result.indices.tolist())
    assert (rules == selection.RULE_LOSS).sum() >= 100
    assert (rules == selection.RULE_HIGH).sum() == result.band_thresholds.n_high == 20
    loss_items = result.indices[rules == selection.RULE_LOSS]
    assert set(loss_items.tolist()) <= set(np.argsort(-losses)[:300].tolist())


@pytest.mark.parametrize("strategy", ["random", "entropy", "margin", "confidence_band", "loss"])
def test_select_dispatches_each_strategy(strategy):
    p = _probs(5, n=100)
    losses = _probs(6, n=100)
    result = selection.select(strategy, k=10, p_pos=p, predicted_loss=losses, seed=1)
    assert len(result) == 10
    assert len(set(result.indices.tolist())) == 10
    direct = {
        "entropy": selection.entropy_top_k(p, k=10),
        "margin": selection.margin_top_k(p, k=10),
        "confidence_band": selection.confidence_band(p, k=10).indices[:10],
        "loss": selection.loss_top_k(losses, k=10),
        "random": selection.random_sample(100, k=10, seed=1),
    }[strategy]
    assert result.indices.tolist() == direct.tolist()


def test_select_rejects_unknown_strategy_and_missing_inputs():
    with pytest.raises(ValueError, match="unknown strategy"):
        selection.select("bald", k=3, p_pos=_probs())
    with pytest.raises(ValueError, match="predicted_loss"):
        selection.select("loss", k=3, p_pos=_probs())
    with pytest.raises(ValueError, match="disagree"):
        selection.select("band_union_loss", k=3, p_pos=_probs(n=5), predicted_loss=_probs(n=6))
