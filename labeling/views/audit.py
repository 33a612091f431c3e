"""The engineers' audit log page: the events they may see, newest first, filtered by project,
action and person, a page at a time, with a link to the CSV export (the API's, which records
the export). Reading only: events are written by the services (labeling.services.audit_log)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from labeling.models import AuditEvent
from labeling.permissions import project_visible_or_404, projects_visible_to, role_required
from labeling.roles import Role
from labeling.selectors.audit_log import audit_events_list

PER_PAGE = 50


@require_GET
@role_required(Role.ENGINEER)
def audit_page(request):
    slug = request.GET.get("project", "").strip()
    action = request.GET.get("action", "").strip()
    actor = request.GET.get("actor", "").strip()[:150]
    project = project_visible_or_404(request.user, slug) if slug else None
    error = None
    if action and action not in AuditEvent.Action.values:
        error = _("Unknown action %(action)r.") % {"action": action}
        action = ""
    events = audit_events_list(
        user=request.user,
        project_id=project.pk if project else None,
        action=action or None,
        actor=actor or None,
    )
    page = Paginator(events, PER_PAGE).get_page(request.GET.get("page"))
    query = {
        key: value
        for key, value in (("project", slug), ("action", action), ("actor", actor))
        if value
    }
    return render(
        request,
        "labeling/audit.html",
        {
            "page": page,
            "projects": projects_visible_to(request.user).order_by("name"),
            "actions": AuditEvent.Action.choices,
            "chosen": {"project": slug, "action": action, "actor": actor},
            "query": query,
            "error": error,
        },
        status=400 if error else 200,
    )
