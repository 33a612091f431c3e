"""Leads' re-review pages and annotator quality; the engineers' cold-start page.

- `review` lists the lead's projects with their open re-review items.
- `project-review` shows ONE flagged item at a time, the lead's review stream
  (docs/review.md): the image beside its Grad-CAM overlay (with the colour map's legend and the
  stage it explains; the noise job's stored map, or rendered on request and then kept; a flat
  map is said to have "no focus"), every annotator's active answer, the active version's scores
  (or the latest score when it has none), the O2U rank, the label history and the review steps
  with their comments. It hands the next items' heat maps to the page to fetch ahead. Leads see
  it unblurred unless they chose a protection. Keys (static/labeling/review.js, declared in
  labeling/keys.py): confirm, flip, a class or sub-category key, skip, comment, send back, undo.
- `project-review-resolve` takes one step (`labeling.services.review.review_decide`);
  `project-review-undo` walks back the lead's last one and shows that item again.
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
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labeling.keys import key_hints, page_keys
from labeling.models import Image, Project, Queue, QueueItem, schema_entry_name
from labeling.permissions import (
    project_reviewable_or_403,
    projects_visible_to,
    role_required,
)
from labeling.roles import Role
from labeling.selectors.labels import annotator_quality, image_current_label, label_history
from labeling.selectors.review import (
    image_scores,
    review_answers,
    review_counts,
    review_decisions,
    review_gradcam_stored,
    review_item_for_lead,
    review_last_decision,
    review_upcoming,
    seed_candidates,
)
from labeling.services.noise import GradcamUnavailable, gradcam_legend, review_gradcam
from labeling.services.preferences import preference_read
from labeling.services.recall import COLD_START, cold_start_start
from labeling.services.review import MAX_COMMENT, review_decide, review_undo_last
from labeling.views.job_forms import job_form, params_from_post
from labeling.views.quality import quality_context


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


def _choices(project: Project, current_value: str | None) -> list[dict]:
    """The class and sub-category buttons: each one's `choice` ("class" or
    "positive/sub-category"), its name in the reader's language, hotkey, and whether it keeps
    the current value (a confirm, possibly naming a sub-category) or changes it (a correction)."""
    language = get_language()
    schema = project.label_schema
    rows = [
        {
            "choice": c["key"],
            "name": schema_entry_name(c, language),
            "hotkey": c.get("hotkey", ""),
            "keeps": c["key"] == current_value,
        }
        for c in schema["classes"]
        if c["key"] != current_value
    ]
    positive = project.positive_class
    for sub in schema.get("subcategories") or []:
        rows.append(
            {
                "choice": f"{positive}/{sub['key']}",
                "name": schema_entry_name(sub, language),
                "hotkey": sub.get("hotkey", ""),
                "subcategory": True,
                "keeps": positive == current_value,
            }
        )
    return rows


def _prefetch_urls(project: Project, upcoming: list[QueueItem]) -> list[str]:
    """The next items' heat maps (the slow part: rendered on the server when no job made them,
    then kept) and images, nearest first."""
    active = project.active_model_version
    urls = []
    for upcoming_item in upcoming:
        if active is not None:
            gradcam = reverse(
                "project-review-gradcam",
                kwargs={"slug": project.slug, "pk": upcoming_item.image_id},
            )
            urls.append(f"{gradcam}?v={active.pk}")
        urls.append(reverse("image-file", kwargs={"pk": upcoming_item.image_id}))
    return urls


@require_GET
@role_required(Role.LEAD)
def project_review(request, slug: str):
    project = project_reviewable_or_403(request.user, slug)
    raw_item = request.GET.get("item")
    try:
        item_id = int(raw_item) if raw_item else None
    except ValueError:
        return HttpResponseBadRequest("item must be a number")
    item = review_item_for_lead(project=project, lead=request.user, item_id=item_id)
    if item_id is not None and item is None:
        raise Http404(_("No such review item in this project."))
    preference = preference_read(user=request.user, project=project)
    active = project.active_model_version
    context = {
        "project": project,
        "item": item,
        "counts": review_counts(project=project),
        # The page's keys (labeling/keys.py) and the lead's own image protection: leads see
        # the evidence unblurred unless they chose a protection themselves.
        "review_keys": page_keys("review"),
        "key_hints": key_hints("review"),
        "protection": preference["protection"] if preference["chosen"] else "off",
        "last_decision": review_last_decision(project=project, lead=request.user),
        "active_version": active,
        "comment_max": MAX_COMMENT,
        "legend": gradcam_legend() if active else (),
    }
    if item is not None:
        current = image_current_label(image=item.image)
        current_value = current.value if current else None
        scores = list(image_scores(image=item.image))
        answers = review_answers(image=item.image)
        upcoming = list(
            review_upcoming(project=project, lead=request.user, limit=2, exclude_id=item.pk)
        )
        context.update(
            image=item.image,
            history=list(label_history(image=item.image)),
            answers=answers,
            annotators=len({a.annotator_id for a in answers}),
            decisions=list(review_decisions(item=item)),
            scores=scores,
            active_score=next(
                (s for s in scores if active and s.model_version_id == active.pk), None
            ),
            latest_score=scores[0] if scores else None,
            gradcam=review_gradcam_stored(item=item, model_version_id=active and active.pk),
            current=current,
            flip_value=_flip_value(project, current_value),
            choices=_choices(project, current_value),
            sendable=current is not None and current.kind == current.Kind.ANNOTATION,
            details=item.details or {},
            # The next items' images and heat maps, fetched ahead (rendered and kept on the
            # server the first time), so each is on screen when the lead gets to it.
            prefetch=_prefetch_urls(project, upcoming),
        )
    return render(request, "labeling/review.html", context)


@require_POST
@role_required(Role.LEAD)
def project_review_resolve(request, slug: str, pk: int):
    """One step of the stream: `action` confirm / skip / send_back, or `choice` (a class key,
    or "positive/sub-category") for a class button; `comment` with any of them."""
    project = project_reviewable_or_403(request.user, slug)
    item = get_object_or_404(
        QueueItem.objects.select_related("queue__project", "image"),
        pk=pk,
        queue__project=project,
        queue__kind=Queue.Kind.REVIEW,
    )
    action = request.POST.get("action", "")
    # `value` is the older form's name for a class button.
    choice = request.POST.get("choice") or request.POST.get("value", "")
    value, _slash, subcategory = choice.partition("/")
    if not action:
        if not value:
            return HttpResponseBadRequest("Choose confirm, skip, send back or a class.")
        current = image_current_label(image=item.image)
        action = "confirm" if current is not None and current.value == value else "correct"
    try:
        decision = review_decide(
            item=item,
            lead=request.user,
            action=action,
            value=value or None,
            subcategory=subcategory,
            comment=request.POST.get("comment", ""),
        )
    except ValidationError as error:
        messages.error(request, _("Not saved: ") + " ".join(error.messages))
        back = reverse("project-review", kwargs={"slug": project.slug}) + f"?item={item.pk}"
        return redirect(back)
    name = item.image.source or item.image_id
    if decision.action == "skip":
        text = _("Skipped image %(image)s: it comes back after the others.") % {"image": name}
    elif decision.action == "send_back":
        text = _("Sent image %(image)s back to %(user)s with your comment.") % {
            "image": name,
            "user": decision.returned_to.username,
        }
    elif decision.action == "confirm":
        text = _("Confirmed %(value)r (image %(image)s).") % {
            "value": decision.label.value,
            "image": name,
        }
    else:
        text = _("Corrected to %(value)r (image %(image)s).") % {
            "value": decision.label.value,
            "image": name,
        }
    messages.success(request, text)
    return redirect(reverse("project-review", kwargs={"slug": project.slug}))


@require_POST
@role_required(Role.LEAD)
def project_review_undo(request, slug: str):
    """Undo the lead's last step in the project; the page shows that item again."""
    project = project_reviewable_or_403(request.user, slug)
    try:
        decision = review_undo_last(project=project, lead=request.user)
    except ValidationError as error:
        messages.error(request, _("Not undone: ") + " ".join(error.messages))
        return redirect(reverse("project-review", kwargs={"slug": project.slug}))
    messages.success(
        request,
        _("Undone: %(action)s of image %(image)s.")
        % {
            "action": decision.get_action_display(),
            "image": decision.item.image.source or decision.item.image_id,
        },
    )
    back = reverse("project-review", kwargs={"slug": project.slug})
    return redirect(f"{back}?item={decision.item_id}")


@require_GET
@role_required(Role.LEAD)
def project_review_gradcam(request, slug: str, pk: int):
    project = project_reviewable_or_403(request.user, slug)
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
    project = project_reviewable_or_403(request.user, slug)
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
