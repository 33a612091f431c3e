"""Active-learning selection: which recalled images to send to annotators first.

METHOD.md's loop combines two selectors and labels their union:

1. Confidence selection (:func:`confidence_band`): items the model is very sure are positive
   (above ``high``; its mistakes there are the costly false positives) and items in an
   uncertain low band (where missed positives hide). The thresholds are options because the
   method tunes them per situation.
2. Loss prediction (Yoo & Kweon, "Learning Loss for Active Learning", CVPR 2019): rank the
   unlabeled items by the loss the LP module predicts for them (:func:`loss_top_k`).

:func:`union` merges the two lists by interleaving them, so a long band list cannot crowd out
the LP picks when the union is cut to a budget. The classic baselines (random, entropy and
margin uncertainty sampling) are here too, for the benchmark.

Every function returns dataset indices sorted by priority, most informative first. Inputs are
``probs``: positive-class probabilities of shape (N,) or class probabilities of shape (N, C).
Departure from the paper: METHOD.md takes the LP top 25% of the *recalled* images; here ``k``
is an absolute count and the caller decides the fraction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "STRATEGIES",
    "Selection",
    "confidence_band",
    "entropy_top_k",
    "loss_top_k",
    "margin_top_k",
    "random_sample",
    "select",
    "union",
]


@dataclass(frozen=True)
class Selection:
    """A selection: ``indices`` (k,) most informative first, the ``strategy`` key that made it,
    and ``per_item_reason`` (k,) a short human-readable reason per item (shown to engineers)."""

    indices: np.ndarray
    strategy: str
    per_item_reason: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def _as_class_probs(probs: np.ndarray) -> np.ndarray:
    """(N,) positive-class probabilities become (N, 2); (N, C) passes through; validated."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N,) or (N, C) with C >= 2, got {p.shape}")
    if not np.isfinite(p).all() or (p < -1e-6).any() or (p > 1 + 1e-6).any():
        raise ValueError("probs must be finite probabilities in [0, 1]")
    return p


def _check_k(k: int) -> None:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")


