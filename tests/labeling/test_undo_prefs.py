"""Undo that shows what you did (issue 9, item 2) and per-person view preferences (item 1), on
the real database: undo of chosen labels (a reopened grid page, a change from the recent list),
the retracted answer returned for highlighting, walking back a skip, the recent-labels list and
the preferences API. Every change goes through the same label rules as a first answer (one
label per person per item, slots, leases)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from labeling.models import Label, Lease, Preference, QueueItem, Strategy
from labeling.selectors.labels import annotator_recent_labels
from labeling.services.labels import (
    label_undo_last,
    labels_submit_batch,
    lease_submit,
    lease_unskip,
    review_resolve,
)
from labeling.services.queues import lease_skip, queue_claim_next, queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    alice, bob = make_user("annotator"), make_user("annotator")
    lead = make_user("lead")
    project = make_project(members=[alice, bob, lead])
    queue = make_queue(project)
    images = [make_image(project) for _ in range(6)]
    queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL)
    return project, queue, alice, bob, lead


def test_undo_of_chosen_labels_reopens_exactly_those_and_returns_the_answers(world):
    _project, queue, alice, _bob, _lead = world
    page = queue_claim_next(queue=queue, annotator=alice, count=4)
    labels = labels_submit_batch(
        annotator=alice,
        entries=[
            {"lease": lease, "value": "disgusting" if i == 1 else "normal"}
            for i, lease in enumerate(page)
        ],
    )
    chosen = [labels[1].pk, labels[2].pk]
    leases = label_undo_last(annotator=alice, queue=queue, label_ids=chosen)
    assert {lease.item_id for lease in leases} == {page[1].item_id, page[2].item_id}
    assert {lease.undone.pk: lease.undone.value for lease in leases} == {
        labels[1].pk: "disgusting",
        labels[2].pk: "normal",
    }
    assert all(lease.state == Lease.State.ACTIVE for lease in leases)
    for lease in leases:
        item = QueueItem.objects.get(pk=lease.item_id)
        assert (item.labels_done, item.status) == (0, QueueItem.Status.OPEN)
    # The page is answered again on the fresh leases: one current label per person per item.
    labels_submit_batch(
        annotator=alice, entries=[{"lease": lease, "value": "normal"} for lease in leases]
    )
    for lease in page:
        current = Label.objects.filter(
            queue_item_id=lease.item_id,
            annotator=alice,
            kind=Label.Kind.ANNOTATION,
            superseded_by__isnull=True,
        )
        assert current.count() == 1
    # The same labels cannot be taken back twice; somebody else's never.
    with pytest.raises(ValidationError, match="not your current labels"):
        label_undo_last(annotator=alice, queue=queue, label_ids=chosen)
    with pytest.raises(ValidationError, match="not your current labels"):
        label_undo_last(annotator=_bob, queue=queue, label_ids=[labels[0].pk])


def test_a_reviewed_label_cannot_be_undone_and_shows_as_reviewed(world):
    project, queue, alice, _bob, lead = world
    (lease,) = queue_claim_next(queue=queue, annotator=alice)
    label = lease_submit(lease=lease, annotator=alice, value="normal")
    review = make_queue(project, kind="review", name="Review")
    queue_items_add(queue=review, images=[lease.item.image], strategy=Strategy.NOISE_REVIEW)
    review_resolve(
        item=QueueItem.objects.get(queue=review), lead=lead, confirm=False, value="disgusting"
    )
    with pytest.raises(ValidationError, match="not your current labels"):
        label_undo_last(annotator=alice, queue=queue, label_ids=[label.pk])
    rows = annotator_recent_labels(annotator=alice, queue=queue)
    assert [(r["id"], r["state"]) for r in rows] == [(label.pk, "reviewed")]


def test_unskip_gives_the_item_back_while_a_slot_is_free(world):
    _project, queue, alice, bob, _lead = world
    first, second = queue_claim_next(queue=queue, annotator=alice, count=2)
    lease_skip(lease=first, annotator=alice)
    fresh = lease_unskip(lease=first, annotator=alice)
    assert fresh.item_id == first.item_id and fresh.state == Lease.State.ACTIVE
    assert fresh.pk != first.pk and fresh.item.image.pk == first.item.image_id
    assert lease_unskip(lease=first, annotator=alice).pk == fresh.pk  # a retry: same lease
    lease_submit(lease=fresh, annotator=alice, value="normal")
    with pytest.raises(ValidationError):
        lease_unskip(lease=first, annotator=alice)  # labeled since: nothing to bring back
    # A skipped item that somebody else took meanwhile (overlap 1) cannot come back.
    lease_skip(lease=second, annotator=alice)
    taken = queue_claim_next(queue=queue, annotator=bob, count=6)
    assert second.item_id in {lease.item_id for lease in taken}
    with pytest.raises(ValidationError, match="no longer"):
        lease_unskip(lease=second, annotator=alice)
    with pytest.raises(Exception):  # noqa: B017 not hers: PermissionDenied
        lease_unskip(lease=taken[0], annotator=alice)


def test_recent_labels_api_and_undo_by_ids_api(world):
    _project, queue, alice, bob, _lead = world
    client = APIClient()
    client.force_authenticate(alice)
    leases = queue_claim_next(queue=queue, annotator=alice, count=3)
    labels = [lease_submit(lease=lease, annotator=alice, value="normal") for lease in leases]
    label_undo_last(annotator=alice, queue=queue)  # the newest
    response = client.get(f"/api/v1/queues/{queue.pk}/my-labels/?limit=10")
    assert response.status_code == 200
    rows = response.json()["labels"]
    assert [(r["id"], r["state"]) for r in rows] == [
        (labels[2].pk, "undone"),
        (labels[1].pk, "current"),
        (labels[0].pk, "current"),
    ]
    assert rows[0]["thumb_url"].endswith(f"/{labels[2].image_id}/thumb/") or rows[0]["thumb_url"]
    assert client.get(f"/api/v1/queues/{queue.pk}/my-labels/?limit=0").status_code == 400
    response = client.post(
        f"/api/v1/queues/{queue.pk}/undo/", {"labels": [labels[0].pk]}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert [u["value"] for u in body["undone"]] == ["normal"]
    assert body["leases"][0]["item"] == leases[0].item_id
    bad = client.post(f"/api/v1/queues/{queue.pk}/undo/", {"labels": ["x"]}, format="json")
    assert bad.status_code == 400
    # Bob sees only his own (none).
    client.force_authenticate(bob)
    assert client.get(f"/api/v1/queues/{queue.pk}/my-labels/").json() == {"labels": []}


def test_preferences_api_per_person_and_project(world):
    project, _queue, alice, bob, _lead = world
    client = APIClient()
    client.force_authenticate(alice)
    url = f"/api/v1/projects/{project.slug}/preferences/"
    first = client.get(url).json()
    assert (first["protection"], first["intro_seen"], first["chosen"]) == ("blur", False, False)
    assert [c["value"] for c in first["choices"]] == ["off", "blur", "session", "grayscale"]
    response = client.patch(url, {"protection": "grayscale", "intro_seen": True}, format="json")
    assert response.status_code == 200
    assert client.get(url).json()["protection"] == "grayscale"
    assert Preference.objects.get(user=alice, project=project).intro_seen_at is not None
    bad = client.patch(url, {"protection": "sepia"}, format="json")
    assert bad.status_code == 400 and "protection" in bad.json()
    client.force_authenticate(bob)
    assert client.get(url).json()["protection"] == "blur"  # Bob's own, still the default
    other = make_project(slug="elsewhere", blur_images=False)
    assert client.get(f"/api/v1/projects/{other.slug}/preferences/").status_code == 404


@pytest.mark.parametrize("key", ["c", "f", "b", "r", "l", "z", " "])
def test_a_class_hotkey_a_page_reserves_is_refused_when_the_schema_is_saved(key):
    from labeling.keys import reserved_keys
    from labeling.services.projects import project_create

    assert key in reserved_keys()
    schema = {
        "classes": [
            {"key": "normal", "name": "Normal", "hotkey": "1"},
            {"key": "bad", "name": "Bad", "hotkey": key},
        ],
        "positive": "bad",
        "default": "normal",
    }
    with pytest.raises(ValidationError, match="reserved by the labeling pages"):
        project_create(name="K", slug=f"k{ord(key)}", label_schema=schema)


def test_pages_get_their_keys_from_the_one_declaration(world, client):
    import json
    import re

    from labeling.keys import PAGE_KEYS

    project, queue, alice, _bob, _lead = world
    client.force_login(alice)
    for page, path in (("single", "label"), ("grid", "grid")):
        html = client.get(f"/projects/{project.slug}/queues/{queue.pk}/{path}/").content.decode()
        raw = re.search(r'id="labeling-config" type="application/json">(.*?)</script>', html, re.S)
        config = json.loads(raw.group(1))
        assert config["keys"] == {a: list(k) for a, k in PAGE_KEYS[page].items()}
        assert config["preferences"]["protection"] == "blur"
