"""Reading the audit log: which events a person may see, filtered."""

from __future__ import annotations

from django.db.models import QuerySet

from labeling.models import AuditEvent
from labeling.permissions import can_see_audit_log, is_site_wide, projects_visible_to


def audit_events_visible_to(user) -> QuerySet[AuditEvent]:
    """Site-wide engineers: every event. Engineers: the events of the projects they are members
    of (not people's role changes, which concern no project). Everyone else: none."""
    if not can_see_audit_log(user):
        return AuditEvent.objects.none()
    if is_site_wide(user):
        return AuditEvent.objects.all()
    return AuditEvent.objects.filter(project_id__in=projects_visible_to(user).values("pk"))


def audit_events_list(
    *,
    user,
    project_id: int | None = None,
    action: str | None = None,
    actor: str | None = None,
) -> QuerySet[AuditEvent]:
    events = audit_events_visible_to(user)
    if project_id is not None:
        events = events.filter(project_id=project_id)
    if action:
        events = events.filter(action=action)
    if actor:
        events = events.filter(actor_name=actor)
    return events.order_by("-at", "-id")
