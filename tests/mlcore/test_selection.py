"""Invariants of mlcore.selection: each strategy returns the right set in the right order."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore import selection


def _probs(seed: int = 0, n: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


def test_confidence_band_is_exactly_the_items_above_high_or_inside_band():
    p = _probs()
    chosen = selection.confidence_band(p, high=0.9, band=(0.3, 0.6))
    expected = set(np.flatnonzero((p >= 0.9) | ((p >= 0.3) & (p <= 0.6))).tolist())
    assert set(chosen.tolist()) == expected
    assert len(chosen) == len(expected)
    # Interleaved: the first two picks are the most confident item and the top of the band.
    assert chosen[0] == np.argmax(np.where(p >= 0.9, p, -1))
    assert chosen[1] == np.argmax(np.where((p >= 0.3) & (p <= 0.6), p, -1))


def test_confidence_band_accepts_class_probabilities_and_custom_thresholds():
    p = _probs(1)
    two_class = np.stack([1 - p, p], axis=1)
    chosen = selection.confidence_band(two_class, high=0.95, band=(0.1, 0.2))
    expected = set(np.flatnonzero((p >= 0.95) | ((p >= 0.1) & (p <= 0.2))).tolist())
    assert set(chosen.tolist()) == expected


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
        "band_union_loss", k=40, p_pos=p, predicted_loss=losses, exclude=labeled
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
        "confidence_band": selection.confidence_band(p)[:10],
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
