"""Active-learning selection: which recalled images to send to annotators first.

METHOD.md's loop ("The iteration loop", *Active learning*) combines two selectors and labels
their union:

1. Confidence selection (:func:`confidence_band`): items the model is very sure are positive
   (the "high" group; its mistakes there are the costly false positives) and items in an
   uncertain band (where missed positives hide). METHOD.md says only that "the thresholds are
   tuned per situation".
2. Loss prediction (Yoo & Kweon, "Learning Loss for Active Learning", CVPR 2019): rank the
   unlabeled items by the loss the LP module predicts for them (:func:`loss_top_k`).

:func:`union` merges the two lists by interleaving them, so a long band list cannot crowd out
the LP picks when the union is cut to a budget. The classic baselines (random, entropy and
margin uncertainty sampling) are here too, for the benchmark.

**Band thresholds relative to the score distribution (the default, ``mode="quantile"``).**
Fixed probability thresholds (``p >= 0.9``, ``0.3 <= p <= 0.6``) are how the method is usually
written down, but at a rare prevalence (below 1%) an early model puts almost every image far
below 0.3, and the two groups hold a handful of items: the round was then filled at random by
accident (issue 7). "Tuned per situation" is what the quantile mode does for every round: the
thresholds are quantiles of the positive scores of the *candidate pool* (the items that may be
selected):

- ``high``: the top ``high_share`` of the candidates' scores (e.g. the top 1%);
- the uncertain band: ``band_share`` of the candidates whose scores lie between two quantiles
  around ``band_center`` (a calibrated probability; 0.5 is where a calibrated model is least
  sure), i.e. the window of ranks centred on the rank where the score crosses ``band_center``,
  slid down when it would overlap the high group. At a rare prevalence 0.5 usually sits inside
  the top 1%, so the band becomes the next scores below the high group: the likeliest missed
  positives. Within the band, the item nearest ``band_center`` comes first.
- Given a budget ``k``, the band grows to ``k - |high|`` items when its share is smaller, so a
  round selects exactly ``min(k, candidates)`` items and is never padded at random.

Quantiles are invariant to any increasing map of the scores (temperature scaling is one), so
the selected *set* does not depend on calibration, except through where ``band_center`` falls;
:class:`BandThresholds` reports the edges in probability terms for the job's record. The edges
are empirical quantiles taken by rank (ties broken by index), so the group sizes are exact
counts even when many scores tie. ``mode="absolute"`` keeps the fixed thresholds (``high``,
``band``) for comparison; there the band may select fewer than ``k``.

Every function returns dataset indices sorted by priority, most informative first. Inputs are
``probs``: positive-class probabilities of shape (N,) or class probabilities of shape (N, C).
Departure from the paper: METHOD.md takes the LP top 25% of the *recalled* images; here ``k``
is an absolute count and the caller decides the fraction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BAND_MODES",
    "RULE_BAND",
    "RULE_HIGH",
    "RULE_LOSS",
    "STRATEGIES",
    "RoundSizes",
    "BandConfig",
    "BandRanking",
    "BandThresholds",
    "Selection",
    "confidence_band",
    "entropy_top_k",
    "loss_top_k",
    "margin_top_k",
    "random_sample",
    "round_sizes",
    "select",
    "union",
]

BAND_MODES = ("quantile", "absolute")

# Which rule chose an item (Selection.per_item_rule); the service counts them per job.
RULE_HIGH = "high_score"
RULE_BAND = "uncertain_band"
RULE_LOSS = "loss_top_k"

# Shares are products of user input and pool sizes: 0.07 * 100 is 7.000000000000001 in floats,
# which must stay 7 items, not round up to 8.
_SHARE_EPSILON = 1e-9


@dataclass(frozen=True)
class BandConfig:
    """How :func:`confidence_band` draws its two groups (see the module docstring).

    mode: "quantile" (default) or "absolute".
    Quantile mode: ``high_share`` in [0, 1], the top share of the candidates' scores that is
    "high"; ``band_share`` in [0, 1], the share of the candidates in the uncertain band (grown
    to fill a budget ``k``); ``band_center`` in [0, 1], the probability the band is centred on.
    Absolute mode: ``high`` and ``band`` = (low, high) are probabilities, as in METHOD.md.
    """

    mode: str = "quantile"
    high_share: float = 0.01
    band_share: float = 0.10
    band_center: float = 0.5
    high: float = 0.9
    band: tuple[float, float] = (0.3, 0.6)

    def __post_init__(self) -> None:
        if self.mode not in BAND_MODES:
            raise ValueError(f"mode must be one of {BAND_MODES}, got {self.mode!r}")
        for name in ("high_share", "band_share", "band_center", "high"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        low_edge, high_edge = self.band
        if not 0.0 <= low_edge <= high_edge <= 1.0:
            raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {self.band}")


@dataclass(frozen=True)
class BandThresholds:
    """The thresholds a band selection used, in probability terms.

    ``high``: the lowest score in the high group (None when it is empty in quantile mode);
    ``band``: (lowest, highest) score in the uncertain band (None when empty, quantile mode).
    In absolute mode both are the configured values. ``n_candidates``: items that could be
    selected; ``n_high`` / ``n_band``: the groups' sizes; ``high_share`` / ``band_share``: those
    sizes as fractions of the candidates (what the absolute thresholds amounted to).
    """

    mode: str
    high: float | None
    band: tuple[float, float] | None
    n_candidates: int
    n_high: int
    n_band: int
    high_share: float
    band_share: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (a job's result)."""
        return {
            "mode": self.mode,
            "high": self.high,
            "band": list(self.band) if self.band is not None else None,
            "candidates": self.n_candidates,
            "n_high": self.n_high,
            "n_band": self.n_band,
            "high_share": self.high_share,
            "band_share": self.band_share,
        }


