"""The pool estimates page: how many positives the pool holds, how many the model catches, with
intervals from the latest audit, and how many labels it would take to know better.

Leads and engineers of the project see it (labeling.permissions.can_see_estimates); engineers
also get the form that adds a batch to the audit (an ordinary job, started through the jobs
page's endpoint). Views parse, call one service and render.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.http import require_GET

from labeling.permissions import (
    can_manage,
    can_see_estimates,
    project_visible_or_404,
    role_required,
)
from labeling.roles import Role
from labeling.selectors.model_versions import model_versions_ready
from labeling.services.audit import AUDIT, DEFAULT_WIDTH, pool_estimates_get
from labeling.views.job_forms import job_form

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
        },
    )
