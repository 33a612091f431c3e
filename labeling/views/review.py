"""Leads' re-review pages and annotator quality; the engineers' cold-start page.

- `review` lists the lead's projects with their open re-review items.
- `project-review` shows ONE flagged item at a time: the image, its label history (who, when,
  kind), the active version's scores for it (stage 1, stage 2, decision) and every version's
  below, the O2U rank and score that flagged it, and a Grad-CAM overlay from the active version
  (the one the noise job stored, or rendered on request when there is none; a flat map is
  said to have "no focus"). Keys (static/labeling/review.js): C confirms, F
  flips (two-class schemas), a class hotkey chooses that class. Both answers go through
  `review_resolve` (CONFIRMATION or a superseding CORRECTION).
- `project-review-gradcam` serves the Grad-CAM PNG (leads only, private cache): the stored one
  when the noise job made it with the active version, else rendered now. Headers say which
  (`X-Gradcam-Source: stored | rendered`) and whether the map had a focus
  (`X-Gradcam-Focus: region | none`).
- `project-quality`: labels given, flagged, overturned per annotator (leads and engineers).
- `project-cold-start` (engineers): pick seed images from thumbnails or search by source name,
  or upload a few, then start the `cold_start` job.

Annotators get 403 on all of these; another project's pages are 404 (they do not reveal that
it exists). Views parse, call one service or selector, and render.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labeling.keys import key_hints, page_keys
from labeling.models import Image, Project, Queue, QueueItem, schema_entry_name
from labeling.permissions import (
    can_review,
    project_visible_or_404,
    projects_visible_to,
    role_required,
)
from labeling.roles import Role
from labeling.selectors.labels import annotator_quality, image_current_label, label_history
from labeling.selectors.review import (
    image_scores,
    review_counts,
    review_gradcam_stored,
    review_item_for_lead,
    seed_candidates,
)
from labeling.services.labels import review_resolve
from labeling.services.noise import GradcamUnavailable, review_gradcam
from labeling.services.preferences import preference_read
from labeling.services.recall import COLD_START, cold_start_start
from labeling.views.job_forms import job_form, params_from_post
from labeling.views.quality import quality_context


def _project_for(user, slug: str) -> Project:
    project = project_visible_or_404(user, slug)
    if not can_review(user, project):
        raise PermissionDenied
    return project


@require_GET
@role_required(Role.LEAD)
def review_index(request):
    projects = [
        {"project": project, "counts": review_counts(project=project)}
        for project in projects_visible_to(request.user).order_by("name")
    ]
    return render(request, "labeling/review_index.html", {"projects": projects})


def _flip_value(project: Project, current: str | None) -> str | None:
    """The other class of a two-class schema; None when F has no single meaning."""
    keys = project.class_keys
    if len(keys) != 2 or current not in keys:
        return None
    return keys[1 - keys.index(current)]


@require_GET
@role_required(Role.LEAD)
def project_review(request, slug: str):
    project = _project_for(request.user, slug)
    raw_item = request.GET.get("item")
    try:
        item_id = int(raw_item) if raw_item else None
    except ValueError:
        return HttpResponseBadRequest("item must be a number")
    item = review_item_for_lead(project=project, lead=request.user, item_id=item_id)
    if item_id is not None and item is None:
        raise Http404(_("No such review item in this project."))
    context = {
        "project": project,
        "item": item,
        "counts": review_counts(project=project),
        # The page's keys (labeling/keys.py) and the lead's own image protection.
        "review_keys": page_keys("review"),
        "key_hints": key_hints("review"),
        "protection": preference_read(user=request.user, project=project)["protection"],
    }
    if item is not None:
        current = image_current_label(image=item.image)
        current_value = current.value if current else None
        active = project.active_model_version
        scores = list(image_scores(image=item.image))
        context.update(
            image=item.image,
            history=list(label_history(image=item.image)),
            scores=scores,
            active_version=active,
            active_score=next(
                (s for s in scores if active and s.model_version_id == active.pk), None
            ),
            gradcam=review_gradcam_stored(item=item, model_version_id=active and active.pk),
            current=current,
            flip_value=_flip_value(project, current_value),
            classes=[
                {**c, "name": schema_entry_name(c, get_language())}
                for c in project.label_schema["classes"]
            ],
            details=item.details or {},
        )
    return render(request, "labeling/review.html", context)


@require_POST
@role_required(Role.LEAD)
def project_review_resolve(request, slug: str, pk: int):
    project = _project_for(request.user, slug)
    item = get_object_or_404(
        QueueItem.objects.select_related("queue__project", "image"),
        pk=pk,
        queue__project=project,
        queue__kind=Queue.Kind.REVIEW,
    )
    # The confirm button sends action=confirm; each class button sends value=<class key>.
    confirm = request.POST.get("action") == "confirm"
    value = request.POST.get("value", "")
    if not confirm and not value:
        return HttpResponseBadRequest("Choose confirm or a class.")
    try:
        label = review_resolve(
            item=item,
            lead=request.user,
            confirm=confirm,
            value=value or None,
            subcategory=request.POST.get("subcategory", ""),
        )
    except ValidationError as error:
        messages.error(request, _("Not saved: ") + " ".join(error.messages))
        return redirect(reverse("project-review", kwargs={"slug": project.slug}))
    if label.kind == label.Kind.CONFIRMATION:
        text = _("Confirmed %(value)r (image %(image)s).")
    else:
        text = _("Corrected to %(value)r (image %(image)s).")
    messages.success(
        request, text % {"value": label.value, "image": item.image.source or item.image_id}
    )
    return redirect(reverse("project-review", kwargs={"slug": project.slug}))


@require_GET
@role_required(Role.LEAD)
def project_review_gradcam(request, slug: str, pk: int):
    project = _project_for(request.user, slug)
    image = get_object_or_404(Image.objects.select_related("project"), pk=pk, project=project)
    try:
        picture = review_gradcam(image=image, user=request.user)
    except GradcamUnavailable as error:
        raise Http404(str(error)) from error
    response = HttpResponse(picture.png, content_type="image/png")
    response["X-Gradcam-Source"] = "stored" if picture.stored else "rendered"
    response["X-Gradcam-Focus"] = "region" if picture.focused else "none"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'"
    # Private: model internals of a private image. Keyed to the version in the page's URL query.
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@role_required(Role.LEAD)
def project_quality(request, slug: str):
    project = _project_for(request.user, slug)
    rows = annotator_quality(project=project)
    for row in rows:
        labels = row["labels"]
        row["flagged_rate"] = row["flagged"] / labels if labels else None
        row["overturned_rate"] = row["overturned"] / labels if labels else None
    context = {"project": project, "rows": rows}
    # Gold accuracy, rubber-stamped grid pages, exposure and pauses (labeling.views.quality).
    context.update(quality_context(project=project, user=request.user))
    return render(request, "labeling/quality.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.ENGINEER)
def project_cold_start(request, slug: str):
    project = get_object_or_404(projects_visible_to(request.user), slug=slug)
    search = request.GET.get("q", "")
    context = {
        "project": project,
        "search": search,
        "candidates": list(seed_candidates(project=project, search=search)),
        # The seed picker is the page's own; the other parameters come from the job's spec.
        "form": job_form(COLD_START),
    }
    if request.method == "POST":
        uploads = request.FILES.getlist("files")
        try:
            job, notes = cold_start_start(
                project=project,
                created_by=request.user,
                seed_image_ids=request.POST.getlist("seed_image_ids"),
                uploads=uploads,
                params=params_from_post(COLD_START, request.POST),
            )
        except ValidationError as error:
            context["errors"] = error.messages
            return render(request, "labeling/cold_start.html", context, status=400)
        for note in notes:
            messages.warning(request, _("Seed upload: %(note)s") % {"note": note})
        messages.success(request, _("Started cold-start recall (job %(id)s).") % {"id": job.pk})
        return redirect(reverse("job-detail", kwargs={"pk": job.pk}))
    return render(request, "labeling/cold_start.html", context)
