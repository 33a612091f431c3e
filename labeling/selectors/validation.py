"""Reads of the frozen validation split's labeling progress (engineers' pages and the API)."""

from __future__ import annotations

from django.db.models import Exists, OuterRef

from labeling.models import Image, Project, Queue, QueueItem
from labeling.selectors.labels import current_labels


def validation_progress(*, project: Project) -> dict:
    """How far the validation split is labeled: its images, labeled ones (positive / other),
    the validation queue's open items, and unlabeled images no open item will bring to anyone
    (`not_queued`: the refill action queues them)."""
    images = Image.objects.filter(project=project, split=Image.Split.VALIDATION)
    labels = current_labels(project=project, split=Image.Split.VALIDATION)
    positive = sum(1 for value in labels.values() if value == project.positive_class)
    queue = Queue.objects.filter(project=project, kind=Queue.Kind.VALIDATION).order_by("id").first()
    open_items = QueueItem.objects.filter(
        queue__project=project,
        queue__kind__in=[Queue.Kind.VALIDATION, Queue.Kind.LABELING],
        image=OuterRef("pk"),
        status=QueueItem.Status.OPEN,
    )
    unlabeled = images.exclude(pk__in=list(labels))
    total = images.count()
    return {
        "images": total,
        "labeled": len(labels),
        "positive": positive,
        "negative": len(labels) - positive,
        "percent": round(100 * len(labels) / total) if total else 0,
        "queue_id": queue.pk if queue else None,
        "queue_name": queue.name if queue else None,
        "open": QueueItem.objects.filter(queue=queue, status=QueueItem.Status.OPEN).count()
        if queue
        else 0,
        "not_queued": unlabeled.exclude(Exists(open_items)).count(),
    }
