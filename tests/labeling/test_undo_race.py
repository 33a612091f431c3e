"""Undo and unskip under concurrency, against a real PostgreSQL (issue 9, item 2): a label
changed by undo keeps the label services' guarantees. Threads start together behind a barrier,
each with its own connection.

- eight concurrent undos of the same grid page: one takes it back, the others are refused;
  one retraction per label, one fresh lease per item, counts back to zero;
- eight concurrent unskips of one skipped lease: all answer with the same single lease;
- an unskip racing other people's claims for the freed slot (overlap 1): exactly one holder.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from labeling.models import Label, Lease, QueueItem, Strategy
from labeling.services.labels import label_undo_last, labels_submit_batch, lease_unskip
from labeling.services.queues import lease_skip, queue_claim_next, queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = [pytest.mark.race, pytest.mark.django_db(transaction=True)]


def _together(n, fn):
    barrier = threading.Barrier(n)
    results, errors = [], []

    def run(i):
        try:
            barrier.wait()
            results.append(fn(i))
        except BaseException as exc:  # noqa: BLE001 collected and checked below
            errors.append(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(run, range(n)))
    return results, errors


def _world(n_images=24, n_people=1):
    people = [make_user("annotator") for _ in range(n_people)]
    project = make_project(members=people)
    queue = make_queue(project)
    images = [make_image(project, seed=20_000 + i) for i in range(n_images)]
    queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL)
    return project, queue, people


def test_concurrent_undos_of_one_page_take_it_back_once():
    _project, queue, (ann,) = _world()
    page = queue_claim_next(queue=queue, annotator=ann, count=24)
    labels = labels_submit_batch(
        annotator=ann, entries=[{"lease": lease, "value": "normal"} for lease in page]
    )
    ids = [label.pk for label in labels]
    results, errors = _together(
        8, lambda _i: label_undo_last(annotator=ann, queue=queue, label_ids=ids)
    )
    assert len(results) == 1 and len(results[0]) == 24
    assert len(errors) == 7 and all(isinstance(e, ValidationError) for e in errors)
    assert Label.objects.filter(kind=Label.Kind.RETRACTION, supersedes_id__in=ids).count() == 24
    items = QueueItem.objects.filter(pk__in=[lease.item_id for lease in page])
    assert set(items.values_list("labels_done", "status")) == {(0, QueueItem.Status.OPEN)}
    active = Lease.objects.filter(item__in=items, annotator=ann, state=Lease.State.ACTIVE)
    assert active.count() == 24 and active.values("item").distinct().count() == 24


def test_concurrent_unskips_give_one_lease():
    _project, queue, (ann,) = _world(n_images=2)
    (lease,) = queue_claim_next(queue=queue, annotator=ann)
    lease_skip(lease=lease, annotator=ann)
    results, errors = _together(8, lambda _i: lease_unskip(lease=lease, annotator=ann).pk)
    assert errors == []
    assert len(set(results)) == 1
    assert Lease.objects.filter(item_id=lease.item_id, state=Lease.State.ACTIVE).count() == 1


def test_unskip_racing_claims_for_the_freed_slot_leaves_one_holder():
    _project, queue, people = _world(n_images=1, n_people=8)
    first, others = people[0], people[1:]
    (lease,) = queue_claim_next(queue=queue, annotator=first)
    lease_skip(lease=lease, annotator=first)

    def act(i):
        if i == 0:
            try:
                return ("unskip", lease_unskip(lease=lease, annotator=first).pk)
            except ValidationError:
                return ("unskip", None)
        got = queue_claim_next(queue=queue, annotator=others[i - 1])
        return ("claim", got[0].pk if got else None)

    results, errors = _together(8, act)
    assert errors == []
    holders = [pk for _kind, pk in results if pk is not None]
    assert len(holders) == 1
    assert Lease.objects.filter(item_id=lease.item_id, state=Lease.State.ACTIVE).count() == 1
