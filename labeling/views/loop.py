"""Engineers' and leads' view of the loop's queues: each item's strategy, rank, similarity or
score band (never shown to annotators), and the validation split's refill action.

Views parse, call one selector or service and render; role rules come from
labeling.permissions.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from labeling.models import Queue, QueueItem, Strategy
from labeling.permissions import (
    can_manage,
    can_see_queue_details,
    project_visible_or_404,
    role_required,
)
from labeling.roles import Role
from labeling.selectors.queue_items import queue_items_explained
from labeling.selectors.queues import queue_progress_page
from labeling.services.validation import validation_queue_fill

PAGE_SIZE = 200


@require_GET
@role_required(Role.LEAD)
def queue_items_page(request, slug: str, pk: int):
    project = project_visible_or_404(request.user, slug)
    if not can_see_queue_details(request.user, project):
        raise PermissionDenied
    queue = get_object_or_404(Queue.objects.select_related("project"), project=project, pk=pk)
    status = request.GET.get("status") or None
    strategy = request.GET.get("strategy") or None
    if status not in (None, *QueueItem.Status.values):
        status = None
    if strategy not in (None, *Strategy.values):
        strategy = None
    try:
        offset = max(0, int(request.GET.get("offset", 0)))
    except ValueError:
        offset = 0
    rows, count = queue_items_explained(
        queue=queue, status=status, strategy=strategy, limit=PAGE_SIZE, offset=offset
    )
    return render(
        request,
        "labeling/queue_items.html",
        {
            "project": project,
            "queue": queue,
            "rows": rows,
            "count": count,
            "progress": queue_progress_page(queue=queue),
            "status": status or "",
            "strategy": strategy or "",
            "statuses": QueueItem.Status.choices,
            "strategies": Strategy.choices,
            "offset": offset,
            "next_offset": offset + PAGE_SIZE if offset + PAGE_SIZE < count else None,
            "previous_offset": max(0, offset - PAGE_SIZE) if offset else None,
            "perms_manage": can_manage(request.user, project),
        },
    )


@require_POST
@role_required(Role.ENGINEER)
def validation_fill(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    if not can_manage(request.user, project):
        raise PermissionDenied
    result = validation_queue_fill(project=project, created_by=request.user)
    messages.success(
        request,
        gettext(
            "Validation queue “%(queue)s”: %(added)d images added, %(moved)d moved there from "
            "the labeling queue."
        )
        % result,
    )
    return redirect(reverse("project-jobs", kwargs={"slug": project.slug}))
