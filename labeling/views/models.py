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
from labeling.services.models import (
    model_version_promote,
    model_version_rollback,
    model_version_rollback_target,
)

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


def _confirm_page(request, project: Project, *, action: str, candidate, current, worse):
    """The confirmation page: the version that would become active beside the active one."""
    from labeling.views.model_compare import comparison_context

    versions = [v for v in (current, candidate) if v is not None]
    context = {
        "project": project,
        "action": action,
        "candidate": candidate,
        "current": current,
        "worse": worse,
        **comparison_context(project=project, versions=versions),
    }
    return render(request, "labeling/models_confirm.html", context)


def _confirmed(request) -> bool:
    return request.POST.get("confirm") == "yes"


@require_POST
@role_required(Role.ENGINEER)
def model_promote(request, slug: str, pk: int):
    """Promote after a confirmation: a POST without confirm=yes shows what would change."""
    from labeling.selectors.model_comparison import worse_figures

    project = _project_for(request.user, slug)
    version = get_object_or_404(ModelVersion, project=project, pk=pk)
    active = project.active_model_version
    # The confirmation names the active version it compared against: if another was promoted
    # in between, the comparison shown is stale and the page asks again.
    shown = request.POST.get("current", "")
    stale = shown != (str(active.pk) if active else "none")
    if (not _confirmed(request) or stale) and version.pk != project.active_model_version_id:
        worse = worse_figures(candidate=version, current=active)
        return _confirm_page(
            request, project, action="promote", candidate=version, current=active, worse=worse
        )
    # The one place that promotes (labeling.services.models; webhooks hook there too).
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
    """Roll back; when the version it would go back to is worse than the active one on any
    cascade figure, only after a confirmation naming them. The confirmation carries the target
    it was shown, so a promotion in between asks again instead of rolling back elsewhere."""
    from labeling.selectors.model_comparison import worse_figures

    project = _project_for(request.user, slug)
    active = project.active_model_version
    target = model_version_rollback_target(project=project)
    if target is not None:
        worse = worse_figures(candidate=target, current=active)
        shown = request.POST.get("target")
        if worse and not (_confirmed(request) and shown == str(target.pk)):
            return _confirm_page(
                request, project, action="rollback", candidate=target, current=active, worse=worse
            )
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