@dataclass(frozen=True)
class BandRanking:
    """:func:`confidence_band`'s answer: ``indices`` (M,) by priority (high and band groups
    interleaved), ``is_high`` (M,) True where the item is in the high group, the
    ``thresholds`` used, and the ``function`` that ranked (recorded by jobs and benchmarks)."""

    indices: np.ndarray
    is_high: np.ndarray
    thresholds: BandThresholds
    function: str = "mlcore.selection.confidence_band"

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass(frozen=True)
class Selection:
    """A selection: ``indices`` (k,) most informative first, the ``strategy`` key that made it,
    ``per_item_reason`` (k,) a short human-readable reason per item (shown to engineers),
    ``per_item_rule`` (k,) a machine key per item (RULE_HIGH, RULE_BAND, RULE_LOSS, or the
    strategy name) and, for the band strategies, the ``band_thresholds`` used."""

    indices: np.ndarray
    strategy: str
    per_item_reason: tuple[str, ...]
    per_item_rule: tuple[str, ...] = ()
    band_thresholds: BandThresholds | None = None

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


def _positive_scores(p_pos: np.ndarray, positive_index: int) -> np.ndarray:
    """(N,) positive-class probabilities from (N,) or (N, C), validated."""
    p = np.asarray(p_pos, dtype=np.float64)
    if p.ndim == 2:
        p = p[:, positive_index]
    if p.ndim != 1:
        raise ValueError(f"p_pos must have shape (N,) or (N, C), got {p.shape}")
    if not np.isfinite(p).all() or (p < -1e-6).any() or (p > 1 + 1e-6).any():
        raise ValueError("p_pos must be finite probabilities in [0, 1]")
    return p


def _share_count(share: float, n: int) -> int:
    return min(n, math.ceil(share * n - _SHARE_EPSILON))


