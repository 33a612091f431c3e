"""Reads of queues: progress, the queues a person may work in, items and leases."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import Case, QuerySet, Sum, Value, When
from django.utils import timezone

from labeling.models import Lease, Project, Queue, QueueItem, QueueItemCount
from labeling.permissions import can_label, queue_kinds_closed_to


def _leased(queue: Queue, now: datetime) -> int:
    """Open items of ``queue`` someone holds an unexpired lease on."""
    return (
        Lease.objects.filter(
            item__queue=queue,
            item__status=QueueItem.Status.OPEN,
            state=Lease.State.ACTIVE,
            expires_at__gt=now,
        )
        .values("item")
        .distinct()
        .count()
    )


def _progress(counts: dict, leased: int) -> dict:
    return {
        "open": counts["open"],
        "done": counts["done"],
        "total": counts["open"] + counts["done"],
        "removed": counts["removed"],
        "leased": leased,
    }


def queue_progress(*, queue: Queue, now: datetime | None = None) -> dict:
    """Item counts of a queue: open, done, total (open + done), removed, and leased (open items
    someone holds an unexpired lease on)."""
    now = now or timezone.now()
    return _progress(_status_counts(queue), _leased(queue, now))


def _status_counts(queue: Queue) -> dict:
    """The queue's item count per status: the sums of the counts the database triggers keep
    (models.QueueItemCount, labeling.selectors.item_count_sql), a few dozen rows, not a count
    of its items."""
    sums = (
        QueueItemCount.objects.filter(queue_id=queue.pk)
        .values("status")
        .annotate(total=Sum("n"))
        .values_list("status", "total")
    )
    counts = dict.fromkeys(QueueItem.Status.values, 0)
    counts.update(sums)
    return counts


def queue_progress_page(*, queue: Queue, now: datetime | None = None) -> dict:
    """`queue_progress` for pages that list queues (home, project, queue items). The counts are
    kept exact by triggers at any size (they were PostgreSQL's estimates beyond EXACT_UP_TO
    items); `estimated` stays, always False, for the templates that show it."""
    return {**queue_progress(queue=queue, now=now), "estimated": False}


def queues_for_user(*, project: Project, user: User) -> QuerySet[Queue]:
    """Active queues of the project the user may work in (review queues for leads only), the
    validation queue first: the split every model is measured on is labeled early."""
    if not can_label(user, project):
        return Queue.objects.none()
    qs = Queue.objects.filter(project=project, is_active=True)
    qs = qs.exclude(kind__in=queue_kinds_closed_to(user, project))
    first = Case(When(kind=Queue.Kind.VALIDATION, then=Value(0)), default=Value(1))
    return qs.order_by(first, "kind", "name")


def queue_items_list(
    *, queue: Queue, status: str | None = None, strategy: str | None = None
) -> QuerySet[QueueItem]:
    """Items of a queue in serving order, with their image."""
    qs = QueueItem.objects.filter(queue=queue).select_related("image")
    if status is not None:
        qs = qs.filter(status=status)
    if strategy is not None:
        qs = qs.filter(strategy=strategy)
    return qs.order_by("-priority", "id")


def leases_active(
    *, queue: Queue, annotator: User | None = None, now: datetime | None = None
) -> QuerySet[Lease]:
    """Unexpired active leases in a queue (of one annotator, if given), oldest first."""
    now = now or timezone.now()
    qs = Lease.objects.filter(item__queue=queue, state=Lease.State.ACTIVE, expires_at__gt=now)
    if annotator is not None:
        qs = qs.filter(annotator=annotator)
    return qs.select_related("item__image").order_by("created_at", "id")
