"""The audit log (issue 8, item 10): who did what that matters, written in one place.

Each service that does such a thing calls `audit_record` itself, inside its own transaction, so
the event exists exactly when the deed does, whichever door (page, API, admin action, command)
led there; views never write events. What is recorded:

- people: a role changed, a person added, a project membership changed (labeling.services.users);
- a project created (labeling.services.projects);
- data in and out: images imported, labels imported, labels exported (imports, exports);
- jobs started and cancelled (labeling.services.jobs), by a person or by the system;
- model versions promoted and rolled back (labeling.services.models), by a person or by the
  system (automatic promotion after training);
- a lead's correction of a label (labeling.services.labels, re-review);
- the audit log itself exported (here).

Events are append-only (labeling.models.AuditEvent). Engineers read the events of the projects
they may manage, site-wide engineers every event (labeling.selectors.audit_log).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from labeling.models import AuditEvent, Project
from labeling.permissions import can_see_audit_log
from labeling.services.exports import csv_cell

Action = AuditEvent.Action

EXPORT_COLUMNS = [
    "id",
    "at",
    "actor",
    "actor_id",
    "action",
    "project",
    "project_id",
    "target",
    "details",
]
# Rows read per query while an export streams.
EXPORT_CHUNK = 2000


def describe(obj) -> str:
    """A short, stable name for what an event is about: "user 12 (ann)", "job 40 (select)"."""
    if obj is None:
        return ""
    if isinstance(obj, User):
        return f"user {obj.pk} ({obj.get_username()})"
    kind = type(obj).__name__.lower()
    name = getattr(obj, "name", None) or getattr(obj, "kind", None) or ""
    return f"{kind} {obj.pk} ({name})" if name else f"{kind} {obj.pk}"


def audit_record(
    *,
    actor: User | None,
    action: str,
    project: Project | None = None,
    target=None,
    details: dict | None = None,
) -> AuditEvent:
    """Append one event. `actor` None means the system; `target` is a model instance (described
    with `describe`) or a string; `details` a small JSON-able dict."""
    if action not in Action.values:
        raise ValueError(f"unknown audit action {action!r}")
    person = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor_id=person.pk if person is not None else None,
        actor_name=person.get_username() if person is not None else "",
        action=action,
        project_id=project.pk if project is not None else None,
        project_slug=project.slug if project is not None else "",
        target=target if isinstance(target, str) else describe(target),
        details=details or {},
    )


def _row(event: AuditEvent) -> dict:
    return {
        "id": event.pk,
        "at": event.at.isoformat(),
        "actor": event.actor_name or "system",
        "actor_id": event.actor_id if event.actor_id is not None else "",
        "action": event.action,
        "project": event.project_slug,
        "project_id": event.project_id if event.project_id is not None else "",
        "target": event.target,
        "details": json.dumps(event.details, sort_keys=True, ensure_ascii=False),
    }


def audit_export_csv(*, events: QuerySet[AuditEvent], by: User, filters: dict) -> Iterator[str]:
    """The events as CSV lines, oldest first, every text cell neutralised against formula
    injection (labeling.services.exports.csv_cell: a name such as `=HYPERLINK(...)` stays text
    in a spreadsheet). The export is itself recorded, with the filters it used. `events` must
    already be scoped to what `by` may see (labeling.selectors.audit_log)."""
    if not can_see_audit_log(by):
        raise PermissionDenied(_("The audit log is for engineers."))
    audit_record(actor=by, action=Action.AUDIT_EXPORTED, details={"filters": filters})
    ids = list(events.order_by("at", "id").values_list("id", flat=True))

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for start in range(0, len(ids), EXPORT_CHUNK):
            chunk = AuditEvent.objects.filter(pk__in=ids[start : start + EXPORT_CHUNK])
            for event in chunk.order_by("at", "id"):
                writer.writerow({key: csv_cell(value) for key, value in _row(event).items()})
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        if not ids:
            yield buffer.getvalue()

    return lines()
