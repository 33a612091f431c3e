"""The yield of each selection strategy: what the items it queued turned out to be.

Per strategy, over the project's labeling-queue items: how many were queued, how many now have a
current label (labeling.models.CurrentLabel, kept by the trigger with the one rule for that),
how many of those are the positive class, and how many flipped the model's decision (the label
disagrees with the `decision` the model version made when the item was selected, kept in the
item's details). A strategy that finds positives and flips is worth its labels; one that does
not is not.

`strategy_yield` is one GROUP BY over the queue's items (about a second for a million of them);
the jobs page and the API show `strategy_yield_recent`, the same figures at most
YIELD_CACHE_SECONDS old, so a page load does not pay for the whole queue each time.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Count, Q

from labeling.models import Project, Queue, QueueItem, Strategy

YIELD_CACHE_SECONDS = 60


def strategy_yield(*, project: Project) -> list[dict]:
    positive = project.positive_class
    labeled = Q(image__current_row__isnull=False)
    is_positive = Q(image__current_row__value=positive)
    decided = Q(details__decision=True) | Q(details__decision=False)
    flipped = labeled & (
        (is_positive & Q(details__decision=False)) | (~is_positive & Q(details__decision=True))
    )
    counts = (
        QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.LABELING)
        .values("strategy")
        .annotate(
            queued=Count("id"),
            labeled=Count("id", filter=labeled),
            positive=Count("id", filter=is_positive),
            with_decision=Count("id", filter=labeled & decided),
            flipped=Count("id", filter=flipped),
        )
        .order_by()
    )
    rows = {row.pop("strategy"): row for row in counts}
    names = dict(Strategy.choices)
    ordered = [s for s in Strategy.values if s in rows]
    return [
        {
            "strategy": s,
            "name": names[s],
            **rows[s],
            "positive_rate": round(rows[s]["positive"] / rows[s]["labeled"], 4)
            if rows[s]["labeled"]
            else None,
        }
        for s in ordered
    ]


def strategy_yield_recent(*, project: Project) -> list[dict]:
    """`strategy_yield`, computed at most once per YIELD_CACHE_SECONDS per project."""
    key = f"strategy-yield:{project.pk}:{project.positive_class}"
    rows = cache.get(key)
    if rows is None:
        # Cached without the display names: they are put back in the reader's language.
        rows = [
            {k: v for k, v in row.items() if k != "name"} for row in strategy_yield(project=project)
        ]
        cache.set(key, rows, YIELD_CACHE_SECONDS)
    names = dict(Strategy.choices)
    return [{**row, "name": names[row["strategy"]]} for row in rows]
