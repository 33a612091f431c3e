"""Reads of the frozen validation split's labeling progress (engineers' pages and the API)."""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from labeling.models import CurrentLabel, Image, Project, Queue, QueueItem

# How old the counts may be on the jobs page and the GET API (validation_progress(recent=True)).
PROGRESS_CACHE_SECONDS = 60


def _progress_key(project: Project) -> str:
    return f"validation-progress:{project.pk}:{project.positive_class}"


def validation_progress_forget(*, project: Project) -> None:
    """The refill changed what is queued: the next `validation_progress` counts again."""
    cache.delete(_progress_key(project))


def validation_progress(*, project: Project, recent: bool = False) -> dict:
    """`validation_counts`; with `recent` (the jobs page, the GET API), those counts at most
    PROGRESS_CACHE_SECONDS old: `not_queued` has to look at every unlabeled validation image
    (100,000 at a million images: about half a second), and the other counts read 100,000
    index entries each (10-20 ms). `counted_at` says when they were counted."""
    if not recent:
        return validation_counts(project=project)
    key = _progress_key(project)
    progress = cache.get(key)
    if progress is None:
        progress = validation_counts(project=project)
        cache.set(key, progress, PROGRESS_CACHE_SECONDS)
    return progress


def validation_counts(*, project: Project) -> dict:
    """How far the validation split is labeled: its images, labeled ones (positive / other),
    the validation queue's open items, and unlabeled images no open item will bring to anyone
    (`not_queued`: the refill action queues them).

    Counts come from indexes: the images by (project, split), the labeled ones from the
    current-label table (labeling.models.CurrentLabel, which carries the split), so the page
    does not read the split's label history."""
    images = Image.objects.filter(project=project, split=Image.Split.VALIDATION)
    labeled = CurrentLabel.objects.filter(project=project, split=Image.Split.VALIDATION).aggregate(
        labeled=Count("image"), positive=Count("image", filter=Q(value=project.positive_class))
    )
    queue = Queue.objects.filter(project=project, kind=Queue.Kind.VALIDATION).order_by("id").first()
    open_items = QueueItem.objects.filter(
        queue__project=project,
        queue__kind__in=[Queue.Kind.VALIDATION, Queue.Kind.LABELING],
        image=OuterRef("pk"),
        status=QueueItem.Status.OPEN,
    )
    unlabeled = images.exclude(
        Exists(
            CurrentLabel.objects.filter(
                project=project, split=Image.Split.VALIDATION, image=OuterRef("pk")
            )
        )
    )
    total = images.count()
    done = labeled["labeled"]
    return {
        "images": total,
        "labeled": done,
        "positive": labeled["positive"],
        "negative": done - labeled["positive"],
        "percent": round(100 * done / total) if total else 0,
        "queue_id": queue.pk if queue else None,
        "queue_name": queue.name if queue else None,
        "open": QueueItem.objects.filter(queue=queue, status=QueueItem.Status.OPEN).count()
        if queue
        else 0,
        "not_queued": unlabeled.exclude(Exists(open_items)).count(),
        "counted_at": timezone.now(),
    }
