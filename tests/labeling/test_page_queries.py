"""The pages and list APIs that must not grow with the pool use indexes (issue 11, item 3).

A modest pool is seeded in bulk with the page benchmark's own seeding (bench/pages.py: images,
queue items, labels, current labels, scores, jobs), the tables are ANALYZEd, and each page and
API below is requested through the Django stack; every SELECT it ran is then EXPLAINed, and a
sequential scan over one of the pool-sized tables fails the test, naming the endpoint and the
statement. The pool is small enough for the test to run in seconds and large enough (20,000
images, 100,000 labels) that PostgreSQL prefers an index wherever one serves the query.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench import pages as bench_pages

pytestmark = pytest.mark.django_db

POOL_TABLES = {
    "labeling_image",
    "labeling_label",
    "labeling_currentlabel",
    "labeling_queueitem",
    "labeling_score",
    "labeling_lease",
}

# The bench's endpoints (bench/pages.py) whose every statement must use an index. Not here:
# the strategy yield and the project jobs page (they aggregate over every label or item:
# docs/platform-benchmarks.md), the queue stats API (its queue's exact counts by status, the
# labeling page's progress), the validation progress (its count of
# unlabeled images that no open item holds is an anti-join PostgreSQL hashes), the review page
# (its content is another change's).
INDEXED = [
    "project page (annotator)",
    # Per-annotator tallies and windows (labeling.selectors.tally_sql, selectors.agreement).
    "quality page",
    "quality API",
    "quality checks API",
    "agreement API",
    "queue items page",
    "queue items page, open, one strategy",
    "queue items API",
    "review index page",
    "jobs page",
    "job page",
    "project jobs API",
    "job API",
    "image list API",
    "image list API, label",
    "image list API, split + label",
    "image list API, unlabeled",
    "image list API, score band",
    "image list API, strategy",
    "image list API, annotator",
]


def _seq_scans(plan: dict) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in POOL_TABLES:
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found.extend(_seq_scans(child))
    return found


@pytest.fixture(scope="module")
def pool(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        from django.db import transaction

        # Seeded once for the module inside a transaction rolled back at its end.
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            bench_pages._seed(20_000, 100_000, 0, vacuum=False)
            with connection.cursor() as cur:
                cur.execute("ANALYZE")
            yield {name: (role, url) for name, role, url in bench_pages._endpoints()}
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.mark.parametrize("name", INDEXED)
def test_each_statement_of_the_page_uses_an_index(pool, name):
    role, url = pool[name]
    username = {"annotator": "bench-annotator-3", "lead": "bench-lead"}.get(role, "bench-engineer")
    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.get(username=username))
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.content[:500])
    offenders = []
    with connection.cursor() as cur:
        for query in queries.captured_queries:
            sql = query["sql"]
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            cur.execute("EXPLAIN (FORMAT JSON) " + sql)
            plan = cur.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            scans = _seq_scans(plan[0]["Plan"])
            if scans:
                offenders.append((scans, sql[:400]))
    assert not offenders, f"{name}: sequential scans over the pool: {offenders}"
