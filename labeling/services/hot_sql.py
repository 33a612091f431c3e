# ruff: noqa: S608 - the statements are built from model metadata only; every value is a parameter
"""The labeling hot path's statements, written out as SQL (issue 11, item 1).

Why SQL here and nowhere else: a claim and a submit run for every label, 50 people at once,
and building their querysets cost more CPU than PostgreSQL spent answering them (profiled in
docs/platform-benchmarks.md: about 60% of a label's server CPU was the ORM compiling about 20
statements). The statements below are the same ones the ORM built, plus a few merged into one,
so they keep every rule of labeling.services.queues and labeling.services.labels; what the
ORM still does is turn rows into model instances (`_Reader`, with the fields' own converters,
so a datetime or a JSON column reads exactly as through a queryset).

Table and column names come from the models' metadata (nothing else is put into the text;
every value is a parameter), and each statement is built once per process and vendor.
Both PostgreSQL and SQLite run them: the row locks (`FOR UPDATE ... SKIP LOCKED`) exist on
PostgreSQL only, as with the ORM's select_for_update; on SQLite every write transaction
already holds the database (BEGIN IMMEDIATE, config/settings/base.py).

Every statement that can meet a case the fast form does not handle says so by returning no
row, and the caller then takes the general ORM path under the same locks (a late submit, a
stale lease on the item, gold, a review queue): the fast path is for the common case only.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from labeling.models import Image, Label, Lease, Project, Queue, QueueItem

ACTIVE, COMPLETED, RELEASED = Lease.State.ACTIVE, Lease.State.COMPLETED, Lease.State.RELEASED
OPEN, DONE = QueueItem.Status.OPEN, QueueItem.Status.DONE


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _table(model) -> str:
    return _qn(model._meta.db_table)


def _col(model, field: str) -> str:
    return _qn(model._meta.get_field(field).column)


class _Reader:
    """Columns of one model in a SELECT, and rows back into instances as the ORM builds them
    (the backend's and the field's converters, then Model.from_db)."""

    def __init__(self, model, alias: str):
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.width = len(self.fields)
        self.columns = ", ".join(f"{alias}.{_qn(f.column)}" for f in self.fields)
        self.converters = []
        for index, field in enumerate(self.fields):
            expression = field.get_col(alias)
            found = connection.ops.get_db_converters(expression) + expression.get_db_converters(
                connection
            )
            if found:
                self.converters.append((index, expression, found))

    def build(self, values):
        values = list(values)
        for index, expression, converters in self.converters:
            for converter in converters:
                values[index] = converter(values[index], expression, connection)
        return self.model.from_db(connection.alias, None, values)


@cache
def _reader(model, alias: str, vendor: str) -> _Reader:
    return _Reader(model, alias)


def reader(model, alias: str) -> _Reader:
    return _reader(model, alias, connection.vendor)


def _dt(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


# --- Prepared statements (PostgreSQL) ------------------------------------------------------------
# Planning, not executing, was most of PostgreSQL's CPU for these statements: each is a
# primary-key or small index lookup that runs in 0.04-0.3 ms, but planning its joins again on
# every call cost 0.2-1.3 ms (EXPLAIN's "Planning Time", and the backend's CPU over 300 calls of
# each statement: 0.14-0.55 ms plain against 0.04-0.05 ms prepared; docs/platform-benchmarks.md).
# So on PostgreSQL each statement is PREPAREd once per database session and then EXECUTEd:
# after five calls PostgreSQL keeps a generic plan unless it estimates it worse than the
# custom ones (plan_cache_mode auto). The PREPARE travels in the same round trip as the
# statement's first EXECUTE, so the statement count per label does not change
# (tests/labeling/test_hot_path_queries.py). A prepared statement lives as long as the
# session and is not undone by a rollback, so the names kept here per connection stay true.
# A pooler that hands one session's statements to several server sessions (PgBouncer in
# transaction mode) does not keep session state: IMAGECLEAN_PREPARED_STATEMENTS=0 turns this off
# (settings.LABELING_PREPARED_STATEMENTS).


@cache
def _prepared_form(sql: str) -> tuple[str, str, int]:
    """(name, text with $1..$n, n) of one statement; its name is a digest of its text."""
    if "%" in sql.replace("%s", ""):
        raise ValueError("a prepared statement's text may hold no % but its placeholders")
    parts = sql.split("%s")
    text = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
    return f"hot_{hashlib.sha256(sql.encode()).hexdigest()[:20]}", text, len(parts) - 1


def _session_state() -> tuple[object, set[str], set[str]]:
    """(raw connection, names prepared, names whose first call failed) of the database session
    behind `connection`; a new session, after a reconnect, starts with none."""
    raw = connection.connection
    kept = getattr(connection, "_hot_sql_prepared", None)
    if kept is None or kept[0] is not raw:
        kept = (raw, set(), set())
        connection._hot_sql_prepared = kept
    return kept


def _prepared_names() -> set[str]:
    """Names prepared in the database session behind `connection`."""
    return _session_state()[1]


def _unsure_names() -> set[str]:
    """Names whose PREPARE went with a first call that failed: prepared or not, unknown here."""
    return _session_state()[2]


def execute(cur, sql: str, params) -> None:
    """cur.execute(sql, params), as a prepared statement on PostgreSQL. For statements built
    once per process from model metadata only (this module's, the token statement of
    labeling.api.authentication): each distinct text becomes one prepared statement."""
    if connection.vendor != "postgresql" or not settings.LABELING_PREPARED_STATEMENTS:
        cur.execute(sql, params)
        return
    name, text, count = _prepared_form(sql)
    call = f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"
    names = _prepared_names()
    if name in names:
        cur.execute(call, params)
        return
    if name in _unsure_names():
        # An earlier first call failed: whether its PREPARE ran before the error, only the
        # session knows (one extra statement, after a failure only).
        _unsure_names().discard(name)
        cur.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [name])
        if cur.fetchone():
            names.add(name)
            cur.execute(call, params)
            return
    # PREPARE and the first EXECUTE in one round trip (the PREPARE's text holds no %, so
    # psycopg2 fills only the EXECUTE's placeholders).
    try:
        cur.execute(f"PREPARE {name} AS {text}; {call}", params)
    except Exception:
        # The PREPARE outlives the failed EXECUTE and its transaction's rollback (prepared
        # statements are not transactional), or never ran: the next call asks the session.
        _unsure_names().add(name)
        raise
    names.add(name)


def _pg_cast(model, field: str) -> str:
    """A placeholder typed as the column on PostgreSQL: a parameter in an INSERT ... SELECT's
    select list has no column to take its type from when the statement is prepared."""
    if connection.vendor != "postgresql":
        return "%s"
    return f"CAST(%s AS {model._meta.get_field(field).db_type(connection)})"


def _lit(constant: str) -> str:
    """One of the models' own constants (a status, a state, a kind) as an SQL literal."""
    if not str(constant).isidentifier():
        raise ValueError(f"not a model constant: {constant!r}")
    return f"'{constant}'"


