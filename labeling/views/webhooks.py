"""The webhooks page (issue 9, item 15): the project's webhook URL (its declaration in
labeling.project_settings.PROJECT_WEBHOOK, rendered by the jobs pages' field builder), the
signing secret, a test event, and the delivery log (the last deliveries with their status and
attempts). Engineers of the project only: leads and annotators get 403, another project 404.
Views parse, call one service and render; docs/webhooks.md says what a receiver does.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from labeling.models import Project
from labeling.permissions import can_manage, project_visible_or_404, role_required
from labeling.project_settings import PROJECT_WEBHOOK
from labeling.roles import Role
from labeling.services import webhooks
from labeling.services.projects import project_update
from labeling.views.job_forms import job_form


def _engineer_project(user, slug: str) -> Project:
    project = project_visible_or_404(user, slug)
    if not can_manage(user, project):
        raise PermissionDenied
    return project


def _back(project: Project):
    return redirect(reverse("project-webhooks", kwargs={"slug": project.slug}))


@require_GET
@role_required(Role.ENGINEER)
def project_webhooks(request, slug: str):
    project = _engineer_project(request.user, slug)
    form = job_form(PROJECT_WEBHOOK)
    form.initial = {name: getattr(project, name) for name in PROJECT_WEBHOOK.names}
    return render(
        request,
        "labeling/webhooks.html",
        {
            "project": project,
            "form": form,
            "secret": webhooks.webhook_secret(project=project) if project.webhook_url else "",
            "events": list(webhooks.EVENT_DESCRIPTIONS.items()),
            "deliveries": webhooks.webhook_deliveries(project=project),
            "log_size": webhooks.LOG_SIZE,
            "signature_header": webhooks.SIGNATURE_HEADER,
        },
    )


@require_POST
@role_required(Role.ENGINEER)
def project_webhooks_save(request, slug: str):
    """Save the URL; an empty field turns webhooks off (unlike the jobs' forms, where empty
    means "the default": here the default is "none")."""
    project = _engineer_project(request.user, slug)
    try:
        values = {
            param.name: param.parse(request.POST.get(param.name, ""))
            for param in PROJECT_WEBHOOK.params
        }
        project_update(project=project, **values)
    except ValidationError as error:
        messages.error(request, _("Not saved: %(why)s") % {"why": " ".join(error.messages)})
    else:
        if values.get("webhook_url"):
            webhooks.webhook_secret(project=project)
        messages.success(request, _("Webhook settings saved."))
    return _back(project)


@require_POST
@role_required(Role.ENGINEER)
def project_webhooks_ping(request, slug: str):
    project = _engineer_project(request.user, slug)
    if webhooks.webhook_ping(project=project) is None:
        messages.error(request, _("Set a webhook URL first."))
    else:
        messages.success(request, _("Test event queued; its delivery appears below."))
    return _back(project)


@require_POST
@role_required(Role.ENGINEER)
def project_webhooks_rotate(request, slug: str):
    project = _engineer_project(request.user, slug)
    webhooks.webhook_secret_rotate(project=project)
    messages.success(
        request, _("New signing secret made: give it to your receiver; the old one stops now.")
    )
    return _back(project)
