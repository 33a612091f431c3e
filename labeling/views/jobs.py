"""Engineers' jobs pages: every project's jobs, a project's jobs with the forms that start them
(score the pool, fill the queue) and each selection strategy's yield, and one job's live
progress. The job page is a shell: static/labeling/jobs.js polls /api/v1/jobs/<id>/ and shows
stage, percent, log tail and a cancel button without reloading.

The start forms are built from each job kind's parameter declaration (labeling.views.job_forms);
views parse the form, call one service or selector and render; role rules come from
labeling.permissions (engineers only: leads and annotators get 403).
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from labeling.models import Job
from labeling.permissions import project_visible_or_404, projects_visible_to, role_required
from labeling.roles import Role
from labeling.selectors.jobs import jobs_list
from labeling.selectors.model_versions import model_versions_ready
from labeling.selectors.strategies import strategy_yield_recent
from labeling.selectors.validation import validation_progress
from labeling.services.jobs import JOB_KINDS, job_cancel, job_create, job_spec
from labeling.services.selection import selection_preview
from labeling.views.job_forms import job_form, params_from_post
from labeling.views.job_results import job_rows

RECENT_JOBS = 50
# The job kinds the project's jobs page starts, in the order of its cards (cold start has its
# own page, with the seed picker).
PAGE_KINDS = (Job.Kind.SCORE_POOL, Job.Kind.SELECT, Job.Kind.TRAIN_CASCADE, Job.Kind.DETECT_NOISE)


@require_GET
@role_required(Role.ENGINEER)
def jobs_page(request):
    projects = list(projects_visible_to(request.user).order_by("name"))
    recent = job_rows(list(jobs_list().filter(project__in=projects)[:RECENT_JOBS]))
    return render(request, "labeling/jobs.html", {"projects": projects, "jobs": recent})


@require_GET
@role_required(Role.ENGINEER)
def project_jobs(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    versions = list(model_versions_ready(project=project))
    # What a selection round with the default parameters would take, before anyone starts it.
    try:
        preview, preview_error = selection_preview(project=project), None
    except ValidationError as exc:
        preview, preview_error = None, " ".join(exc.messages)
    return render(
        request,
        "labeling/jobs_project.html",
        {
            "project": project,
            "validation": validation_progress(project=project, recent=True),
            "selection_preview": preview,
            "selection_preview_error": preview_error,
            "jobs": job_rows(list(jobs_list(project=project)[:RECENT_JOBS])),
            "yields": strategy_yield_recent(project=project),
            "active_version": project.active_model_version,
            "forms": {kind: job_form(job_spec(kind), versions=versions) for kind in PAGE_KINDS},
        },
    )


@require_POST
@role_required(Role.ENGINEER)
def project_job_start(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    kind = request.POST.get("kind", "")
    try:
        params = params_from_post(job_spec(kind), request.POST) if kind in JOB_KINDS else {}
        job = job_create(project=project, kind=kind, params=params, created_by=request.user)
    except ValidationError as exc:
        messages.error(
            request,
            gettext("Job not started: %(reasons)s") % {"reasons": " ".join(exc.messages)},
        )
        return redirect(reverse("project-jobs", kwargs={"slug": project.slug}))
    messages.success(
        request,
        gettext("Started %(kind)s (job %(id)s).")
        % {"kind": job.get_kind_display().lower(), "id": job.pk},
    )
    return redirect(reverse("job-detail", kwargs={"pk": job.pk}))


@require_GET
@role_required(Role.ENGINEER)
def job_detail(request, pk: int):
    job = get_object_or_404(
        jobs_list().filter(project__in=projects_visible_to(request.user)), pk=pk
    )
    job_rows([job])
    spec = job_spec(job.kind) if job.kind in JOB_KINDS else None
    labels = {p.name: p.label for p in spec.params} if spec else {}
    params = [
        (labels.get(name, name.replace("_", " ")), value)
        for name, value in (job.params or {}).items()
    ]
    return render(
        request,
        "labeling/jobs_detail.html",
        {
            "job": job,
            "params": params,
            "result_json": json.dumps(job.result, indent=2, ensure_ascii=False, default=str),
            "api_url": reverse("api-job-detail", kwargs={"pk": job.pk}),
        },
    )


@require_POST
@role_required(Role.ENGINEER)
def job_cancel_page(request, pk: int):
    """The jobs pages' cancel button: a form POST that redirects back (to the page it came from
    when that is on this site, else the job's page) with a message saying what happened."""
    job = get_object_or_404(
        jobs_list().filter(project__in=projects_visible_to(request.user)), pk=pk
    )
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("job-detail", kwargs={"pk": job.pk})
    try:
        job = job_cancel(job=job, by=request.user)
    except ValidationError as exc:
        messages.error(
            request,
            gettext("Job #%(id)s not cancelled: %(reasons)s")
            % {"id": job.pk, "reasons": " ".join(exc.messages)},
        )
        return redirect(back)
    if job.is_finished:
        text = gettext("Job #%(id)s cancelled.")
    else:
        text = gettext("Job #%(id)s will stop at its next progress report.")
    messages.success(request, text % {"id": job.pk})
    return redirect(back)
