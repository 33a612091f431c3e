"""Engineers' jobs pages: every project's jobs, a project's jobs with the forms that start them
(score the pool, fill the queue) and each selection strategy's yield, and one job's live
progress. The job page is a shell: static/labeling/jobs.js polls /api/v1/jobs/<id>/ and shows
stage, percent, log tail and a cancel button without reloading.

Views parse the form, call one service or selector and render; role rules come from
labeling.permissions (engineers only: leads and annotators get 403).
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from labeling.models import Job
from labeling.permissions import project_visible_or_404, projects_visible_to, role_required
from labeling.roles import Role
from labeling.selectors.jobs import jobs_list
from labeling.selectors.strategies import strategy_yield
from labeling.services.jobs import job_create

RECENT_JOBS = 50

# Form fields of each job kind the page can start, and how each value is parsed.
FORM_FIELDS: dict[str, dict[str, type]] = {
    Job.Kind.SCORE_POOL: {"shard_size": int, "batch_size": int},
    Job.Kind.SELECT: {
        "k_band": int,
        "k_loss": int,
        "audit_share": float,
        "high": float,
        "band_low": float,
        "band_high": float,
        "seed": int,
    },
    # Booleans come from a select ("", "true", "false"): an unchecked checkbox sends nothing.
    Job.Kind.TRAIN_CASCADE: {
        "preset": str,
        "input_size": int,
        "cbam": str,
        "mean_teacher": str,
        "epochs": int,
        "batch_a": int,
        "hard_b": int,
        "lr": float,
        "target_precision": float,
        "min_per_class": int,
        "auto_promote_precision": float,
        "auto_promote_recall": float,
        "seed": int,
    },
    Job.Kind.DETECT_NOISE: {
        "backbone": str,
        "input_size": int,
        "pretrain_epochs": int,
        "cycle_length": int,
        "n_cycles": int,
        "fraction": float,
        "batch_size": int,
        "seed": int,
    },
}


@require_GET
@role_required(Role.ENGINEER)
def jobs_page(request):
    projects = list(projects_visible_to(request.user).order_by("name"))
    recent = list(jobs_list().filter(project__in=projects)[:RECENT_JOBS])
    return render(request, "labeling/jobs.html", {"projects": projects, "jobs": recent})


@require_GET
@role_required(Role.ENGINEER)
def project_jobs(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    return render(
        request,
        "labeling/jobs_project.html",
        {
            "project": project,
            "jobs": list(jobs_list(project=project)[:RECENT_JOBS]),
            "yields": strategy_yield(project=project),
            "active_version": project.active_model_version,
        },
    )


def _parse_params(kind: str, form) -> dict:
    """Only the fields the user filled in; empty ones take the job kind's defaults."""
    params: dict = {}
    for name, parse in FORM_FIELDS.get(kind, {}).items():
        raw = (form.get(name) or "").strip()
        if not raw:
            continue
        try:
            params[name] = parse(raw)
        except ValueError as error:
            raise ValidationError({name: f"{raw!r} is not a valid {parse.__name__}."}) from error
    if "band_low" in params or "band_high" in params:
        params["band"] = [params.pop("band_low", 0.3), params.pop("band_high", 0.6)]
    return params


@require_POST
@role_required(Role.ENGINEER)
def project_job_start(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    kind = request.POST.get("kind", "")
    try:
        job = job_create(
            project=project,
            kind=kind,
            params=_parse_params(kind, request.POST),
            created_by=request.user,
        )
    except ValidationError as exc:
        messages.error(request, "Job not started: " + " ".join(exc.messages))
        return redirect(reverse("project-jobs", kwargs={"slug": project.slug}))
    messages.success(request, f"Started {job.get_kind_display().lower()} (job {job.pk}).")
    return redirect(reverse("job-detail", kwargs={"pk": job.pk}))


@require_GET
@role_required(Role.ENGINEER)
def job_detail(request, pk: int):
    job = get_object_or_404(
        jobs_list().filter(project__in=projects_visible_to(request.user)), pk=pk
    )
    return render(
        request,
        "labeling/jobs_detail.html",
        {
            "job": job,
            "api_url": reverse("api-job-detail", kwargs={"pk": job.pk}),
            "cancel_url": reverse("api-job-cancel", kwargs={"pk": job.pk}),
        },
    )
