"""Gold items, annotator pauses, rubber-stamp flags and exposure limits (issue 9, items 3, 4):
services and API against the real database.

- gold items are mixed into claims at the project's rate, look like any other lease, and their
  answers never become (or outvote) the image's label;
- accuracy on gold, with its count and 95% Wilson interval, per class and per day;
- the automatic pause and its lifting;
- the daily cap on positive-class images stops claims with a clear message;
- the project settings: one declaration, the same bounds in model, serializer and form.
"""

from __future__ import annotations

import json
import random

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from labeling.api.serializers import ProjectUpdateInput
from labeling.models import AnnotatorPause, Label, Lease, Queue, Strategy
from labeling.project_settings import PROJECT_QUALITY, QUALITY_FIELDS
from labeling.selectors.labels import current_labels, image_current_label
from labeling.selectors.quality import annotator_checks, gold_accuracy, wilson
from labeling.services.gold import gold_mark, gold_unmark, pause_lift
from labeling.services.labels import label_undo_last, labels_submit_batch, lease_submit
from labeling.services.projects import project_update
from labeling.services.queues import queue_claim_next, queue_items_add
from labeling.views.job_forms import job_form
from tests.factories import PASSWORD, make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    lead = make_user("lead")
    alice = make_user("annotator")
    bob = make_user("annotator")
    project = make_project(members=[lead, alice, bob])
    queue = make_queue(project)
    # Two labeled images to become gold (one of each class), six to label.
    gold_images = [make_image(project), make_image(project)]
    for image, value in zip(gold_images, ["normal", "disgusting"], strict=True):
        Label.objects.create(
            project=project, image=image, annotator=lead, kind=Label.Kind.IMPORTED, value=value
        )
    images = [make_image(project) for _ in range(6)]
    queue_items_add(queue=queue, images=images, strategy="manual")
    return {
        "lead": lead,
        "alice": alice,
        "bob": bob,
        "project": project,
        "queue": queue,
        "gold_images": gold_images,
        "images": images,
    }


def _gold_on(world, rate=1.0, **settings):
    project = project_update(project=world["project"], gold_rate=rate, **settings)
    world["project"] = project
    world["queue"].project = project
    return gold_mark(
        project=project, images=[i.pk for i in world["gold_images"]], user=world["lead"]
    )


def _is_gold(lease) -> bool:
    return lease.item.strategy == Strategy.GOLD


def test_marking_takes_the_current_label_and_refuses_unlabeled_images_and_annotators(world):
    marked = _gold_on(world)
    assert sorted(g.value for g in marked) == ["disgusting", "normal"]
    unlabeled = world["images"][0]
    with pytest.raises(ValidationError, match="no label yet"):
        gold_mark(project=world["project"], images=[unlabeled.pk], user=world["lead"])
    with pytest.raises(PermissionDenied):
        gold_mark(
            project=world["project"], images=[unlabeled.pk], user=world["alice"], value="normal"
        )
    other = make_project()
    foreign = make_image(other)
    with pytest.raises(ValidationError, match="No images"):
        gold_mark(project=world["project"], images=[foreign.pk], user=world["lead"])


def test_gold_is_mixed_in_and_looks_like_any_lease(world):
    _gold_on(world, rate=1.0)
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=4)
    assert len(leases) == 4
    gold = [lease for lease in leases if _is_gold(lease)]
    assert len(gold) == 2  # both gold items, each once
    assert all(lease.served_in_id == world["queue"].pk for lease in gold)
    # Reloading the page returns the same leases, gold ones included (no burnt items).
    again = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=4)
    assert {lease.pk for lease in again} == {lease.pk for lease in leases}


def test_gold_rate_zero_serves_none_and_an_empty_queue_stays_empty(world):
    _gold_on(world, rate=0.0)
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=10)
    assert len(leases) == 6 and not any(_is_gold(lease) for lease in leases)
    for lease in leases:
        lease_submit(lease=lease, annotator=world["alice"], value="normal")
    world["queue"].project = project_update(project=world["project"], gold_rate=1.0)
    # Nothing ordinary left for alice: no gold either (an empty queue stays empty).
    assert queue_claim_next(queue=world["queue"], annotator=world["alice"], count=5) == []


