"""Reads of the frozen validation split's labeling progress (engineers' pages and the API)."""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from labeling.models import CurrentLabel, Image, Project, Queue, QueueItem

# How old `not_queued` may be on the jobs page and the GET API (validation_progress(recent=True)).
NOT_QUEUED_CACHE_SECONDS = 60


def _not_queued_key(project: Project) -> str:
    return f"validation-not-queued:{project.pk}"


def validation_not_queued_forget(*, project: Project) -> None:
    """The refill changed what is queued: the next `validation_progress` counts again."""
    cache.delete(_not_queued_key(project))


def validation_progress(*, project: Project, recent: bool = False) -> dict:
    """How far the validation split is labeled: its images, labeled ones (positive / other),
    the validation queue's open items, and unlabeled images no open item will bring to anyone
    (`not_queued`: the refill action queues them).

    Counts come from indexes: the images by (project, split), the labeled ones from the
    current-label table (labeling.models.CurrentLabel, which carries the split), so the page
    does not read the split's label history. `not_queued` has to look at every unlabeled
    validation image (100,000 at a million images: about half a second); with `recent` (the
    jobs page, the GET API) it is that count at most NOT_QUEUED_CACHE_SECONDS old, and
    `not_queued_counted_at` says when it was counted. The refill drops it
    (validation_not_queued_forget); the others are counted on every call, so a lead who has
    just labeled the validation queue sees it done."""
    images = Image.objects.filter(project=project, split=Image.Split.VALIDATION)
    labeled = CurrentLabel.objects.filter(project=project, split=Image.Split.VALIDATION).aggregate(
        labeled=Count("image"), positive=Count("image", filter=Q(value=project.positive_class))
    )
    queue = Queue.objects.filter(project=project, kind=Queue.Kind.VALIDATION).order_by("id").first()
    not_queued = cache.get(_not_queued_key(project)) if recent else None
    if not_queued is None:
        not_queued = (_not_queued(project=project, images=images), timezone.now())
        if recent:
            cache.set(_not_queued_key(project), not_queued, NOT_QUEUED_CACHE_SECONDS)
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
        "not_queued": not_queued[0],
        "not_queued_counted_at": not_queued[1],
    }


def _not_queued(*, project: Project, images) -> int:
    """Unlabeled validation images that no open item of the validation or labeling queues
    holds."""
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
    return unlabeled.exclude(Exists(open_items)).count()