def _lock_clause(skip_locked: bool) -> str:
    if not connection.features.has_select_for_update:
        return ""
    return " FOR UPDATE OF qi SKIP LOCKED" if skip_locked else " FOR UPDATE OF qi"


# --- Claim --------------------------------------------------------------------------------------
@cache
def _own_active_sql(vendor: str) -> str:
    lease, item, image = reader(Lease, "l"), reader(QueueItem, "qi"), reader(Image, "im")
    return (
        f"SELECT {lease.columns}, {item.columns}, {image.columns} "
        f"FROM {_table(Lease)} l "
        f"JOIN {_table(QueueItem)} qi ON qi.{_qn('id')} = l.{_col(Lease, 'item')} "
        f"JOIN {_table(Image)} im ON im.{_qn('id')} = qi.{_col(QueueItem, 'image')} "
        f"WHERE l.{_col(Lease, 'annotator')} = %s AND l.{_col(Lease, 'state')} = %s "
        f"AND l.{_col(Lease, 'expires_at')} > %s AND qi.{_col(QueueItem, 'status')} = %s "
        # Gold items mixed into this queue live in the hidden gold queue (served_in).
        f"AND (qi.{_col(QueueItem, 'queue')} = %s OR l.{_col(Lease, 'served_in')} = %s) "
        f"ORDER BY l.{_col(Lease, 'created_at')}, l.{_qn('id')}"
    )


