"""Reads of why each queue item is where it is, for engineers and leads (never annotators).

A queue item's `details` hold what produced it (labeling.services.recall, .selection, .noise,
.imports); `queue_item_explain` turns them into the few fields people compare: the strategy,
the rank the job gave it, the cold-start similarity (or probe probability), the selection's
score and the rule / band that chose it, and the strategy it was moved from.
"""

from __future__ import annotations

from django.db.models import QuerySet

from labeling.models import Queue, QueueItem, Strategy
from labeling.selectors.counts import count_or_estimate
from labeling.selectors.queues import queue_items_list

MAX_ITEMS = 500
_STRATEGY_NAMES = dict(Strategy.choices)


def queue_item_explain(item: QueueItem) -> dict:
    """The item's place and its reasons, flat (None where a job did not record it)."""
    details = item.details or {}
    moved_from = details.get("moved_from") or None
    return {
        "id": item.pk,
        "image_id": item.image_id,
        "status": item.status,
        "strategy": item.strategy,
        "strategy_name": str(_STRATEGY_NAMES.get(item.strategy, item.strategy)),
        "priority": item.priority,
        "rank": details.get("rank"),
        "similarity": details.get("similarity"),
        "probability": details.get("probability"),
        "seed_image_id": details.get("seed_image_id"),
        "score": details.get("score"),
        "rule": details.get("rule"),
        "band": details.get("band"),
        "high": details.get("high"),
        "model_version": details.get("model_version"),
        "job_id": details.get("job_id"),
        "moved_from": moved_from,
        "labels_done": item.labels_done,
        "labels_needed": item.labels_needed,
        "created_at": item.created_at,
    }


def queue_items_explained(
    *,
    queue: Queue,
    status: str | None = None,
    strategy: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> tuple[list[dict], int]:
    """Items of `queue` in serving order (filtered by status and strategy), explained, and how
    many match in all (PostgreSQL's estimate beyond a few thousand: labeling.selectors.counts)."""
    # The rows name their image by id only: no join with the images (at a million items, a
    # filtered page joined to them made PostgreSQL hash the whole image table).
    items: QuerySet[QueueItem] = queue_items_list(
        queue=queue, status=status, strategy=strategy
    ).select_related(None)
    limit = max(1, min(int(limit), MAX_ITEMS))
    rows = [queue_item_explain(item) for item in items[offset : offset + limit]]
    return rows, count_or_estimate(items.order_by())[0]
