"""Model comparison page (issue 9, item 11): chosen versions side by side with deltas,
intervals, warnings, the data each saw, pool estimates, and their PR curves overlaid on one
server-drawn SVG chart (no script: the chart is plain markup, readable without JavaScript).

Also the confirmation pages of promote and rollback (labeling.views.models posts here first):
the same comparison of the version that would become active against the one active now.
"""

from __future__ import annotations

from django.http import HttpResponseBadRequest
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from labeling.models import ModelVersion, Project
from labeling.permissions import can_manage, role_required
from labeling.roles import Role
from labeling.selectors.model_comparison import (
    COMPARED,
    MAX_COMPARED,
    STAGES,
    compare_versions,
    default_selection,
    worse_figures,
)

# The chart's drawing area in SVG units; the SVG scales to its box (viewBox).
WIDTH, HEIGHT, MARGIN = 520, 360, 44
# One colour and one dash pattern per compared version: told apart in colour and without it.
STYLES = (
    ("#5eb3ff", ""),
    ("#ff8a4c", "8 4"),
    ("#5fd38d", "2 4"),
    ("#e58cff", "10 3 2 3"),
)
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _x(recall: float) -> float:
    return round(MARGIN + recall * (WIDTH - 2 * MARGIN), 1)


def _y(precision: float) -> float:
    return round(HEIGHT - MARGIN - precision * (HEIGHT - 2 * MARGIN), 1)


def chart(rows: list[dict]) -> dict:
    """The SVG's lines, operating points and axes, from the comparison's rows."""
    series = []
    for index, row in enumerate(rows):
        colour, dash = STYLES[index % len(STYLES)]
        row["colour"], row["dash"] = colour, dash
        curve = row.get("curve")
        if not curve:
            continue
        operating = curve["operating"]
        point = None
        if operating["precision"] is not None and operating["recall"] is not None:
            point = {
                "x": _x(operating["recall"]),
                "y": _y(operating["precision"]),
                "precision": operating["precision"],
                "recall": operating["recall"],
            }
        series.append(
            {
                "name": row["name"],
                "colour": colour,
                "dash": dash,
                "ap": curve["ap"],
                "points": " ".join(f"{_x(r)},{_y(p)}" for r, p in curve["points"]),
                "operating": point,
            }
        )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "series": series,
        "x_ticks": [{"value": t, "at": _x(t)} for t in TICKS],
        "y_ticks": [{"value": t, "at": _y(t)} for t in TICKS],
        "left": MARGIN,
        "right": WIDTH - MARGIN,
        "top": MARGIN,
        "bottom": HEIGHT - MARGIN,
        "x_label_y": HEIGHT - 8,
        "mid_x": WIDTH // 2,
        "mid_y": HEIGHT // 2,
    }


def _table(rows: list[dict]) -> list[dict]:
    """One table row per (stage, figure), one cell per version: the figure, the counts and
    interval behind a rate, the delta from the first version."""
    stage_names = {"stage1": _("Stage 1"), "stage2": _("Stage 2"), "cascade": _("Cascade")}
    metric_names = {"precision": _("Precision"), "recall": _("Recall"), "ap": "AP"}
    table = []
    for stage in STAGES:
        for metric in COMPARED:
            cells = []
            for row in rows:
                figures = row["stages"][stage]
                cell = {"version": row["name"], "value": figures[metric]}
                if metric == "precision":
                    cell["hits"], cell["of"] = figures["tp"], figures["predicted_positive"]
                    cell["ci"] = figures["precision_ci"]
                elif metric == "recall":
                    cell["hits"], cell["of"] = figures["tp"], figures["positives"]
                    cell["ci"] = figures["recall_ci"]
                cell["delta"] = row["delta"][stage][metric] if row["delta"] else None
                cells.append(cell)
            table.append(
                {
                    "stage": stage,
                    "metric": metric,
                    "label": f"{stage_names[stage]} · {metric_names[metric]}",
                    "cells": cells,
                }
            )
    return table


def comparison_context(*, project: Project, versions: list[ModelVersion]) -> dict:
    found = compare_versions(project=project, versions=versions)
    found["chart"] = chart(found["versions"])
    found["table"] = _table(found["versions"])
    return found


def _chosen(project: Project, raw: list[str]) -> list[ModelVersion] | None:
    if not raw:
        return default_selection(project=project)
    ids = []
    for value in raw:
        if not value.isdigit():
            return None
        if int(value) not in ids:
            ids.append(int(value))
    found = ModelVersion.objects.filter(project=project, pk__in=ids[:MAX_COMPARED]).in_bulk()
    return [found[i] for i in ids[:MAX_COMPARED] if i in found]


@require_GET
@role_required(Role.LEAD)
def project_models_compare(request, slug: str):
    from labeling.views.models import _project_for

    project = _project_for(request.user, slug)
    versions = _chosen(project, request.GET.getlist("v"))
    if versions is None:
        return HttpResponseBadRequest(_("Choose versions by their ids."))
    active = project.active_model_version
    context = {
        "project": project,
        "all_versions": list(ModelVersion.objects.filter(project=project)[:50]),
        "chosen_ids": [v.pk for v in versions],
        "max_compared": MAX_COMPARED,
        "can_manage": can_manage(request.user, project),
        "active": active,
        **comparison_context(project=project, versions=versions),
    }
    for row in context["versions"]:
        row["worse"] = worse_figures(candidate=row["version"], current=active)
    return render(request, "labeling/models_compare.html", context)
