"""The labeling (queue) API through Django's test client, against the real PostgreSQL."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from labeling.models import Label, Lease, ModelVersion, QueueItem, Score, Strategy
from labeling.services.queues import queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db

# Keys that would leak what the model thinks, why an item was queued, or other people's work.
FORBIDDEN_KEYS = {
    "score",
    "scores",
    "stage1",
    "stage2",
    "decision",
    "predicted_loss",
    "strategy",
    "details",
    "priority",
    "annotator",
    "history",
}
PLANTED_SCORE = 0.8765432


def all_keys(payload) -> set[str]:
    keys: set[str] = set()
    if isinstance(payload, dict):
        for key, value in payload.items():
            keys.add(key)
            keys |= all_keys(value)
    elif isinstance(payload, list):
        for value in payload:
            keys |= all_keys(value)
    return keys


def post(client, url, body=None):
    return client.post(url, data=json.dumps(body or {}), content_type="application/json")


@pytest.fixture
def world():
    annotator = make_user("annotator")
    other = make_user("annotator")
    lead = make_user("lead")
    project = make_project(members=[annotator, other, lead])
    queue = make_queue(project)
    review = make_queue(project, kind="review")
    images = [make_image(project) for _ in range(8)]
    queue_items_add(
        queue=queue,
        images=images,
        strategy=Strategy.CONFIDENCE_BAND,
        details={"score": PLANTED_SCORE, "reason": "in the band"},
        priorities={img.pk: float(i) for i, img in enumerate(images)},
    )
    queue_items_add(queue=review, images=images[:2], strategy=Strategy.NOISE_REVIEW)
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    Score.objects.bulk_create(
        Score(
            image=img,
            model_version=version,
            stage1=PLANTED_SCORE,
            score=PLANTED_SCORE,
            predicted_loss=PLANTED_SCORE,
        )
        for img in images
    )
    return {
        "annotator": annotator,
        "other": other,
        "lead": lead,
        "project": project,
        "queue": queue,
        "review": review,
        "images": images,
    }


def claim(client, queue, count=1):
    response = post(client, reverse("api-queue-next", args=[queue.pk]), {"count": count})
    assert response.status_code == 200, response.content
    return response.json()


def test_next_claims_leases_and_shows_no_scores(client, world):
    client.force_login(world["annotator"])
    data = claim(client, world["queue"], count=3)
    assert len(data["leases"]) == 3
    first = data["leases"][0]
    assert set(first) == {"lease", "item", "image", "expires_at"}
    assert set(first["image"]) == {"id", "url", "thumb_url", "width", "height"}
    assert first["image"]["url"] == reverse("image-file", args=[first["image"]["id"]])
    assert first["image"]["thumb_url"] == reverse("image-thumb", args=[first["image"]["id"]])
    # Highest priority first (the last image got the highest priority).
    assert first["image"]["id"] == world["images"][-1].pk
    assert data["progress"]["total"] == 8
    assert data["progress"]["leased"] == 3
    assert not all_keys(data) & FORBIDDEN_KEYS
    assert str(PLANTED_SCORE) not in json.dumps(data)
    assert Lease.objects.filter(annotator=world["annotator"], state="active").count() == 3


def test_next_returns_own_active_leases_first_after_a_reload(client, world):
    client.force_login(world["annotator"])
    first = claim(client, world["queue"], count=2)
    again = claim(client, world["queue"], count=3)
    first_ids = [lease["lease"] for lease in first["leases"]]
    assert [lease["lease"] for lease in again["leases"]][:2] == first_ids
    assert len(again["leases"]) == 3


@pytest.mark.bad_input
@pytest.mark.parametrize("count", [0, 51, -1, "many", None])
def test_next_rejects_a_bad_count(client, world, count):
    client.force_login(world["annotator"])
    response = post(client, reverse("api-queue-next", args=[world["queue"].pk]), {"count": count})
    assert response.status_code == 400
    assert "count" in response.json()
    assert not Lease.objects.exists()


def test_submit_stores_one_label_and_a_retry_is_idempotent(client, world):
    client.force_login(world["annotator"])
    lease = claim(client, world["queue"])["leases"][0]
    url = reverse("api-lease-submit", args=[lease["lease"]])
    body = {"value": "disgusting", "subcategory": "animal", "duration_ms": 850, "client_id": "c-1"}
    first = post(client, url, body)
    assert first.status_code == 200, first.content
    retry = post(client, url, body)
    assert retry.status_code == 200, retry.content
    assert first.json()["label"]["id"] == retry.json()["label"]["id"]
    label = Label.objects.get()
    assert (label.value, label.subcategory, label.duration_ms) == ("disgusting", "animal", 850)
    assert label.annotator == world["annotator"]
    assert label.strategy == Strategy.CONFIDENCE_BAND  # recorded for the strategy's yield
    assert Lease.objects.get(pk=lease["lease"]).state == Lease.State.COMPLETED
    assert not all_keys(first.json()) & FORBIDDEN_KEYS


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": "nope"}, "value"),
        ({}, "value"),
        ({"value": "normal", "subcategory": "animal"}, "subcategory"),
        ({"value": "disgusting", "subcategory": "plant"}, "subcategory"),
        ({"value": "normal", "duration_ms": -5}, "duration_ms"),
        ({"value": "normal", "client_id": "x" * 65}, "client_id"),
    ],
)
def test_submit_rejects_bad_input_with_field_messages(client, world, body, field):
    client.force_login(world["annotator"])
    lease = claim(client, world["queue"])["leases"][0]
    response = post(client, reverse("api-lease-submit", args=[lease["lease"]]), body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Label.objects.exists()
    assert Lease.objects.get(pk=lease["lease"]).state == Lease.State.ACTIVE


def test_submit_twice_on_a_completed_lease_is_a_clear_400(client, world):
    client.force_login(world["annotator"])
    lease = claim(client, world["queue"])["leases"][0]
    url = reverse("api-lease-submit", args=[lease["lease"]])
    assert post(client, url, {"value": "normal", "client_id": "a"}).status_code == 200
    second = post(client, url, {"value": "disgusting", "client_id": "b"})
    assert second.status_code == 400
    assert "undo" in json.dumps(second.json())
    assert Label.objects.count() == 1


def test_skip_releases_the_lease_and_the_item_is_not_served_again_soon(client, world):
    client.force_login(world["annotator"])
    lease = claim(client, world["queue"])["leases"][0]
    response = post(client, reverse("api-lease-skip", args=[lease["lease"]]))
    assert response.status_code == 200
    assert Lease.objects.get(pk=lease["lease"]).state == Lease.State.RELEASED
    later = claim(client, world["queue"], count=8)
    assert lease["item"] not in {entry["item"] for entry in later["leases"]}
    assert len(later["leases"]) == 7
    # The other annotator may take the skipped item.
    client.force_login(world["other"])
    theirs = claim(client, world["queue"], count=8)
    assert lease["item"] in {entry["item"] for entry in theirs["leases"]}


def test_undo_walks_back_and_returns_fresh_leases_to_relabel(client, world):
    client.force_login(world["annotator"])
    leases = claim(client, world["queue"], count=3)["leases"]
    for i, lease in enumerate(leases):
        response = post(
            client,
            reverse("api-lease-submit", args=[lease["lease"]]),
            {"value": "normal", "client_id": f"u-{i}"},
        )
        assert response.status_code == 200
    undo_url = reverse("api-queue-undo", args=[world["queue"].pk])
    undone = post(client, undo_url, {"count": 1}).json()
    assert [entry["item"] for entry in undone["leases"]] == [leases[2]["item"]]
    undone_again = post(client, undo_url, {}).json()
    assert [entry["item"] for entry in undone_again["leases"]] == [leases[1]["item"]]
    assert not all_keys(undone) & FORBIDDEN_KEYS
    assert Label.objects.filter(kind=Label.Kind.RETRACTION).count() == 2
    # Relabel the last one on its fresh lease.
    fresh = undone["leases"][0]["lease"]
    relabel = post(
        client,
        reverse("api-lease-submit", args=[fresh]),
        {"value": "disgusting", "client_id": "u-relabel"},
    )
    assert relabel.status_code == 200, relabel.content
    item = QueueItem.objects.get(pk=leases[2]["item"])
    assert item.status == QueueItem.Status.DONE
    live = Label.objects.filter(
        annotator=world["annotator"], kind="annotation", superseded_by__isnull=True
    )
    assert sorted(live.values_list("value", flat=True)) == ["disgusting", "normal"]


@pytest.mark.bad_input
def test_undo_with_nothing_to_undo_is_a_400(client, world):
    client.force_login(world["annotator"])
    response = post(client, reverse("api-queue-undo", args=[world["queue"].pk]), {"count": 1})
    assert response.status_code == 400
    assert "nothing" in json.dumps(response.json()).lower()
    bad = post(client, reverse("api-queue-undo", args=[world["queue"].pk]), {"count": 0})
    assert bad.status_code == 400 and "count" in bad.json()


def test_submit_batch_labels_a_grid_page_at_once(client, world):
    client.force_login(world["annotator"])
    leases = claim(client, world["queue"], count=5)["leases"]
    entries = [
        {"lease": lease["lease"], "value": "normal", "client_id": f"g-{i}", "duration_ms": 300}
        for i, lease in enumerate(leases)
    ]
    entries[1].update(value="disgusting", subcategory="human")
    url = reverse("api-queue-submit-batch", args=[world["queue"].pk])
    response = post(client, url, {"entries": entries})
    assert response.status_code == 200, response.content
    data = response.json()
    assert [label["value"] for label in data["labels"]] == [
        "normal",
        "disgusting",
        "normal",
        "normal",
        "normal",
    ]
    assert data["progress"]["done"] == 5
    assert not all_keys(data) & FORBIDDEN_KEYS
    # The same page sent again (a retry after a lost response) stores nothing new.
    again = post(client, url, {"entries": entries})
    assert again.status_code == 200
    assert Label.objects.count() == 5
    assert Label.objects.get(client_id="g-1").subcategory == "human"


@pytest.mark.bad_input
def test_submit_batch_errors_name_the_entry_and_write_nothing(client, world):
    client.force_login(world["annotator"])
    leases = claim(client, world["queue"], count=3)["leases"]
    url = reverse("api-queue-submit-batch", args=[world["queue"].pk])
    bad_value = [
        {"lease": leases[0]["lease"], "value": "normal"},
        {"lease": leases[1]["lease"], "value": "purple"},
    ]
    response = post(client, url, {"entries": bad_value})
    assert response.status_code == 400
    errors = response.json()["entries"]
    # DRF keys a list field's errors by the failing entry's index.
    assert list(errors) == ["1"] and "value" in errors["1"], errors
    duplicate = [{"lease": leases[0]["lease"], "value": "normal"}] * 2
    assert post(client, url, {"entries": duplicate}).status_code == 400
    assert post(client, url, {"entries": []}).status_code == 400
    assert post(client, url, {"entries": "all normal"}).status_code == 400
    # Somebody else's lease in my batch.
    client.force_login(world["other"])
    theirs = claim(client, world["queue"])["leases"][0]
    client.force_login(world["annotator"])
    mixed = [
        {"lease": leases[0]["lease"], "value": "normal"},
        {"lease": theirs["lease"], "value": "normal"},
    ]
    response = post(client, url, {"entries": mixed})
    assert response.status_code == 400
    assert str(theirs["lease"]) in json.dumps(response.json())
    assert not Label.objects.exists()


def test_stats_are_the_callers_own(client, world):
    for who, n in (("other", 3), ("annotator", 2)):
        client.force_login(world[who])
        for i, lease in enumerate(claim(client, world["queue"], count=n)["leases"]):
            post(
                client,
                reverse("api-lease-submit", args=[lease["lease"]]),
                {"value": "normal", "client_id": f"{who}-{i}"},
            )
    response = client.get(reverse("api-queue-stats", args=[world["queue"].pk]))
    assert response.status_code == 200
    data = response.json()
    assert data["stats"]["total"] == 2
    assert data["stats"]["last_window"] == 2
    assert data["progress"]["done"] == 5
    assert not all_keys(data) & FORBIDDEN_KEYS
    # "By you" counts this queue, like "done in queue": a label in another queue of the same
    # project does not count here (issue 9, item 6).
    elsewhere = make_queue(world["queue"].project, name="Elsewhere")
    queue_items_add(
        queue=elsewhere, images=[make_image(world["queue"].project)], strategy=Strategy.MANUAL
    )
    (lease,) = claim(client, elsewhere, count=1)["leases"]
    post(client, reverse("api-lease-submit", args=[lease["lease"]]), {"value": "normal"})
    data = client.get(reverse("api-queue-stats", args=[world["queue"].pk])).json()
    assert data["stats"]["total"] == 2
    assert Label.objects.filter(annotator=world["annotator"]).count() == 3


@pytest.mark.authz
def test_annotator_is_refused_the_review_queue(client, world):
    client.force_login(world["annotator"])
    review = world["review"]
    for name in ("api-queue-next", "api-queue-undo", "api-queue-submit-batch"):
        response = post(client, reverse(name, args=[review.pk]), {"count": 1})
        assert response.status_code == 403, name
    assert client.get(reverse("api-queue-stats", args=[review.pk])).status_code == 403
    assert not Lease.objects.exists()
    # A lead may work the review queue.
    client.force_login(world["lead"])
    assert len(claim(client, review, count=5)["leases"]) == 2


@pytest.mark.authz
def test_other_projects_and_other_peoples_leases_are_404(client, world):
    stranger = make_user("annotator")
    client.force_login(world["annotator"])
    mine = claim(client, world["queue"])["leases"][0]
    client.force_login(stranger)
    assert post(client, reverse("api-queue-next", args=[world["queue"].pk])).status_code == 404
    submit = post(client, reverse("api-lease-submit", args=[mine["lease"]]), {"value": "normal"})
    assert submit.status_code == 404
    assert post(client, reverse("api-lease-skip", args=[mine["lease"]])).status_code == 404
    # A member of the project still cannot touch someone else's lease.
    client.force_login(world["other"])
    submit = post(client, reverse("api-lease-submit", args=[mine["lease"]]), {"value": "normal"})
    assert submit.status_code == 404
    assert not Label.objects.exists()


@pytest.mark.authz
def test_anonymous_and_roleless_users_are_refused(client, world):
    url = reverse("api-queue-next", args=[world["queue"].pk])
    assert post(client, url).status_code in (401, 403)
    nobody = make_user(None)
    world["project"].members.add(nobody)
    client.force_login(nobody)
    assert post(client, url).status_code == 403
    assert not Lease.objects.exists()


def test_token_authentication_works_for_scripts(client, world):
    token = Token.objects.create(user=world["annotator"])
    response = client.post(
        reverse("api-queue-next", args=[world["queue"].pk]),
        data=json.dumps({"count": 2}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )
    assert response.status_code == 200
    assert len(response.json()["leases"]) == 2