def own_active_leases(*, queue: Queue, annotator: User, now: datetime) -> list[Lease]:
    """labeling.services.queues.leases_own_active, one statement: leases with item and image."""
    lease, item, image = reader(Lease, "l"), reader(QueueItem, "qi"), reader(Image, "im")
    with connection.cursor() as cur:
        execute(
            cur,
            _own_active_sql(connection.vendor),
            [annotator.pk, ACTIVE, _dt(now), OPEN, queue.pk, queue.pk],
        )
        rows = cur.fetchall()
    out = []
    for row in rows:
        one = lease.build(row[: lease.width])
        one.item = item.build(row[lease.width : lease.width + item.width])
        one.item.image = image.build(row[lease.width + item.width :])
        if one.item.queue_id == queue.pk:
            one.item.queue = queue
        out.append(one)
    return out


@cache
def _claimable_sql(vendor: str, tried: int, skip_locked: bool, limit: int) -> str:
    item, image = reader(QueueItem, "qi"), reader(Image, "im")
    lease_t, label_t = _table(Lease), _table(Label)
    l_item, l_state, l_exp = _col(Lease, "item"), _col(Lease, "state"), _col(Lease, "expires_at")
    not_tried = ""
    if tried:
        not_tried = f"AND qi.{_qn('id')} NOT IN ({', '.join(['%s'] * tried)}) "
    # The model's constants (statuses, states, the label kind) are written into the text, not
    # passed as parameters: the statement is prepared (`execute`), and a generic plan can use a
    # partial index only when the query itself names the value of its condition
    # (queueitem_open, lease_one_active_per_slot); with parameters, it read every active
    # lease's index entry, and stepped over every done item, on each claim.
    return (
        f"SELECT {item.columns}, {image.columns} FROM {_table(QueueItem)} qi "
        f"JOIN {_table(Image)} im ON im.{_qn('id')} = qi.{_col(QueueItem, 'image')} "
        f"WHERE qi.{_col(QueueItem, 'queue')} = %s AND qi.{_col(QueueItem, 'status')} = "
        f"{_lit(OPEN)} "
        # A free slot as of this statement: unexpired active leases plus counted labels.
        f"AND qi.{_col(QueueItem, 'labels_needed')} > qi.{_col(QueueItem, 'labels_done')} + "
        f"(SELECT COUNT(*) FROM {lease_t} h WHERE h.{l_item} = qi.{_qn('id')} "
        f"AND h.{l_state} = {_lit(ACTIVE)} AND h.{l_exp} > %s) "
        # Not held or labeled by this person, and not skipped by them within the cooldown.
        f"AND NOT EXISTS (SELECT 1 FROM {lease_t} m WHERE m.{l_item} = qi.{_qn('id')} "
        f"AND m.{_col(Lease, 'annotator')} = %s AND (m.{l_state} IN ({_lit(ACTIVE)}, "
        f"{_lit(COMPLETED)}) OR (m.{l_state} = {_lit(RELEASED)} "
        f"AND m.{_col(Lease, 'finished_at')} > %s))) "
        f"AND NOT EXISTS (SELECT 1 FROM {label_t} lb WHERE lb.{_col(Label, 'queue_item')} = "
        f"qi.{_qn('id')} AND lb.{_col(Label, 'annotator')} = %s "
        f"AND lb.{_col(Label, 'kind')} = {_lit(Label.Kind.ANNOTATION)} "
        f"AND NOT EXISTS (SELECT 1 FROM {label_t} sb WHERE sb.{_col(Label, 'supersedes')} = "
        # OFFSET 0 (PostgreSQL) keeps this a probe per candidate item (label_item_annotator):
        # as an anti-join the planner may read all of the person's labels first, trusting
        # statistics taken when they had few (a claim then grows with every label).
        f"lb.{_qn('id')}){' OFFSET 0' if vendor == 'postgresql' else ''}) "
        f"{not_tried}"
        f"ORDER BY qi.{_col(QueueItem, 'priority')} DESC, qi.{_qn('id')} "
        # The limit is written into the text too (an int, at most the claim's maximum): with
        # `LIMIT $n` a generic plan is costed as if it fetched a tenth of the queue, so
        # PostgreSQL kept planning the statement afresh on every call (pg_prepared_statements).
        f"LIMIT {int(limit)}{_lock_clause(skip_locked)}"
    )


