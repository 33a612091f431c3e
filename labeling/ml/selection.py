"""Arrays for mlcore.selection out of Score rows, and image ids back out of its indices.

The service hands over every eligible image's score (one column read; the same read gives the
audit its ids) and the database's top predicted losses (index on (model_version,
predicted_loss)). The confidence band needs the whole eligible distribution because its
thresholds are quantiles of it (mlcore.selection, quantile mode); mlcore.selection ranks, and
this module maps its indices back to image ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlcore import selection as mlcore_selection

# The rules of a selection, as QueueItem details and job results name them.
RULE_HIGH = mlcore_selection.RULE_HIGH
RULE_BAND = mlcore_selection.RULE_BAND
RULE_LOSS = mlcore_selection.RULE_LOSS
BAND_MODES = mlcore_selection.BAND_MODES
# How much one round takes, scaled to the pool (the select job and its preview).
round_sizes = mlcore_selection.round_sizes
AUTO_ROUND_DEFAULT = mlcore_selection.AUTO_ROUND_DEFAULT


@dataclass(frozen=True)
class SelectionPlan:
    """Image ids most informative first; which of them each selector chose; the rule that
    chose each one (the band's rule, RULE_HIGH or RULE_BAND, when both selectors chose it);
    the band's thresholds in probability terms (JSON-ready) and the function that ranked."""

    ranked_ids: list[int]
    band_ids: frozenset[int]
    loss_ids: frozenset[int]
    rule_of: dict[int, str]
    band_thresholds: dict
    function: str


def plan_selection(
    *,
    candidate_ids: np.ndarray,
    candidate_scores: np.ndarray,
    loss_candidates: Sequence[tuple[int, float]],
    k_band: int,
    k_loss: int,
    band_mode: str,
    high_share: float,
    band_share: float,
    band_center: float,
    high: float,
    band: tuple[float, float],
) -> SelectionPlan:
    """candidate_ids (N,) / candidate_scores (N,): every eligible image and its score;
    loss_candidates: (image id, predicted loss) pairs, the largest losses.

    The band's top `k_band` (mlcore.selection.confidence_band over all N candidates, by
    quantiles or absolute thresholds per `band_mode`) and the loss ranking's top `k_loss`,
    merged round-robin (mlcore.selection.union) so neither list starves the other.
    """
    ids = np.asarray(candidate_ids, dtype=np.int64)
    scores = np.asarray(candidate_scores, dtype=np.float64)
    config = mlcore_selection.BandConfig(
        mode=band_mode,
        high_share=high_share,
        band_share=band_share,
        band_center=band_center,
        high=high,
        band=(float(band[0]), float(band[1])),
    )
    ranking = mlcore_selection.confidence_band(scores, config=config, k=k_band)
    band_ranked = ids[ranking.indices[:k_band]]
    band_rules = [RULE_HIGH if h else RULE_BAND for h in ranking.is_high[:k_band]]
    loss_ids_arr = np.asarray([c[0] for c in loss_candidates], dtype=np.int64)
    loss_values = np.asarray([c[1] for c in loss_candidates], dtype=np.float64)
    loss_ranked = loss_ids_arr[mlcore_selection.loss_top_k(loss_values, k=k_loss)]
    ranked = mlcore_selection.union(band_ranked, loss_ranked)
    rule_of = dict.fromkeys((int(i) for i in loss_ranked), RULE_LOSS)
    rule_of.update(zip((int(i) for i in band_ranked), band_rules, strict=True))
    return SelectionPlan(
        ranked_ids=[int(i) for i in ranked],
        band_ids=frozenset(int(i) for i in band_ranked),
        loss_ids=frozenset(int(i) for i in loss_ranked),
        rule_of=rule_of,
        band_thresholds=ranking.thresholds.as_dict(),
        function=ranking.function,
    )


def audit_sample(
    eligible_ids: np.ndarray, *, exclude_ids: Sequence[int], k: int, seed: int
) -> list[int]:
    """`k` ids drawn at random (seeded) from the sorted `eligible_ids`, minus `exclude_ids`."""
    eligible = np.asarray(eligible_ids, dtype=np.int64)
    if eligible.size == 0 or k <= 0:
        return []
    excluded = np.asarray(list(exclude_ids), dtype=np.int64)
    positions = np.searchsorted(eligible, excluded)
    inside = positions < eligible.size
    # Only ids that really are in `eligible` (searchsorted also answers for absent ones).
    positions = positions[inside][eligible[positions[inside]] == excluded[inside]]
    picked = mlcore_selection.random_sample(eligible.size, k=k, seed=seed, exclude=positions)
    return [int(eligible[i]) for i in picked]
