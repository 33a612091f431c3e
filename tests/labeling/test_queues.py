"""Queue services and selectors on the real database: adding, claiming, skipping, expiring."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from labeling.models import Lease, Queue, QueueItem, Strategy
from labeling.selectors.queues import queue_items_list, queue_progress, queues_for_user
from labeling.services.labels import lease_submit
from labeling.services.queues import (
    lease_skip,
    leases_expire,
    queue_claim_next,
    queue_get_or_create,
    queue_items_add,
)
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup():
    annotators = [make_user("annotator") for _ in range(4)]
    project = make_project(members=annotators)
    queue = make_queue(project)
    images = [make_image(project) for _ in range(5)]
    return project, queue, images, annotators


def test_items_add_skips_duplicates_and_uses_overlap(setup):
    project, queue, images, _ = setup
    project.labels_per_item = 3
    project.save()
    queue.refresh_from_db()
    assert queue_items_add(queue=queue, images=images[:3], strategy=Strategy.MANUAL) == 3
    assert queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL) == 2
    assert QueueItem.objects.filter(queue=queue).count() == 5
    assert set(QueueItem.objects.filter(queue=queue).values_list("labels_needed", flat=True)) == {3}


def test_items_add_rejects_bad_input_and_other_projects_images(setup):
    _project, queue, images, _ = setup
    other_image = make_image(make_project())
    with pytest.raises(ValidationError, match="another project"):
        queue_items_add(queue=queue, images=[images[0], other_image], strategy=Strategy.MANUAL)
    with pytest.raises(ValidationError, match="Unknown strategy"):
        queue_items_add(queue=queue, images=images, strategy="guess")
    with pytest.raises(ValidationError, match="finite"):
        queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL, priority=float("nan"))
    # Nothing was half-added.
    assert not QueueItem.objects.filter(queue=queue).exists()


def test_review_queue_items_need_one_label(setup):
    project, _queue, images, _ = setup
    project.labels_per_item = 3
    project.save()
    review = queue_get_or_create(project=project, kind=Queue.Kind.REVIEW)
    assert review.name == "Re-review"
    queue_items_add(queue=review, images=images[:1], strategy=Strategy.NOISE_REVIEW)
    assert QueueItem.objects.get(queue=review).labels_needed == 1


def test_queue_get_or_create_is_idempotent_and_checks_kind(setup):
    project, _queue, _images, _ = setup
    first = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    assert first.name == "Labeling"
    assert queue_get_or_create(project=project, kind=Queue.Kind.LABELING).pk == first.pk
    with pytest.raises(ValidationError, match="already exists"):
        queue_get_or_create(project=project, kind=Queue.Kind.REVIEW, name="Labeling")


def test_claim_serves_by_priority_and_reload_burns_nothing(setup):
    _project, queue, images, (alice, *_rest) = setup
    for rank, image in enumerate(images):
        queue_items_add(queue=queue, images=[image], strategy=Strategy.MANUAL, priority=rank)
    leases = queue_claim_next(queue=queue, annotator=alice, count=2)
    assert [lease.item.image_id for lease in leases] == [images[4].pk, images[3].pk]
    assert leases[0].item.image.pk == images[4].pk  # the image is loaded for the serializer
    again = queue_claim_next(queue=queue, annotator=alice, count=2)
    assert [lease.pk for lease in again] == [lease.pk for lease in leases]
    more = queue_claim_next(queue=queue, annotator=alice, count=3)
    assert [lease.pk for lease in more[:2]] == [lease.pk for lease in leases]
    assert more[2].item.image_id == images[2].pk
    assert Lease.objects.filter(annotator=alice, state=Lease.State.ACTIVE).count() == 3


def test_claim_overlap_gives_distinct_people_and_stops_at_k(setup):
    project, queue, images, annotators = setup
    project.labels_per_item = 2
    project.save()
    queue.refresh_from_db()
    queue_items_add(queue=queue, images=images[:1], strategy=Strategy.MANUAL)
    first = queue_claim_next(queue=queue, annotator=annotators[0])
    second = queue_claim_next(queue=queue, annotator=annotators[1])
    third = queue_claim_next(queue=queue, annotator=annotators[2])
    assert len(first) == len(second) == 1
    assert {first[0].slot, second[0].slot} == {0, 1}
    assert third == []
    # The same person never gets the same item twice, even after labeling it.
    lease_submit(lease=first[0], annotator=annotators[0], value="normal")
    assert queue_claim_next(queue=queue, annotator=annotators[0]) == []


def test_expired_lease_is_claimable_again_and_marked(setup):
    _project, queue, images, (alice, bob, *_rest) = setup
    queue_items_add(queue=queue, images=images[:1], strategy=Strategy.MANUAL)
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    assert queue_claim_next(queue=queue, annotator=bob) == []
    later = timezone.now() + timedelta(seconds=queue.project.lease_seconds + 1)
    (taken,) = queue_claim_next(queue=queue, annotator=bob, now=later)
    assert taken.item_id == lease.item_id
    lease.refresh_from_db()
    assert lease.state == Lease.State.EXPIRED


def test_leases_expire_sweep(setup):
    _project, queue, images, (alice, *_rest) = setup
    queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL)
    queue_claim_next(queue=queue, annotator=alice, count=3)
    assert leases_expire() == 0
    later = timezone.now() + timedelta(hours=1)
    assert leases_expire(now=later) == 3
    assert Lease.objects.filter(state=Lease.State.EXPIRED).count() == 3
    assert queue_progress(queue=queue)["leased"] == 0


def test_skip_frees_the_slot_and_keeps_the_item_from_the_skipper(setup):
    _project, queue, images, (alice, bob, *_rest) = setup
    queue_items_add(queue=queue, images=images[:2], strategy=Strategy.MANUAL, priority=1.0)
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    with pytest.raises(PermissionDenied):
        lease_skip(lease=lease, annotator=bob)
    lease_skip(lease=lease, annotator=alice)
    lease.refresh_from_db()
    assert lease.state == Lease.State.RELEASED
    (next_for_alice,) = queue_claim_next(queue=queue, annotator=alice)
    assert next_for_alice.item_id != lease.item_id
    lease_skip(lease=next_for_alice, annotator=alice)
    assert queue_claim_next(queue=queue, annotator=alice) == []  # both skipped just now
    (for_bob,) = queue_claim_next(queue=queue, annotator=bob)
    assert for_bob.item_id == lease.item_id  # the skipped item goes to others at once


def test_skip_of_a_labeled_item_is_refused(setup):
    _project, queue, images, (alice, *_rest) = setup
    queue_items_add(queue=queue, images=images[:1], strategy=Strategy.MANUAL)
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    lease_submit(lease=lease, annotator=alice, value="normal")
    with pytest.raises(ValidationError, match="undo"):
        lease_skip(lease=lease, annotator=alice)


def test_claim_permissions(setup):
    project, queue, images, (alice, *_rest) = setup
    queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL)
    outsider = make_user("annotator")
    with pytest.raises(PermissionDenied):
        queue_claim_next(queue=queue, annotator=outsider)
    review = queue_get_or_create(project=project, kind=Queue.Kind.REVIEW)
    with pytest.raises(PermissionDenied, match="leads"):
        queue_claim_next(queue=review, annotator=alice)
    lead = make_user("lead")
    project.members.add(lead)
    queue_items_add(queue=review, images=images[:1], strategy=Strategy.NOISE_REVIEW)
    assert len(queue_claim_next(queue=review, annotator=lead)) == 1
    with pytest.raises(ValidationError):
        queue_claim_next(queue=queue, annotator=alice, count=0)


def test_progress_and_queue_selectors(setup):
    project, queue, images, (alice, *_rest) = setup
    queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL)
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    lease_submit(lease=lease, annotator=alice, value="normal")
    queue_claim_next(queue=queue, annotator=alice, count=2)
    assert queue_progress(queue=queue) == {
        "open": 4,
        "done": 1,
        "total": 5,
        "removed": 0,
        "leased": 2,
    }
    assert list(queue_items_list(queue=queue, status=QueueItem.Status.DONE)) == [lease.item]
    queue_get_or_create(project=project, kind=Queue.Kind.REVIEW)
    assert [q.kind for q in queues_for_user(project=project, user=alice)] == ["labeling"]
    lead = make_user("lead")
    project.members.add(lead)
    assert len(queues_for_user(project=project, user=lead)) == 2