def claimable_locked(
    *,
    queue: Queue,
    annotator: User,
    now: datetime,
    cooldown_since: datetime,
    tried: set[int],
    limit: int,
    skip_locked: bool,
) -> list[QueueItem]:
    """labeling.services.queues._claimable, locked: up to `limit` open items with a free slot
    that this person has not labeled, does not hold and did not just skip, in serving order,
    each with its image. The rows are locked (PostgreSQL) with SKIP LOCKED unless asked to wait."""
    item, image = reader(QueueItem, "qi"), reader(Image, "im")
    params = [queue.pk, _dt(now), annotator.pk, _dt(cooldown_since), annotator.pk, *sorted(tried)]
    with connection.cursor() as cur:
        execute(cur, _claimable_sql(connection.vendor, len(tried), skip_locked, limit), params)
        rows = cur.fetchall()
    out = []
    for row in rows:
        one = item.build(row[: item.width])
        one.image = image.build(row[item.width :])
        one.queue = queue
        out.append(one)
    return out


@cache
def _lease_insert_sql(vendor: str, slots: int) -> str:
    lease = reader(Lease, "x")
    lease_t = _table(Lease)
    l_item, l_state, l_exp = _col(Lease, "item"), _col(Lease, "state"), _col(Lease, "expires_at")
    l_who = _col(Lease, "annotator")
    numbers = " UNION ALL ".join(f"SELECT {n} AS n" for n in range(slots))
    insert_columns = [
        _col(Lease, name)
        for name in ("item", "annotator", "slot", "state", "created_at", "expires_at")
    ]
    returning = ", ".join(_qn(f.column) for f in lease.fields)
    return (
        f"INSERT INTO {lease_t} ({', '.join(insert_columns)}) "
        f"SELECT {_pg_cast(Lease, 'item')}, {_pg_cast(Lease, 'annotator')}, s.n, "
        f"{_pg_cast(Lease, 'state')}, {_pg_cast(Lease, 'created_at')}, "
        f"{_pg_cast(Lease, 'expires_at')} FROM ({numbers}) s "
        # The lowest slot no lease holds: active ones (stale too: the unique constraint counts
        # them until they are marked expired) and completed ones.
        f"WHERE NOT EXISTS (SELECT 1 FROM {lease_t} h WHERE h.{l_item} = %s AND "
        f"h.{_col(Lease, 'slot')} = s.n AND h.{l_state} IN (%s, %s)) "
        # This person holds or completed no lease on the item...
        f"AND NOT EXISTS (SELECT 1 FROM {lease_t} h WHERE h.{l_item} = %s AND h.{l_who} = %s "
        f"AND (h.{l_state} = %s OR (h.{l_state} = %s AND h.{l_exp} > %s))) "
        # ...and counted labels plus unexpired holders leave a slot.
        f"AND %s + (SELECT COUNT(*) FROM {lease_t} h WHERE h.{l_item} = %s AND h.{l_state} = %s "
        f"AND h.{l_exp} > %s) < %s "
        f"ORDER BY s.n LIMIT 1 "
        # The partial unique constraints stay the guard of last resort: a hit is no row.
        f"ON CONFLICT DO NOTHING RETURNING {returning}"
    )


def lease_insert_locked(
    *, item: QueueItem, annotator: User, now: datetime, expires_at: datetime
) -> Lease | None:
    """A new active lease on `item` in one statement, or None when this statement cannot tell
    (no free slot, a stale lease in the way, a constraint hit): the caller then asks
    labeling.services.queues.lease_create_locked, which decides exactly. The caller holds the
    item's row lock; the statement re-reads the item's leases with its own, fresh snapshot."""
    if item.status != OPEN or item.labels_needed < 1:
        return None
    params = [
        item.pk,
        annotator.pk,
        ACTIVE,
        _dt(now),
        _dt(expires_at),
        item.pk,
        ACTIVE,
        COMPLETED,
        item.pk,
        annotator.pk,
        COMPLETED,
        ACTIVE,
        _dt(now),
        item.labels_done,
        item.pk,
        ACTIVE,
        _dt(now),
        item.labels_needed,
    ]
    with connection.cursor() as cur:
        execute(cur, _lease_insert_sql(connection.vendor, item.labels_needed), params)
        row = cur.fetchone()
    if row is None:
        return None
    lease = reader(Lease, "x").build(row)
    lease.item = item
    return lease


