"""Arrays for mlcore.selection out of Score rows, and image ids back out of its indices.

The database does the filtering that needs the whole pool (unlabeled, not queued, inside the
band or above `high`, largest predicted losses) with its indexes; mlcore.selection then ranks
the candidates. That is exact, not an approximation: `confidence_band` interleaves the confident
group (most confident first) with the band group (top of the band first), so its first `k`
items come from the top `k` of each group, which is what the service fetches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlcore import selection as mlcore_selection


@dataclass(frozen=True)
class SelectionPlan:
    """Image ids most informative first, and which of them each selector chose."""

    ranked_ids: list[int]
    band_ids: frozenset[int]
    loss_ids: frozenset[int]


def plan_selection(
    *,
    band_candidates: Sequence[tuple[int, float]],
    loss_candidates: Sequence[tuple[int, float]],
    k_band: int,
    k_loss: int,
    high: float,
    band: tuple[float, float],
) -> SelectionPlan:
    """band_candidates: (image id, score) pairs; loss_candidates: (image id, predicted loss).

    Returns the union of the band's top `k_band` and the loss ranking's top `k_loss`, merged
    round-robin (mlcore.selection.union) so neither list starves the other.
    """
    band_ids_arr = np.asarray([c[0] for c in band_candidates], dtype=np.int64)
    band_scores = np.asarray([c[1] for c in band_candidates], dtype=np.float64)
    loss_ids_arr = np.asarray([c[0] for c in loss_candidates], dtype=np.int64)
    loss_values = np.asarray([c[1] for c in loss_candidates], dtype=np.float64)

    absolute = mlcore_selection.BandConfig(mode="absolute", high=high, band=tuple(band))
    band_ranked = band_ids_arr[
        mlcore_selection.confidence_band(band_scores, config=absolute).indices[:k_band]
    ]
    loss_ranked = loss_ids_arr[mlcore_selection.loss_top_k(loss_values, k=k_loss)]
    ranked = mlcore_selection.union(band_ranked, loss_ranked)
    return SelectionPlan(
        ranked_ids=[int(i) for i in ranked],
        band_ids=frozenset(int(i) for i in band_ranked),
        loss_ids=frozenset(int(i) for i in loss_ranked),
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
