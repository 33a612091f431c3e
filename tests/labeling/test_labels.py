"""Label services and selectors on the real database: submit, batch, undo, review, current label,
history, throughput and annotator quality."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from labeling.models import Label, Lease, Queue, QueueItem, Strategy
from labeling.selectors.labels import (
    annotator_quality,
    annotator_stats,
    current_labels,
    image_current_label,
    label_history,
    labels_active,
)
from labeling.services.labels import (
    label_undo_last,
    labels_submit_batch,
    lease_submit,
    review_resolve,
)
from labeling.services.queues import queue_claim_next, queue_get_or_create, queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    annotators = [make_user("annotator") for _ in range(3)]
    lead = make_user("lead")
    project = make_project(members=[*annotators, lead])
    queue = make_queue(project)
    images = [make_image(project) for _ in range(4)]
    queue_items_add(queue=queue, images=images, strategy=Strategy.CONFIDENCE_BAND)
    return project, queue, images, annotators, lead


def _overlap(project, queue, k):
    project.labels_per_item = k
    project.save()
    QueueItem.objects.filter(queue=queue).update(labels_needed=k)


# --- Submit -----------------------------------------------------------------------------------
def test_submit_writes_label_completes_lease_and_item(world):
    _project, queue, _images, (alice, *_), _lead = world
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    label = lease_submit(
        lease=lease, annotator=alice, value="disgusting", subcategory="animal", duration_ms=1500
    )
    assert (label.kind, label.value, label.subcategory) == ("annotation", "disgusting", "animal")
    assert label.queue == queue and label.queue_item_id == lease.item_id
    assert label.strategy == Strategy.CONFIDENCE_BAND  # copied from the item
    assert label.duration_ms == 1500
    lease.refresh_from_db()
    item = QueueItem.objects.get(pk=lease.item_id)
    assert lease.state == Lease.State.COMPLETED
    assert (item.labels_done, item.status) == (1, QueueItem.Status.DONE)
    assert item.done_at is not None


@pytest.mark.parametrize(
    ("value", "subcategory", "field"),
    [
        ("gross", "", "value"),
        ("disgusting", "plant", "subcategory"),
        ("normal", "animal", "subcategory"),  # a sub-category refines the positive class only
    ],
)
def test_submit_validates_against_schema_and_writes_nothing(world, value, subcategory, field):
    _project, queue, _images, (alice, *_), _lead = world
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    with pytest.raises(ValidationError) as excinfo:
        lease_submit(lease=lease, annotator=alice, value=value, subcategory=subcategory)
    assert field in excinfo.value.message_dict
    assert not Label.objects.exists()
    lease.refresh_from_db()
    assert lease.state == Lease.State.ACTIVE


def test_submit_refuses_someone_elses_lease_and_bad_duration(world):
    _project, queue, _images, (alice, bob, _), _lead = world
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    with pytest.raises(PermissionDenied):
        lease_submit(lease=lease, annotator=bob, value="normal")
    with pytest.raises(ValidationError, match="milliseconds"):
        lease_submit(lease=lease, annotator=alice, value="normal", duration_ms=-5)
    assert not Label.objects.exists()


def test_submit_is_idempotent_by_client_id(world):
    _project, queue, _images, (alice, *_), _lead = world
    first, second = queue_claim_next(queue=queue, annotator=alice, count=2)
    label = lease_submit(lease=first, annotator=alice, value="normal", client_id="c-1")
    again = lease_submit(lease=first, annotator=alice, value="normal", client_id="c-1")
    assert again.pk == label.pk
    assert Label.objects.count() == 1
    assert QueueItem.objects.get(pk=first.item_id).labels_done == 1
    with pytest.raises(ValidationError, match="another item"):
        lease_submit(lease=second, annotator=alice, value="normal", client_id="c-1")
    with pytest.raises(ValidationError, match="already labeled"):
        lease_submit(lease=first, annotator=alice, value="normal", client_id="c-2")


def test_late_submit_with_free_slot_counts(world):
    _project, queue, _images, (alice, *_), _lead = world
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    lease.refresh_from_db()
    label = lease_submit(lease=lease, annotator=alice, value="normal")
    lease.refresh_from_db()
    assert lease.state == Lease.State.COMPLETED
    assert QueueItem.objects.get(pk=lease.item_id).status == QueueItem.Status.DONE
    assert label.kind == Label.Kind.ANNOTATION


def test_late_submit_after_slot_was_taken_is_stored_but_not_counted(world):
    _project, queue, images, (alice, bob, _), _lead = world
    QueueItem.objects.filter(queue=queue).exclude(image=images[0]).delete()
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    later = timezone.now() + timedelta(seconds=queue.project.lease_seconds + 5)
    (bobs,) = queue_claim_next(queue=queue, annotator=bob, now=later)
    assert bobs.item_id == lease.item_id
    lease.refresh_from_db()
    late = lease_submit(lease=lease, annotator=alice, value="disgusting")
    assert Label.objects.filter(pk=late.pk).exists()  # real work is kept
    item = QueueItem.objects.get(pk=lease.item_id)
    assert (item.labels_done, item.status) == (0, QueueItem.Status.OPEN)
    lease_submit(lease=bobs, annotator=bob, value="normal")
    item.refresh_from_db()
    assert (item.labels_done, item.status) == (1, QueueItem.Status.DONE)


def test_submit_on_a_removed_item_keeps_the_label_and_counts_nothing(world):
    _project, queue, _images, (alice, *_), _lead = world
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    QueueItem.objects.filter(pk=lease.item_id).update(status=QueueItem.Status.REMOVED)
    label = lease_submit(lease=lease, annotator=alice, value="normal")
    assert Label.objects.filter(pk=label.pk).exists()
    item = QueueItem.objects.get(pk=lease.item_id)
    assert (item.status, item.labels_done) == (QueueItem.Status.REMOVED, 0)
    assert Lease.objects.get(pk=lease.pk).state == Lease.State.RELEASED


# --- Batch ------------------------------------------------------------------------------------
def test_batch_is_all_or_nothing_with_per_entry_errors(world):
    _project, queue, _images, (alice, *_), _lead = world
    leases = queue_claim_next(queue=queue, annotator=alice, count=3)
    entries = [
        {"lease": leases[0], "value": "normal", "client_id": "g-0"},
        {"lease": leases[1], "value": "nonsense", "client_id": "g-1"},
        {"lease": leases[2], "value": "disgusting", "subcategory": "human"},
    ]
    with pytest.raises(ValidationError) as excinfo:
        labels_submit_batch(annotator=alice, entries=entries)
    (message,) = excinfo.value.message_dict["entries"]
    assert message.startswith(f"entry 1 (lease {leases[1].pk})") and "nonsense" in message
    assert not Label.objects.exists()
    entries[1]["value"] = "normal"
    labels = labels_submit_batch(annotator=alice, entries=entries)
    assert [label.queue_item_id for label in labels] == [lease.item_id for lease in leases]
    assert QueueItem.objects.filter(status=QueueItem.Status.DONE).count() == 3


def test_batch_rolls_back_when_a_late_entry_fails_in_the_transaction(world):
    _project, queue, _images, (alice, *_), _lead = world
    leases = queue_claim_next(queue=queue, annotator=alice, count=2)
    lease_submit(lease=leases[1], annotator=alice, value="normal")
    with pytest.raises(ValidationError, match=f"lease {leases[1].pk}"):
        labels_submit_batch(
            annotator=alice,
            entries=[
                {"lease": leases[0], "value": "normal"},
                {"lease": leases[1], "value": "disgusting"},
            ],
        )
    assert Label.objects.count() == 1  # entry 0 was rolled back
    assert Lease.objects.get(pk=leases[0].pk).state == Lease.State.ACTIVE


# --- Undo -------------------------------------------------------------------------------------
def test_undo_retracts_reopens_and_gives_a_fresh_lease(world):
    _project, queue, _images, (alice, *_), _lead = world
    first, second = queue_claim_next(queue=queue, annotator=alice, count=2)
    label_a = lease_submit(lease=first, annotator=alice, value="normal")
    label_b = lease_submit(lease=second, annotator=alice, value="disgusting")
    (fresh,) = label_undo_last(annotator=alice, queue=queue)
    assert fresh.item_id == second.item_id and fresh.state == Lease.State.ACTIVE
    assert fresh.pk != second.pk
    retraction = Label.objects.get(kind=Label.Kind.RETRACTION)
    assert retraction.supersedes_id == label_b.pk and retraction.value == ""
    untouched = Label.objects.get(pk=label_b.pk)
    assert (untouched.value, untouched.kind) == ("disgusting", "annotation")
    item = QueueItem.objects.get(pk=second.item_id)
    assert (item.labels_done, item.status, item.done_at) == (0, QueueItem.Status.OPEN, None)
    assert Lease.objects.get(pk=second.pk).state == Lease.State.RELEASED
    assert image_current_label(image=item.image) is None
    # Label again on the fresh lease, then undo two at once.
    lease_submit(lease=fresh, annotator=alice, value="normal")
    leases = label_undo_last(annotator=alice, queue=queue, count=2)
    assert {lease.item_id for lease in leases} == {first.item_id, second.item_id}
    assert Label.objects.filter(kind=Label.Kind.RETRACTION).count() == 3
    assert Label.objects.filter(pk=label_a.pk).exists()
    newcomer = make_user("annotator")
    queue.project.members.add(newcomer)
    with pytest.raises(ValidationError, match="nothing"):
        label_undo_last(annotator=newcomer, queue=queue)


def test_undo_with_overlap_keeps_other_peoples_counts(world):
    project, queue, images, (alice, bob, _), _lead = world
    _overlap(project, queue, 2)
    (a,) = queue_claim_next(queue=queue, annotator=alice)
    (b,) = queue_claim_next(queue=queue, annotator=bob)
    assert a.item_id == b.item_id
    lease_submit(lease=a, annotator=alice, value="normal")
    lease_submit(lease=b, annotator=bob, value="normal")
    assert QueueItem.objects.get(pk=a.item_id).status == QueueItem.Status.DONE
    (fresh,) = label_undo_last(annotator=alice, queue=queue)
    item = QueueItem.objects.get(pk=a.item_id)
    assert (item.labels_done, item.status) == (1, QueueItem.Status.OPEN)
    assert fresh.item_id == item.pk
    assert Lease.objects.get(pk=b.pk).state == Lease.State.COMPLETED


# --- Lead review ------------------------------------------------------------------------------
def _review_item(project, image, lead):
    review = queue_get_or_create(project=project, kind=Queue.Kind.REVIEW)
    queue_items_add(queue=review, images=[image], strategy=Strategy.NOISE_REVIEW, created_by=lead)
    return QueueItem.objects.get(queue=review, image=image)


def test_review_confirm_and_flip_supersede_the_current_label(world):
    project, queue, images, (alice, *_), lead = world
    first, second = queue_claim_next(queue=queue, annotator=alice, count=2)
    label_1 = lease_submit(lease=first, annotator=alice, value="normal")
    label_2 = lease_submit(lease=second, annotator=alice, value="normal")

    item_1 = _review_item(project, label_1.image, lead)
    with pytest.raises(PermissionDenied):
        review_resolve(item=item_1, lead=alice, confirm=True)
    confirmation = review_resolve(item=item_1, lead=lead, confirm=True)
    assert confirmation.kind == Label.Kind.CONFIRMATION
    assert (confirmation.value, confirmation.supersedes_id) == ("normal", label_1.pk)
    item_1.refresh_from_db()
    assert item_1.status == QueueItem.Status.DONE
    with pytest.raises(ValidationError, match="already resolved"):
        review_resolve(item=item_1, lead=lead, confirm=False, value="disgusting")

    item_2 = _review_item(project, label_2.image, lead)
    with pytest.raises(ValidationError):
        review_resolve(item=item_2, lead=lead, confirm=False)  # a flip needs the new value
    correction = review_resolve(
        item=item_2, lead=lead, confirm=False, value="disgusting", subcategory="object"
    )
    assert (correction.kind, correction.supersedes_id) == (Label.Kind.CORRECTION, label_2.pk)
    assert image_current_label(image=label_2.image).pk == correction.pk
    assert current_labels(project=project)[label_2.image_id] == "disgusting"
    assert Label.objects.get(pk=label_2.pk).value == "normal"  # the original is untouched


def test_review_through_a_lead_lease(world):
    project, queue, _images, (alice, *_), lead = world
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    original = lease_submit(lease=lease, annotator=alice, value="normal")
    review_item = _review_item(project, original.image, lead)
    (lead_lease,) = queue_claim_next(queue=review_item.queue, annotator=lead)
    flip = lease_submit(lease=lead_lease, annotator=lead, value="disgusting", subcategory="animal")
    assert (flip.kind, flip.supersedes_id) == (Label.Kind.CORRECTION, original.pk)
    assert Lease.objects.get(pk=lead_lease.pk).state == Lease.State.COMPLETED
    assert QueueItem.objects.get(pk=review_item.pk).status == QueueItem.Status.DONE


# --- Current label, history, stats, quality ---------------------------------------------------
def _label(project, image, user, value, kind=Label.Kind.ANNOTATION, supersedes=None):
    return Label.objects.create(
        project=project, image=image, annotator=user, value=value, kind=kind, supersedes=supersedes
    )


def test_current_label_rules(world):
    project, _queue, images, (a, b, c), lead = world
    majority, tie, led, retracted = images
    _label(project, majority, a, "disgusting")
    _label(project, majority, b, "normal")
    _label(project, majority, c, "disgusting")
    _label(project, tie, a, "normal")
    tie_latest = _label(project, tie, b, "disgusting")
    lead_base = _label(project, led, a, "normal")
    _label(project, led, b, "normal")
    _label(project, led, lead, "disgusting", Label.Kind.CORRECTION, supersedes=lead_base)
    gone = _label(project, retracted, a, "disgusting")
    _label(project, retracted, a, "", Label.Kind.RETRACTION, supersedes=gone)

    assert image_current_label(image=majority).value == "disgusting"
    assert image_current_label(image=tie).pk == tie_latest.pk
    assert image_current_label(image=led).kind == Label.Kind.CORRECTION
    assert image_current_label(image=retracted) is None
    expected = {majority.pk: "disgusting", tie.pk: "disgusting", led.pk: "disgusting"}
    assert current_labels(project=project) == expected
    assert current_labels(project=project, split="validation") == {}
    assert labels_active(image=retracted).count() == 0
    history = list(label_history(image=retracted))
    assert [h.kind for h in history] == ["annotation", "retraction"]
    assert history[1].annotator == a


def test_annotator_stats_count_own_recent_work(world):
    project, queue, _images, (alice, bob, _), _lead = world
    leases = queue_claim_next(queue=queue, annotator=alice, count=3)
    for lease in leases:
        lease_submit(lease=lease, annotator=alice, value="normal")
    label_undo_last(annotator=alice, queue=queue)
    old = _label(project, leases[0].item.image, alice, "normal")
    Label.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    stats = annotator_stats(project=project, annotator=alice, window_minutes=10)
    assert stats["total"] == 3  # 3 labeled, 1 undone, 1 old
    assert stats["last_window"] == 2
    assert stats["per_minute"] == pytest.approx(0.2)
    assert annotator_stats(project=project, annotator=bob)["total"] == 0


def test_annotator_rate_counts_the_time_spent_labeling(world):
    """Issue 9, item 6: 40 labels in 10 s is 240 labels/min, not 40 per 10-minute window."""
    project, _queue, images, (alice, *_), _lead = world
    for i in range(40):
        label = _label(project, images[i % len(images)], alice, "normal")
        Label.objects.filter(pk=label.pk).update(duration_ms=250)
    stats = annotator_stats(project=project, annotator=alice, window_minutes=10)
    assert stats["last_window"] == 40
    assert stats["per_minute"] == pytest.approx(240.0)
    # An image left on screen for an hour is a pause: it counts one minute, not sixty.
    Label.objects.filter(pk=label.pk).update(duration_ms=3_600_000)
    slow = annotator_stats(project=project, annotator=alice)["per_minute"]
    assert slow == pytest.approx(40 / ((39 * 250 + 60_000) / 60_000), abs=0.01)


def test_annotator_quality_flags_and_overturns(world):
    project, queue, images, (alice, bob, _), lead = world
    _overlap(project, queue, 2)
    (a,) = queue_claim_next(queue=queue, annotator=alice)
    (b,) = queue_claim_next(queue=queue, annotator=bob)
    lease_submit(lease=a, annotator=alice, value="normal")
    lease_submit(lease=b, annotator=bob, value="disgusting", subcategory="animal")
    (a2,) = queue_claim_next(queue=queue, annotator=alice)
    lease_submit(lease=a2, annotator=alice, value="normal")
    item = _review_item(project, a.item.image, lead)
    review_resolve(item=item, lead=lead, confirm=False, value="disgusting")
    quality = {row["username"]: row for row in annotator_quality(project=project)}
    assert (quality[alice.username]["labels"], quality[alice.username]["flagged"]) == (2, 1)
    assert quality[alice.username]["overturned"] == 1
    assert (quality[bob.username]["flagged"], quality[bob.username]["overturned"]) == (1, 0)
    assert lead.username not in quality  # corrections are not annotations
