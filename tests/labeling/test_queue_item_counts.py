"""The per-queue, per-status item counts (labeling.models.QueueItemCount) kept by the triggers
of migration 0017 equal a direct COUNT of the items after random sequences of bulk and single
inserts, status changes (bulk and single), moves between queues, deletes and the deletion of a
queue or a project; the backfill computes the same sums. Runs on the vendor of DATABASE_URL
(PostgreSQL's statement-level triggers or SQLite's row triggers)."""

# The one string-built statement takes only placeholders from this file, never input.
# ruff: noqa: S608
from __future__ import annotations

import random

import pytest
from django.db import connection
from django.db.models import Count, Sum

from labeling.models import Queue, QueueItem, QueueItemCount
from labeling.selectors import item_count_sql
from labeling.selectors.queues import queue_progress
from tests.factories import make_image, make_project, make_queue

pytestmark = pytest.mark.django_db

STATUSES = QueueItem.Status.values


def _direct() -> dict:
    rows = QueueItem.objects.values_list("queue_id", "status").annotate(c=Count("id"))
    return {(q, s): c for q, s, c in rows}


def _kept() -> dict:
    rows = QueueItemCount.objects.values_list("queue_id", "status").annotate(c=Sum("n"))
    return {(q, s): c for q, s, c in rows if c}


def _check() -> None:
    assert _kept() == _direct()
    # No rows outlive their queue.
    assert set(QueueItemCount.objects.values_list("queue_id", flat=True)) <= set(
        Queue.objects.values_list("id", flat=True)
    )
    for queue in Queue.objects.all():
        direct = {s: QueueItem.objects.filter(queue=queue, status=s).count() for s in STATUSES}
        progress = queue_progress(queue=queue)
        assert {s: progress[s] for s in STATUSES} == direct
        assert progress["total"] == direct["open"] + direct["done"]


def _insert_by_selection(queue: Queue, images: list) -> None:
    """One INSERT ... SELECT of many rows, as a bulk selection writes them."""
    ids = [image.pk for image in images]
    if not ids:
        return
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO labeling_queueitem (queue_id, image_id, strategy, priority, status, "
            "labels_needed, labels_done, details, created_at) "
            f"SELECT %s, id, 'manual', 0, 'open', 1, 0, '{{}}', CURRENT_TIMESTAMP "
            f"FROM labeling_image WHERE id IN ({marks})",
            [queue.pk, *ids],
        )


def _free_images(queue: Queue, images: list) -> list:
    taken = set(QueueItem.objects.filter(queue=queue).values_list("image_id", flat=True))
    return [image for image in images if image.pk not in taken]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counts_follow_random_writes(seed):
    rng = random.Random(seed)
    projects = [make_project(), make_project()]
    images = {
        p.pk: [make_image(p, seed=seed * 1000 + i + 100 * n) for i in range(24)]
        for n, p in enumerate(projects)
    }
    queues = [make_queue(p) for p in projects for _ in range(2)]
    for step in range(40):
        queue = rng.choice(queues)
        pool = images[queue.project_id]
        items = list(QueueItem.objects.filter(queue=queue))
        op = rng.choice(
            [
                "bulk",
                "select",
                "single",
                "status",
                "bulk_status",
                "move",
                "delete",
                "bulk_delete",
                "priority",
            ]
        )
        if op == "bulk":
            free = _free_images(queue, pool)
            QueueItem.objects.bulk_create(
                [
                    QueueItem(queue=queue, image=image, status=rng.choice(STATUSES))
                    for image in rng.sample(free, min(len(free), rng.randint(1, 8)))
                ]
            )
        elif op == "select":
            free = _free_images(queue, pool)
            _insert_by_selection(queue, rng.sample(free, min(len(free), rng.randint(1, 8))))
        elif op == "single":
            free = _free_images(queue, pool)
            if free:
                QueueItem.objects.create(queue=queue, image=rng.choice(free))
        elif op == "status" and items:
            item = rng.choice(items)
            item.status = rng.choice(STATUSES)
            item.save()
        elif op == "bulk_status" and items:
            picked = rng.sample(items, rng.randint(1, len(items)))
            QueueItem.objects.filter(pk__in=[i.pk for i in picked]).update(
                status=rng.choice(STATUSES)
            )
        elif op == "move" and items:
            others = [q for q in queues if q.project_id == queue.project_id and q != queue]
            target = others[0] if others else None
            if target is not None:
                taken = set(
                    QueueItem.objects.filter(queue=target).values_list("image_id", flat=True)
                )
                movable = [i.pk for i in items if i.image_id not in taken]
                QueueItem.objects.filter(pk__in=movable[: rng.randint(1, 4)]).update(
                    queue=target, status=rng.choice(STATUSES)
                )
        elif op == "delete" and items:
            rng.choice(items).delete()
        elif op == "bulk_delete" and items:
            QueueItem.objects.filter(
                pk__in=[i.pk for i in rng.sample(items, min(3, len(items)))]
            ).delete()
        elif op == "priority" and items:
            # An update that changes no count writes no count row.
            before = QueueItemCount.objects.count()
            QueueItem.objects.filter(queue=queue).update(priority=rng.random())
            assert QueueItemCount.objects.count() == before
        _check()
        if step == 25:
            # A queue's deletion cascades to its items and takes its count rows along.
            doomed = queues.pop(rng.randrange(len(queues)))
            doomed.delete()
            _check()
    # A project's deletion cascades to its queues and items.
    projects[0].delete()
    queues = [q for q in queues if q.project_id != projects[0].pk]
    _check()
    assert not QueueItemCount.objects.exclude(queue_id__in=[q.pk for q in queues]).exists()


def test_backfill_computes_the_same_sums():
    project = make_project()
    queue, other = make_queue(project), make_queue(project)
    pool = [make_image(project, seed=7000 + i) for i in range(10)]
    _insert_by_selection(queue, pool)
    QueueItem.objects.filter(queue=queue, image__in=pool[:3]).update(status="done")
    QueueItem.objects.filter(queue=queue, image__in=pool[3:5]).update(queue=other)
    QueueItem.objects.filter(queue=queue, image=pool[5]).update(status="removed")
    kept = _kept()
    QueueItemCount.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(item_count_sql.BACKFILL_SQL)
    assert _kept() == kept == _direct()
    assert kept[(queue.pk, "done")] == 3
    assert kept[(other.pk, "open")] == 2


def test_queue_progress_reads_few_rows_not_the_items(django_assert_max_num_queries):
    project = make_project()
    queue = make_queue(project)
    _insert_by_selection(queue, [make_image(project, seed=8000 + i) for i in range(6)])
    # One read of the counts, one of the leases: the same number of queries as before.
    with django_assert_max_num_queries(2):
        progress = queue_progress(queue=queue)
    assert progress == {"open": 6, "done": 0, "total": 6, "removed": 0, "leased": 0}
