"""Per-annotator tallies kept by database triggers (models.AnnotatorTally, models.GridTally).

The quality page, its APIs and an annotator's own stats used to count every label of the
project (or of the person) on each request; at a million images that is seconds to minutes
(issue 11, item 3). These tables hold the counts, per annotator and queue and hour, and per
annotator and time per grid tile, and triggers keep them on each write, so every writer (the
ORM, the hot path's raw SQL, imports) keeps them right without knowing of them. Migration 0015
installs the triggers on PostgreSQL and SQLite and fills the tables set-based (BACKFILL_*).

What a label adds is its *contribution*: an ANNOTATION not undone counts once in `annotations`,
in `gold` if it answers a gold item, in `positives` if of the project's positive class, and,
unless it answers a gold item, in `flagged` if its image has an item in a review queue of the
project and in `overturned` if a CORRECTION of its image dated no earlier, with another value,
not itself undone, exists (labeling.selectors.labels.annotator_quality's rule). The events
that change a contribution, and what each trigger does:

- an ANNOTATION is written: its contribution is added;
- a RETRACTION of an ANNOTATION: that annotation's contribution (as things stand) is removed;
- a CORRECTION: +1 `overturned` for each annotation it overturns that no other correction
  already did; a RETRACTION of a CORRECTION: -1 for each one only it overturned;
- a review queue's item, on an image no other review item holds: +1 `flagged` for each
  counted annotation of the image.

Labels are append-only and never deleted but with their project (whose tallies go with it), so
no trigger handles DELETE or UPDATE. A correction or a review item can change several
annotators' rows in one statement: its rows come in key order, so two such statements take
their row locks in the same order (no deadlock between them). On PostgreSQL two labels of one
image are serialized by the current-label trigger's lock on the image row
(labeling_label_currentlabel runs first, triggers firing in name order); a review item takes
the same lock.

tests/labeling/test_annotator_tally.py checks the tables against the Python/ORM computation on
random histories, by trigger and by backfill.
"""

# Every string here is built from this module's constants and column references, never from
# input, so string-built SQL is safe.
# ruff: noqa: S608
from __future__ import annotations

# A grid tile's time counts up to this (ms) in GridTally: longer is a pause, not a look
# (labeling.selectors.labels.RATE_LABEL_CAP_MS), and the cap bounds the table's rows.
GRID_MS_CAP = 60_000

_DIALECT = {
    "postgresql": {
        "hour": "date_trunc('hour', a.created_at)",
        "positive": "p.label_schema ->> 'positive'",
        "least": "LEAST",
        "greatest": "GREATEST",
    },
    "sqlite": {
        "hour": "strftime('%Y-%m-%d %H:00:00', a.created_at)",
        "positive": "json_extract(p.label_schema, '$.positive')",
        "least": "MIN",
        "greatest": "MAX",
    },
}


def _retracted(alias: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM labeling_label r "
        f"WHERE r.supersedes_id = {alias}.id AND r.kind = 'retraction')"
    )


def _overturned_by(alias: str, exclude_id: str | None = None) -> str:
    """An active correction of the annotation's image, no earlier, with another value."""
    other = f" AND c.id <> {exclude_id}" if exclude_id else ""
    return (
        f"EXISTS (SELECT 1 FROM labeling_label c WHERE c.image_id = {alias}.image_id "
        f"AND c.kind = 'correction' AND c.created_at >= {alias}.created_at "
        f"AND c.value <> {alias}.value{other} AND NOT {_retracted('c')})"
    )


_IN_REVIEW = (
    "EXISTS (SELECT 1 FROM labeling_queueitem qi JOIN labeling_queue q ON q.id = qi.queue_id "
    "WHERE qi.image_id = a.image_id AND q.kind = 'review' AND q.project_id = a.project_id)"
)

_TALLY_COLUMNS = (
    "project_id, annotator_id, queue_key, hour, annotations, gold, positives, flagged, overturned"
)
_TALLY_ADD = ", ".join(
    f"{c} = labeling_annotatortally.{c} + excluded.{c}"
    for c in ("annotations", "gold", "positives", "flagged", "overturned")
)


def _tally_upsert(select: str) -> str:
    return (
        f"INSERT INTO labeling_annotatortally ({_TALLY_COLUMNS}) {select} "
        f"ON CONFLICT (project_id, annotator_id, queue_key, hour) DO UPDATE SET {_TALLY_ADD}"
    )