# --- Submit -------------------------------------------------------------------------------------
@cache
def _own_lease_sql(vendor: str, site_wide: bool) -> str:
    lease, item = reader(Lease, "l"), reader(QueueItem, "qi")
    queue, project = reader(Queue, "q"), reader(Project, "p")
    return (
        f"SELECT {lease.columns}, {item.columns}, {queue.columns}, {project.columns} "
        f"FROM {_table(Lease)} l "
        f"JOIN {_table(QueueItem)} qi ON qi.{_qn('id')} = l.{_col(Lease, 'item')} "
        f"JOIN {_table(Queue)} q ON q.{_qn('id')} = qi.{_col(QueueItem, 'queue')} "
        f"JOIN {_table(Project)} p ON p.{_qn('id')} = q.{_col(Queue, 'project')} "
        f"WHERE l.{_qn('id')} = %s AND l.{_col(Lease, 'annotator')} = %s {_visible(site_wide)}"
    )


def own_lease(*, lease_id: int, annotator: User, site_wide: bool) -> Lease | None:
    """The person's own lease with its item, the item's queue and project, in a project they
    can see (`site_wide`: every project), or None. One statement."""
    lease, item = reader(Lease, "l"), reader(QueueItem, "qi")
    queue, project = reader(Queue, "q"), reader(Project, "p")
    params = [lease_id, annotator.pk] + ([] if site_wide else [annotator.pk])
    with connection.cursor() as cur:
        execute(cur, _own_lease_sql(connection.vendor, site_wide), params)
        row = cur.fetchone()
    if row is None:
        return None
    a, b, c = lease.width, lease.width + item.width, lease.width + item.width + queue.width
    found = lease.build(row[:a])
    found.item = item.build(row[a:b])
    found.item.queue = queue.build(row[b:c])
    found.item.queue.project = project.build(row[c:])
    return found


@cache
def _item_lock_sql(vendor: str) -> str:
    item = reader(QueueItem, "qi")
    return (
        f"SELECT {item.columns} FROM {_table(QueueItem)} qi WHERE qi.{_qn('id')} = %s"
        f"{_lock_clause(False)}"
    )


def item_lock(item_id: int) -> QueueItem:
    """The item row, locked (labeling.services.labels._lock_item without the joins: the
    caller has the queue and project already)."""
    with connection.cursor() as cur:
        execute(cur, _item_lock_sql(connection.vendor), [item_id])
        return reader(QueueItem, "qi").build(cur.fetchone())


@cache
def _seen_sql(vendor: str, with_client_id: bool) -> str:
    label_t = _table(Label)
    columns = (
        f"SELECT lb.{_qn('id')}, lb.{_col(Label, 'queue_item')}, lb.{_col(Label, 'kind')}, "
        f"lb.{_col(Label, 'client_id')}, EXISTS (SELECT 1 FROM {label_t} sb WHERE "
        f"sb.{_col(Label, 'supersedes')} = lb.{_qn('id')}) FROM {label_t} lb "
    )
    # Each half is one index probe: the person's annotations of the item (label_item_annotator)
    # and their label with this client_id (label_unique_client_id, whose condition the
    # literal `<> ''` lets a prepared plan use). As one statement with OR, the planner read all
    # of the person's labels through the annotator's index.
    sql = (
        f"{columns}WHERE lb.{_col(Label, 'queue_item')} = %s AND lb.{_col(Label, 'annotator')} "
        f"= %s AND lb.{_col(Label, 'kind')} = {_lit(Label.Kind.ANNOTATION)}"
    )
    if with_client_id:
        sql += (
            f" UNION ALL {columns}WHERE lb.{_col(Label, 'annotator')} = %s "
            f"AND lb.{_col(Label, 'client_id')} = %s AND lb.{_col(Label, 'client_id')} <> ''"
        )
    return sql


