"""The yield of each selection strategy: what the items it queued turned out to be.

Per strategy, over the project's labeling-queue items: how many were queued, how many now have a
current label (labeling.selectors.labels.current_labels, the one rule for that), how many of
those are the positive class, and how many flipped the model's decision (the label disagrees
with the `decision` the model version made when the item was selected, kept in the item's
details). A strategy that finds positives and flips is worth its labels; one that does not is not.
"""

from __future__ import annotations

from labeling.models import Project, Queue, QueueItem, Strategy
from labeling.selectors.labels import current_labels


def strategy_yield(*, project: Project) -> list[dict]:
    labels = current_labels(project=project)
    positive = project.positive_class
    rows: dict[str, dict] = {}
    items = QueueItem.objects.filter(
        queue__project=project, queue__kind=Queue.Kind.LABELING
    ).values_list("image_id", "strategy", "details__decision")
    for image_id, strategy, decision in items:
        row = rows.setdefault(
            strategy, {"queued": 0, "labeled": 0, "positive": 0, "flipped": 0, "with_decision": 0}
        )
        row["queued"] += 1
        value = labels.get(image_id)
        if value is None:
            continue
        row["labeled"] += 1
        is_positive = value == positive
        row["positive"] += int(is_positive)
        if isinstance(decision, bool):
            row["with_decision"] += 1
            row["flipped"] += int(is_positive != decision)
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