def test_gold_share_follows_the_rate(world):
    project = project_update(project=world["project"], gold_rate=0.25)
    world["queue"].project = project
    images = [make_image(project) for _ in range(120)]
    for image in images:
        Label.objects.create(
            project=project,
            image=image,
            annotator=world["lead"],
            kind=Label.Kind.IMPORTED,
            value="normal",
        )
    gold_mark(project=project, images=[i.pk for i in images], user=world["lead"])
    more = [make_image(project) for _ in range(200)]
    queue_items_add(queue=world["queue"], images=more, strategy="manual")
    random.seed(7)
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=50)
    leases += queue_claim_next(queue=world["queue"], annotator=world["bob"], count=50)
    share = sum(_is_gold(lease) for lease in leases) / len(leases)
    # 100 draws at 0.25: the share lies within about 3 standard deviations (0.13).
    assert 0.12 <= share <= 0.38, share


def test_gold_answers_never_touch_the_image_label_and_are_scored(world):
    _gold_on(world, rate=1.0)
    normal_gold, positive_gold = world["gold_images"]
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=3)
    for lease in leases:
        image = lease.item.image_id
        # Alice gets the normal gold item wrong and the positive one right.
        value = "disgusting" if image in (normal_gold.pk, positive_gold.pk) else "normal"
        lease_submit(lease=lease, annotator=world["alice"], value=value)
    assert image_current_label(image=normal_gold).value == "normal"
    labels = current_labels(project=world["project"])
    assert labels[normal_gold.pk] == "normal" and labels[positive_gold.pk] == "disgusting"
    # Not counted in the (ordinary) queue's progress either.
    stats = gold_accuracy(project=world["project"])[world["alice"].pk]
    assert (stats["answers"], stats["correct"]) == (2, 1)
    assert stats["per_class"]["normal"]["correct"] == 0
    assert stats["per_class"]["disgusting"]["correct"] == 1
    assert (stats["ci_low"], stats["ci_high"]) == wilson(1, 2)
    assert stats["ci_low"] < 0.5 < stats["ci_high"]
    assert stats["days"][-1]["answers"] == 2


def test_undo_of_a_gold_answer_takes_it_back_and_serves_it_again(world):
    _gold_on(world, rate=1.0)
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=1)
    (lease,) = leases
    assert _is_gold(lease)
    lease_submit(lease=lease, annotator=world["alice"], value="disgusting")
    (fresh,) = label_undo_last(annotator=world["alice"], queue=world["queue"])
    assert fresh.item_id == lease.item_id and fresh.served_in_id == world["queue"].pk
    assert gold_accuracy(project=world["project"]).get(world["alice"].pk) is None
    lease_submit(lease=fresh, annotator=world["alice"], value="normal")
    answer = Label.objects.filter(annotator=world["alice"], strategy=Strategy.GOLD).latest("id")
    assert answer.queue_id == world["queue"].pk


def test_grid_batch_with_gold_and_page_size(world):
    _gold_on(world, rate=0.5)
    random.seed(1)
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=8)
    labels = labels_submit_batch(
        annotator=world["alice"],
        entries=[{"lease": lease, "value": "normal", "duration_ms": 50} for lease in leases],
    )
    assert {label.page_size for label in labels} == {len(leases)}
    checks = {r["annotator_id"]: r for r in annotator_checks(project=world["project"])}
    grid = checks[world["alice"].pk]["grid"]
    assert grid["tiles"] == len(leases) and grid["fast_tiles"] == len(leases)
    assert grid["fast_pages"] == 1 and grid["median_ms_per_tile"] == 50


def test_pause_after_enough_wrong_gold_answers_and_lift(world):
    _gold_on(world, rate=1.0, gold_pause_below=0.8, gold_pause_min_answers=2)
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=2)
    assert all(_is_gold(lease) for lease in leases)
    for lease in leases:
        lease_submit(lease=lease, annotator=world["alice"], value="disgusting")  # 1 of 2 right
    pause = AnnotatorPause.objects.get(annotator=world["alice"], lifted_at__isnull=True)
    assert pause.answers == 2 and pause.accuracy == 0.5
    with pytest.raises(PermissionDenied, match="paused"):
        queue_claim_next(queue=world["queue"], annotator=world["alice"], count=1)
    # Bob is not paused.
    assert queue_claim_next(queue=world["queue"], annotator=world["bob"], count=1)
    with pytest.raises(PermissionDenied):
        pause_lift(pause=pause, lead=world["bob"])
    pause_lift(pause=pause, lead=world["lead"])
    assert queue_claim_next(queue=world["queue"], annotator=world["alice"], count=1)


