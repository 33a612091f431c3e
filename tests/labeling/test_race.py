"""1,000 concurrent claims against a real PostgreSQL: nobody gets an item twice, no item gets
more holders than its overlap k, and an abandoned item comes back after its lease expires.

Each worker thread has its own database connection (Django keeps one per thread) and closes it
when done; all threads start together behind a barrier, and the test checks from the recorded
timings that claims really overlapped. Threads stay well under PostgreSQL's connection limit,
which the other test databases on the server share.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from labeling.models import Label, Lease, QueueItem, Strategy
from labeling.services.labels import labels_submit_batch, lease_submit
from labeling.services.queues import queue_claim_next, queue_items_add
from tests.factories import make_image, make_project, make_queue

pytestmark = [pytest.mark.race, pytest.mark.django_db(transaction=True)]

THREADS = 16
CLAIMS = 1000
ITEMS = 100


def _annotators(project, n: int, prefix: str) -> list[User]:
    users = User.objects.bulk_create(
        [User(username=f"{prefix}{i}", password="!") for i in range(n)]  # noqa: S106 unusable
    )
    group = Group.objects.get(name="annotator")
    User.groups.through.objects.bulk_create(
        [User.groups.through(user_id=u.pk, group_id=group.pk) for u in users]
    )
    project.members.through.objects.bulk_create(
        [project.members.through(user_id=u.pk, project_id=project.pk) for u in users]
    )
    return list(User.objects.filter(pk__in=[u.pk for u in users]).order_by("pk"))


def _setup(*, k: int):
    project = make_project(labels_per_item=k)
    queue = make_queue(project)
    images = [make_image(project, seed=10_000 + i) for i in range(ITEMS)]
    assert queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL) == ITEMS
    return project, queue


def _claim_concurrently(queue, annotators, *, now=None) -> dict:
    """One claim per annotator, spread over THREADS threads that start together."""
    barrier = threading.Barrier(THREADS)
    chunks = [annotators[i::THREADS] for i in range(THREADS)]
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    won: dict[int, list[int]] = {}

    def work(chunk):
        try:
            barrier.wait()
            for annotator in chunk:
                started = time.perf_counter()
                leases = queue_claim_next(queue=queue, annotator=annotator, now=now)
                spans.append((started, time.perf_counter()))
                won[annotator.pk] = [lease.item_id for lease in leases]
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(work, chunks))
    assert errors == []
    # The claims really ran side by side: at some instant many were in flight at once.
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    in_flight = peak = 0
    for _t, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak >= THREADS // 2
    return won


def _holders(queue) -> dict[int, list[int]]:
    """item id -> annotators holding (active) or having completed it, from the database."""
    holders: dict[int, list[int]] = {pk: [] for pk in queue.items.values_list("pk", flat=True)}
    for item_id, annotator_id in Lease.objects.filter(
        item__queue=queue, state__in=[Lease.State.ACTIVE, Lease.State.COMPLETED]
    ).values_list("item_id", "annotator_id"):
        holders[item_id].append(annotator_id)
    return holders


def test_each_item_is_leased_exactly_once_then_again_after_expiry():
    project, queue = _setup(k=1)
    annotators = _annotators(project, CLAIMS, "racer")
    t0 = time.perf_counter()
    won = _claim_concurrently(queue, annotators)
    elapsed = time.perf_counter() - t0

    holders = _holders(queue)
    assert all(len(people) == 1 for people in holders.values())
    winners = [pk for pk, items in won.items() if items]
    assert len(winners) == ITEMS  # 100 people got one item each, 900 got nothing
    assert sorted(item for items in won.values() for item in items) == sorted(holders)
    assert Lease.objects.filter(item__queue=queue).count() == ITEMS
    print(f"{CLAIMS} concurrent claims on {ITEMS} items: {elapsed:.2f} s")

    # Ten winners abandon their item: their leases run out.
    abandoned = list(Lease.objects.filter(item__queue=queue).order_by("pk")[:10])
    Lease.objects.filter(pk__in=[lease.pk for lease in abandoned]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    losers = [a for a in annotators if not won[a.pk]][:100]
    second = _claim_concurrently(queue, losers)
    reclaimed = sorted(item for items in second.values() for item in items)
    assert reclaimed == sorted(lease.item_id for lease in abandoned)
    assert all(len(people) == 1 for people in _holders(queue).values())
    assert Lease.objects.filter(
        pk__in=[lease.pk for lease in abandoned], state=Lease.State.EXPIRED
    ).count() == len(abandoned)


def test_overlap_three_gives_exactly_three_distinct_people_per_item():
    project, queue = _setup(k=3)
    annotators = _annotators(project, CLAIMS, "triple")
    _claim_concurrently(queue, annotators)
    holders = _holders(queue)
    assert {pk: len(people) for pk, people in holders.items()} == dict.fromkeys(holders, 3)
    assert all(len(set(people)) == 3 for people in holders.values())
    slots = Counter(
        Lease.objects.filter(item__queue=queue, state=Lease.State.ACTIVE)
        .values("item")
        .annotate(n=Count("slot", distinct=True))
        .values_list("n", flat=True)
    )
    assert slots == {3: ITEMS}  # three distinct slots on every item
    # Nobody else can get in, and expiry of the whole lot opens every slot again.
    late = _annotators(project, 30, "late")
    assert all(queue_claim_next(queue=queue, annotator=a) == [] for a in late[:3])
    later = timezone.now() + timedelta(seconds=project.lease_seconds + 1)
    again = _claim_concurrently(queue, late, now=later)
    assert sum(len(items) for items in again.values()) == 30
    assert all(len(people) <= 3 for people in _holders(queue).values())
    assert QueueItem.objects.filter(queue=queue, labels_done=0).count() == ITEMS


def test_concurrent_retries_of_one_submit_store_one_label():
    project, queue = _setup(k=1)
    (annotator,) = _annotators(project, 1, "retrier")
    (lease,) = queue_claim_next(queue=queue, annotator=annotator)
    barrier = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []

    def retry(_n):
        try:
            barrier.wait()
            label = lease_submit(
                lease=lease, annotator=annotator, value="normal", client_id="same-click"
            )
            results.append(label.pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(retry, range(8)))
    assert errors == []
    assert len(results) == 8 and len(set(results)) == 1
    assert Label.objects.filter(annotator=annotator).count() == 1
    assert QueueItem.objects.get(pk=lease.item_id).labels_done == 1


def test_overlapping_grid_pages_in_opposite_orders_do_not_deadlock():
    project, queue = _setup(k=3)
    annotators = _annotators(project, 3, "grid")
    pages = {a.pk: queue_claim_next(queue=queue, annotator=a, count=40) for a in annotators}
    # All three hold the same 40 items (k = 3); each submits its page in a different order.
    assert len({frozenset(lease.item_id for lease in page) for page in pages.values()}) == 1
    barrier = threading.Barrier(len(annotators))
    errors: list[BaseException] = []

    def submit(position_and_annotator):
        position, annotator = position_and_annotator
        page = pages[annotator.pk]
        order = page if position % 2 == 0 else list(reversed(page))
        try:
            barrier.wait()
            labels_submit_batch(
                annotator=annotator,
                entries=[{"lease": lease, "value": "normal"} for lease in order],
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(annotators)) as pool:
        list(pool.map(submit, enumerate(annotators)))
    assert errors == []
    items = QueueItem.objects.filter(pk__in=[lease.item_id for lease in pages[annotators[0].pk]])
    assert set(items.values_list("labels_done", "status")) == {(3, QueueItem.Status.DONE)}
    assert Label.objects.filter(queue=queue).count() == 120
