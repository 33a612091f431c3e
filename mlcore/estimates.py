"""How good is the model on the whole pool: an audit sample stratified by score, and unbiased
estimates of prevalence, precision and recall with intervals.

Labels the loop collects are chosen by the model (confidence band, loss ranking, recall), so no
metric computed from them says anything about the pool. An *audit* is a probability sample of
the pool whose inclusion probabilities are known; only its labels enter the estimates, each
weighted by the inverse of its inclusion probability (Horvitz & Thompson, "A generalization of
sampling without replacement from a finite universe", JASA 1952). Plain random sampling works
but wastes labels when positives are rarer than one in a thousand, so the design stratifies by
the audited model's score and spends labels where the uncertainty is (Neyman, "On the two
different aspects of the representative method", JRSS 1934; Cochran, *Sampling Techniques*,
3rd ed., ch. 5), the standard design of recall estimation in document review (Webber,
"Approximate recall confidence intervals", ACM TOIS 2013).

The design, step by step (docs/estimates.md says the same in words, with the assumptions):

1. :func:`score_strata` cuts the pool into ``H`` strata by the model's score: boundaries at
   equal shares of ``sum sqrt(s (1 - s))`` over the sorted scores (the "equal N_h S_h" rule
   with the score standing in for the unknown positive rate), plus every decision threshold
   given, so a stratum never straddles a threshold.
2. :func:`audit_allocation` says how many labels each stratum should hold after the next batch:
   Neyman's ``n_h ∝ N_h S_h`` where ``S_h`` is the standard deviation, within the stratum, of
   the item's contribution to the targets (prevalence, precision, recall), computed from the
   stratum's positive rate as known so far (:func:`stratum_rates`: the audit labels, shrunk
   towards the model's mean score while there are few; in the strata called positive, the
   posterior's expected variance, :func:`stratum_variances`, so that a confident model cannot
   starve them). Strata already holding more keep them.
3. :func:`audit_draw` draws the missing labels in each stratum uniformly without replacement.
   Within a stratum every item had the same chance, so when the labels are in, an item of
   stratum ``h`` stands for ``N_h / n_h`` items (its inverse inclusion probability).
4. :func:`estimate_pool` gives the stratified Horvitz-Thompson point estimates and intervals.

Intervals. The textbook (Wald) variance of a stratified estimate is zero in every stratum where
no positive was seen, which is most strata when positives are rare, and a zero-width interval
around a rare count covers badly. Instead each interval is the equal-tailed posterior interval
of a finite-population model: in each cell (a stratum, split by the decision when a decision
does not follow stratum lines) the positive rate has a Beta posterior from the cell's audit
labels (prior ``Beta(a, b)``, default :data:`DEFAULT_PRIOR`), the unlabeled items of the cell
hold a Binomial number of positives given that rate (together a beta-binomial), and prevalence,
precision and recall are computed on each joint draw of the pool's counts. The distributions
are scipy's (``scipy.stats.beta``, ``scipy.stats.binom``, ``scipy.stats.norm``). Point
estimates are the Horvitz-Thompson ones, which do not depend on the prior; the interval is
widened to contain the point estimate if the prior pulled it away (it can only when a stratum
saw no positive). Whether the intervals cover is a question for simulation, not for belief:
``python -m bench estimates`` checks it on Fashion-MNIST with a known truth.

Departures from the textbook design: the allocation is updated as labels arrive (sequential
Neyman allocation), so the final ``n_h`` depend on labels already seen; given the ``n_h``, each
stratum's sample is still a uniform draw, and the estimates treat the ``n_h`` as fixed, as is
usual. The prior was chosen in the simulation described in docs/estimates.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DECISION_OFFSET",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_PRIOR",
    "DEFAULT_STRATA",
    "POSITIVE_CELL_PRIOR",
    "TARGETS",
    "DecisionEstimate",
    "Interval",
    "PoolEstimate",
    "Strata",
    "TriageError",
    "YieldForecast",
    "assign_strata",
    "audit_allocation",
    "audit_draw",
    "estimate_pool",
    "exact_rate_interval",
    "labels_for_width",
    "labels_to_find",
    "labels_until_bound",
    "neyman_allocation",
    "score_strata",
    "strata_from_edges",
    "stratum_key",
    "stratum_rates",
    "stratum_variances",
    "triage_error",
    "triage_verdict",
]

DEFAULT_STRATA = 8
DEFAULT_CONFIDENCE = 0.95
# Beta prior of a cell's positive rate. Jeffreys' Beta(1/2, 1/2) puts half a phantom positive
# in every cell, which in a stratum of 40,000 items with 300 negative audit labels is dozens of
# positives that are not there (docs/estimates.md); a prior mean near zero does not.
DEFAULT_PRIOR: tuple[float, float] = (0.05, 1.0)
DEFAULT_DRAWS = 4000
# The prior of a cell the decision calls positive (docs/estimates.md, "The prior"): such cells
# are small and densely labeled, so Jeffreys' half phantom negative costs little, while
# DEFAULT_PRIOR's whole phantom negative against a few all-positive labels put the precision
# interval below a truth near 1.
POSITIVE_CELL_PRIOR: tuple[float, float] = (0.5, 0.5)
# Added to the scores (in [0, 1]) of the items a decision calls positive, in strata split by it.
DECISION_OFFSET = 2.0
# Audit labels a stratum's observed rate weighs as much as its mean score, in stratum_rates.
PRIOR_LABELS = 4.0
# The scores sqrt(s (1 - s)) never falls below, so a stratum of near-zero scores is not ignored.
MIN_SD_SCORE = 1e-3
# The share of the called negatives in the top stratum when they are cut by rank on a second
# opinion (score_strata's negatives_by); each stratum below is twice as large. Chosen on the
# estimates benchmark's seed-0 model among 0.01, 0.005, 0.0025 and 0.001 (docs/estimates.md).
RANKED_TOP_SHARE = 0.0025
# What the audit's allocation minimises: the variance of each target, or their normalised mix.
TARGETS = ("prevalence", "precision", "recall", "balanced")


# --------------------------------------------------------------------------------------------
# Strata
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strata:
    """A partition of the pool by score.

    ``edges`` (H + 1,) ascending; stratum h holds the keys in ``[edges[h], edges[h + 1])``
    (the first starts at -inf, the last ends at +inf). The key is the score itself, or, for
    strata split by a decision, :func:`stratum_key` (the score, shifted by
    :data:`DECISION_OFFSET` for the items the decision calls positive). ``index`` (N,) the
    stratum of each pool item; ``sizes`` (H,) items per stratum; ``mean_scores`` (H,) the
    model's mean score (never the key) in each.
    """

    edges: np.ndarray
    index: np.ndarray
    sizes: np.ndarray
    mean_scores: np.ndarray

    @property
    def count(self) -> int:
        return int(len(self.sizes))

    @property
    def pool_size(self) -> int:
        return int(self.sizes.sum())


def _scores(scores: np.ndarray | Sequence[float]) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinity")
    return values


def stratum_key(
    scores: np.ndarray | Sequence[float],
    decision: np.ndarray | None,
    negatives_by: np.ndarray | Sequence[float] | None = None,
) -> np.ndarray:
    """What strata cut: the scores, or with a ``decision`` (N,) bool, the scores of the items it
    calls positive shifted by :data:`DECISION_OFFSET`, so every item called positive sorts above
    every item called negative and a boundary at the offset separates them. Needed when the
    decision is not a threshold on the score (the cascade's AND of two stages, ranked by the
    smaller of the two): cut points on the score alone would leave images called positive in
    strata of negatives, where a few audit labels say little about the cascade's precision.
    With a decision, scores must lie in [0, 1].

    ``negatives_by`` (N,) in [0, 1], with a decision only: the items it calls negative are keyed
    by these values instead of their scores (:func:`score_strata`)."""
    values = _scores(scores)
    if decision is None:
        if negatives_by is not None:
            raise ValueError("negatives_by needs a decision")
        return values
    called = _decision(decision, len(values), "decision")
    if values.min() < 0.0 or values.max() > 1.0:
        raise ValueError("strata split by a decision need scores in [0, 1]")
    if negatives_by is not None:
        other = _scores(negatives_by)
        if other.shape != values.shape:
            raise ValueError(f"negatives_by must have shape {values.shape}, got {other.shape}")
        if other.min() < 0.0 or other.max() > 1.0:
            raise ValueError("negatives_by must lie in [0, 1]")
        values = np.where(called, values, other)
    return values + DECISION_OFFSET * called


def assign_strata(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N,) stratum of each score under ``edges`` (H + 1,): h with edges[h] <= s < edges[h+1]."""
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    return np.searchsorted(inner, _scores(scores), side="right").astype(np.int64)