def _contribution_select(vendor: str, where: str, sign: int) -> str:
    """The contributions of the annotations `a` matching `where`, summed per tally key."""
    d = _DIALECT[vendor]
    not_gold = "a.strategy <> 'gold'"
    return f"""
        SELECT a.project_id, a.annotator_id, COALESCE(a.queue_id, 0), {d["hour"]},
               {sign} * COUNT(*),
               {sign} * SUM(CASE WHEN a.strategy = 'gold' THEN 1 ELSE 0 END),
               {sign} * SUM(CASE WHEN a.value = {d["positive"]} THEN 1 ELSE 0 END),
               {sign} * SUM(CASE WHEN {not_gold} AND {_IN_REVIEW} THEN 1 ELSE 0 END),
               {sign} * SUM(CASE WHEN {not_gold} AND {_overturned_by("a")} THEN 1 ELSE 0 END)
        FROM labeling_label a JOIN labeling_project p ON p.id = a.project_id
        WHERE a.kind = 'annotation' AND {where}
        GROUP BY a.project_id, a.annotator_id, COALESCE(a.queue_id, 0), {d["hour"]}
        ORDER BY 1, 2, 3, 4
    """


def _overturned_select(vendor: str, correction_where: str, sign: int) -> str:
    """Annotations that the correction `s` overturns and no other active correction does."""
    d = _DIALECT[vendor]
    return f"""
        SELECT a.project_id, a.annotator_id, COALESCE(a.queue_id, 0), {d["hour"]},
               0, 0, 0, 0, {sign} * COUNT(*)
        FROM labeling_label s JOIN labeling_label a ON a.image_id = s.image_id
        WHERE {correction_where} AND s.kind = 'correction'
          AND a.kind = 'annotation' AND a.strategy <> 'gold' AND NOT {_retracted("a")}
          AND a.created_at <= s.created_at AND a.value <> s.value
          AND NOT {_overturned_by("a", exclude_id="s.id")}
        GROUP BY a.project_id, a.annotator_id, COALESCE(a.queue_id, 0), {d["hour"]}
        ORDER BY 1, 2, 3, 4
    """


def _flagged_select(vendor: str) -> str:
    """+1 flagged per counted annotation of the NEW review item's image, unless another review
    item of the project already holds it."""
    d = _DIALECT[vendor]
    return f"""
        SELECT a.project_id, a.annotator_id, COALESCE(a.queue_id, 0), {d["hour"]},
               0, 0, 0, COUNT(*), 0
        FROM labeling_label a JOIN labeling_queue q ON q.id = NEW.queue_id
        WHERE a.image_id = NEW.image_id AND q.kind = 'review' AND q.project_id = a.project_id
          AND a.kind = 'annotation' AND a.strategy <> 'gold' AND NOT {_retracted("a")}
          AND NOT EXISTS (
              SELECT 1 FROM labeling_queueitem qi JOIN labeling_queue q2 ON q2.id = qi.queue_id
              WHERE qi.image_id = NEW.image_id AND qi.id <> NEW.id AND q2.kind = 'review'
                AND q2.project_id = a.project_id)
        GROUP BY a.project_id, a.annotator_id, COALESCE(a.queue_id, 0), {d["hour"]}
        ORDER BY 1, 2, 3, 4
    """


def _grid_select(vendor: str, where: str, sign: int) -> str:
    d = _DIALECT[vendor]
    capped = f"{d['least']}(a.duration_ms, {GRID_MS_CAP})"
    ms = f"CASE WHEN a.duration_ms IS NULL THEN -1 ELSE {capped} END"
    return f"""
        SELECT a.project_id, a.annotator_id, {ms}, {sign} * COUNT(*),
               {sign} * SUM(1.0 / {d["greatest"]}(1, a.page_size))
        FROM labeling_label a
        WHERE a.kind = 'annotation' AND a.page_size IS NOT NULL AND {where}
        GROUP BY a.project_id, a.annotator_id, {ms}
    """


def _grid_upsert(select: str) -> str:
    return (
        f"INSERT INTO labeling_gridtally (project_id, annotator_id, ms, tiles, pages) {select} "
        "ON CONFLICT (project_id, annotator_id, ms) DO UPDATE SET "
        "tiles = labeling_gridtally.tiles + excluded.tiles, "
        "pages = labeling_gridtally.pages + excluded.pages"
    )


def backfill(vendor: str) -> list[str]:
    """Both tables from the existing labels at once, into empty tables (migration 0015, the
    benchmark's seeding)."""
    counted = f"NOT {_retracted('a')}"
    return [
        f"INSERT INTO labeling_annotatortally ({_TALLY_COLUMNS}) "
        + _contribution_select(vendor, counted, 1),
        "INSERT INTO labeling_gridtally (project_id, annotator_id, ms, tiles, pages) "
        + _grid_select(vendor, counted, 1),
    ]


# What each label event does (module docstring), in both dialects' trigger bodies.
def _on_annotation(vendor: str) -> list[str]:
    return [
        _tally_upsert(_contribution_select(vendor, "a.id = NEW.id", 1)),
        _grid_upsert(_grid_select(vendor, "a.id = NEW.id", 1)),
    ]