def labels_seen(*, item_id: int, annotator: User, client_id: str) -> list[tuple]:
    """(id, queue_item_id, kind, client_id, superseded) of the person's annotations of the item
    and of their label with this client_id (a label can be both, and then comes twice): is
    this a retry, did they label it already."""
    params = [item_id, annotator.pk] + ([annotator.pk, client_id] if client_id else [])
    with connection.cursor() as cur:
        execute(cur, _seen_sql(connection.vendor, bool(client_id)), params)
        return cur.fetchall()


@cache
def _complete_lease_sql(vendor: str) -> str:
    return (
        f"UPDATE {_table(Lease)} SET {_col(Lease, 'state')} = %s, "
        f"{_col(Lease, 'finished_at')} = %s WHERE {_qn('id')} = %s AND "
        f"{_col(Lease, 'annotator')} = %s AND {_col(Lease, 'state')} = %s AND "
        f"{_col(Lease, 'expires_at')} > %s"
    )


def lease_complete_if_current(*, lease_id: int, annotator: User, now: datetime) -> bool:
    """Mark the lease completed when it is still this person's active, unexpired lease (the
    UPDATE waits for, then re-checks, a row the expiry sweep holds). False: not current, nothing
    written; the caller takes the general path."""
    with connection.cursor() as cur:
        execute(
            cur,
            _complete_lease_sql(connection.vendor),
            [COMPLETED, _dt(now), lease_id, annotator.pk, ACTIVE, _dt(now)],
        )
        return cur.rowcount == 1


