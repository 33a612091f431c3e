"""Reads of queues: progress, the queues a person may work in, items and leases."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import Case, Count, Q, QuerySet, Value, When
from django.utils import timezone

from labeling.models import Lease, Project, Queue, QueueItem
from labeling.permissions import can_label, queue_kinds_closed_to
from labeling.selectors.counts import EXACT_UP_TO, count_or_estimate, estimated_rows


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
    counts = QueueItem.objects.filter(queue=queue).aggregate(
        open=Count("id", filter=Q(status=QueueItem.Status.OPEN)),
        done=Count("id", filter=Q(status=QueueItem.Status.DONE)),
        removed=Count("id", filter=Q(status=QueueItem.Status.REMOVED)),
    )
    return _progress(counts, _leased(queue, now))


def queue_progress_page(*, queue: Queue, now: datetime | None = None) -> dict:
    """`queue_progress` for pages that list queues (home, project, queue items): the same
    counts, exact for a queue of up to EXACT_UP_TO items and PostgreSQL's estimates per status
    beyond (labeling.selectors.counts); `estimated` says which. The labeling pages' own progress
    (the queue API) stays `queue_progress`."""
    items = QueueItem.objects.filter(queue=queue)
    size = estimated_rows(items)
    if size is None or size <= EXACT_UP_TO:
        return {**queue_progress(queue=queue, now=now), "estimated": False}
    counts = {
        status: count_or_estimate(items.filter(status=status))[0]
        for status in (QueueItem.Status.OPEN, QueueItem.Status.DONE, QueueItem.Status.REMOVED)
    }
    return {**_progress(counts, _leased(queue, now or timezone.now())), "estimated": True}


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
