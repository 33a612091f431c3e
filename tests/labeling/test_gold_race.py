"""Gold items under concurrency against a real PostgreSQL (issue 9, item 3): 16 annotators
claim and submit grid pages at once while gold items are mixed in. No deadlock or error; every
ordinary item is labeled by exactly one person (overlap 1); nobody answers a gold item twice;
gold answers never count toward an item's labels nor become an image's label.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from labeling.models import Label, Lease, QueueItem, Strategy
from labeling.selectors.labels import current_labels
from labeling.services.gold import gold_mark
from labeling.services.labels import labels_submit_batch
from labeling.services.queues import queue_claim_next, queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user
from tests.labeling.test_race import _annotators

pytestmark = [pytest.mark.race, pytest.mark.django_db(transaction=True)]

THREADS = 16
ITEMS = 120
GOLD = 6


def test_concurrent_claims_with_gold_mixed_in():
    lead = make_user("lead")
    project = make_project(members=[lead], gold_rate=0.3)
    queue = make_queue(project)
    gold_images = [make_image(project, seed=20_000 + i) for i in range(GOLD)]
    for image in gold_images:
        Label.objects.create(
            project=project, image=image, annotator=lead, kind=Label.Kind.IMPORTED, value="normal"
        )
    gold_mark(project=project, images=[i.pk for i in gold_images], user=lead)
    images = [make_image(project, seed=21_000 + i) for i in range(ITEMS)]
    queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL)
    annotators = _annotators(project, THREADS, "goldrace")
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work(annotator, seed):
        rng = random.Random(seed)
        try:
            barrier.wait()
            while True:
                leases = queue_claim_next(queue=queue, annotator=annotator, count=6)
                if not leases:
                    return
                labels_submit_batch(
                    annotator=annotator,
                    entries=[
                        {"lease": lease, "value": rng.choice(["normal", "disgusting"])}
                        for lease in leases
                    ],
                )
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(work, annotators, range(THREADS)))
    assert errors == []

    ordinary = QueueItem.objects.filter(queue=queue)
    assert ordinary.filter(status=QueueItem.Status.DONE).count() == ITEMS
    counted = Counter(
        Lease.objects.filter(item__queue=queue, state=Lease.State.COMPLETED).values_list(
            "item_id", flat=True
        )
    )
    assert set(counted.values()) == {1} and len(counted) == ITEMS
    answers = list(
        Label.objects.filter(project=project, strategy=Strategy.GOLD).values_list(
            "annotator_id", "image_id"
        )
    )
    assert answers, "gold was never served"
    assert len(answers) == len(set(answers))  # nobody answered a gold item twice
    gold_items = QueueItem.objects.filter(queue__kind="gold")
    assert set(gold_items.values_list("labels_done", flat=True)) == {0}
    labels = current_labels(project=project)
    assert all(labels[image.pk] == "normal" for image in gold_images)