def _descending(p: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return indices[np.argsort(-p[indices], kind="stable")]


def _absolute_groups(
    p: np.ndarray, candidates: np.ndarray, config: BandConfig
) -> tuple[np.ndarray, np.ndarray]:
    low_edge, high_edge = config.band
    scores = p[candidates]
    confident = _descending(p, candidates[scores >= config.high])
    in_band = candidates[(scores >= low_edge) & (scores <= high_edge) & (scores < config.high)]
    return confident, _descending(p, in_band)


def _quantile_groups(
    p: np.ndarray, candidates: np.ndarray, config: BandConfig, k: int | None
) -> tuple[np.ndarray, np.ndarray]:
    ranked = _descending(p, candidates)
    n = len(ranked)
    n_high = _share_count(config.high_share, n)
    confident, rest = ranked[:n_high], ranked[n_high:]
    n_band = _share_count(config.band_share, n)
    if k is not None:
        n_band = max(n_band, k - n_high)
    n_band = min(n_band, len(rest))
    # Where band_center falls among the remaining (descending) scores: the count above it.
    centre = int(np.searchsorted(-p[rest], -config.band_center, side="left"))
    start = min(max(centre - n_band // 2, 0), len(rest) - n_band)
    in_band = rest[start : start + n_band]
    # Nearest the centre first: the model is least sure there.
    in_band = in_band[np.argsort(np.abs(p[in_band] - config.band_center), kind="stable")]
    return confident, in_band


def confidence_band(
    p_pos: np.ndarray,
    *,
    config: BandConfig | None = None,
    k: int | None = None,
    exclude: np.ndarray | None = None,
    positive_index: int = 1,
) -> BandRanking:
    """METHOD.md's confidence selection: the high group and the uncertain band, interleaved.

    p_pos: (N,) positive-class probabilities, or (N, C) probabilities whose column
    ``positive_index`` is the positive class. config: :class:`BandConfig` (default: quantile
    mode, top 1% high, 10% band centred on 0.5). k: the round's budget; in quantile mode the
    band grows so that ``len(result) >= min(k, candidates)``. exclude: indices never selected
    (already labeled); quantiles are taken over the remaining candidates only.
    Priority: the two groups are interleaved (one high item, one band item, ...) so a budget
    cut keeps both; high items go most confident first; band items nearest ``band_center``
    first (quantile mode) or from the top of the band down (absolute mode).
    """
    config = config or BandConfig()
    if k is not None:
        _check_k(k)
    p = _positive_scores(p_pos, positive_index)
    candidates = np.flatnonzero(_exclusion_mask(len(p), exclude))
    if config.mode == "absolute":
        confident, in_band = _absolute_groups(p, candidates, config)
        high: float | None = config.high
        band: tuple[float, float] | None = config.band
    else:
        confident, in_band = _quantile_groups(p, candidates, config, k)
        high = float(p[confident].min()) if len(confident) else None
        band = (float(p[in_band].min()), float(p[in_band].max())) if len(in_band) else None
    n = len(candidates)
    thresholds = BandThresholds(
        mode=config.mode,
        high=high,
        band=band,
        n_candidates=n,
        n_high=len(confident),
        n_band=len(in_band),
        high_share=len(confident) / n if n else 0.0,
        band_share=len(in_band) / n if n else 0.0,
    )
    indices = union(confident, in_band)
    high_set = set(confident.tolist())
    return BandRanking(
        indices=indices,
        is_high=np.asarray([int(i) in high_set for i in indices], dtype=bool),
        thresholds=thresholds,
    )


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


def _filtered(ranked: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    return ranked[allowed[ranked]][:k]


def _require(name: str, value: Any, strategy: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"strategy {strategy!r} needs {name}")
    return np.asarray(value)


@dataclass(frozen=True)
class _Request:
    """What every strategy may read; each reads only its own inputs."""

    k: int
    p_pos: Any
    predicted_loss: Any
    seed: int
    allowed: np.ndarray
    band_config: BandConfig
    positive_index: int


_Picked = tuple[np.ndarray, list[str], list[str], BandThresholds | None]


def _select_random(request: _Request) -> _Picked:
    allowed = request.allowed
    chosen = random_sample(
        allowed.shape[0], k=request.k, seed=request.seed, exclude=np.flatnonzero(~allowed)
    )
    return chosen, ["random"] * len(chosen), ["random"] * len(chosen), None


def _select_entropy(request: _Request) -> _Picked:
    entropy = _entropy(_as_class_probs(_require("p_pos", request.p_pos, "entropy")))
    chosen = _filtered(_top_k_descending(entropy, len(entropy)), request.allowed, request.k)
    return chosen, [f"entropy={entropy[i]:.3f}" for i in chosen], ["entropy"] * len(chosen), None


def _select_margin(request: _Request) -> _Picked:
    margin = _margin(_as_class_probs(_require("p_pos", request.p_pos, "margin")))
    chosen = _filtered(_top_k_descending(-margin, len(margin)), request.allowed, request.k)
    return chosen, [f"margin={margin[i]:.3f}" for i in chosen], ["margin"] * len(chosen), None


def _band_reason(p: float, is_high: bool, config: BandConfig) -> str:
    if not is_high:
        return f"uncertain band, p={p:.3f}"
    if config.mode == "quantile":
        return f"high score (top {config.high_share * 100:.3g}%), p={p:.3f}"
    return f"high score (p >= {config.high:g}), p={p:.3f}"


def _band(request: _Request, strategy: str) -> tuple[np.ndarray, BandRanking]:
    p = _positive_scores(_require("p_pos", request.p_pos, strategy), request.positive_index)
    ranking = confidence_band(
        p, config=request.band_config, k=request.k, exclude=np.flatnonzero(~request.allowed)
    )
    return p, ranking


def _select_band(request: _Request) -> _Picked:
    p, ranking = _band(request, "confidence_band")
    chosen, is_high = ranking.indices[: request.k], ranking.is_high[: request.k]
    reasons = [_band_reason(p[i], h, request.band_config) for i, h in zip(chosen, is_high)]
    rules = [RULE_HIGH if h else RULE_BAND for h in is_high]
    return chosen, reasons, rules, ranking.thresholds


def _select_loss(request: _Request) -> _Picked:
    losses = np.asarray(_require("predicted_loss", request.predicted_loss, "loss"), dtype=float)
    chosen = _filtered(loss_top_k(losses, k=len(losses)), request.allowed, request.k)
    reasons = [f"predicted loss={losses[i]:.3f}" for i in chosen]
    return chosen, reasons, [RULE_LOSS] * len(chosen), None


def _select_band_union_loss(request: _Request) -> _Picked:
    losses = np.asarray(
        _require("predicted_loss", request.predicted_loss, "band_union_loss"), dtype=np.float64
    )
    p, ranking = _band(request, "band_union_loss")
    if losses.shape != p.shape:
        raise ValueError(f"p_pos has {p.shape[0]} items but predicted_loss has {losses.shape[0]}")
    loss_ranked = _filtered(loss_top_k(losses, k=len(losses)), request.allowed, len(p))
    chosen = union(ranking.indices, loss_ranked, k=request.k)
    high_of = dict(zip(ranking.indices.tolist(), ranking.is_high.tolist(), strict=True))
    reasons, rules = [], []
    for i in chosen.tolist():
        if i in high_of:
            reasons.append(_band_reason(p[i], high_of[i], request.band_config))
            rules.append(RULE_HIGH if high_of[i] else RULE_BAND)
        else:
            reasons.append(f"predicted loss={losses[i]:.3f}")
            rules.append(RULE_LOSS)
    return chosen, reasons, rules, ranking.thresholds


STRATEGIES: dict[str, Callable[[_Request], _Picked]] = {
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
    band_config: BandConfig | None = None,
    positive_index: int = 1,
) -> Selection:
    """Pick up to ``k`` items with the strategy named by ``strategy`` (a key of STRATEGIES).

    p_pos: (N,) or (N, C) probabilities (entropy, margin, confidence_band, band_union_loss).
    predicted_loss: (N,) LP outputs (loss, band_union_loss). ``n`` is the pool size for
    "random" when neither array is given. exclude: indices that must not be picked (already
    labeled). band_config: the band strategies' :class:`BandConfig` (default quantile mode);
    positive_index: the positive column of an (N, C) ``p_pos``.
    Every strategy returns ``min(k, candidates)`` items, except the band strategies in
    absolute mode, where only items inside the fixed thresholds qualify.
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
    request = _Request(
        k=k,
        p_pos=p_pos,
        predicted_loss=predicted_loss,
        seed=seed,
        allowed=_exclusion_mask(sizes.pop(), exclude),
        band_config=band_config or BandConfig(),
        positive_index=positive_index,
    )
    chosen, reasons, rules, thresholds = STRATEGIES[strategy](request)
    return Selection(
        indices=np.asarray(chosen, dtype=np.int64),
        strategy=strategy,
        per_item_reason=tuple(reasons),
        per_item_rule=tuple(rules),
        band_thresholds=thresholds,
    )


# --------------------------------------------------------------------------------------------
# How much one round takes
# --------------------------------------------------------------------------------------------

# With no labeling history, an automatic round takes this many ranked images (the old fixed
# default, 200 band + 200 loss), always within the round's share of the pool.
AUTO_ROUND_DEFAULT = 400
# An automatic round is never smaller than this (when the pool's share allows it): a round of
# three images is not worth a scoring pass.
AUTO_ROUND_MIN = 20


@dataclass(frozen=True)
class RoundSizes:
    """What one selection round takes from ``eligible`` unlabeled images: at most ``cap`` in all
    (``max_share`` of them): at most ``ranked_max`` ranked images (band top-``k_band`` ∪ loss
    top-``k_loss``, trimmed to their most informative ``ranked_max``) plus the random audit
    (:meth:`audit_for` the ranked count); ``rule`` says in words how the sizes were reached."""

    eligible: int
    cap: int
    k_band: int
    k_loss: int
    ranked_max: int
    max_share: float
    audit_share: float
    rule: str
    automatic: bool = False
    daily_rate: float | None = None
    capped: bool = False

    def audit_for(self, ranked: int) -> int:
        """The audit beside ``ranked`` ranked images: ``audit_share`` of them, at least one
        when the share is above 0 (an unbiased sample must never silently empty), within the
        cap."""
        return min(max(0, self.cap - ranked), _audit_size(ranked, self.audit_share))

    @property
    def ranked(self) -> int:
        """The most ranked images the round queues (band and loss may overlap: fewer)."""
        return min(self.k_band + self.k_loss, self.ranked_max)

    @property
    def audit(self) -> int:
        return self.audit_for(self.ranked)

    @property
    def total(self) -> int:
        """The most the round queues, audit included; never above ``cap``."""
        return self.ranked + self.audit


def _audit_size(ranked: int, audit_share: float) -> int:
    if audit_share <= 0:
        return 0
    return max(1, math.ceil(audit_share * ranked - _SHARE_EPSILON))


def round_sizes(
    eligible: int,
    *,
    max_share: float,
    audit_share: float,
    k_band: int | None = None,
    k_loss: int | None = None,
    daily_rate: float | None = None,
) -> RoundSizes:
    """The sizes of one round, scaled to the pool.

    - The round never takes more than ``cap = floor(max_share * eligible)`` images (at least one
      when anything is eligible), the audit included: the ranked images are trimmed to the
      largest count ``ranked_max`` that leaves room for their audit.
    - The random audit takes ``audit_share`` of the ranked count, and at least one image
      whenever ``audit_share > 0`` (and the cap leaves room for it).
    - Fixed sizes: ``k_band`` and ``k_loss`` as given. Automatic sizes (both None): about one
      day of the project's labeling (``daily_rate`` labels per day; :data:`AUTO_ROUND_DEFAULT`
      with no history), at least :data:`AUTO_ROUND_MIN`, within the cap, split evenly between
      band and loss.
    """
    if eligible < 0:
        raise ValueError(f"eligible must be >= 0, got {eligible}")
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")
    if not 0.0 <= audit_share <= 1.0:
        raise ValueError(f"audit_share must be in [0, 1], got {audit_share}")
    if (k_band is None) != (k_loss is None):
        raise ValueError("give both k_band and k_loss, or neither (automatic sizes)")
    cap = min(eligible, max(1, math.floor(max_share * eligible + _SHARE_EPSILON)))
    # The largest r with r + audit(r) <= cap: start from the closed form, step down the rest.
    ranked_max = min(cap, math.floor(cap / (1.0 + audit_share)) + 1)
    while ranked_max > 0 and ranked_max + _audit_size(ranked_max, audit_share) > cap:
        ranked_max -= 1
    if k_band is None:
        wanted = AUTO_ROUND_DEFAULT if not daily_rate else math.ceil(daily_rate)
        wanted = max(AUTO_ROUND_MIN, wanted)
        capped = wanted > ranked_max
        wanted = min(wanted, ranked_max)
        band, loss = wanted - wanted // 2, wanted // 2
        how = (
            f"automatic: about one day of labeling ({daily_rate:.0f} labels/day)"
            if daily_rate
            else f"automatic: {AUTO_ROUND_DEFAULT} ranked images (no labeling history yet)"
        )
    else:
        band, loss = int(k_band), int(k_loss)
        capped = band + loss > ranked_max
        how = f"fixed: band top-{band} + loss top-{loss}"
    if capped:
        how += (
            f"; capped at {max_share:g} of {eligible} eligible images: {cap} in all, "
            f"at most {ranked_max} ranked"
        )
    return RoundSizes(
        eligible=int(eligible),
        cap=int(cap),
        k_band=int(band),
        k_loss=int(loss),
        ranked_max=int(ranked_max),
        max_share=float(max_share),
        audit_share=float(audit_share),
        rule=how,
        automatic=k_band is None,
        daily_rate=float(daily_rate) if daily_rate else None,
        capped=bool(capped),
    )
