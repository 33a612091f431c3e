"""The lead's review stream (issue 9, item 7): confirm, correct, sub-category, skip, comment,
send back to the annotator, undo of the last step; the page's evidence (every annotator's
answer, the latest score) and the API behind it. Real database, real services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labeling.models import Label, Lease, ModelVersion, Queue, QueueItem, ReviewDecision, Score
from labeling.selectors.labels import annotator_quality, image_current_label
from labeling.selectors.review import review_item_for_lead, review_upcoming
from labeling.services.review import review_decide, review_undo_last
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db

SCHEMA = {
    "classes": [
        {"key": "normal", "name": "Normal", "hotkey": "1"},
        {"key": "disgusting", "name": "Disgusting", "hotkey": "2"},
    ],
    "positive": "disgusting",
    "default": "normal",
    "subcategories": [{"key": "insect", "name": "Insect", "hotkey": "a"}],
}


def world(n_items: int = 1, *, k: int = 1):
    """A project where an annotator labeled `n_items` images 'normal' in a labeling queue (with
    a completed lease each, as the claim + submit leave it), all flagged to re-review."""
    annotators = [make_user("annotator") for _ in range(k)]
    lead = make_user("lead")
    project = make_project(members=[*annotators, lead], label_schema=SCHEMA)
    queue = make_queue(project, labels_per_item=k)
    review = make_queue(project, kind=Queue.Kind.REVIEW)
    now = timezone.now()
    items = []
    for i in range(n_items):
        image = make_image(project)
        work = QueueItem.objects.create(
            queue=queue, image=image, labels_needed=k, labels_done=k, status="done"
        )
        for slot, annotator in enumerate(annotators):
            Lease.objects.create(
                item=work,
                annotator=annotator,
                slot=slot,
                state=Lease.State.COMPLETED,
                expires_at=now + timedelta(minutes=10),
                finished_at=now,
            )
            Label.objects.create(
                project=project,
                image=image,
                annotator=annotator,
                value="normal",
                queue=queue,
                queue_item=work,
                strategy="manual",
            )
        items.append(
            QueueItem.objects.create(
                queue=review,
                image=image,
                strategy="noise_review",
                priority=10.0 - i,
                details={"rank": i + 1, "samples": 50, "score": 3.0 - i / 10},
            )
        )
    return project, annotators, lead, queue, items


def test_correct_then_undo_gives_the_image_its_label_back_and_reopens_the_item():
    project, (annotator,), lead, _queue, (item,) = world()
    decision = review_decide(
        item=item, lead=lead, action="correct", value="disgusting", comment="  a bug  "
    )
    assert decision.label.kind == Label.Kind.CORRECTION and decision.comment == "a bug"
    assert image_current_label(image=item.image).value == "disgusting"
    assert annotator_quality(project=project)[0]["overturned"] == 1
    undone = review_undo_last(project=project, lead=lead)
    assert undone.pk == decision.pk and undone.undone_at is not None
    item.refresh_from_db()
    assert item.status == QueueItem.Status.OPEN and item.labels_done == 0
    current = image_current_label(image=item.image)
    # The value comes back as a vote by the same annotator; the history keeps every step.
    assert (current.value, current.annotator, current.kind) == ("normal", annotator, "imported")
    kinds = list(
        Label.objects.filter(image=item.image).order_by("id").values_list("kind", flat=True)
    )
    assert kinds == ["annotation", "correction", "retraction", "imported"]
    quality = annotator_quality(project=project)[0]
    assert (quality["labels"], quality["overturned"]) == (1, 0)  # no double count, not overturned
    # The item is the lead's next one again, and can be decided anew.
    assert review_item_for_lead(project=project, lead=lead) == item
    again = review_decide(item=item, lead=lead, action="confirm")
    assert again.label.value == "normal" and again.label.kind == Label.Kind.CONFIRMATION
    assert image_current_label(image=item.image).value == "normal"


def test_undo_with_overlap_keeps_the_majority_and_each_answer_shows():
    project, annotators, lead, _queue, (item,) = world(k=3)
    page = _client(lead).get(reverse("project-review", kwargs={"slug": project.slug}))
    html = page.content.decode()
    for annotator in annotators:
        assert f'data-annotator="{annotator.username}"' in html
    assert "Answers (3 annotators)" in html
    review_decide(item=item, lead=lead, action="correct", value="disgusting")
    review_undo_last(project=project, lead=lead)
    votes = [
        label.value
        for label in Label.objects.filter(image=item.image, superseded_by__isnull=True).exclude(
            kind__in=["retraction", "correction", "confirmation"]
        )
    ]
    assert sorted(votes) == ["normal", "normal", "normal"]
    assert image_current_label(image=item.image).value == "normal"


def test_subcategory_choice_and_confirm_with_subcategory():
    project, _annotators, lead, _queue, (item,) = world()
    client = _client(lead)
    url = reverse("project-review-resolve", kwargs={"slug": project.slug, "pk": item.pk})
    assert client.post(url, {"choice": "disgusting/insect", "comment": "ant"}).status_code == 302
    label = image_current_label(image=item.image)
    assert (label.kind, label.value, label.subcategory) == ("correction", "disgusting", "insect")
    assert ReviewDecision.objects.get(item=item).comment == "ant"


def test_skip_defers_the_item_behind_the_others_and_undo_brings_it_back():
    project, _annotators, lead, _queue, items = world(3)
    other_lead = make_user("lead")
    project.members.add(other_lead)
    assert review_item_for_lead(project=project, lead=lead) == items[0]
    review_decide(item=items[0], lead=lead, action="skip", comment="unsure")
    assert [i.pk for i in review_upcoming(project=project, lead=lead)] == [
        items[1].pk,
        items[2].pk,
        items[0].pk,
    ]
    # Deferring is one lead's: the other lead still gets the most suspicious first.
    assert review_item_for_lead(project=project, lead=other_lead) == items[0]
    review_decide(item=items[1], lead=lead, action="skip")
    assert [i.pk for i in review_upcoming(project=project, lead=lead)] == [
        items[2].pk,
        items[0].pk,  # deferred first, comes back first
        items[1].pk,
    ]
    assert review_undo_last(project=project, lead=lead).item_id == items[1].pk
    assert review_item_for_lead(project=project, lead=lead) == items[1]
    items[0].refresh_from_db()
    assert items[0].status == QueueItem.Status.OPEN  # a skip labels nothing
    assert not Label.objects.filter(image=items[0].image).exclude(kind="annotation").exists()


def test_send_back_reopens_the_annotators_item_with_the_comment_and_undo_restores():
    project, (annotator,), lead, queue, (item,) = world()
    work = QueueItem.objects.get(queue=queue)
    with pytest.raises(ValidationError, match="Say what to change"):
        review_decide(item=item, lead=lead, action="send_back", comment="  ")
    decision = review_decide(
        item=item, lead=lead, action="send_back", comment="Look at the corner: a cockroach."
    )
    assert decision.returned_to == annotator and decision.returned_item == work
    item.refresh_from_db()
    work.refresh_from_db()
    assert item.status == QueueItem.Status.DONE
    assert (work.status, work.labels_done) == (QueueItem.Status.OPEN, 0)
    assert image_current_label(image=item.image) is None  # their label is withdrawn
    held = Lease.objects.get(item=work, annotator=annotator, state=Lease.State.ACTIVE)
    assert held.expires_at > timezone.now()
    # The annotator reads the comment (API and home page).
    client = _client(annotator)
    rows = client.get(reverse("api-review-returned")).json()
    assert [(r["comment"], r["lead"], r["queue_id"], r["value"]) for r in rows] == [
        ("Look at the corner: a cockroach.", lead.username, queue.pk, "normal")
    ]
    # Undo while they have not answered: their label and their count come back.
    review_undo_last(project=project, lead=lead)
    work.refresh_from_db()
    assert (work.status, work.labels_done) == (QueueItem.Status.DONE, 1)
    assert image_current_label(image=item.image).value == "normal"
    assert not Lease.objects.filter(item=work, state=Lease.State.ACTIVE).exists()
    assert client.get(reverse("api-review-returned")).json() == []
    item.refresh_from_db()
    assert item.status == QueueItem.Status.OPEN


def test_send_back_undo_is_refused_once_the_annotator_answered_again():
    project, (annotator,), lead, queue, (item,) = world()
    work = QueueItem.objects.get(queue=queue)
    review_decide(item=item, lead=lead, action="send_back", comment="wrong class")
    Label.objects.create(
        project=project,
        image=item.image,
        annotator=annotator,
        value="disgusting",
        queue=queue,
        queue_item=work,
    )
    with pytest.raises(ValidationError, match="answered this image again"):
        review_undo_last(project=project, lead=lead)
    assert image_current_label(image=item.image).value == "disgusting"


def test_nothing_to_undo_and_a_lead_label_cannot_be_sent_back():
    project, _annotators, lead, _queue, items = world(2)
    with pytest.raises(ValidationError, match="no review decision"):
        review_undo_last(project=project, lead=lead)
    Label.objects.create(
        project=project,
        image=items[1].image,
        annotator=lead,
        kind=Label.Kind.CORRECTION,
        value="disgusting",
    )
    with pytest.raises(ValidationError, match="Only an annotator's label"):
        review_decide(item=items[1], lead=lead, action="send_back", comment="x")
    with pytest.raises(ValidationError):
        review_decide(item=items[0], lead=lead, action="explode")


def test_api_steps_and_page_show_latest_score_and_decisions():
    project, _annotators, lead, _queue, items = world(2)
    old = ModelVersion.objects.create(project=project, name="v3", status="ready")
    Score.objects.create(image=items[0].image, model_version=old, stage1=0.77, score=0.77)
    client = _client(lead)
    html = client.get(reverse("project-review", kwargs={"slug": project.slug})).content.decode()
    # No active version, but a score exists: the page shows it rather than "not scored".
    assert 'id="review-latest-score"' in html and "<b>v3</b>" in html and "0.770" in html
    skip = client.post(
        reverse("api-review-skip", kwargs={"pk": items[0].pk}),
        {"comment": "later"},
        content_type="application/json",
    )
    assert skip.status_code == 201 and skip.json()["action"] == "skip"
    nxt = client.get(f"/api/v1/projects/{project.slug}/review/next/").json()["item"]
    assert nxt["id"] == items[1].pk and [a["value"] for a in nxt["answers"]] == ["normal"]
    done = client.post(
        reverse("api-review-resolve", kwargs={"pk": items[1].pk}),
        {"confirm": False, "value": "disgusting", "comment": "clearly"},
        content_type="application/json",
    )
    assert done.status_code == 201
    undo = client.post(reverse("api-review-undo", kwargs={"slug": project.slug}))
    assert undo.status_code == 200 and undo.json()["item"] == items[1].pk
    page = client.get(
        reverse("project-review", kwargs={"slug": project.slug}) + f"?item={items[1].pk}"
    ).content.decode()
    assert "clearly" in page and 'data-action="correct"' in page
    sent = client.post(
        reverse("api-review-send-back", kwargs={"pk": items[1].pk}),
        {},
        content_type="application/json",
    )
    assert sent.status_code == 400 and "comment" in sent.json()


def test_the_page_undoes_by_form_and_shows_the_undone_item():
    project, _annotators, lead, _queue, items = world(2)
    client = _client(lead)
    undo = reverse("project-review-undo", kwargs={"slug": project.slug})
    nothing = client.post(undo, follow=True)
    assert "no review decision of yours to undo" in nothing.content.decode()
    resolve = reverse("project-review-resolve", kwargs={"slug": project.slug, "pk": items[0].pk})
    client.post(resolve, {"action": "confirm", "comment": "fine"})
    page = client.get(reverse("project-review", kwargs={"slug": project.slug})).content.decode()
    assert f'data-item="{items[1].pk}"' in page and 'id="review-undo-form"' in page
    back = client.post(undo)
    assert back.status_code == 302 and back["Location"].endswith(f"?item={items[0].pk}")
    items[0].refresh_from_db()
    assert items[0].status == QueueItem.Status.OPEN
    assert image_current_label(image=items[0].image).value == "normal"


def test_review_page_is_unblurred_for_leads_unless_they_chose_a_protection():
    from labeling.services.preferences import preference_update

    project, _annotators, lead, _queue, _items = world()
    project.blur_images = True
    project.save(update_fields=["blur_images"])
    url = reverse("project-review", kwargs={"slug": project.slug})
    html = _client(lead).get(url).content.decode()
    assert 'data-protection="off"' in html
    preference_update(user=lead, project=project, protection="blur")
    html = _client(lead).get(url).content.decode()
    assert 'data-protection="blur"' in html and 'class="content blur-on"' in html


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_stream_endpoints_answer_what_the_openapi_schema_documents():
    from rest_framework.test import APIClient

    from tests.labeling.test_api_contract import Contract, _schema

    project, (annotator,), lead, _queue, items = world(2)
    engineer = APIClient()
    engineer.force_authenticate(make_user("site_engineer"))
    contract = Contract(_schema(engineer))
    client = APIClient()
    client.force_authenticate(lead)
    contract.check(
        "/api/v1/projects/{slug}/review/next/",
        "get",
        client.get(f"/api/v1/projects/{project.slug}/review/next/"),
    )
    skip = client.post(f"/api/v1/review/items/{items[0].pk}/skip/", {"comment": "later"})
    contract.check("/api/v1/review/items/{id}/skip/", "post", skip)
    sent = client.post(
        f"/api/v1/review/items/{items[1].pk}/send-back/", {"comment": "wrong"}, format="json"
    )
    assert sent.status_code == 201
    contract.check("/api/v1/review/items/{id}/send-back/", "post", sent)
    mine = APIClient()
    mine.force_authenticate(annotator)
    contract.check("/api/v1/review/returned/", "get", mine.get("/api/v1/review/returned/"))
    undo = client.post(f"/api/v1/projects/{project.slug}/review/undo/")
    assert undo.status_code == 200
    contract.check("/api/v1/projects/{slug}/review/undo/", "post", undo)
    denied = mine.post(f"/api/v1/projects/{project.slug}/review/undo/")
    assert denied.status_code == 403
