"""Counts for pages that must not grow with the pool (issue 11, item 3): exact while the rows
to count are few, PostgreSQL's own estimate once they are many.

Counting a million index entries costs 50-100 ms on every page load, for a figure people read
as "about how many". So a page asks `count_or_estimate`: when the planner estimates more than
EXACT_UP_TO rows it answers with that estimate (from the table statistics autovacuum keeps,
with the extended statistics on (queue_id, status) of migration 0011 for queue items), marked
as an estimate; otherwise it counts. SQLite has no estimate, and embedded pools are small: it
always counts.
"""

from __future__ import annotations

import json

from django.db import connection
from django.db.models import QuerySet

EXACT_UP_TO = 5_000


def estimated_rows(qs: QuerySet) -> int | None:
    """The planner's row estimate of `qs` (PostgreSQL), else None."""
    if connection.vendor != "postgresql":
        return None
    plan = json.loads(qs.explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def count_or_estimate(qs: QuerySet, *, exact_up_to: int = EXACT_UP_TO) -> tuple[int, bool]:
    """(count, exact): the exact count, or the planner's estimate when it is over
    `exact_up_to` rows."""
    estimate = estimated_rows(qs)
    if estimate is not None and estimate > exact_up_to:
        return estimate, False
    return qs.count(), True
