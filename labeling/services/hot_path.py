"""The labeling hot path: one label submitted in as few statements as its rules allow, and
submit-and-claim (the page's pattern: answer one, take one more) in one request.

The rules are labeling.services.labels' (`lease_submit`): this module only takes the common
case, a current lease on an open ordinary item that the person has not labeled, through
statements written out as SQL (labeling.services.hot_sql), and hands every other case (a retry
with a known client_id, a late or skipped lease, gold, a re-review queue, an item taken out of
the queue) to `labels._submit_locked` under the same item lock, which decides exactly as
before. Lock order is the shared one: the item row, then the lease row, then nothing else
(no image row: only label writes of re-review take it, and those go the general way).

Statements for the usual label (PostgreSQL): BEGIN, item lock, the person's labels on the item
or with this client_id, lease completed (an UPDATE that re-checks it is still active and
unexpired), INSERT label, UPDATE item, COMMIT; before: the same plus a lease lock and the
ORM's query building for each (docs/platform-benchmarks.md).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from labeling.models import Label, Lease, Queue, QueueItem, Strategy
from labeling.services import hot_sql, webhooks
from labeling.services.label_limits import MAX_BATCH
from labeling.services.labels import _annotation, _Entry, _entry, _submit_locked


def _submit_one_locked(*, entry: _Entry, annotator: User, item: QueueItem, now: datetime) -> Label:
    """Submit one entry; the caller holds the item's lock and `item.queue` (with its project)
    is loaded."""
    queue = item.queue
    if (
        queue.is_review
        or item.strategy == Strategy.GOLD
        or item.status != QueueItem.Status.OPEN
        or hot_sql.labels_seen(item_id=item.pk, annotator=annotator, client_id=entry.client_id)
    ):
        # A retry, a second answer, gold, review, an item out of the queue: the general path
        # (nothing has been written yet).
        return _submit_locked(entry=entry, annotator=annotator, item=item, now=now)
    label = _annotation(entry=entry, annotator=annotator, item=item, queue=queue)
    if connection.vendor == "postgresql":
        # Lease, label and item count in one statement.
        written = hot_sql.submit_writes(label=label, lease_id=entry.lease.pk, item=item, now=now)
    else:
        written = hot_sql.lease_complete_if_current(
            lease_id=entry.lease.pk, annotator=annotator, now=now
        )
        if written:
            hot_sql.label_insert(label)
            hot_sql.item_count_label(item, now)
    if not written:
        # The lease is no longer current (late, skipped, expired by the sweep): nothing was
        # written; the general path decides what the label counts for.
        return _submit_locked(entry=entry, annotator=annotator, item=item, now=now)
    if item.status == QueueItem.Status.DONE:
        # As labels._count_completion does: the queue's "empty" webhook, checked after commit
        # (no query when the project has no webhook).
        webhooks.emit_queue_empty_on_commit(queue)
    entry.lease.state, entry.lease.finished_at = Lease.State.COMPLETED, now
    return label


def _lock(entry: _Entry) -> QueueItem:
    item = hot_sql.item_lock(entry.lease.item_id)
    item.queue = entry.lease.item.queue  # loaded with the lease, project included
    return item


def lease_submit_quick(
    *,
    lease: Lease,
    annotator: User,
    value: str,
    subcategory: str = "",
    duration_ms: int | None = None,
    client_id: str = "",
    in_transaction: bool = False,
) -> Label:
    """`labels.lease_submit`, same arguments and outcomes, for a lease loaded with its item,
    queue and project (labeling.api.queue_views does, in one statement).

    `in_transaction`: the caller has opened the transaction (submit-and-claim) and fails as a
    whole when this raises, so no savepoint (two round trips) is taken here."""
    entry = _entry(
        lease=lease,
        annotator=annotator,
        value=value,
        subcategory=subcategory,
        duration_ms=duration_ms,
        client_id=client_id,
    )
    now = timezone.now()
    if in_transaction:
        return _submit_one_locked(entry=entry, annotator=annotator, item=_lock(entry), now=now)
    with transaction.atomic():
        return _submit_one_locked(entry=entry, annotator=annotator, item=_lock(entry), now=now)


def labels_submit_in_order(*, annotator: User, entries: list[dict]) -> list[Label]:
    """Labels given one image at a time and sent together (the labeling page's outbox): all
    stored or none, in one transaction, items locked in ascending id (no deadlock with a grid
    page or another batch). Unlike a grid page (labels_submit_batch) they carry no page size:
    each was answered on its own. Errors name the entry: {"entries": ["entry 1 (lease 17): ..."]}.
    Each entry's `lease` is loaded with item, queue and project."""
    if not isinstance(entries, list) or not entries:
        raise ValidationError({"entries": _("Send at least one entry.")})
    if len(entries) > MAX_BATCH:
        raise ValidationError(
            {"entries": _("At most %(count)d entries per batch.") % {"count": MAX_BATCH}}
        )
    parsed: list[_Entry] = []
    for index, raw in enumerate(entries):
        try:
            parsed.append(
                _entry(
                    lease=raw["lease"],
                    annotator=annotator,
                    value=raw.get("value"),
                    subcategory=raw.get("subcategory") or "",
                    duration_ms=raw.get("duration_ms"),
                    client_id=raw.get("client_id") or "",
                )
            )
        except ValidationError as exc:
            raise _naming(index, raw["lease"].pk, exc) from exc
    if len({entry.lease.pk for entry in parsed}) != len(parsed):
        raise ValidationError({"entries": _("Each lease may appear once in a batch.")})
    now = timezone.now()
    labels: dict[int, Label] = {}
    # Called inside submit-and-claim's transaction, which fails as a whole when this raises.
    with transaction.atomic(savepoint=False):
        for index in sorted(range(len(parsed)), key=lambda i: parsed[i].lease.item_id):
            entry = replace(parsed[index], page_size=None)
            try:
                labels[index] = _submit_one_locked(
                    entry=entry, annotator=annotator, item=_lock(entry), now=now
                )
            except ValidationError as exc:
                # Raising inside the atomic block rolls back every entry already written.
                raise _naming(index, entry.lease.pk, exc) from exc
    return [labels[i] for i in range(len(parsed))]


def _naming(index: int, lease_id: int, exc: ValidationError) -> ValidationError:
    where = _("entry %(index)s (lease %(lease)s)") % {"index": index, "lease": lease_id}
    return ValidationError(
        {"entries": [_("%(where)s: %(why)s") % {"where": where, "why": " ".join(exc.messages)}]}
    )


def lease_in_queue(lease: Lease, queue: Queue) -> bool:
    """The lease's item is in `queue`, or is a gold item served in it."""
    return lease.item.queue_id == queue.pk or lease.served_in_id == queue.pk