@cache
def _label_insert_sql(vendor: str) -> tuple[str, tuple[str, ...]]:
    fields = [f for f in Label._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(_qn(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {_table(Label)} ({columns}) VALUES ({placeholders})"
    if connection.features.can_return_columns_from_insert:
        sql += f" RETURNING {_qn('id')}"
    return sql, tuple(f.attname for f in fields)


def label_insert(label: Label) -> Label:
    """INSERT one new label (an unsaved instance, every value set or defaulted by the model),
    without Model.save's query building; then post_save is sent as save() would, so every
    receiver (triage's audit check) sees it."""
    from django.db.models.signals import post_save

    sql, attnames = _label_insert_sql(connection.vendor)
    fields = {f.attname: f for f in Label._meta.concrete_fields}
    params = []
    for attname in attnames:
        field = fields[attname]
        value = getattr(label, attname)
        if attname == "created_at" and value is None:
            value = field.pre_save(label, add=True)  # auto_now_add, as save() sets it
        params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cur:
        execute(cur, sql, params)
        if connection.features.can_return_columns_from_insert:
            label.pk = cur.fetchone()[0]
        else:
            label.pk = connection.ops.last_insert_id(cur, Label._meta.db_table, "id")
    label._state.adding = False
    label._state.db = connection.alias
    post_save.send(sender=Label, instance=label, created=True, update_fields=None, raw=False,
                   using=connection.alias)  # fmt: skip
    return label


@cache
def _item_count_sql(vendor: str) -> str:
    return (
        f"UPDATE {_table(QueueItem)} SET {_col(QueueItem, 'labels_done')} = %s, "
        f"{_col(QueueItem, 'status')} = %s, {_col(QueueItem, 'done_at')} = %s "
        f"WHERE {_qn('id')} = %s"
    )


def item_count_label(item: QueueItem, now: datetime) -> bool:
    """One more counted label on the locked item (labels_done, and DONE when full).
    Returns True when the item became done."""
    item.labels_done += 1
    done = item.labels_done >= item.labels_needed
    if done:
        item.status, item.done_at = DONE, now
    with connection.cursor() as cur:
        execute(
            cur,
            _item_count_sql(connection.vendor),
            [
                item.labels_done,
                item.status,
                _dt(item.done_at) if item.done_at else None,
                item.pk,
            ],
        )
    return done


# --- The queue a request acts on ------------------------------------------------------------------
def _visible(site_wide: bool) -> str:
    """labeling.permissions.projects_visible_to as a condition on `p`: members only, unless
    site-wide (the caller has checked that the person has a role at all)."""
    if site_wide:
        return ""
    members = Project.members.through._meta
    return (
        f"AND EXISTS (SELECT 1 FROM {_qn(members.db_table)} pm WHERE "
        f"pm.{_qn(members.get_field('project').column)} = p.{_qn('id')} AND "
        f"pm.{_qn(members.get_field('user').column)} = %s) "
    )


@cache
def _visible_queue_sql(vendor: str, site_wide: bool) -> str:
    queue, project = reader(Queue, "q"), reader(Project, "p")
    return (
        f"SELECT {queue.columns}, {project.columns} FROM {_table(Queue)} q "
        f"JOIN {_table(Project)} p ON p.{_qn('id')} = q.{_col(Queue, 'project')} "
        f"WHERE q.{_qn('id')} = %s {_visible(site_wide)}"
    )


def visible_queue(*, queue_id: int, user: User, site_wide: bool) -> Queue | None:
    """The queue with its project when it is in a project the person can see, else None."""
    queue, project = reader(Queue, "q"), reader(Project, "p")
    params = [queue_id] + ([] if site_wide else [user.pk])
    with connection.cursor() as cur:
        execute(cur, _visible_queue_sql(connection.vendor, site_wide), params)
        row = cur.fetchone()
    if row is None:
        return None
    found = queue.build(row[: queue.width])
    found.project = project.build(row[queue.width :])
    return found


# --- PostgreSQL: the submit's three writes in one statement ----------------------------------
@cache
def _submit_writes_sql(vendor: str) -> tuple[str, tuple[str, ...]]:
    fields = [f for f in Label._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(_qn(f.column) for f in fields)
    values = ", ".join(_pg_cast(Label, f.name) for f in fields)
    sql = (
        # The lease completed if it is still this person's active, unexpired lease...
        f"WITH c AS (UPDATE {_table(Lease)} SET {_col(Lease, 'state')} = %s, "
        f"{_col(Lease, 'finished_at')} = %s WHERE {_qn('id')} = %s AND "
        f"{_col(Lease, 'annotator')} = %s AND {_col(Lease, 'state')} = %s AND "
        f"{_col(Lease, 'expires_at')} > %s RETURNING {_qn('id')}), "
        # ...and only then the label and the item's count.
        f"l AS (INSERT INTO {_table(Label)} ({columns}) SELECT {values} FROM c "
        f"RETURNING {_qn('id')}), "
        f"u AS (UPDATE {_table(QueueItem)} SET {_col(QueueItem, 'labels_done')} = %s, "
        f"{_col(QueueItem, 'status')} = %s, {_col(QueueItem, 'done_at')} = %s "
        f"WHERE {_qn('id')} = %s AND EXISTS (SELECT 1 FROM c)) "
        f"SELECT {_qn('id')} FROM l"
    )
    return sql, tuple(f.attname for f in fields)


def submit_writes(*, label: Label, lease_id: int, item: QueueItem, now: datetime) -> bool:
    """PostgreSQL only (data-modifying WITH): `lease_complete_if_current`, `label_insert` and
    `item_count_label` in one statement, all or nothing. False: the lease was not current and
    nothing was written. The caller holds the item's lock; post_save is sent as by save()."""
    from django.db.models.signals import post_save

    sql, attnames = _submit_writes_sql(connection.vendor)
    fields = {f.attname: f for f in Label._meta.concrete_fields}
    label.created_at = label.created_at or now
    values = [fields[a].get_db_prep_save(getattr(label, a), connection) for a in attnames]
    done = item.labels_done + 1 >= item.labels_needed
    params = [
        COMPLETED,
        _dt(now),
        lease_id,
        label.annotator_id,
        ACTIVE,
        _dt(now),
        *values,
        item.labels_done + 1,
        DONE if done else item.status,
        _dt(now) if done else item.done_at,
        item.pk,
    ]
    with connection.cursor() as cur:
        execute(cur, sql, params)
        row = cur.fetchone()
    if row is None:
        return False
    label.pk = row[0]
    label._state.adding = False
    label._state.db = connection.alias
    item.labels_done += 1
    if done:
        item.status, item.done_at = DONE, now
    post_save.send(sender=Label, instance=label, created=True, update_fields=None, raw=False,
                   using=connection.alias)  # fmt: skip
    return True