def _top_k_descending(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first; ties keep index order (stable)."""
    _check_k(k)
    order = np.argsort(-values, kind="stable")
    return order[:k].astype(np.int64)


def _exclusion_mask(n: int, exclude: np.ndarray | None) -> np.ndarray:
    """Boolean (N,) True for items that may be selected."""
    allowed = np.ones(n, dtype=bool)
    if exclude is not None:
        excluded = np.asarray(exclude, dtype=np.int64)
        if excluded.size and (excluded.min() < 0 or excluded.max() >= n):
            raise ValueError(f"exclude holds indices outside [0, {n})")
        allowed[excluded] = False
    return allowed


def confidence_band(
    p_pos: np.ndarray,
    *,
    high: float = 0.9,
    band: tuple[float, float] = (0.3, 0.6),
    positive_index: int = 1,
) -> np.ndarray:
    """Indices of items with ``p >= high`` or ``band[0] <= p <= band[1]`` (METHOD.md's
    confidence selection).

    p_pos: (N,) positive-class probabilities, or (N, C) probabilities whose column
    ``positive_index`` is the positive class. Priority: the two groups are interleaved (one
    confident item, one band item, ...) so a budget cut keeps both; confident items go most
    confident first, band items from the top of the band down (nearest the decision boundary).
    """
    p = np.asarray(p_pos, dtype=np.float64)
    if p.ndim == 2:
        p = p[:, positive_index]
    if p.ndim != 1:
        raise ValueError(f"p_pos must have shape (N,) or (N, C), got {p.shape}")
    low_edge, high_edge = band
    if not 0.0 <= low_edge <= high_edge <= 1.0:
        raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {band}")
    if not 0.0 <= high <= 1.0:
        raise ValueError(f"high must be in [0, 1], got {high}")
    confident = np.flatnonzero(p >= high)
    confident = confident[np.argsort(-p[confident], kind="stable")]
    in_band = np.flatnonzero((p >= low_edge) & (p <= high_edge) & (p < high))
    in_band = in_band[np.argsort(-p[in_band], kind="stable")]
    return union(confident, in_band)


def loss_top_k(predicted_loss: np.ndarray, *, k: int) -> np.ndarray:
    """Indices of the k largest predicted losses, largest first. predicted_loss: (N,)."""
    losses = np.asarray(predicted_loss, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError(f"predicted_loss must have shape (N,), got {losses.shape}")
    if not np.isfinite(losses).all():
        raise ValueError("predicted_loss contains NaN or infinity")
    return _top_k_descending(losses, k)


def union(*index_arrays: np.ndarray, k: int | None = None) -> np.ndarray:
    """Merge ranked index lists round-robin (first of each, then second of each, ...), dropping
    repeats, optionally cut to ``k``. The result has no duplicates and, under a budget, takes
    items from every list in turn so no list starves."""
    if k is not None:
        _check_k(k)
    lists = [np.asarray(a, dtype=np.int64).ravel() for a in index_arrays]
    seen: set[int] = set()
    merged: list[int] = []
    longest = max((len(a) for a in lists), default=0)
    for position in range(longest):
        for ranked in lists:
            if position < len(ranked):
                index = int(ranked[position])
                if index not in seen:
                    seen.add(index)
                    merged.append(index)
                    if k is not None and len(merged) == k:
                        return np.asarray(merged, dtype=np.int64)
    return np.asarray(merged, dtype=np.int64)


def random_sample(n: int, *, k: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """k distinct indices from ``range(n)`` (minus ``exclude``) drawn with ``seed``; fewer when
    fewer remain."""
    _check_k(k)
    candidates = np.flatnonzero(_exclusion_mask(n, exclude))
    rng = np.random.default_rng(seed)
    return rng.permutation(candidates)[:k].astype(np.int64)


def entropy_top_k(probs: np.ndarray, *, k: int) -> np.ndarray:
    """Indices of the k highest predictive entropies, highest first. probs: (N,) or (N, C)."""
    return _top_k_descending(_entropy(_as_class_probs(probs)), k)


def margin_top_k(probs: np.ndarray, *, k: int) -> np.ndarray:
    """Indices of the k smallest margins between the two most likely classes, smallest first.
    probs: (N,) or (N, C)."""
    return _top_k_descending(-_margin(_as_class_probs(probs)), k)


def _entropy(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(clipped)).sum(axis=1)


def _margin(p: np.ndarray) -> np.ndarray:
    top_two = np.sort(p, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def _positive_column(p_pos: np.ndarray, positive_index: int) -> np.ndarray:
    p = np.asarray(p_pos, dtype=np.float64)
    return p[:, positive_index] if p.ndim == 2 else p


def _filtered(ranked: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    return ranked[allowed[ranked]][:k]


def _require(name: str, value: Any, strategy: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"strategy {strategy!r} needs {name}")
    return np.asarray(value)


def _select_random(
    k: int, p_pos: Any, predicted_loss: Any, seed: int, allowed: np.ndarray, options: dict[str, Any]
) -> tuple[np.ndarray, list[str]]:
    chosen = random_sample(allowed.shape[0], k=k, seed=seed, exclude=np.flatnonzero(~allowed))
    return chosen, ["random"] * len(chosen)


def _select_entropy(
    k: int, p_pos: Any, predicted_loss: Any, seed: int, allowed: np.ndarray, options: dict[str, Any]
) -> tuple[np.ndarray, list[str]]:
    probs = _as_class_probs(_require("p_pos", p_pos, "entropy"))
    entropy = _entropy(probs)
    chosen = _filtered(_top_k_descending(entropy, len(entropy)), allowed, k)
    return chosen, [f"entropy={entropy[i]:.3f}" for i in chosen]


def _select_margin(
    k: int, p_pos: Any, predicted_loss: Any, seed: int, allowed: np.ndarray, options: dict[str, Any]
) -> tuple[np.ndarray, list[str]]:
    probs = _as_class_probs(_require("p_pos", p_pos, "margin"))
    margin = _margin(probs)
    chosen = _filtered(_top_k_descending(-margin, len(margin)), allowed, k)
    return chosen, [f"margin={margin[i]:.3f}" for i in chosen]


def _band_reasons(p: np.ndarray, chosen: np.ndarray, high: float) -> list[str]:
    return [f"{'high' if p[i] >= high else 'band'} p={p[i]:.3f}" for i in chosen]


def _band_options(options: dict[str, Any]) -> tuple[float, tuple[float, float], int]:
    return (
        float(options.get("high", 0.9)),
        tuple(options.get("band", (0.3, 0.6))),  # type: ignore[return-value]
        int(options.get("positive_index", 1)),
    )


def _select_band(
    k: int, p_pos: Any, predicted_loss: Any, seed: int, allowed: np.ndarray, options: dict[str, Any]
) -> tuple[np.ndarray, list[str]]:
    high, band, positive_index = _band_options(options)
    p = _positive_column(_require("p_pos", p_pos, "confidence_band"), positive_index)
    ranked = confidence_band(p, high=high, band=band)
    chosen = _filtered(ranked, allowed, k)
    return chosen, _band_reasons(p, chosen, high)


def _select_loss(
    k: int, p_pos: Any, predicted_loss: Any, seed: int, allowed: np.ndarray, options: dict[str, Any]
) -> tuple[np.ndarray, list[str]]:
    losses = np.asarray(_require("predicted_loss", predicted_loss, "loss"), dtype=np.float64)
    chosen = _filtered(loss_top_k(losses, k=len(losses)), allowed, k)
    return chosen, [f"predicted loss={losses[i]:.3f}" for i in chosen]


def _select_band_union_loss(
    k: int, p_pos: Any, predicted_loss: Any, seed: int, allowed: np.ndarray, options: dict[str, Any]
) -> tuple[np.ndarray, list[str]]:
    high, band, positive_index = _band_options(options)
    p = _positive_column(_require("p_pos", p_pos, "band_union_loss"), positive_index)
    losses = np.asarray(
        _require("predicted_loss", predicted_loss, "band_union_loss"), dtype=np.float64
    )
    if losses.shape != p.shape:
        raise ValueError(f"p_pos has {p.shape[0]} items but predicted_loss has {losses.shape[0]}")
    band_ranked = _filtered(confidence_band(p, high=high, band=band), allowed, len(p))
    loss_ranked = _filtered(loss_top_k(losses, k=len(losses)), allowed, len(p))
    chosen = union(band_ranked, loss_ranked, k=k)
    in_band = set(band_ranked.tolist())
    reasons = [
        _band_reasons(p, np.asarray([i]), high)[0]
        if int(i) in in_band
        else f"predicted loss={losses[i]:.3f}"
        for i in chosen
    ]
    return chosen, reasons


_Strategy = Callable[[int, Any, Any, int, np.ndarray, dict[str, Any]], tuple[np.ndarray, list[str]]]

STRATEGIES: dict[str, _Strategy] = {
    "random": _select_random,
    "entropy": _select_entropy,
    "margin": _select_margin,
    "confidence_band": _select_band,
    "loss": _select_loss,
    "band_union_loss": _select_band_union_loss,
}


def select(
    strategy: str,
    *,
    k: int,
    p_pos: np.ndarray | None = None,
    predicted_loss: np.ndarray | None = None,
    seed: int = 0,
    exclude: np.ndarray | None = None,
    n: int | None = None,
    **options: Any,
) -> Selection:
    """Pick up to ``k`` items with the strategy named by ``strategy`` (a key of STRATEGIES).

    p_pos: (N,) or (N, C) probabilities (entropy, margin, confidence_band, band_union_loss).
    predicted_loss: (N,) LP outputs (loss, band_union_loss). ``n`` is the pool size for
    "random" when neither array is given. exclude: indices that must not be picked (already
    labeled). options: ``high``, ``band``, ``positive_index`` for the band strategies.
    The confidence-band strategies may return fewer than ``k`` items: only items inside the
    thresholds qualify.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    _check_k(k)
    sizes = {len(np.asarray(a)) for a in (p_pos, predicted_loss) if a is not None}
    if n is not None:
        sizes.add(n)
    if len(sizes) != 1:
        raise ValueError(
            "give p_pos, predicted_loss or n, with one common number of items"
            if not sizes
            else f"p_pos, predicted_loss and n disagree on the number of items: {sorted(sizes)}"
        )
    allowed = _exclusion_mask(sizes.pop(), exclude)
    chosen, reasons = STRATEGIES[strategy](k, p_pos, predicted_loss, seed, allowed, options)
    return Selection(
        indices=np.asarray(chosen, dtype=np.int64),
        strategy=strategy,
        per_item_reason=tuple(reasons),
    )
