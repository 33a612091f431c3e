"""The labeling hot path (next item + submit label) stays cheap: its SQL query count is pinned.

Every query is a round trip to PostgreSQL inside a request that 50 people make at once, so a
change that adds one (an N+1 in a serializer, a permission check that asks the database again,
a lock over a join) fails here instead of showing up as a slower benchmark. The bounds are the
counts measured after the work in docs/platform-benchmarks.md ("Where the time went"),
including BEGIN/COMMIT/SAVEPOINT, with token authentication as the benchmark uses it and with
a browser session.

The permission shortcuts the counts rely on are checked too: a membership or role taken away
between two requests is seen by the very next request.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.urls import reverse
from rest_framework.authtoken.models import Token

from labeling.api import queue_views
from labeling.models import Label, Lease
from labeling.services.queues import queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db

# Counted in a test, inside the test's own transaction, where a transaction of the code is a
# SAVEPOINT / RELEASE pair (BEGIN / COMMIT on a server, which are not statements of their own).
# The claim's transaction takes no savepoint when nested (atomic(savepoint=False)). The claim
# and submit statements are written out as SQL (labeling.services.hot_sql).
# Token request: token + roles (1), queue with its project in the caller's projects (1), own
# leases (1), claim with SKIP LOCKED (1), INSERT the lease after re-reading the item's leases in
# the same statement (1). (Before issue 11: 10, BEGIN/SAVEPOINT and COMMIT/RELEASE included.)
NEXT_QUERIES = 5
# With the progress counts the labeling page shows, counted afresh: two more.
NEXT_WITH_PROGRESS_QUERIES = 7
# Token + roles (1), own lease with item, queue and project (1), SAVEPOINT, item lock (1), the
# person's labels on the item / with this client_id (1), and on PostgreSQL one statement that
# completes the lease if it is still current, inserts the label and counts it on the item (1),
# RELEASE. (Before: 10.)
SUBMIT_QUERIES = 7
# Submit-and-claim, one round trip and one transaction: token + roles, queue, the lease (3),
# SAVEPOINT (the view's transaction, inside the test's), the submit without token and lease (3),
# the claim without token and queue (3), RELEASE. Against 12 for next + submit now, 20 before.
SUBMIT_NEXT_QUERIES = 11
# A browser session adds the session row and the user, and reads the roles separately.
SESSION_EXTRA = 3


@pytest.fixture
def world():
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    queue = make_queue(project)
    images = [make_image(project) for _ in range(6)]
    queue_items_add(queue=queue, images=images, strategy="manual")
    token = Token.objects.create(user=annotator)
    return {"annotator": annotator, "project": project, "queue": queue, "token": token}


def _post(client, url, body, **headers):
    return client.post(url, data=json.dumps(body), content_type="application/json", **headers)


def _token(world) -> dict:
    return {"HTTP_AUTHORIZATION": f"Token {world['token'].key}"}


def _next(client, world, *, progress=True, **headers):
    url = reverse("api-queue-next", args=[world["queue"].pk])
    response = _post(client, url, {"count": 1, "progress": progress}, **headers)
    assert response.status_code == 200, response.content
    return response.json()


def _submit(client, world, lease_id, **headers):
    value = world["project"].class_keys[0]
    url = reverse("api-lease-submit", args=[lease_id])
    response = _post(client, url, {"value": value, "client_id": uuid.uuid4().hex}, **headers)
    assert response.status_code == 200, response.content
    return response.json()


def test_next_and_submit_query_counts_with_a_token(client, world, django_assert_max_num_queries):
    cache.clear()
    # Warm up: the first request of a process reads content types and the like.
    first = _next(client, world, **_token(world))
    _submit(client, world, first["leases"][0]["lease"], **_token(world))

    # Progress counts younger than NEXT_PROGRESS_MAX_AGE_S are reused: no count queries.
    with django_assert_max_num_queries(NEXT_QUERIES):
        data = _next(client, world, **_token(world))
    assert len(data["leases"]) == 1
    assert data["progress"] == first["progress"]
    with django_assert_max_num_queries(SUBMIT_QUERIES):
        answer = _submit(client, world, data["leases"][0]["lease"], **_token(world))
    assert Label.objects.filter(pk=answer["label"]["id"], annotator=world["annotator"]).exists()
    assert Lease.objects.get(pk=data["leases"][0]["lease"]).state == Lease.State.COMPLETED

    # Older counts (here: none cached) are counted afresh, and are exact.
    cache.clear()
    with django_assert_max_num_queries(NEXT_WITH_PROGRESS_QUERIES):
        data = _next(client, world, **_token(world))
    assert data["progress"] == {"open": 4, "done": 2, "total": 6, "leased": 1}

    with django_assert_max_num_queries(NEXT_QUERIES):
        data = _next(client, world, progress=False, **_token(world))
    assert len(data["leases"]) == 1 and data["progress"] is None


def test_submit_next_query_count_with_a_token(client, world, django_assert_max_num_queries):
    cache.clear()
    lease = _next(client, world, **_token(world))["leases"][0]["lease"]
    url = reverse("api-queue-submit-next", args=[world["queue"].pk])
    value = world["project"].class_keys[0]
    for _round in range(2):  # the first warms the process up, the second is counted
        body = {"entries": [{"lease": lease, "value": value, "client_id": uuid.uuid4().hex}]}
        with django_assert_max_num_queries(SUBMIT_NEXT_QUERIES):
            response = _post(client, url, body, **_token(world))
        assert response.status_code == 200, response.content
        assert Lease.objects.get(pk=lease).state == Lease.State.COMPLETED
        (claimed,) = response.json()["leases"]
        lease = claimed["lease"]
    assert Label.objects.filter(annotator=world["annotator"]).count() == 2


def test_next_progress_is_at_most_a_few_seconds_old(client, world, monkeypatch):
    monkeypatch.setattr(queue_views, "NEXT_PROGRESS_MAX_AGE_S", 1)
    cache.clear()
    first = _next(client, world, **_token(world))
    _submit(client, world, first["leases"][0]["lease"], **_token(world))
    time.sleep(1.2)
    later = _next(client, world, **_token(world))
    assert (first["progress"]["done"], later["progress"]["done"]) == (0, 1)


def test_next_and_submit_query_counts_with_a_session(client, world, django_assert_max_num_queries):
    cache.clear()
    client.force_login(world["annotator"])
    first = _next(client, world)
    _submit(client, world, first["leases"][0]["lease"])
    cache.clear()
    with django_assert_max_num_queries(NEXT_WITH_PROGRESS_QUERIES + SESSION_EXTRA):
        data = _next(client, world)
    with django_assert_max_num_queries(SUBMIT_QUERIES + SESSION_EXTRA):
        _submit(client, world, data["leases"][0]["lease"])


def test_membership_and_role_changes_apply_to_the_next_token_request(client, world):
    data = _next(client, world, **_token(world))
    lease_id = data["leases"][0]["lease"]

    world["project"].members.remove(world["annotator"])
    url = reverse("api-lease-submit", args=[lease_id])
    response = _post(client, url, {"value": world["project"].class_keys[0]}, **_token(world))
    assert response.status_code == 404
    url = reverse("api-queue-next", args=[world["queue"].pk])
    assert _post(client, url, {}, **_token(world)).status_code == 404

    world["project"].members.add(world["annotator"])
    world["annotator"].groups.remove(Group.objects.get(name="annotator"))
    assert _post(client, url, {}, **_token(world)).status_code == 403

    world["annotator"].groups.add(Group.objects.get(name="annotator"))
    world["annotator"].is_active = False
    world["annotator"].save(update_fields=["is_active"])
    assert _post(client, url, {}, **_token(world)).status_code in (401, 403)
    assert not Label.objects.filter(annotator=world["annotator"]).exists()
