"""Per-queue, per-status item counts kept by database triggers (models.QueueItemCount).

A queue's progress (open, done, removed) was one COUNT over all its items on every call: at a
million items about 185 ms, paid by the queue stats API the labeling page polls, by `next`,
undo and batch submit (issue 11, items 1 and 3). The triggers here keep the counts on every
write to labeling_queueitem (the ORM, the hot path's raw SQL, imports, bulk selection), so a
read sums a few dozen rows. Migration 0017 installs them on PostgreSQL and SQLite and fills
the table set-based (BACKFILL_SQL).

A row is keyed (queue, status, slot); its `n` is a delta, and a queue's count of a status is
the SUM over its slots (any one slot may go negative). On PostgreSQL the slot is the backend's
pid modulo SLOTS: 50 annotators submitting to one queue each move an item from open to done,
and with one row per (queue, status) every submit would wait on the row lock of the one before
until it commits. One backend runs one transaction at a time, so two transactions share a slot
only when their pids collide modulo SLOTS. SQLite has one writer at a time: slot 0.

On PostgreSQL the triggers are statement-level with transition tables, so inserting a million
items by one INSERT ... SELECT adds a few rows per queue, not a million upserts. UPDATE
triggers with transition tables cannot name columns (PostgreSQL refuses it), so the UPDATE
trigger nets the old rows against the new ones and writes only the keys whose count changed:
an update of priorities or labels_done writes nothing. Upserts go in key order, so two
statements take their row locks in the same order.

A queue's rows go with it: a trigger on labeling_queue's DELETE (Django deletes a queue's
items first, whose DELETE trigger has already run). The table has no foreign key, so that
order never matters.

tests/labeling/test_queue_item_counts.py checks the sums against COUNT(*) after random
sequences of writes on both vendors.
"""

# Every string here is built from this module's constants, never from input.
# ruff: noqa: S608
from __future__ import annotations

SLOTS = 32

TABLE = "labeling_queueitemcount"

BACKFILL_SQL = (
    f"INSERT INTO {TABLE} (queue_id, status, slot, n) "
    "SELECT queue_id, status, 0, COUNT(*) FROM labeling_queueitem "
    "GROUP BY queue_id, status ORDER BY queue_id, status"
)

_UPSERT_TAIL = f"ON CONFLICT (queue_id, status, slot) DO UPDATE SET n = {TABLE}.n + excluded.n"

PG_FUNCTION = "labeling_queueitem_count"
PG_QUEUE_FUNCTION = "labeling_queue_count_drop"
ITEM_TRIGGER = "labeling_queueitem_count"
QUEUE_TRIGGER = "labeling_queue_count_drop"


def _pg_upsert(deltas: str) -> str:
    """Add the (queue_id, status, d) rows of `deltas`, summed per key, into this backend's slot."""
    return f"""
        INSERT INTO {TABLE} (queue_id, status, slot, n)
        SELECT queue_id, status, pg_backend_pid() % {SLOTS}, SUM(d)
        FROM ({deltas}) AS deltas
        GROUP BY queue_id, status
        HAVING SUM(d) <> 0
        ORDER BY queue_id, status
        {_UPSERT_TAIL}
    """


def postgresql_install() -> list[str]:
    new = "SELECT queue_id, status, 1 AS d FROM new_items"
    old = "SELECT queue_id, status, -1 AS d FROM old_items"
    statements = [
        f"""
        CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {_pg_upsert(new)};
            ELSIF TG_OP = 'DELETE' THEN
                {_pg_upsert(old)};
            ELSE
                {_pg_upsert(f"{old} UNION ALL {new}")};
            END IF;
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql;
        """,
        f"""
        CREATE OR REPLACE FUNCTION {PG_QUEUE_FUNCTION}() RETURNS trigger AS $$
        BEGIN
            DELETE FROM {TABLE} WHERE queue_id IN (SELECT id FROM old_queues);
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql;
        """,
    ]
    for op, referencing in (
        ("insert", "NEW TABLE AS new_items"),
        ("update", "OLD TABLE AS old_items NEW TABLE AS new_items"),
        ("delete", "OLD TABLE AS old_items"),
    ):
        statements += [
            f"DROP TRIGGER IF EXISTS {ITEM_TRIGGER}_{op} ON labeling_queueitem;",
            f"""
            CREATE TRIGGER {ITEM_TRIGGER}_{op} AFTER {op.upper()} ON labeling_queueitem
            REFERENCING {referencing}
            FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}();
            """,
        ]
    statements += [
        f"DROP TRIGGER IF EXISTS {QUEUE_TRIGGER} ON labeling_queue;",
        f"""
        CREATE TRIGGER {QUEUE_TRIGGER} AFTER DELETE ON labeling_queue
        REFERENCING OLD TABLE AS old_queues
        FOR EACH STATEMENT EXECUTE FUNCTION {PG_QUEUE_FUNCTION}();
        """,
    ]
    return statements


def postgresql_uninstall() -> list[str]:
    return [
        *(
            f"DROP TRIGGER IF EXISTS {ITEM_TRIGGER}_{op} ON labeling_queueitem;"
            for op in ("insert", "update", "delete")
        ),
        f"DROP TRIGGER IF EXISTS {QUEUE_TRIGGER} ON labeling_queue;",
        f"DROP FUNCTION IF EXISTS {PG_FUNCTION}();",
        f"DROP FUNCTION IF EXISTS {PG_QUEUE_FUNCTION}();",
    ]


def _sqlite_add(row: str, d: int) -> str:
    return (
        f"INSERT INTO {TABLE} (queue_id, status, slot, n) "
        f"VALUES ({row}.queue_id, {row}.status, 0, {d}) {_UPSERT_TAIL};"
    )


def sqlite_install() -> list[str]:
    return [
        f"""
        CREATE TRIGGER {ITEM_TRIGGER}_insert AFTER INSERT ON labeling_queueitem
        BEGIN
            {_sqlite_add("NEW", 1)}
        END;
        """,
        f"""
        CREATE TRIGGER {ITEM_TRIGGER}_update AFTER UPDATE OF status, queue_id
        ON labeling_queueitem
        WHEN OLD.status IS NOT NEW.status OR OLD.queue_id IS NOT NEW.queue_id
        BEGIN
            {_sqlite_add("OLD", -1)}
            {_sqlite_add("NEW", 1)}
        END;
        """,
        f"""
        CREATE TRIGGER {ITEM_TRIGGER}_delete AFTER DELETE ON labeling_queueitem
        BEGIN
            {_sqlite_add("OLD", -1)}
        END;
        """,
        f"""
        CREATE TRIGGER {QUEUE_TRIGGER} AFTER DELETE ON labeling_queue
        BEGIN
            DELETE FROM {TABLE} WHERE queue_id = OLD.id;
        END;
        """,
    ]


def sqlite_uninstall() -> list[str]:
    return [
        *(f"DROP TRIGGER IF EXISTS {ITEM_TRIGGER}_{op};" for op in ("insert", "update", "delete")),
        f"DROP TRIGGER IF EXISTS {QUEUE_TRIGGER};",
    ]
