"""The pool estimates page: how many positives the pool holds, how many the model catches, with
intervals from the latest audit, and how many labels it would take to know better.

Leads and engineers of the project see it (labeling.permissions.can_see_estimates); engineers
also get the form that adds a batch to the audit (an ordinary job, started through the jobs
page's endpoint) and triage's controls: start (a form built from labeling.services.triage.TRIAGE),
stop and revert. Views parse, call one service and render.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from labeling.permissions import (
    can_manage,
    can_see_estimates,
    project_visible_or_404,
    role_required,
)
from labeling.roles import Role
from labeling.selectors.model_versions import model_versions_ready
from labeling.services.audit import AUDIT, DEFAULT_WIDTH, pool_estimates_get
from labeling.services.triage import (
    TRIAGE,
    triage_figures,
    triage_revert,
    triage_start,
    triage_stop,
)
from labeling.views.job_forms import job_form, params_from_post

DECISION_ORDER = ("cascade", "stage1", "stage2")


def _width(raw: str | None) -> float:
    try:
        value = float(raw) if raw else DEFAULT_WIDTH
    except ValueError:
        return DEFAULT_WIDTH
    return min(max(value, 0.001), 1.0)


@require_GET
@role_required(Role.LEAD)
def project_estimates(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    if not can_see_estimates(request.user, project):
        raise PermissionDenied
    width = _width(request.GET.get("width"))
    figures = pool_estimates_get(project=project, width=width)
    decisions = []
    if figures and figures.get("estimates"):
        found = figures["estimates"]["decisions"]
        decisions = [(name, found[name]) for name in DECISION_ORDER if name in found]
        strata = figures["estimates"]["strata"]
        figures["strata_rows"] = list(
            zip(
                strata["sizes"],
                strata["mean_scores"],
                figures["estimates"]["labels_per_stratum"],
                figures["estimates"]["positives_per_stratum"],
                strict=True,
            )
        )
    return render(
        request,
        "labeling/estimates.html",
        {
            "project": project,
            "audit": figures,
            "decisions": decisions,
            "width": width,
            "can_manage": can_manage(request.user, project),
            "audit_form": job_form(AUDIT, versions=model_versions_ready(project=project)),
            "triage": triage_figures(project=project),
            "triage_form": job_form(TRIAGE, versions=model_versions_ready(project=project)),
        },
    )


def _back(project):
    return redirect(reverse("project-estimates", kwargs={"slug": project.slug}) + "#triage")


def _refused(request, project, error: ValidationError):
    messages.error(request, gettext("Triage: %(reasons)s") % {"reasons": " ".join(error.messages)})
    return _back(project)


@require_POST
@role_required(Role.ENGINEER)
def triage_start_view(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    try:
        run = triage_start(
            project=project, params=params_from_post(TRIAGE, request.POST), by=request.user
        )
    except ValidationError as error:
        return _refused(request, project, error)
    messages.success(
        request,
        gettext("Triage started with model %(name)s (run %(id)s).")
        % {"name": run.model_version.name, "id": run.pk},
    )
    return _back(project)


@require_POST
@role_required(Role.ENGINEER)
def triage_stop_view(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    try:
        run = triage_stop(project=project, by=request.user)
    except ValidationError as error:
        return _refused(request, project, error)
    messages.success(request, gettext("Triage stopped (run %(id)s).") % {"id": run.pk})
    return _back(project)


@require_POST
@role_required(Role.ENGINEER)
def triage_revert_view(request, slug: str, pk: int):
    project = project_visible_or_404(request.user, slug)
    try:
        count = triage_revert(project=project, run_id=pk, by=request.user)
    except ValidationError as error:
        return _refused(request, project, error)
    messages.success(
        request,
        gettext("Run %(id)s reverted: %(count)s decisions undone.") % {"id": pk, "count": count},
    )
    return _back(project)
