"""The engineers' import page: several images and/or zip archives in one form, then a per-file
report. A small batch is imported in the request; uploads over FILE_UPLOAD_MAX_MEMORY_SIZE are
spooled to temporary files by Django, and each image is read with a size cap, so memory stays
bounded. A big batch (`import_runs_as_job`) is staged to disk and imported by a job: the
request answers at once with a redirect to the job's page, which shows progress and the
report."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from labeling.permissions import (
    can_manage,
    project_visible_or_404,
    projects_visible_to,
    role_required,
)
from labeling.roles import Role
from labeling.services.imports import (
    ALLOWED_FORMATS,
    import_job_start,
    import_runs_as_job,
    uploads_import,
)


@role_required(Role.ENGINEER)
def import_choose(request):
    """The navigation's "Import" entry: pick the project to import into."""
    projects = projects_visible_to(request.user).order_by("name")
    return render(request, "labeling/import.html", {"projects": projects})


@role_required(Role.ENGINEER)
def project_import(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    if not can_manage(request.user, project):
        raise PermissionDenied
    context = {
        "project": project,
        "formats": sorted(set(ALLOWED_FORMATS.values())),
        "image_count": project.images.count(),
        # Above either, the batch is imported by a job (import_runs_as_job).
        "job_megabytes": settings.IMAGECLEAN_IMPORT_JOB_BYTES // (1024 * 1024),
        "job_files": settings.IMAGECLEAN_IMPORT_JOB_FILES,
    }
    if request.method == "POST":
        uploads = request.FILES.getlist("files")
        if not uploads:
            context["error"] = _("Choose at least one image or zip archive.")
            return render(request, "labeling/import.html", context, status=400)
        add_to_queue = request.POST.get("add_to_queue") == "on"
        if import_runs_as_job(uploads):
            job = import_job_start(
                project=project, uploads=uploads, created_by=request.user, add_to_queue=add_to_queue
            )
            messages.info(
                request,
                _("%(count)s files are being imported in the background; this page follows it.")
                % {"count": len(uploads)},
            )
            return redirect("job-detail", pk=job.pk)
        report = uploads_import(
            project=project, uploads=uploads, created_by=request.user, add_to_queue=add_to_queue
        )
        context.update(report=report, image_count=project.images.count())
        return render(request, "labeling/import_report.html", context)
    return render(request, "labeling/import.html", context)
