"""Model versions pages: versions side by side (precision, recall and AP per stage and for the
cascade, data counts, training time, PR curve), with promote / rollback buttons for engineers.
Leads of the project see the same page read-only; annotators never see model figures.

Views parse, call one service or selector and render; role rules come from
labeling.permissions.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from labeling.models import ModelVersion, Project
from labeling.permissions import (
    can_manage,
    can_see_scores,
    project_visible_or_404,
    projects_visible_to,
    role_required,
)
from labeling.roles import Role
from labeling.services.audit import pool_estimates_get
from labeling.services.models import model_version_promote, model_version_rollback

STAGES = ("stage1", "stage2", "cascade")


def _project_for(user, slug: str) -> Project:
    project = project_visible_or_404(user, slug)
    if not can_see_scores(user, project):
        raise PermissionDenied
    return project


def _row(version: ModelVersion, active_id: int | None) -> dict:
    metrics = version.metrics or {}
    return {
        "version": version,
        "is_active": version.pk == active_id,
        "stages": [(name, metrics.get(name) or {}) for name in STAGES],
        "thresholds": metrics.get("thresholds") or {},
        "target_precision": metrics.get("target_precision"),
        # Versions trained before cross-fitted intervals have no target verdict to show.
        "target": metrics.get("target"),
        "data": version.data_snapshot or {},
        "config": version.config or {},
    }


@require_GET
@role_required(Role.LEAD)
def models_index(request):
    projects = [p for p in projects_visible_to(request.user) if can_see_scores(request.user, p)]
    return render(request, "labeling/models_index.html", {"projects": projects})


@require_GET
@role_required(Role.LEAD)
def project_models(request, slug: str):
    project = _project_for(request.user, slug)
    versions = list(ModelVersion.objects.filter(project=project).select_related("created_by")[:20])
    return render(
        request,
        "labeling/models.html",
        {
            "project": project,
            "rows": [
                {
                    **_row(v, project.active_model_version_id),
                    # The pool-level estimates of the version's audit, if it has one (issue 10).
                    "pool": pool_estimates_get(project=project, model_version_id=v.pk),
                }
                for v in versions
            ],
            "can_manage": can_manage(request.user, project),
            "active": project.active_model_version,
        },
    )


@require_GET
@role_required(Role.LEAD)
def model_pr_curve(request, slug: str, pk: int):
    project = _project_for(request.user, slug)
    version = get_object_or_404(ModelVersion, project=project, pk=pk)
    if not version.pr_curve:
        raise Http404(_("This version has no PR curve."))
    return FileResponse(version.pr_curve.open("rb"), content_type="image/png")


@require_POST
@role_required(Role.ENGINEER)
def model_promote(request, slug: str, pk: int):
    project = _project_for(request.user, slug)
    version = get_object_or_404(ModelVersion, project=project, pk=pk)
    try:
        model_version_promote(version=version, by=request.user)
    except ValidationError as exc:
        messages.error(request, _("Not promoted: ") + " ".join(exc.messages))
    else:
        messages.success(
            request, _("%(version)s is now the active model.") % {"version": version.name}
        )
    return redirect(reverse("project-models", kwargs={"slug": project.slug}))


@require_POST
@role_required(Role.ENGINEER)
def model_rollback(request, slug: str):
    project = _project_for(request.user, slug)
    try:
        active = model_version_rollback(project=project, by=request.user)
    except ValidationError as exc:
        messages.error(request, _("Not rolled back: ") + " ".join(exc.messages))
    else:
        messages.success(
            request,
            _("Rolled back: %(version)s is the active model again.") % {"version": active.name},
        )
    return redirect(reverse("project-models", kwargs={"slug": project.slug}))