def strata_from_edges(
    scores: np.ndarray | Sequence[float],
    edges: np.ndarray,
    *,
    decision: np.ndarray | None = None,
    negatives_by: np.ndarray | Sequence[float] | None = None,
) -> Strata:
    """The :class:`Strata` of ``scores`` (N,) under boundaries ``edges`` (H + 1,) kept from an
    earlier :func:`score_strata` (an audit continued with more labels keeps its strata); pass
    the same ``decision`` and ``negatives_by`` as then."""
    scores = _scores(scores)
    edges = np.asarray(edges, dtype=np.float64)
    index = assign_strata(stratum_key(scores, decision, negatives_by), edges)
    count = len(edges) - 1
    sizes = np.bincount(index, minlength=count)
    sums = np.bincount(index, weights=scores, minlength=count)
    return Strata(
        edges=edges,
        index=index,
        sizes=sizes.astype(np.int64),
        mean_scores=np.divide(sums, sizes, out=np.zeros(count), where=sizes > 0),
    )


def score_strata(
    scores: np.ndarray | Sequence[float],
    *,
    n_strata: int = DEFAULT_STRATA,
    cut_points: Sequence[float] = (),
    min_size: int = 10,
    decision: np.ndarray | None = None,
    negatives_by: np.ndarray | Sequence[float] | None = None,
) -> Strata:
    """Strata of the pool from the model's scores (N,) (larger = more likely positive).

    Boundaries split the sorted scores into ``n_strata`` parts of equal ``sum sqrt(s (1 - s))``
    (scores clipped to [0, 1] for this sum, its terms to at least :data:`MIN_SD_SCORE`), then
    each value of ``cut_points`` (decision thresholds) is added as a boundary, so the items a
    decision calls positive never share a stratum with the ones it calls negative. Strata with
    fewer than ``min_size`` items are merged into a neighbour (never across a cut point unless
    the small stratum has no other neighbour). Ties stay together, so there may be fewer strata
    than asked. ``n_strata=1`` gives plain random sampling.

    ``decision`` (N,) bool: the strata never mix the items it calls positive with the others
    (:func:`stratum_key`), whatever the decision's relation to the score; give it again to
    :func:`strata_from_edges` and the estimates then split no stratum by that decision.

    ``negatives_by`` (N,) in [0, 1], with ``decision`` only: the items the decision calls
    negative are cut by these values instead of the score (the cut points, thresholds on the
    score, then bound only the called-positive side). The audit passes a second opinion there,
    one that ranks the model's misses better than the model's own score does: the misses are
    what the recall interval is made of (docs/estimates.md, "Strata of the called negatives").
    The strata's ``mean_scores`` stay the model's scores.
    """
    if n_strata < 1:
        raise ValueError(f"n_strata must be >= 1, got {n_strata}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    values = _scores(scores)
    if decision is not None:
        return _strata_split_by(values, decision, n_strata, cut_points, min_size, negatives_by)
    if negatives_by is not None:
        raise ValueError("negatives_by needs a decision")
    ordered = np.sort(values)
    clipped = np.clip(ordered, 0.0, 1.0)
    cumulative = np.cumsum(_score_spread(clipped))
    targets = cumulative[-1] * np.arange(1, n_strata) / n_strata
    positions = np.searchsorted(cumulative, targets, side="left")
    # A boundary is a score value: stratum h+1 starts at the first item past the share.
    inner = {float(ordered[min(p + 1, len(ordered) - 1)]) for p in positions}
    return _merged(values, inner, cut_points, min_size)


def _rank_strata(values: np.ndarray, n_strata: int, min_size: int) -> Strata:
    """Strata by rank for a ranking that is not a calibrated probability: the top
    :data:`RANKED_TOP_SHARE` of the items, then strata twice as large each, down to the rest.
    Where the positives concentrate at the top of the ranking, the small top strata isolate
    them, whatever the values' scale (docs/estimates.md, "Strata of the called negatives")."""
    ordered = np.sort(values)
    shares = [RANKED_TOP_SHARE * 2.0**j for j in range(max(0, n_strata - 1))]
    positions = [len(ordered) - int(np.ceil(share * len(ordered))) for share in shares if share < 1]
    inner = {float(ordered[max(0, min(p, len(ordered) - 1))]) for p in positions}
    return _merged(values, inner, (), min_size)


def _merged(
    values: np.ndarray, inner: set[float], cut_points: Sequence[float], min_size: int
) -> Strata:
    """The strata of ``values`` under the boundaries ``inner`` and ``cut_points``, strata of
    fewer than ``min_size`` items merged into a neighbour."""
    ordered_min, ordered_max = float(values.min()), float(values.max())
    cuts = {float(c) for c in cut_points}
    inner = {edge for edge in inner | cuts if ordered_min < edge <= ordered_max}
    edges = np.array([-np.inf, *sorted(inner), np.inf])
    # Merge strata that are too small into the neighbour with the fewer items, preferring a
    # neighbour on the same side of every cut point.
    while True:
        sizes = np.bincount(assign_strata(values, edges), minlength=len(edges) - 1)
        small = [h for h in range(len(sizes)) if sizes[h] < min_size]
        if not small or len(sizes) == 1:
            break
        h = min(small, key=lambda k: sizes[k])
        # Removing edge h joins h with h-1; removing edge h+1 joins it with h+1.
        options = []
        if h > 0:
            options.append((edges[h] in cuts, sizes[h - 1], h))
        if h < len(sizes) - 1:
            options.append((edges[h + 1] in cuts, sizes[h + 1], h + 1))
        _crosses, _size, edge = min(options)
        edges = np.delete(edges, edge)
    return strata_from_edges(values, edges)


def _score_spread(clipped: np.ndarray) -> np.ndarray:
    return np.maximum(np.sqrt(clipped * (1.0 - clipped)), MIN_SD_SCORE)


def _strata_split_by(
    values: np.ndarray,
    decision: np.ndarray,
    n_strata: int,
    cut_points: Sequence[float],
    min_size: int,
    negatives_by: np.ndarray | Sequence[float] | None = None,
) -> Strata:
    """:func:`score_strata` run on each side of ``decision`` on its own (the strata shared out
    by each side's ``sum sqrt(s (1 - s))``, at least one each), the two joined on the
    :func:`stratum_key` scale with a boundary at :data:`DECISION_OFFSET` between them. Each
    side merges its own small strata, so no merge ever crosses the split. The called-negative
    side is cut on ``negatives_by`` when given (without the score's cut points)."""
    called = _decision(decision, len(values), "decision")
    keys = stratum_key(values, called, negatives_by) - DECISION_OFFSET * called
    sides = [(mask, offset) for mask, offset in ((~called, 0.0), (called, DECISION_OFFSET))]
    sides = [(mask, offset) for mask, offset in sides if mask.any()]
    spreads = [float(_score_spread(np.clip(keys[mask], 0.0, 1.0)).sum()) for mask, _ in sides]
    inner: list[float] = []
    for (mask, offset), spread in zip(sides, spreads, strict=True):
        count = max(1, int(round(n_strata * spread / sum(spreads))))
        if negatives_by is not None and offset == 0.0:
            side = _rank_strata(keys[mask], count, min_size)
        else:
            side = score_strata(
                keys[mask], n_strata=count, cut_points=cut_points, min_size=min_size
            )
        inner.extend(float(edge) + offset for edge in side.edges[1:-1])
    if len(sides) == 2:
        inner.append(DECISION_OFFSET)
    edges = np.array([-np.inf, *sorted(inner), np.inf])
    return strata_from_edges(values, edges, decision=called, negatives_by=negatives_by)


# --------------------------------------------------------------------------------------------
# Allocation
# --------------------------------------------------------------------------------------------


def _sample_arrays(
    strata: Strata, sample: np.ndarray | Sequence[int], labels: np.ndarray | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    chosen = np.asarray(sample, dtype=np.int64)
    y = np.asarray(labels)
    if chosen.ndim != 1 or y.shape != chosen.shape:
        raise ValueError(
            f"sample and labels must be 1-D of one length, got {chosen.shape}, {y.shape}"
        )
    if len(chosen) and (chosen.min() < 0 or chosen.max() >= strata.pool_size):
        raise ValueError(f"sample holds indices outside [0, {strata.pool_size})")
    if len(np.unique(chosen)) != len(chosen):
        raise ValueError("sample holds an item twice (the audit draws without replacement)")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    return chosen, y.astype(np.int64)


def stratum_rates(
    strata: Strata,
    sample: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence[int],
    *,
    prior_labels: float = PRIOR_LABELS,
) -> np.ndarray:
    """(H,) working positive rate of each stratum, for allocation and forecasts only (never for
    estimates): ``(k_h + m * mean_score_h) / (n_h + m)`` with ``k_h`` positives among the
    ``n_h`` audit labels of the stratum and ``m = prior_labels``: the model's mean score until
    labels outweigh it. Scores are clipped to [0, 1]."""
    chosen, y = _sample_arrays(strata, sample, labels)
    n = np.bincount(strata.index[chosen], minlength=strata.count)
    k = np.bincount(strata.index[chosen], weights=y, minlength=strata.count)
    prior = np.clip(strata.mean_scores, 0.0, 1.0)
    return (k + prior_labels * prior) / (n + prior_labels)


def stratum_variances(
    strata: Strata,
    sample: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence[int],
    *,
    decision: np.ndarray | None = None,
    prior_labels: float = PRIOR_LABELS,
) -> np.ndarray:
    """(H,) variance of an item's truth in each stratum, for allocation only: ``r (1 - r)`` of
    the working rate ``r`` (:func:`stratum_rates`), except in the strata ``decision`` (N,) bool
    mostly calls positive, where it is the posterior expectation ``E[p (1 - p)] = A B / ((A +
    B) (A + B + 1))`` of the stratum's rate ``p ~ Beta(A, B)``, ``A = a + k_h + m s_h``, ``B =
    b + n_h - k_h + m (1 - s_h)``: the estimator's prior of such cells ``(a, b)``
    (:data:`POSITIVE_CELL_PRIOR`), ``m = prior_labels`` pseudo-labels at the model's mean score
    ``s_h`` and the stratum's ``k_h`` positives in ``n_h`` labels.

    Why: where a confident model (mean score 0.9998) and the first labels agree that a
    called-positive stratum is all positive, ``r (1 - r)`` is near zero and Neyman's rule
    starves the stratum, although a handful of labels cannot tell a rate of 1 from 0.97; the
    precision interval then rests on a few labels of most of the called positives
    (docs/estimates.md: 20 labels for 3,161 images, precision coverage 0.89). The posterior
    keeps the doubt that few labels leave and loses it as they come. The strata called
    negative keep ``r (1 - r)``: there the same posterior with the estimator's prior moved
    labels into the largest stratum and prevalence coverage fell (docs/estimates.md)."""
    chosen, y = _sample_arrays(strata, sample, labels)
    rates = stratum_rates(strata, chosen, y, prior_labels=prior_labels)
    variances = rates * (1.0 - rates)
    if decision is None:
        return variances
    mask = _decision(decision, strata.pool_size, "decision").astype(np.float64)
    called = _group_mean(strata.index, mask, strata.sizes) > 0.5
    n = np.bincount(strata.index[chosen], minlength=strata.count)
    k = np.bincount(strata.index[chosen], weights=y, minlength=strata.count)
    score = np.clip(strata.mean_scores, 0.0, 1.0)
    big_a = POSITIVE_CELL_PRIOR[0] + k + prior_labels * score
    big_b = POSITIVE_CELL_PRIOR[1] + n - k + prior_labels * (1.0 - score)
    posterior = big_a * big_b / ((big_a + big_b) * (big_a + big_b + 1.0))
    return np.where(called, posterior, variances)


def neyman_allocation(
    sizes: np.ndarray | Sequence[int],
    spreads: np.ndarray | Sequence[float],
    total: int,
    *,
    minimum: int = 2,
    floor: np.ndarray | Sequence[int] | None = None,
) -> np.ndarray:
    """(H,) integer sample sizes summing to ``total`` (capped at the pool), ``n_h ∝ N_h S_h``.

    sizes: (H,) stratum sizes N_h; spreads: (H,) standard deviations S_h (>= 0); minimum: each
    stratum gets at least this many (or all its items), so every stratum is seen; floor: (H,)
    labels a stratum already holds, which it keeps. Strata at a bound are fixed and the rest
    re-allocated until none is out of bounds; the remainders are rounded by largest fraction.
    """
    big = np.asarray(sizes, dtype=np.int64)
    spread = np.asarray(spreads, dtype=np.float64)
    if big.shape != spread.shape or big.ndim != 1:
        raise ValueError("sizes and spreads must be 1-D arrays of one length")
    if (spread < 0).any() or not np.isfinite(spread).all():
        raise ValueError("spreads must be finite and >= 0")
    low = np.minimum(big, max(0, minimum))
    if floor is not None:
        held = np.asarray(floor, dtype=np.int64)
        if held.shape != big.shape or (held > big).any() or (held < 0).any():
            raise ValueError("floor must be (H,) with 0 <= floor <= sizes")
        low = np.maximum(low, held)
    total = int(min(max(total, int(low.sum())), int(big.sum())))
    weight = big * spread
    if weight.sum() <= 0:
        weight = big.astype(np.float64)
    fixed = np.zeros(len(big), dtype=bool)
    share = low.astype(np.float64)
    for _ in range(len(big) + 1):
        free = ~fixed
        remaining = total - share[fixed].sum()
        w = np.where(free, weight, 0.0)
        if w.sum() <= 0:
            w = np.where(free, big.astype(np.float64), 0.0)
        proposal = np.where(free, remaining * w / max(w.sum(), 1e-300), share)
        under = free & (proposal < low)
        over = free & (proposal > big)
        if not under.any() and not over.any():
            share = proposal
            break
        share = np.where(under, low, np.where(over, big, share))
        fixed |= under | over
    whole = np.floor(share).astype(np.int64)
    whole = np.clip(whole, low, big)
    missing = total - int(whole.sum())
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    for h in order:
        if missing <= 0:
            break
        if whole[h] < big[h]:
            whole[h] += 1
            missing -= 1
    for h in range(len(big)):  # any rest (rounding at the caps) where room is left
        while missing > 0 and whole[h] < big[h]:
            whole[h] += 1
            missing -= 1
    return whole


def _group_mean(index: np.ndarray, values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    sums = np.bincount(index, weights=values, minlength=len(sizes))
    return np.divide(sums, sizes, out=np.zeros(len(sizes)), where=sizes > 0)


def _target_spreads(
    strata: Strata,
    rates: np.ndarray,
    decision: np.ndarray | None,
    target: str,
    variances: np.ndarray | None = None,
) -> np.ndarray:
    """(H,) within-stratum sd of an item's contribution to the target's linearised estimator.

    An item with decision d and (unknown) truth y contributes ``alpha(d) * y + beta(d)``:
    prevalence alpha = 1; recall alpha = d - R; precision alpha = d, beta = -P d (R, P the
    working values from the rates). With y ~ Bernoulli(rate_h) inside the stratum, its variance
    there is mean(alpha^2) * v_h + var(alpha * rate + beta) over the items, where v_h is
    ``variances`` (:func:`stratum_variances`), or rate (1 - rate) without it.
    """
    p = rates[strata.index]
    v = p * (1 - p) if variances is None else np.asarray(variances)[strata.index]
    if target == "prevalence" or decision is None:
        alpha = np.ones(strata.pool_size)
        beta = np.zeros(strata.pool_size)
    else:
        d = decision.astype(np.float64)
        expected_tp = float((p * d).sum())
        expected_t = float(p.sum())
        if target == "recall":
            recall = expected_tp / expected_t if expected_t > 0 else 0.5
            alpha, beta = d - recall, np.zeros_like(d)
        elif target == "precision":
            precision = expected_tp / d.sum() if d.sum() > 0 else 0.5
            alpha, beta = d, -precision * d
        else:
            raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
    sizes = strata.sizes
    within = _group_mean(strata.index, alpha**2 * v, sizes)
    mean = _group_mean(strata.index, alpha * p + beta, sizes)
    mean_sq = _group_mean(strata.index, (alpha * p + beta) ** 2, sizes)
    return np.sqrt(np.maximum(within + mean_sq - mean**2, 0.0))


def audit_allocation(
    strata: Strata,
    sample: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence[int],
    *,
    total: int,
    decision: np.ndarray | None = None,
    target: str = "balanced",
    minimum: int = 2,
    pending: np.ndarray | Sequence[int] = (),
) -> np.ndarray:
    """(H,) labels each stratum should hold once the audit has ``total`` labels.

    Neyman allocation for ``target`` ("prevalence", "precision", "recall" of ``decision`` (N,)
    bool, or "balanced": the mean of the three allocations' shares) from the working rates of
    :func:`stratum_rates`; each stratum keeps at least the labels it holds and at least
    ``minimum``. Precision and recall need ``decision``; without it only prevalence is used.
    ``pending``: items drawn whose label has not come yet; they count as held, not in the rates.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
    chosen, y = _sample_arrays(strata, sample, labels)
    waiting = np.asarray(pending, dtype=np.int64)
    held = np.bincount(strata.index[np.concatenate([chosen, waiting])], minlength=strata.count)
    rates = stratum_rates(strata, chosen, y)
    mask = None if decision is None else _decision(decision, strata.pool_size, "decision")
    variances = stratum_variances(strata, chosen, y, decision=mask)
    targets = ("prevalence", "precision", "recall") if target == "balanced" else (target,)
    if mask is None:
        targets = ("prevalence",)
    shares = []
    for name in targets:
        weight = strata.sizes * _target_spreads(strata, rates, mask, name, variances)
        shares.append(
            weight / weight.sum() if weight.sum() > 0 else strata.sizes / strata.sizes.sum()
        )
    spreads = np.mean(shares, axis=0) / np.maximum(strata.sizes, 1)
    return neyman_allocation(strata.sizes, spreads, total, minimum=minimum, floor=held)


def audit_draw(
    strata: Strata,
    wanted: np.ndarray | Sequence[int],
    *,
    already: np.ndarray | Sequence[int] = (),
    seed: int,
) -> np.ndarray:
    """Indices of new audit items: in each stratum h, ``wanted[h]`` minus what ``already``
    holds there, drawn uniformly without replacement from the items not yet drawn. Returns the
    new indices (M,), grouped by stratum, shuffled within each."""
    rng = np.random.default_rng(seed)
    want = np.asarray(wanted, dtype=np.int64)
    if want.shape != (strata.count,) or (want > strata.sizes).any():
        raise ValueError("wanted must be (H,) with wanted <= the stratum sizes")
    taken = np.zeros(strata.pool_size, dtype=bool)
    done = np.asarray(already, dtype=np.int64)
    taken[done] = True
    held = np.bincount(strata.index[done], minlength=strata.count)
    picked = []
    for h in range(strata.count):
        extra = int(want[h] - held[h])
        if extra <= 0:
            continue
        candidates = np.flatnonzero((strata.index == h) & ~taken)
        picked.append(rng.choice(candidates, size=extra, replace=False))
    return np.concatenate(picked).astype(np.int64) if picked else np.empty(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Estimates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval at ``PoolEstimate.confidence``; nan when undefined."""

    estimate: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class DecisionEstimate:
    """One decision rule of the model on the pool (a stage, or the cascade's AND).

    ``predicted_positive``: items it calls positive (known exactly); ``true_positives``: the
    estimated positives among them; ``precision`` and ``recall`` with intervals."""

    predicted_positive: int
    true_positives: Interval
    precision: Interval
    recall: Interval

    def as_dict(self) -> dict:
        return {
            "predicted_positive": self.predicted_positive,
            "true_positives": self.true_positives.as_dict(),
            "precision": self.precision.as_dict(),
            "recall": self.recall.as_dict(),
        }


@dataclass(frozen=True)
class PoolEstimate:
    """Estimates for one pool from one audit sample.

    ``pool_size`` N; ``labels`` audit labels used; ``audit_positives`` positives among them;
    ``prevalence`` and ``positives`` (the pool's count of positives, N x prevalence);
    ``unlabeled_positives``: positives not yet labeled by anyone (``positives`` minus the
    ``known_positives`` given), None when not given; ``decisions``: per decision rule;
    ``labels_per_stratum`` (H,) and ``positives_per_stratum`` (H,)."""

    pool_size: int
    labels: int
    audit_positives: int
    confidence: float
    prevalence: Interval
    positives: Interval
    unlabeled_positives: Interval | None
    decisions: dict[str, DecisionEstimate]
    labels_per_stratum: np.ndarray
    positives_per_stratum: np.ndarray
    prior: tuple[float, float]
    draws: int
    method: str = "mlcore.estimates.estimate_pool"
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "pool_size": self.pool_size,
            "labels": self.labels,
            "audit_positives": self.audit_positives,
            "confidence": self.confidence,
            "prevalence": self.prevalence.as_dict(),
            "positives": self.positives.as_dict(),
            "unlabeled_positives": (
                self.unlabeled_positives.as_dict() if self.unlabeled_positives else None
            ),
            "decisions": {name: d.as_dict() for name, d in self.decisions.items()},
            "labels_per_stratum": [int(v) for v in self.labels_per_stratum],
            "positives_per_stratum": [int(v) for v in self.positives_per_stratum],
            "prior": list(self.prior),
            "draws": self.draws,
            "method": self.method,
        }


def _decision(decision: np.ndarray | Sequence[bool], n: int, name: str) -> np.ndarray:
    mask = np.asarray(decision)
    if mask.shape != (n,):
        raise ValueError(f"decision {name!r} must have shape ({n},), got {mask.shape}")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"decision {name!r} must be boolean or 0/1")
        mask = mask.astype(bool)
    return mask


def _posterior_counts(
    cell_sizes: np.ndarray,
    cell_n: np.ndarray,
    cell_k: np.ndarray,
    fallback_n: np.ndarray,
    fallback_k: np.ndarray,
    *,
    prior: tuple[float, float] | tuple[np.ndarray, np.ndarray],
    draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(draws, C) posterior draws of each cell's number of positives: the ``k`` seen plus a
    Binomial(N - n, p) for the unseen, p ~ Beta(a + k, b + n - k) (``a``, ``b`` one pair or one
    per cell). A cell no audit label fell in borrows the rate of its stratum (``fallback_n``,
    ``fallback_k``)."""
    a, b = prior
    use_n = np.where(cell_n > 0, cell_n, fallback_n)
    use_k = np.where(cell_n > 0, cell_k, fallback_k)
    from scipy import stats  # lazy: web workers import this module (scipy.stats ~80 MB)

    rates = stats.beta.rvs(
        a + use_k, b + use_n - use_k, size=(draws, len(cell_sizes)), random_state=rng
    )
    unseen = np.broadcast_to(cell_sizes - cell_n, rates.shape)
    return cell_k + stats.binom.rvs(unseen, rates, random_state=rng)


def _envelope_counts(
    cell_sizes: np.ndarray,
    cell_n: np.ndarray,
    cell_k: np.ndarray,
    fallback_n: np.ndarray,
    fallback_k: np.ndarray,
    *,
    upper: bool,
    draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(draws, C) like :func:`_posterior_counts`, with the rate of each cell drawn from
    Beta(k + 1, n - k) (``upper``) or Beta(k, n - k + 1): the two posteriors whose quantiles are
    the Clopper-Pearson bounds of one cell's rate (a rate of 1 or 0 where a parameter is 0).
    Their quantiles bound a sum of cells from above and below as Clopper-Pearson bounds one."""
    use_n = np.where(cell_n > 0, cell_n, fallback_n)
    use_k = np.where(cell_n > 0, cell_k, fallback_k)
    a = use_k + (1.0 if upper else 0.0)
    b = use_n - use_k + (0.0 if upper else 1.0)
    from scipy import stats  # lazy, as in _posterior_counts

    rates = stats.beta.rvs(
        np.maximum(a, 1e-12), np.maximum(b, 1e-12), size=(draws, len(cell_sizes)), random_state=rng
    )
    rates = np.where(a <= 0, 0.0, np.where(b <= 0, 1.0, rates))
    unseen = np.broadcast_to(cell_sizes - cell_n, rates.shape)
    return cell_k + stats.binom.rvs(unseen, rates, random_state=rng)


def _interval(estimate: float, values: np.ndarray, confidence: float) -> Interval:
    finite = values[np.isfinite(values)]
    if not np.isfinite(estimate) and len(finite) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    if len(finite) == 0:
        return Interval(float(estimate), float(estimate), float(estimate))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    if np.isfinite(estimate):
        low, high = min(low, estimate), max(high, estimate)
    return Interval(float(estimate), float(low), float(high))


def estimate_pool(
    strata: Strata,
    sample: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence[int],
    *,
    decisions: Mapping[str, np.ndarray] | None = None,
    known_positives: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    prior: tuple[float, float] = DEFAULT_PRIOR,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> PoolEstimate:
    """Prevalence, and each decision's precision and recall, on the whole pool.

    strata: the audit's :class:`Strata` (N items); sample: (n,) pool indices of the audit items
    that have a label, drawn by :func:`audit_draw` (uniform within each stratum); labels: (n,)
    their 0/1 truth as people gave it; decisions: name -> (N,) bool, what the model calls
    positive (known for every item); known_positives: positives labeled so far by anyone, for
    ``unlabeled_positives``; confidence: of the intervals; prior: Beta(a, b) of a cell's rate;
    draws, seed: of the posterior simulation.

    Point estimates are stratified Horvitz-Thompson: a stratum's audit item weighs ``N_h / n_h``;
    prevalence = sum_h N_h k_h / n_h / N; a decision's true positives likewise over its
    positive items; precision = TP / (items it calls positive), recall = TP / positives. A
    stratum without audit labels makes the estimates undefined (nan): allocate at least one
    label to every stratum.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if prior[0] <= 0 or prior[1] <= 0:
        raise ValueError("the prior's parameters must be > 0")
    if draws < 100:
        raise ValueError(f"draws must be >= 100, got {draws}")
    chosen, y = _sample_arrays(strata, sample, labels)
    rng = np.random.default_rng(seed)
    count = strata.count
    n_h = np.bincount(strata.index[chosen], minlength=count)
    k_h = np.bincount(strata.index[chosen], weights=y, minlength=count).astype(np.int64)
    covered = n_h > 0
    weights = np.divide(strata.sizes, n_h, out=np.full(count, np.nan), where=covered)
    complete = bool(covered[strata.sizes > 0].all())
    total_hat = float(np.nansum(weights * k_h)) if complete else float("nan")
    n_pool = strata.pool_size

    positives_draws = _posterior_counts(
        strata.sizes, n_h, k_h, n_h, k_h, prior=prior, draws=draws, rng=rng
    ).sum(axis=1)
    positives = _interval(total_hat, positives_draws.astype(np.float64), confidence)
    prevalence = Interval(
        positives.estimate / n_pool, positives.low / n_pool, positives.high / n_pool
    )
    unlabeled = None
    if known_positives is not None:
        found = float(known_positives)
        unlabeled = Interval(
            max(0.0, positives.estimate - found),
            max(0.0, positives.low - found),
            max(0.0, positives.high - found),
        )

    results: dict[str, DecisionEstimate] = {}
    for name, raw in (decisions or {}).items():
        d = _decision(raw, n_pool, name)
        # Cells: stratum x decision; cell 2h holds the negatives of stratum h, 2h+1 positives.
        cell = strata.index * 2 + d.astype(np.int64)
        cell_sizes = np.bincount(cell, minlength=2 * count)
        cell_n = np.bincount(cell[chosen], minlength=2 * count)
        cell_k = np.bincount(cell[chosen], weights=y, minlength=2 * count).astype(np.int64)
        present = cell_sizes > 0
        sizes, c_n, c_k = cell_sizes[present], cell_n[present], cell_k[present]
        stratum_of = (np.arange(2 * count) // 2)[present]
        positive_cells = (np.arange(2 * count) % 2 == 1)[present]
        # ``prior`` (mass near a rate of 0) where the decision says negative; Jeffreys' where
        # it says positive (POSITIVE_CELL_PRIOR).
        up = POSITIVE_CELL_PRIOR
        cell_prior = (
            np.where(positive_cells, up[0], prior[0]),
            np.where(positive_cells, up[1], prior[1]),
        )
        counts = _posterior_counts(
            sizes,
            c_n,
            c_k,
            n_h[stratum_of],
            k_h[stratum_of],
            prior=cell_prior,
            draws=draws,
            rng=rng,
        )
        tp_draws = counts[:, positive_cells].sum(axis=1).astype(np.float64)
        t_draws = counts.sum(axis=1).astype(np.float64)
        # HT: an item's weight is its stratum's N_h / n_h, whatever cell it falls in.
        item_weight = weights[strata.index[chosen]]
        tp_hat = float(np.sum(item_weight * y * d[chosen])) if complete else float("nan")
        predicted = int(d.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            precision_draws = tp_draws / predicted if predicted else np.full(draws, np.nan)
            recall_draws = np.where(t_draws > 0, tp_draws / t_draws, np.nan)
        precision_hat = tp_hat / predicted if predicted else float("nan")
        precision = _interval(precision_hat, precision_draws, confidence)
        if predicted and positive_cells.any():
            # Precision's ends from the Clopper-Pearson pair of posteriors of the cells called
            # positive (_envelope_counts): Jeffreys' draws alone under-covered a precision near
            # 1 where an audit's few negatives fell just short of it (docs/estimates.md).
            ends = []
            for upper in (False, True):
                envelope = _envelope_counts(
                    sizes[positive_cells],
                    c_n[positive_cells],
                    c_k[positive_cells],
                    n_h[stratum_of][positive_cells],
                    k_h[stratum_of][positive_cells],
                    upper=upper,
                    draws=draws,
                    rng=rng,
                )
                ends.append(envelope.sum(axis=1).astype(np.float64) / predicted)
            tail = (1.0 - confidence) / 2.0
            low = float(np.quantile(ends[0], tail))
            high = float(np.quantile(ends[1], 1.0 - tail))
            if np.isfinite(precision_hat):
                low, high = min(low, precision_hat), max(high, precision_hat)
            precision = Interval(float(precision_hat), low, high)
        recall_hat = tp_hat / total_hat if total_hat and total_hat > 0 else float("nan")
        results[name] = DecisionEstimate(
            predicted_positive=predicted,
            true_positives=_interval(tp_hat, tp_draws, confidence),
            precision=precision,
            recall=_interval(recall_hat, recall_draws, confidence),
        )
    return PoolEstimate(
        pool_size=n_pool,
        labels=len(chosen),
        audit_positives=int(y.sum()),
        confidence=confidence,
        prevalence=prevalence,
        positives=positives,
        unlabeled_positives=unlabeled,
        decisions=results,
        labels_per_stratum=n_h,
        positives_per_stratum=k_h,
        prior=(float(prior[0]), float(prior[1])),
        draws=draws,
    )


# --------------------------------------------------------------------------------------------
# Forecasts
# --------------------------------------------------------------------------------------------


def _linearised_variance(
    strata: Strata, rates: np.ndarray, allocation: np.ndarray, spreads: np.ndarray
) -> float:
    """Stratified variance sum_h N_h^2 (1 - n_h/N_h) S_h^2 / n_h (Cochran 5.6)."""
    n = np.maximum(allocation, 1)
    fpc = 1.0 - allocation / np.maximum(strata.sizes, 1)
    return float(np.sum(strata.sizes**2 * fpc * spreads**2 / n))


def labels_for_width(
    strata: Strata,
    sample: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence[int],
    *,
    width: float,
    metric: str = "recall",
    decision: np.ndarray | None = None,
    current_width: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    target: str = "balanced",
) -> int | None:
    """More audit labels needed (beyond the ``n`` in ``sample``) for the ``metric`` interval
    ("prevalence", "precision" or "recall" of ``decision``) to be at most ``width`` wide.

    The forecast puts the working rates (:func:`stratum_rates`) in the stratified variance of
    the metric's linearised estimator under the audit's allocation at each candidate total,
    ``2 z sqrt(V(n))`` with z the normal quantile (``scipy.stats.norm``), and scales it by the
    ratio of ``current_width`` (the interval the audit has now) to that formula at the current
    labels, so it forecasts the interval actually reported. Returns 0 when the width is already
    reached, None when even labeling the whole pool would not reach it (it always does for a
    positive width: a census has no sampling error)."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    if metric not in ("prevalence", "precision", "recall"):
        raise ValueError(f"unknown metric {metric!r}")
    chosen, y = _sample_arrays(strata, sample, labels)
    if current_width is not None and current_width <= width:
        return 0
    rates = stratum_rates(strata, chosen, y)
    mask = None if decision is None else _decision(decision, strata.pool_size, "decision")
    if metric != "prevalence" and mask is None:
        raise ValueError(f"{metric} needs the decision")
    spreads = _target_spreads(strata, rates, mask, metric)
    # The metric's scale: prevalence is a share of N, precision of the predicted positives,
    # recall of the expected positives.
    if metric == "prevalence":
        scale = float(strata.pool_size)
    elif metric == "precision":
        scale = float(max(mask.sum(), 1))
    else:
        scale = float(max((rates[strata.index]).sum(), 1e-9))
    from scipy import stats  # lazy: web workers import this module (scipy.stats ~80 MB)

    z = float(stats.norm.ppf(0.5 + confidence / 2.0))

    def forecast(total: int) -> float:
        allocation = audit_allocation(strata, chosen, y, total=total, decision=mask, target=target)
        return 2.0 * z * np.sqrt(_linearised_variance(strata, rates, allocation, spreads)) / scale

    now = max(len(chosen), 1)
    factor = 1.0
    if current_width is not None and forecast(now) > 0:
        factor = current_width / forecast(now)
    if factor * forecast(now) <= width:
        return 0
    low, high = now, strata.pool_size
    if factor * forecast(high) > width:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if factor * forecast(middle) <= width:
            high = middle
        else:
            low = middle
    return int(high - len(chosen))


@dataclass(frozen=True)
class YieldForecast:
    """Labels of a selection strategy expected to find ``wanted`` more positives at its recent
    yield: ``expected`` and an interval (``low``, ``high``) from the yield's Beta posterior;
    ``yield_rate`` positives per label over the window; ``capped``: fewer positives than wanted
    are expected to remain unlabeled, so the forecast is for those."""

    wanted: float
    yield_rate: float
    expected: float
    low: float
    high: float
    capped: bool


def labels_to_find(
    positives: int,
    labels: int,
    *,
    wanted: int,
    remaining: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> YieldForecast:
    """How many more labels of one strategy find ``wanted`` more positives, if it keeps the
    yield of its recent window (``positives`` found in its last ``labels`` labels).

    The yield gets a Beta(1/2 + positives, 1/2 + negatives) posterior (``scipy.stats.beta``);
    labels needed = wanted / yield (the mean of a negative binomial's trials), with the interval
    from the yield's quantiles. ``remaining``: positives estimated still unlabeled in the pool
    (:attr:`PoolEstimate.unlabeled_positives`); ``wanted`` is capped at it. Yields fall as a
    strategy exhausts its region, so this is optimistic: read it as a lower bound."""
    if labels < 0 or not 0 <= positives <= labels:
        raise ValueError("need 0 <= positives <= labels")
    if wanted < 0:
        raise ValueError("wanted must be >= 0")
    goal = float(wanted)
    capped = False
    if remaining is not None and remaining < goal:
        goal, capped = max(0.0, float(remaining)), True
    from scipy import stats  # lazy: web workers import this module (scipy.stats ~80 MB)

    posterior = stats.beta(0.5 + positives, 0.5 + labels - positives)
    tail = (1.0 - confidence) / 2.0
    rate = (positives + 0.5) / (labels + 1.0)
    hi_rate, lo_rate = posterior.ppf(1.0 - tail), posterior.ppf(tail)
    return YieldForecast(
        wanted=goal,
        yield_rate=positives / labels if labels else float("nan"),
        expected=goal / rate,
        low=goal / hi_rate,
        high=goal / lo_rate if lo_rate > 0 else float("inf"),
        capped=capped,
    )


# --------------------------------------------------------------------------------------------
# Triage: the error rate of the images a model accepts without a person
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TriageError:
    """The share of machine-accepted items that are in fact positive (triage's misses),
    measured on a uniform audit sample of them.

    ``accepted`` N items accepted; ``labels`` n audit labels among them, ``errors`` k of them
    positive; ``rate`` the miss rate k / n with its exact (Clopper-Pearson) interval;
    ``missed`` the positives among all N accepted (N x rate, same interval);
    ``more_labels_clean``: audit labels still needed, if none of them is a miss, for the upper
    bound to fall to ``bound`` (0 when it already has; None without a bound)."""

    accepted: int
    labels: int
    errors: int
    confidence: float
    rate: Interval
    missed: Interval
    bound: float | None
    more_labels_clean: int | None

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "labels": self.labels,
            "errors": self.errors,
            "confidence": self.confidence,
            "rate": self.rate.as_dict(),
            "missed": self.missed.as_dict(),
            "bound": self.bound,
            "more_labels_clean": self.more_labels_clean,
        }


def exact_rate_interval(
    errors: int, labels: int, *, confidence: float = DEFAULT_CONFIDENCE
) -> Interval:
    """``errors`` / ``labels`` with its exact binomial (Clopper-Pearson) interval
    (``scipy.stats.binomtest``): conservative, never shorter than the nominal coverage, and
    honest at zero errors (0 of n gives an upper bound near 3.7 / n at 95%). With no labels
    the rate is unknown: nan, interval [0, 1]."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if labels < 0 or not 0 <= errors <= labels:
        raise ValueError("need 0 <= errors <= labels")
    if labels == 0:
        return Interval(float("nan"), 0.0, 1.0)
    from scipy import stats  # lazy: web workers import this module (scipy.stats ~80 MB)

    ci = stats.binomtest(int(errors), int(labels)).proportion_ci(
        confidence_level=confidence, method="exact"
    )
    return Interval(errors / labels, float(ci.low), float(ci.high))


def labels_until_bound(
    errors: int, labels: int, *, bound: float, confidence: float = DEFAULT_CONFIDENCE
) -> int | None:
    """More audit labels, all of them clean (no further miss), for the exact upper bound of
    ``errors`` / (``labels`` + more) to fall to ``bound`` or below; 0 when it already has.
    None when it never would within 10^7 labels. The smallest such number, by bisection
    (the upper bound falls as clean labels are added)."""
    if not 0.0 < bound < 1.0:
        raise ValueError(f"bound must be in (0, 1), got {bound}")

    def upper(extra: int) -> float:
        return exact_rate_interval(errors, labels + extra, confidence=confidence).high

    if labels > 0 and upper(0) <= bound:
        return 0
    low, high = 0, 1
    while upper(high) > bound:
        low, high = high, high * 2
        if high > 10_000_000:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        if upper(middle) <= bound:
            high = middle
        else:
            low = middle
    return high


def triage_error(
    *,
    accepted: int,
    labels: int,
    errors: int,
    bound: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> TriageError:
    """Triage's miss rate among ``accepted`` machine-accepted items from ``labels`` audit labels
    (a uniform sample of them: each accepted item joined the audit with the same chance) of
    which ``errors`` are positive. The interval is exact for the rate of the (infinite)
    process that produced the accepted items, hence a little wider than needed for the finite
    accepted set (no finite-population correction: the conservative side)."""
    if accepted < 0 or labels > accepted:
        raise ValueError("need 0 <= labels <= accepted")
    rate = exact_rate_interval(errors, labels, confidence=confidence)
    missed = Interval(rate.estimate * accepted, rate.low * accepted, rate.high * accepted)
    more = (
        None
        if bound is None
        else labels_until_bound(errors, labels, bound=bound, confidence=confidence)
    )
    return TriageError(
        accepted=int(accepted),
        labels=int(labels),
        errors=int(errors),
        confidence=confidence,
        rate=rate,
        missed=missed,
        bound=bound,
        more_labels_clean=more,
    )


def triage_verdict(error: TriageError) -> str | None:
    """Why triage must pause, or None while it may go on. Two rules, given a ``bound``:

    - ``"upper_bound"``: the upper end of the miss-rate interval is above the bound although
      the audit holds enough labels for a clean audit to be under it (before that, the interval
      cannot be under the bound whatever the labels say: the audit is still warming up);
    - ``"lower_bound"``: even the lower end is above the bound, at any number of labels
      (clear evidence that triage misses too much, without waiting for the warm-up)."""
    if error.bound is None or error.labels == 0:
        return None
    if error.rate.low > error.bound:
        return "lower_bound"
    warm = labels_until_bound(0, error.labels, bound=error.bound, confidence=error.confidence)
    if warm == 0 and error.rate.high > error.bound:
        return "upper_bound"
    return None