def _on_retraction(vendor: str) -> list[str]:
    return [
        _tally_upsert(_contribution_select(vendor, "a.id = NEW.supersedes_id", -1)),
        _grid_upsert(_grid_select(vendor, "a.id = NEW.supersedes_id", -1)),
        _tally_upsert(_overturned_select(vendor, "s.id = NEW.supersedes_id", -1)),
    ]


def _on_correction(vendor: str) -> list[str]:
    return [_tally_upsert(_overturned_select(vendor, "s.id = NEW.id", 1))]


PG_LABEL_FUNCTION = "labeling_tally_label"
PG_ITEM_FUNCTION = "labeling_tally_review_item"
LABEL_TRIGGER = "labeling_label_tally"
ITEM_TRIGGER = "labeling_queueitem_tally"


def _body(statements: list[str]) -> str:
    return "".join(f"{statement};\n" for statement in statements)


def postgresql_install() -> list[str]:
    v = "postgresql"
    return [
        f"""
        CREATE OR REPLACE FUNCTION {PG_LABEL_FUNCTION}() RETURNS trigger AS $$
        BEGIN
            IF NEW.kind = 'annotation' THEN
                {_body(_on_annotation(v)[:1])}
                IF NEW.page_size IS NOT NULL THEN
                    {_body(_on_annotation(v)[1:])}
                END IF;
            ELSIF NEW.kind = 'retraction' AND NEW.supersedes_id IS NOT NULL THEN
                {_body(_on_retraction(v))}
            ELSIF NEW.kind = 'correction' THEN
                {_body(_on_correction(v))}
            END IF;
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql;
        """,
        f"DROP TRIGGER IF EXISTS {LABEL_TRIGGER} ON labeling_label;",
        f"""
        CREATE TRIGGER {LABEL_TRIGGER} AFTER INSERT ON labeling_label
        FOR EACH ROW EXECUTE FUNCTION {PG_LABEL_FUNCTION}();
        """,
        f"""
        CREATE OR REPLACE FUNCTION {PG_ITEM_FUNCTION}() RETURNS trigger AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM labeling_queue WHERE id = NEW.queue_id AND kind = 'review')
            THEN
                -- Serialized with the image's label writes (the current-label trigger's lock).
                PERFORM 1 FROM labeling_image WHERE id = NEW.image_id FOR NO KEY UPDATE;
                {_tally_upsert(_flagged_select(v))};
            END IF;
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql;
        """,
        f"DROP TRIGGER IF EXISTS {ITEM_TRIGGER} ON labeling_queueitem;",
        f"""
        CREATE TRIGGER {ITEM_TRIGGER} AFTER INSERT ON labeling_queueitem
        FOR EACH ROW EXECUTE FUNCTION {PG_ITEM_FUNCTION}();
        """,
    ]


def postgresql_uninstall() -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {LABEL_TRIGGER} ON labeling_label;",
        f"DROP FUNCTION IF EXISTS {PG_LABEL_FUNCTION}();",
        f"DROP TRIGGER IF EXISTS {ITEM_TRIGGER} ON labeling_queueitem;",
        f"DROP FUNCTION IF EXISTS {PG_ITEM_FUNCTION}();",
    ]


def sqlite_install() -> list[str]:
    v = "sqlite"
    return [
        f"""
        CREATE TRIGGER {LABEL_TRIGGER}_annotation AFTER INSERT ON labeling_label
        WHEN NEW.kind = 'annotation'
        BEGIN
            {_body(_on_annotation(v))}
        END;
        """,
        f"""
        CREATE TRIGGER {LABEL_TRIGGER}_retraction AFTER INSERT ON labeling_label
        WHEN NEW.kind = 'retraction' AND NEW.supersedes_id IS NOT NULL
        BEGIN
            {_body(_on_retraction(v))}
        END;
        """,
        f"""
        CREATE TRIGGER {LABEL_TRIGGER}_correction AFTER INSERT ON labeling_label
        WHEN NEW.kind = 'correction'
        BEGIN
            {_body(_on_correction(v))}
        END;
        """,
        f"""
        CREATE TRIGGER {ITEM_TRIGGER} AFTER INSERT ON labeling_queueitem
        BEGIN
            {_body([_tally_upsert(_flagged_select(v))])}
        END;
        """,
    ]


def sqlite_uninstall() -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {LABEL_TRIGGER}_annotation;",
        f"DROP TRIGGER IF EXISTS {LABEL_TRIGGER}_retraction;",
        f"DROP TRIGGER IF EXISTS {LABEL_TRIGGER}_correction;",
        f"DROP TRIGGER IF EXISTS {ITEM_TRIGGER};",
    ]
