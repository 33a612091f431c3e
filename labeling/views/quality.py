"""The quality page's gold, exposure and rubber-stamp part (issue 9, items 3 and 4), and its
forms: mark or unmark gold items, lift a pause, send disagreements to re-review (leads), the
project's quality settings (engineers). `quality_context` feeds the page
(labeling.views.review.project_quality); the posts redirect back to it with a message.

Annotators get 403 on all of these; another project is a 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from labeling.models import AnnotatorPause, Project
from labeling.permissions import (
    can_manage,
    project_reviewable_or_403,
    project_visible_or_404,
    role_required,
)
from labeling.project_settings import PROJECT_QUALITY, QUALITY_FIELDS, quality_settings_clean
from labeling.roles import Role
from labeling.selectors.agreement import DISAGREEMENTS_ON_PAGE, PAIRS_ON_PAGE, agreement
from labeling.selectors.quality import annotator_checks, gold_items
from labeling.services.agreement import disagreements_queue
from labeling.services.gold import gold_mark, gold_unmark, pause_lift
from labeling.services.projects import project_update
from labeling.views.job_forms import job_form, params_from_post


def quality_context(*, project: Project, user) -> dict:
    """What the quality page shows beyond labels, flags and overturns (its agreement section
    comes from `quality_agreement_view`, loaded after the page)."""
    form = None
    if can_manage(user, project):
        form = job_form(PROJECT_QUALITY)
        form.initial = {name: getattr(project, name) for name in QUALITY_FIELDS}
    return {
        "checks": annotator_checks(project=project),
        "gold_items": gold_items(project=project),
        "settings_form": form,
        "positive_class": project.positive_class,
    }


@require_GET
@role_required(Role.LEAD)
def quality_agreement_view(request, slug: str):
    """The quality page's agreement section on its own (the page loads it after itself: it is
    the page's costliest part at scale)."""
    project = project_reviewable_or_403(request.user, slug)
    context = {
        "project": project,
        "agreement": agreement(
            project=project, disagreements_limit=DISAGREEMENTS_ON_PAGE, pairs_limit=PAIRS_ON_PAGE
        ),
    }
    # The page's script asks for the section alone; a person following the link gets a page.
    alone = request.GET.get("part") == "section"
    template = "labeling/_quality_agreement.html" if alone else "labeling/quality_agreement.html"
    return render(request, template, context)


def _back(project: Project):
    return redirect(reverse("project-quality", kwargs={"slug": project.slug}))


def _ids(raw: str) -> list[int]:
    ids = []
    for part in raw.replace(",", " ").split():
        if not part.isdigit():
            raise ValidationError(_("%(value)r is not an image id.") % {"value": part})
        ids.append(int(part))
    if not ids:
        raise ValidationError(_("Give at least one image id."))
    return ids


@require_POST
@role_required(Role.LEAD)
def gold_mark_view(request, slug: str):
    project = project_reviewable_or_403(request.user, slug)
    try:
        ids = _ids(request.POST.get("images", ""))
        value = request.POST.get("value") or None
        marked = gold_mark(project=project, images=ids, value=value, user=request.user)
    except ValidationError as error:
        messages.error(request, _("Not marked: %(why)s") % {"why": " ".join(error.messages)})
    else:
        messages.success(
            request,
            _("Marked as gold: %(images)s.")
            % {"images": ", ".join(f"#{g.image_id} ({g.value})" for g in marked)},
        )
    return _back(project)


@require_POST
@role_required(Role.LEAD)
def gold_unmark_view(request, slug: str, image_id: int):
    project = project_reviewable_or_403(request.user, slug)
    try:
        gold_unmark(project=project, image_id=image_id, user=request.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("Image #%(id)s is no longer a gold item.") % {"id": image_id})
    return _back(project)


@require_POST
@role_required(Role.LEAD)
def pause_lift_view(request, slug: str, pk: int):
    project = project_reviewable_or_403(request.user, slug)
    pause = get_object_or_404(
        AnnotatorPause.objects.select_related("annotator"), project=project, pk=pk
    )
    pause_lift(pause=pause, lead=request.user)
    messages.success(
        request,
        _("%(name)s may label again.") % {"name": pause.annotator.username},
    )
    return _back(project)


@require_POST
@role_required(Role.ENGINEER)
def quality_settings_view(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    if not can_manage(request.user, project):
        raise PermissionDenied
    try:
        values = quality_settings_clean(params_from_post(PROJECT_QUALITY, request.POST))
        if values:
            project_update(project=project, **values)
    except ValidationError as error:
        messages.error(request, _("Not saved: %(why)s") % {"why": " ".join(error.messages)})
    else:
        messages.success(request, _("Quality settings saved."))
    return _back(project)


@require_POST
@role_required(Role.LEAD)
def disagreements_queue_view(request, slug: str):
    """Send the items annotators disagreed on to re-review (labeling.services.agreement)."""
    project = project_reviewable_or_403(request.user, slug)
    result = disagreements_queue(project=project, lead=request.user)
    messages.success(
        request,
        _(
            "Sent %(added)s disagreements to re-review (%(already)s were already there, "
            "%(total)s in all)."
        )
        % {
            "added": result["added"],
            "already": result["already_queued"],
            "total": result["disagreements"],
        },
    )
    return _back(project)