def test_exposure_cap_stops_claims_with_a_message(world):
    project = project_update(project=world["project"], exposure_daily_cap=2)
    world["queue"].project = project
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=3)
    lease_submit(lease=leases[0], annotator=world["alice"], value="disgusting")
    lease_submit(lease=leases[1], annotator=world["alice"], value="normal")
    queue_claim_next(queue=world["queue"], annotator=world["alice"], count=3)  # 1 of 2: fine
    lease_submit(lease=leases[2], annotator=world["alice"], value="disgusting")
    with pytest.raises(PermissionDenied, match="daily limit"):
        queue_claim_next(queue=world["queue"], annotator=world["alice"], count=1)
    # An undone positive gives the room back; others are not affected.
    label_undo_last(annotator=world["alice"], queue=world["queue"])
    assert queue_claim_next(queue=world["queue"], annotator=world["alice"], count=1)
    assert queue_claim_next(queue=world["queue"], annotator=world["bob"], count=1)
    exposure = {r["annotator_id"]: r for r in annotator_checks(project=project)}
    assert exposure[world["alice"].pk]["exposure"]["positives_today"] == 1


def test_unmarked_gold_is_no_longer_served(world):
    _gold_on(world, rate=1.0)
    gold_unmark(project=world["project"], image_id=world["gold_images"][0].pk, user=world["lead"])
    leases = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=8)
    assert [lease.item.image_id for lease in leases if _is_gold(lease)] == [
        world["gold_images"][1].pk
    ]


def test_gold_queue_cannot_be_opened_directly(client, world):
    _gold_on(world)
    gold_queue = Queue.objects.get(project=world["project"], kind=Queue.Kind.GOLD)
    client.login(username=world["alice"].username, password=PASSWORD)
    response = client.post(
        reverse("api-queue-next", args=[gold_queue.pk]),
        data=json.dumps({"count": 1}),
        content_type="application/json",
    )
    assert response.status_code == 403
    # Not listed on the project page either.
    page = client.get(reverse("project-detail", args=[world["project"].slug]))
    assert gold_queue.name not in page.content.decode()


def test_gold_lease_payload_has_the_same_fields(client, world):
    _gold_on(world, rate=0.5)
    random.seed(3)
    client.login(username=world["alice"].username, password=PASSWORD)
    response = client.post(
        reverse("api-queue-next", args=[world["queue"].pk]),
        data=json.dumps({"count": 8}),
        content_type="application/json",
    )
    assert response.status_code == 200
    leases = response.json()["leases"]
    gold_ids = {g.pk for g in world["gold_images"]}
    kinds = {lease["image"]["id"] in gold_ids for lease in leases}
    assert kinds == {True, False}
    assert len({tuple(sorted(lease)) for lease in leases}) == 1
    assert len({tuple(sorted(lease["image"])) for lease in leases}) == 1
    # Submitting a gold lease answers like any other.
    gold_lease = next(lease for lease in leases if lease["image"]["id"] in gold_ids)
    answer = client.post(
        reverse("api-lease-submit", args=[gold_lease["lease"]]),
        data=json.dumps({"value": "normal"}),
        content_type="application/json",
    ).json()["label"]
    assert set(answer) == {"id", "image", "value", "subcategory", "kind", "client_id", "created_at"}
    assert answer["kind"] == "annotation"
    # And a grid page with gold and ordinary leases is accepted in one batch.
    rest = [lease for lease in leases if lease["lease"] != gold_lease["lease"]]
    batch = client.post(
        reverse("api-queue-submit-batch", args=[world["queue"].pk]),
        data=json.dumps({"entries": [{"lease": x["lease"], "value": "normal"} for x in rest]}),
        content_type="application/json",
    )
    assert batch.status_code == 200, batch.content


def test_quality_api_and_gold_api_roles(client, world):
    client.login(username=world["alice"].username, password=PASSWORD)
    slug = world["project"].slug
    assert client.get(reverse("api-quality-checks", args=[slug])).status_code == 403
    assert client.get(reverse("api-gold", args=[slug])).status_code == 403
    client.login(username=world["lead"].username, password=PASSWORD)
    bad = client.post(
        reverse("api-gold", args=[slug]),
        data=json.dumps({"images": [world["images"][0].pk]}),
        content_type="application/json",
    )
    assert bad.status_code == 400 and "no label yet" in bad.content.decode()
    good = client.post(
        reverse("api-gold", args=[slug]),
        data=json.dumps({"images": [world["gold_images"][0].pk]}),
        content_type="application/json",
    )
    assert good.status_code == 201 and good.json()[0]["value"] == "normal"
    checks = client.get(reverse("api-quality-checks", args=[slug])).json()
    assert checks["settings"]["gold_rate"] == 0.0
    assert (
        client.get(reverse("api-gold", args=[slug])).json()[0]["image"]
        == world["gold_images"][0].pk
    )


