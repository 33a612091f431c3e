"""The hot path's statements run as prepared statements with a kept (generic) plan on PostgreSQL.

Planning them afresh on every call cost PostgreSQL more CPU than running them
(docs/platform-benchmarks.md, "Where the database's CPU went"), and a statement PostgreSQL
keeps re-planning (a `LIMIT $n` made the claim one) silently loses that saving, so it is
checked here through pg_prepared_statements: after a few labels every hot statement has run
its generic plan. On SQLite the statements run as sent, nothing prepared.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.authtoken.models import Token

from labeling.services import hot_sql
from labeling.services.queues import queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db

# PostgreSQL plans a prepared statement's first five calls for their parameters, then keeps a
# generic plan if it is not costed worse; a few more calls than that.
LABELS = 8


def _post(client, url, body, token):
    return client.post(
        url, data=json.dumps(body), content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token}",
    )  # fmt: skip


def _prepared() -> dict[str, tuple[int, int, str]]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT name, generic_plans, custom_plans, statement FROM pg_prepared_statements "
            "WHERE name LIKE 'hot\\_%%'"
        )
        return {name: (generic, custom, text) for name, generic, custom, text in cur.fetchall()}


def test_hot_statements_keep_their_generic_plans(client):
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    queue = make_queue(project)
    queue_items_add(
        queue=queue, images=[make_image(project) for _ in range(LABELS + 2)], strategy="manual"
    )
    token = Token.objects.create(user=annotator).key
    value = project.class_keys[0]
    for _ in range(LABELS):
        answer = _post(client, reverse("api-queue-next", args=[queue.pk]), {"count": 1}, token)
        assert answer.status_code == 200, answer.content
        lease = answer.json()["leases"][0]["lease"]
        body = {"value": value, "client_id": uuid.uuid4().hex}
        answer = _post(client, reverse("api-lease-submit", args=[lease]), body, token)
        assert answer.status_code == 200, answer.content

    if connection.vendor != "postgresql":
        assert hot_sql._prepared_names() == set()
        return
    prepared = _prepared()
    # Token, queue, own leases, claim, lease INSERT, own lease, item lock, retry check, writes.
    assert len(prepared) >= 9, prepared
    for name, (generic, custom, text) in prepared.items():
        assert name in hot_sql._prepared_names()
        # Statements of earlier tests on this connection may have run fewer times.
        if generic + custom >= LABELS:
            assert generic > 0, f"re-planned on every call: {text[:200]}"


def test_a_failed_first_call_leaves_the_statement_usable():
    """The PREPARE rides with the first EXECUTE and outlives that EXECUTE's failure (and the
    rollback): the next call must neither PREPARE the name again ("already exists") nor
    EXECUTE a name that was never prepared. On SQLite the statement runs as sent."""
    from django.db import DataError, transaction

    sql = "SELECT 10 / %s"
    for _ in range(2):  # a second failing first call: still no "already exists"
        with pytest.raises(DataError), transaction.atomic(), connection.cursor() as cur:
            hot_sql.execute(cur, sql, [0])
    with connection.cursor() as cur:
        hot_sql.execute(cur, sql, [5])
        assert cur.fetchone()[0] == 2
        hot_sql.execute(cur, sql, [2])
        assert cur.fetchone()[0] == 5
