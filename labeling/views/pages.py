"""The annotators' pages: home (their projects), a project's queues, single-image and grid
labeling. The labeling pages are shells: the browser claims, prefetches and submits through the
queue API (labeling/api/queue_views.py), so a label never waits on a page load.

Every page scopes what it shows with `labeling.permissions`: another project is a 404, a review
queue is a 403 for anyone below lead.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import get_language

from labeling.keys import key_hints, page_keys
from labeling.models import Project, Queue, schema_entry_name
from labeling.permissions import (
    can_see_queue_details,
    project_visible_or_404,
    projects_visible_to,
    queue_access_check,
)
from labeling.selectors.labels import annotator_stats
from labeling.selectors.queues import queue_progress_page, queues_for_user
from labeling.selectors.review import returned_for_annotator
from labeling.services.gold import exposure_status
from labeling.services.preferences import preference_read

GRID_PAGE_SIZE = 24
SINGLE_PREFETCH = 8


def _queues_for(user, project: Project) -> list[dict]:
    """Active queues this user may open, each with its progress; review queues for leads only."""
    rows = []
    # Leads and engineers may open each queue's contents with the reasons behind each item.
    inspect = can_see_queue_details(user, project)
    for queue in queues_for_user(project=project, user=user).select_related("project"):
        progress = queue_progress_page(queue=queue)
        total = progress["total"] or 0
        rows.append(
            {
                "queue": queue,
                "progress": progress,
                "percent": round(100 * progress["done"] / total) if total else 0,
                "can_inspect": inspect,
            }
        )
    return rows


def _labeling_queue(user, slug: str, pk: int) -> Queue:
    project = project_visible_or_404(user, slug)
    queue = get_object_or_404(Queue.objects.select_related("project"), project=project, pk=pk)
    queue_access_check(user, queue)
    return queue


@login_required
def home(request):
    projects = list(projects_visible_to(request.user).order_by("name"))
    rows = [{"project": p, "queues": _queues_for(request.user, p)} for p in projects]
    # Labels a lead sent back to this person, with the lead's comment (labeling.services.review).
    returned = list(returned_for_annotator(annotator=request.user, limit=10))
    return render(request, "labeling/home.html", {"rows": rows, "returned": returned})


@login_required
def project_detail(request, slug: str):
    project = project_visible_or_404(request.user, slug)
    context = {
        "project": project,
        "queues": _queues_for(request.user, project),
        "stats": annotator_stats(project=project, annotator=request.user),
        **_localized_schema(project),
    }
    return render(request, "labeling/project.html", context)


def _localized_schema(project: Project) -> dict:
    """The schema's classes and sub-categories with "name" in the request's language."""
    language = get_language()
    schema = project.label_schema
    return {
        group: [
            {**entry, "name": schema_entry_name(entry, language)}
            for entry in schema.get(group) or []
        ]
        for group in ("classes", "subcategories")
    }


def _page_config(request, queue: Queue, *, page: str, **extra) -> dict:
    project = queue.project
    schema = _localized_schema(project)
    return {
        "queueId": queue.pk,
        "queueName": queue.name,
        "projectSlug": project.slug,
        "userId": request.user.pk,
        "schema": {
            "classes": schema["classes"],
            "positive": project.positive_class,
            "default": grid_default_class(queue),
            "common": project.default_class,
            "subcategories": schema["subcategories"],
        },
        "blurDefault": project.blur_images,
        "urls": {
            "next": reverse("api-queue-next", args=[queue.pk]),
            "undo": reverse("api-queue-undo", args=[queue.pk]),
            "batch": reverse("api-queue-submit-batch", args=[queue.pk]),
            # Submit-and-claim in one round trip (static/labeling/annotate.js).
            "submitNext": reverse("api-queue-submit-next", args=[queue.pk]),
            "stats": reverse("api-queue-stats", args=[queue.pk]),
            # The page puts the lease id in place of the 0.
            "submit": reverse("api-lease-submit", args=[0]),
            "skip": reverse("api-lease-skip", args=[0]),
            "unskip": reverse("api-lease-unskip", args=[0]),
            "recent": reverse("api-queue-recent-labels", args=[queue.pk]),
            "preferences": reverse("api-project-preferences", args=[project.slug]),
        },
        # The page's own keys, declared once (labeling/keys.py), and the person's view
        # preferences in this project (labeling/services/preferences.py).
        "keys": page_keys(page),
        "preferences": preference_read(user=request.user, project=project),
        # The daily cap on positive-class images and the break reminder (labeling/services/gold.py;
        # static/labeling/exposure.js): where this person stands now.
        "exposure": exposure_status(project=project, annotator=request.user),
        **extra,
    }


def grid_default_class(queue: Queue) -> str:
    """The class a grid page pre-selects: the project's common class, except in triage's
    confirm queue, which holds images the model scores confidently positive."""
    if queue.kind == Queue.Kind.CONFIRM:
        return queue.project.positive_class
    return queue.project.default_class


def _class_name(project: Project, key: str) -> str:
    for cls in project.label_schema["classes"]:
        if cls["key"] == key:
            return schema_entry_name(cls, get_language())
    return key


def _keys(project: Project) -> list[dict]:
    """The key legend: one entry per class and per sub-category that has a hotkey."""
    schema = _localized_schema(project)
    keys = []
    for cls in schema["classes"]:
        if cls.get("hotkey"):
            keys.append(
                {
                    "key": cls["hotkey"].lower(),
                    "name": cls["name"],
                    "positive": cls["key"] == project.positive_class,
                }
            )
    positive_name = _class_name(project, project.positive_class)
    for sub in schema["subcategories"]:
        if sub.get("hotkey"):
            keys.append(
                {
                    "key": sub["hotkey"].lower(),
                    "name": f"{positive_name} · {sub['name']}",
                    "positive": True,
                    "subcategory": True,
                }
            )
    return keys


@login_required
def annotate(request, slug: str, pk: int):
    queue = _labeling_queue(request.user, slug, pk)
    context = {
        "project": queue.project,
        "queue": queue,
        "keys": _keys(queue.project),
        "key_hints": key_hints("single"),
        "config": _page_config(request, queue, page="single", prefetch=SINGLE_PREFETCH),
    }
    return render(request, "labeling/annotate.html", context)


@login_required
def grid(request, slug: str, pk: int):
    queue = _labeling_queue(request.user, slug, pk)
    context = {
        "project": queue.project,
        "queue": queue,
        "keys": _keys(queue.project),
        "default_name": _class_name(queue.project, grid_default_class(queue)),
        "key_hints": key_hints("grid"),
        "config": _page_config(request, queue, page="grid", pageSize=GRID_PAGE_SIZE),
    }
    return render(request, "labeling/grid.html", context)
