"""Submit-and-claim (POST /api/v1/queues/<id>/submit-next/, issue 11, item 1) and the hot path's
statements written out as SQL (labeling.services.hot_sql): the same outcomes as submit + next,
the same visibility rule as labeling.permissions, the same payloads as the serializers."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from labeling.api import queue_serializers as s
from labeling.models import Label, Lease, QueueItem
from labeling.permissions import is_site_wide, projects_visible_to
from labeling.roles import user_role
from labeling.services import hot_sql
from labeling.services.queues import queue_claim_next, queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    alice = make_user("annotator")
    bob = make_user("annotator")
    project = make_project(members=[alice, bob])
    queue = make_queue(project)
    images = [make_image(project) for _ in range(5)]
    queue_items_add(queue=queue, images=images, strategy="manual")
    return {"alice": alice, "bob": bob, "project": project, "queue": queue}


def _post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def _url(world):
    return reverse("api-queue-submit-next", args=[world["queue"].pk])


def _entry(world, lease, **extra):
    return {
        "lease": lease,
        "value": world["project"].class_keys[0],
        "client_id": uuid.uuid4().hex,
        **extra,
    }


def test_submit_next_stores_the_label_and_claims_the_next_items(client, world):
    client.force_login(world["alice"])
    first = _post(client, reverse("api-queue-next", args=[world["queue"].pk]), {"count": 1})
    lease = first.json()["leases"][0]
    response = _post(client, _url(world), {"entries": [_entry(world, lease["lease"])], "count": 2})
    assert response.status_code == 200, response.content
    data = response.json()
    (label,) = data["labels"]
    stored = Label.objects.get(pk=label["id"])
    assert (stored.annotator, stored.image_id) == (world["alice"], lease["image"]["id"])
    assert stored.page_size is None  # answered on its own, not a grid page
    assert Lease.objects.get(pk=lease["lease"]).state == Lease.State.COMPLETED
    assert QueueItem.objects.get(pk=lease["item"]).status == QueueItem.Status.DONE
    assert len(data["leases"]) == 2 and lease["lease"] not in {x["lease"] for x in data["leases"]}
    assert data["progress"]["total"] == 5 and data["stopped"] is None


def test_a_retried_submit_next_stores_nothing_twice_and_claims_nothing_new(client, world):
    client.force_login(world["alice"])
    (lease,) = queue_claim_next(queue=world["queue"], annotator=world["alice"])
    body = {"entries": [_entry(world, lease.pk)], "count": 2}
    once = _post(client, _url(world), body).json()
    again = _post(client, _url(world), body).json()
    assert once["labels"] == again["labels"]
    assert Label.objects.filter(annotator=world["alice"]).count() == 1
    # The leases the first answer claimed come back: own unfinished leases first.
    assert [x["lease"] for x in again["leases"]] == [x["lease"] for x in once["leases"]]


def test_several_entries_are_all_or_nothing_and_keep_no_page_size(client, world):
    client.force_login(world["alice"])
    a, b = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=2)
    bad = {"entries": [_entry(world, a.pk), _entry(world, b.pk, value="nope")], "count": 0}
    assert _post(client, _url(world), bad).status_code == 400
    assert not Label.objects.exists()
    good = {"entries": [_entry(world, b.pk), _entry(world, a.pk)], "count": 0}
    response = _post(client, _url(world), good)
    assert response.status_code == 200, response.content
    assert response.json()["leases"] == []
    labels = Label.objects.filter(annotator=world["alice"])
    assert labels.count() == 2 and not labels.filter(page_size__isnull=False).exists()


def test_someone_elses_lease_or_another_queues_is_refused_and_nothing_is_written(client, world):
    (bobs,) = queue_claim_next(queue=world["queue"], annotator=world["bob"])
    other_queue = make_queue(world["project"], name="Other")
    queue_items_add(queue=other_queue, images=[make_image(world["project"])], strategy="manual")
    (elsewhere,) = queue_claim_next(queue=other_queue, annotator=world["alice"])
    client.force_login(world["alice"])
    for lease in (bobs, elsewhere):
        response = _post(client, _url(world), {"entries": [_entry(world, lease.pk)]})
        assert response.status_code == 400
        assert "not yours in this queue" in response.content.decode()
    assert not Label.objects.exists()


def test_a_late_submit_takes_the_general_path(client, world):
    (lease,) = queue_claim_next(queue=world["queue"], annotator=world["alice"])
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timezone.timedelta(1))
    client.force_login(world["alice"])
    response = _post(client, _url(world), {"entries": [_entry(world, lease.pk)], "count": 1})
    assert response.status_code == 200, response.content
    # Stored and, with the slot still free, counted on the expired lease's slot.
    assert Label.objects.filter(annotator=world["alice"]).count() == 1
    assert QueueItem.objects.get(pk=lease.item_id).labels_done == 1


def test_when_no_item_may_be_claimed_the_stored_labels_still_answer_200(client, world):
    client.force_login(world["alice"])
    (lease,) = queue_claim_next(queue=world["queue"], annotator=world["alice"])
    world["queue"].is_active = False
    world["queue"].save(update_fields=["is_active"])
    response = _post(client, _url(world), {"entries": [_entry(world, lease.pk)], "count": 1})
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["leases"] == [] and "paused" in data["stopped"]
    assert Label.objects.filter(annotator=world["alice"]).count() == 1


def test_the_visibility_statement_agrees_with_the_permission_rule():
    project = make_project(slug="seen")
    other = make_project(slug="unseen")
    member, outsider = make_user("annotator"), make_user("engineer")
    project.members.add(member, outsider)
    site, roleless = make_user("site_engineer"), make_user(None)
    queues = [make_queue(project), make_queue(other)]
    for user in (member, outsider, site, roleless):
        visible = set(projects_visible_to(user).values_list("pk", flat=True))
        for queue in queues:
            found = user_role(user) is not None and hot_sql.visible_queue(
                queue_id=queue.pk, user=user, site_wide=is_site_wide(user)
            )
            assert bool(found) == (queue.project_id in visible), (user, queue)


def test_fast_payloads_equal_the_serializers(world):
    (lease,) = queue_claim_next(queue=world["queue"], annotator=world["alice"])
    assert s.lease_payload(lease) == dict(s.LeaseOutput(lease).data)
    label = Label.objects.create(
        project=world["project"],
        image_id=lease.item.image_id,
        annotator=world["alice"],
        value=world["project"].class_keys[0],
        client_id="x1",
    )
    assert s.label_payload(label) == dict(s.LabelOutput(label).data)


def test_rows_read_by_the_statements_equal_the_orm_instances(world):
    (lease,) = queue_claim_next(queue=world["queue"], annotator=world["alice"], count=1)
    (own,) = hot_sql.own_active_leases(
        queue=world["queue"], annotator=world["alice"], now=timezone.now()
    )
    orm = Lease.objects.select_related("item__image").get(pk=lease.pk)
    for ours, theirs in ((own, orm), (own.item, orm.item), (own.item.image, orm.item.image)):
        for field in type(theirs)._meta.concrete_fields:
            assert getattr(ours, field.attname) == getattr(theirs, field.attname), field.name


def test_a_membership_taken_away_is_seen_by_the_next_submit_next(client, world):
    (lease,) = queue_claim_next(queue=world["queue"], annotator=world["alice"])
    client.force_login(world["alice"])
    world["project"].members.remove(world["alice"])
    assert _post(client, _url(world), {"entries": [_entry(world, lease.pk)]}).status_code == 404
    world["project"].members.add(world["alice"])
    world["alice"].groups.remove(Group.objects.get(name="annotator"))
    assert _post(client, _url(world), {"entries": [_entry(world, lease.pk)]}).status_code == 403
    assert not Label.objects.exists()
