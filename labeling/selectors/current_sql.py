"""The current-label rule written as SQL, for the table that keeps it (models.CurrentLabel).

Pages and list APIs must not read every label of a pool to show one page (issue 11, item 3), so
each image's current value is kept in `labeling_currentlabel`, written by a database trigger on
every insert into (or change of the deciding columns of) `labeling_label`. The trigger lives in
the database, not in the services, so every writer keeps it right (the ORM, raw SQL on the hot
path, bulk imports) without the label-writing code knowing about it. Migration 0011 installs it
on PostgreSQL and SQLite; `bench/pages.py` seeds with the trigger off and then runs BACKFILL_SQL,
the same rule set-based.

The rule is labeling.selectors.labels' (its module docstring), in one SELECT portable between
PostgreSQL and SQLite:
- active: no label supersedes it, not a retraction, not an answer to a gold item;
- a lead's CORRECTION or CONFIRMATION wins, the latest (created_at, id) of them;
- else the value with the most ANNOTATION / IMPORTED votes; a tie goes to the value whose latest
  vote is latest (compared by created_at, then id).
tests/labeling/test_current_label.py checks the table against `current_labels` (the Python rule)
on histories with undo, corrections, confirmations, gold answers, ties and imports.
"""

# Every string here is built from this module's constants and column references, never from
# input, so string-built SQL is safe.
# ruff: noqa: S608
from __future__ import annotations

LEAD_KINDS_SQL = "('correction', 'confirmation')"
VOTE_KINDS_SQL = "('annotation', 'imported')"

# Candidate rows of the rule: one row per active lead label and one per voted value, each with
# (is_lead, n_votes, last_at, last_id) to order by. `{where}` narrows the labels (one image,
# or all of them).
_CANDIDATES = f"""
    SELECT l.image_id AS image_id, l.project_id AS project_id, l.value AS value,
           1 AS is_lead, 0 AS n_votes, l.created_at AS last_at, l.id AS last_id
    FROM labeling_label l
    WHERE {{where}} AND l.kind IN {LEAD_KINDS_SQL} AND l.strategy <> 'gold'
      AND NOT EXISTS (SELECT 1 FROM labeling_label s WHERE s.supersedes_id = l.id)
    UNION ALL
    SELECT l.image_id, l.project_id, l.value, 0, COUNT(*), MAX(l.created_at), MAX(l.id)
    FROM labeling_label l
    WHERE {{where}} AND l.kind IN {VOTE_KINDS_SQL} AND l.strategy <> 'gold'
      AND NOT EXISTS (SELECT 1 FROM labeling_label s WHERE s.supersedes_id = l.id)
    GROUP BY l.image_id, l.project_id, l.value
"""

_ORDER = "is_lead DESC, n_votes DESC, last_at DESC, last_id DESC"


def candidates_sql(where: str) -> str:
    return _CANDIDATES.format(where=where)


# One image's current row (image_id, project_id, split, value), or none: the trigger's body.
# `{image}` and `{project}` are the NEW row's columns (NEW.image_id, NEW.project_id).
REFRESH_ONE_SQL = """
    INSERT INTO labeling_currentlabel (image_id, project_id, split, value)
    SELECT c.image_id, c.project_id, i.split, c.value
    FROM ({candidates}) c JOIN labeling_image i ON i.id = c.image_id
    ORDER BY {order}
    LIMIT 1
"""


def refresh_one_sql(image: str, project: str) -> str:
    where = f"l.project_id = {project} AND l.image_id = {image}"
    return REFRESH_ONE_SQL.format(candidates=candidates_sql(where), order=_ORDER)


# Every image's current row at once (window function; PostgreSQL and SQLite >= 3.25).
BACKFILL_SQL = f"""
    INSERT INTO labeling_currentlabel (image_id, project_id, split, value)
    SELECT r.image_id, r.project_id, i.split, r.value
    FROM (
        SELECT c.image_id, c.project_id, c.value,
               ROW_NUMBER() OVER (PARTITION BY c.image_id ORDER BY {_ORDER}) AS place
        FROM ({candidates_sql("1 = 1")}) c
    ) r JOIN labeling_image i ON i.id = r.image_id
    WHERE r.place = 1
"""

# Columns whose change can change an image's current label (an UPDATE of others, e.g. a deleted
# queue setting `queue_id` to NULL, leaves it alone).
DECIDING_COLUMNS = ("image_id", "project_id", "kind", "value", "strategy", "supersedes_id")

PG_FUNCTION = "labeling_currentlabel_refresh"
TRIGGER = "labeling_label_currentlabel"


def postgresql_install() -> list[str]:
    """Statements that install the trigger on PostgreSQL."""
    columns = ", ".join(DECIDING_COLUMNS)
    body = refresh_one_sql("NEW.image_id", "NEW.project_id")
    return [
        f"""
        CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger AS $$
        BEGIN
            -- Labels of one image written at once by two people (overlap k > 1): the second
            -- waits here for the first to commit, and its statements below (each with a fresh
            -- snapshot, READ COMMITTED) then see the first's label. NO KEY UPDATE does not
            -- conflict with the KEY SHARE lock each label insert's foreign key check takes.
            PERFORM 1 FROM labeling_image WHERE id = NEW.image_id FOR NO KEY UPDATE;
            DELETE FROM labeling_currentlabel WHERE image_id = NEW.image_id;
            {body};
            IF TG_OP = 'UPDATE' AND OLD.image_id <> NEW.image_id THEN
                DELETE FROM labeling_currentlabel WHERE image_id = OLD.image_id;
                {refresh_one_sql("OLD.image_id", "OLD.project_id")};
            END IF;
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql;
        """,
        f"DROP TRIGGER IF EXISTS {TRIGGER} ON labeling_label;",
        f"""
        CREATE TRIGGER {TRIGGER}
        AFTER INSERT OR UPDATE OF {columns} ON labeling_label
        FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}();
        """,
    ]


def postgresql_uninstall() -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {TRIGGER} ON labeling_label;",
        f"DROP FUNCTION IF EXISTS {PG_FUNCTION}();",
    ]


def sqlite_install() -> list[str]:
    """SQLite has one writer at a time, so its trigger needs no lock."""
    columns = ", ".join(DECIDING_COLUMNS)
    refresh_new = refresh_one_sql("NEW.image_id", "NEW.project_id")
    refresh_old = refresh_one_sql("OLD.image_id", "OLD.project_id")
    return [
        f"""
        CREATE TRIGGER {TRIGGER}_insert AFTER INSERT ON labeling_label
        BEGIN
            DELETE FROM labeling_currentlabel WHERE image_id = NEW.image_id;
            {refresh_new};
        END;
        """,
        f"""
        CREATE TRIGGER {TRIGGER}_update AFTER UPDATE OF {columns} ON labeling_label
        BEGIN
            DELETE FROM labeling_currentlabel WHERE image_id IN (OLD.image_id, NEW.image_id);
            {refresh_old};
            {refresh_new.replace("INSERT INTO", "INSERT OR REPLACE INTO", 1)};
        END;
        """,
    ]


def sqlite_uninstall() -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {TRIGGER}_insert;",
        f"DROP TRIGGER IF EXISTS {TRIGGER}_update;",
    ]