def test_settings_are_one_declaration(world):
    serializer = ProjectUpdateInput()
    form = job_form(PROJECT_QUALITY)
    for param in PROJECT_QUALITY.params:
        field = serializer.fields[param.name]
        assert (field.min_value, field.max_value) == (param.low, param.high)
        assert form.fields[param.name].min_value == param.low
        assert world["project"]._meta.get_field(param.name).default == param.default
    assert set(QUALITY_FIELDS) <= set(ProjectUpdateInput().fields)
    with pytest.raises(ValidationError) as error:
        project_update(project=world["project"], gold_rate=1.5)
    assert "gold_rate" in error.value.message_dict
    bad = ProjectUpdateInput(data={"exposure_daily_cap": -1}, partial=True)
    assert not bad.is_valid() and "exposure_daily_cap" in bad.errors


def test_gold_leases_do_not_change_the_lease_constraint(world):
    """Each person answers a gold item once, even if claims race (the lease constraint)."""
    _gold_on(world, rate=1.0)
    first = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=8)
    for lease in first:
        lease_submit(lease=lease, annotator=world["alice"], value="normal")
    gold_answers = Label.objects.filter(annotator=world["alice"], strategy=Strategy.GOLD).count()
    assert gold_answers == 2
    assert not Lease.objects.filter(annotator=world["alice"], state=Lease.State.ACTIVE).exists()


def _token_post(client, url, body, token):
    return client.post(
        url,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )


def test_claim_and_submit_query_counts_with_the_rules_on(client, world):
    """With every rule off the hot path runs the queries tests/labeling/test_hot_path_queries.py
    pins. Each rule turned on adds a bounded few: the pause check (1), the day's positives (1);
    a gold lease costs its candidates' read (1), its slots (1) and the insert with its savepoint
    (3), like an ordinary lease; answering a gold item costs what an ordinary submit costs."""
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    from tests.labeling.test_hot_path_queries import NEXT_QUERIES, SUBMIT_QUERIES

    token = Token.objects.create(user=world["alice"])
    url = reverse("api-queue-next", args=[world["queue"].pk])
    cache.clear()
    first = _token_post(client, url, {"count": 1, "progress": False}, token).json()
    lease = first["leases"][0]["lease"]
    _token_post(client, reverse("api-lease-submit", args=[lease]), {"value": "normal"}, token)

    project_update(project=world["project"], exposure_daily_cap=100, gold_pause_below=0.5)
    with CaptureQueriesContext(connection) as rules:
        data = _token_post(client, url, {"count": 1, "progress": False}, token).json()
    assert len(data["leases"]) == 1
    assert len(rules) == NEXT_QUERIES + 2, [q["sql"][:80] for q in rules]
    _token_post(
        client,
        reverse("api-lease-submit", args=[data["leases"][0]["lease"]]),
        {"value": "normal"},
        token,
    )

    _gold_on(world, rate=1.0, exposure_daily_cap=0, gold_pause_below=0.0)
    with CaptureQueriesContext(connection) as gold:
        data = _token_post(client, url, {"count": 1, "progress": False}, token).json()
    (served,) = data["leases"]
    assert Lease.objects.get(pk=served["lease"]).item.strategy == Strategy.GOLD
    # Instead of the claim's own select and its one-statement lease insert (2): is there work
    # (1), the gold candidates (1), the gold item's slots (1) and the insert with its savepoint
    # (3), through the ORM as before (issue 11 wrote out the ordinary claim only).
    assert len(gold) == NEXT_QUERIES + 4, [q["sql"][:80] for q in gold]
    with CaptureQueriesContext(connection) as answer:
        response = _token_post(
            client, reverse("api-lease-submit", args=[served["lease"]]), {"value": "normal"}, token
        )
    assert response.status_code == 200
    # A gold answer takes the general submit path (labeling.services.hot_path): the queue it was
    # served in (1), the retry check and the lease lock through the ORM (2), gold's own check of
    # the person's other leases (1); the label insert and the lease update as separate
    # statements instead of the ordinary path's one (1 more) and no item count (1 less).
    assert len(answer) == SUBMIT_QUERIES + 4, [q["sql"][:80] for q in answer]


def test_exports_leave_gold_answers_out(world):
    from labeling.services.exports import labels_export_rows

    _gold_on(world, rate=1.0)
    (lease,) = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=1)
    assert _is_gold(lease)
    lease_submit(lease=lease, annotator=world["alice"], value="disgusting")
    rows = {
        row["image_id"]: row
        for row in labels_export_rows(project=world["project"], include_history=True)
    }
    row = rows[lease.item.image_id]
    truth = Label.objects.get(image_id=lease.item.image_id, kind=Label.Kind.IMPORTED).value
    assert row["n_labels"] == 1 and row["current_label"] == truth
    assert [entry["annotator"] for entry in row["history"]] == [world["lead"].username]
