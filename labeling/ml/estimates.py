"""The bridge from the pool audit (labeling.services.audit) to mlcore.estimates: plain arrays
of the audit's frame in, JSON-ready dicts out.

The frame is the audited pool in a fixed order (the services sort it by image id): ``scores``
(N,) the model version's ranking score, ``decisions`` name -> (N,) bool. Audit items are
positions in that order. Strata are stored as their inner boundaries (JSON has no infinity).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mlcore import estimates

TARGETS = estimates.TARGETS
DEFAULT_CONFIDENCE = estimates.DEFAULT_CONFIDENCE


def _strata(
    scores: np.ndarray,
    inner_edges: list[float],
    split: np.ndarray | None,
    negatives_by: np.ndarray | None = None,
) -> estimates.Strata:
    edges = np.array([-np.inf, *inner_edges, np.inf], dtype=np.float64)
    return estimates.strata_from_edges(scores, edges, decision=split, negatives_by=negatives_by)


def audit_design(
    scores: np.ndarray,
    *,
    n_strata: int,
    cut_points: list[float],
    split: np.ndarray | None,
    negatives_by: np.ndarray | None = None,
) -> dict:
    """The audit's strata for a frame's scores: {"edges": inner boundaries, "sizes": per
    stratum, "mean_scores": per stratum}. ``split`` (N,) bool: the decision no stratum
    straddles (mlcore.estimates.stratum_key); the caller records which one it was and passes
    it again with these edges. ``negatives_by`` (N,): what the images ``split`` calls negative
    are cut on instead of their scores (mlcore.estimates.score_strata), passed again likewise."""
    strata = estimates.score_strata(
        scores, n_strata=n_strata, cut_points=cut_points, decision=split, negatives_by=negatives_by
    )
    return {
        "edges": [float(edge) for edge in strata.edges[1:-1]],
        "sizes": [int(size) for size in strata.sizes],
        "mean_scores": [float(value) for value in strata.mean_scores],
        "function": "mlcore.estimates.score_strata",
    }


def audit_next(
    scores: np.ndarray,
    *,
    edges: list[float],
    split: np.ndarray | None,
    decision: np.ndarray,
    labeled: np.ndarray,
    labels: np.ndarray,
    pending: np.ndarray,
    add: int,
    target: str,
    seed: int,
    negatives_by: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (M,) of the next audit items and their strata (M,): Neyman allocation of
    ``add`` more labels given the ``labeled`` positions' 0/1 ``labels`` and the ``pending``
    ones (drawn, not labeled yet), then a uniform draw within each stratum."""
    strata = _strata(scores, edges, split, negatives_by)
    total = len(labeled) + len(pending) + add
    wanted = estimates.audit_allocation(
        strata, labeled, labels, total=total, decision=decision, target=target, pending=pending
    )
    already = np.concatenate([labeled, pending]).astype(np.int64)
    new = estimates.audit_draw(strata, wanted, already=already, seed=seed)
    return new, strata.index[new]


def pool_estimates(
    scores: np.ndarray,
    *,
    edges: list[float],
    split: np.ndarray | None,
    decisions: Mapping[str, np.ndarray],
    primary: str,
    labeled: np.ndarray,
    labels: np.ndarray,
    known_positives: int,
    widths: Mapping[str, float],
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    negatives_by: np.ndarray | None = None,
) -> dict:
    """Estimates with intervals (mlcore.estimates.estimate_pool) and, for each metric in
    ``widths`` ("prevalence", "precision", "recall" of the ``primary`` decision), the audit
    labels still needed to narrow its interval to that width (None: a census would not). The
    prevalence width is relative: a share of the prevalence estimate."""
    strata = _strata(scores, edges, split, negatives_by)
    result = estimates.estimate_pool(
        strata,
        labeled,
        labels,
        decisions=decisions,
        known_positives=known_positives,
        confidence=confidence,
        seed=seed,
    )
    out = result.as_dict()
    out["strata"] = {
        "edges": list(edges),
        "sizes": [int(size) for size in strata.sizes],
        "mean_scores": [float(value) for value in strata.mean_scores],
    }
    forecasts = {}
    current = {
        "prevalence": result.prevalence.width,
        "precision": result.decisions[primary].precision.width if primary in decisions else None,
        "recall": result.decisions[primary].recall.width if primary in decisions else None,
    }
    for metric, width in widths.items():
        if metric == "prevalence":
            # Asked as a share of the estimate (0.1: +-5% of it), as a prevalence of 1 in 1,000
            # makes any absolute width either trivial or impossible.
            width = width * result.prevalence.estimate
            if not np.isfinite(width) or width <= 0:
                forecasts[metric] = {"width": None, "current_width": None, "more_labels": None}
                continue
        now = current.get(metric)
        if now is None or not np.isfinite(now):
            forecasts[metric] = {"width": width, "current_width": None, "more_labels": None}
            continue
        more = estimates.labels_for_width(
            strata,
            labeled,
            labels,
            width=width,
            metric=metric,
            decision=decisions.get(primary),
            current_width=now,
            confidence=confidence,
        )
        forecasts[metric] = {"width": width, "current_width": now, "more_labels": more}
    out["forecast"] = forecasts
    # An undefined figure (precision when the model calls nothing positive) is NaN here; JSON,
    # PostgreSQL's jsonb and SQLite's JSON_VALID refuse NaN, so it leaves as None.
    return _json_safe(out)


def yield_forecast(
    *, positives: int, labels: int, wanted: int, remaining: float | None
) -> dict[str, float | bool]:
    """Labels of one strategy expected to find ``wanted`` more positives at its yield so far
    (mlcore.estimates.labels_to_find)."""
    found = estimates.labels_to_find(positives, labels, wanted=wanted, remaining=remaining)
    return {
        "wanted": found.wanted,
        "yield_rate": found.yield_rate,
        "expected": found.expected,
        "low": found.low,
        "high": found.high,
        "capped": found.capped,
    }


def triage_audit(*, accepted: int, labels: int, errors: int, bound: float) -> dict:
    """Triage's miss rate among ``accepted`` machine-accepted images from ``labels`` audit
    labels, ``errors`` of them positive (mlcore.estimates.triage_error: exact interval), and
    the pause rule's verdict (mlcore.estimates.triage_verdict: None, "upper_bound" or
    "lower_bound")."""
    error = estimates.triage_error(accepted=accepted, labels=labels, errors=errors, bound=bound)
    return _json_safe({**error.as_dict(), "verdict": estimates.triage_verdict(error)})


def _json_safe(value):
    """NaN and infinity (a rate with no labels yet) as None, which JSON can carry."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
