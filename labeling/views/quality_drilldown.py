"""The quality page's drill-down (issue 9, item 9): from an annotator's row to their flagged,
overturned and gold-failed items, each with the image, their answer, the correct answer and
when. Leads and engineers of the project; annotators get 403 (gold must stay invisible to them);
another project, or a person with neither membership nor labels in this one, is a 404.
"""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from labeling.permissions import (
    project_reviewable_or_403,
    role_required,
)
from labeling.roles import Role
from labeling.selectors.annotator_items import annotator_items, project_person
from labeling.services.preferences import preference_read


@require_GET
@role_required(Role.LEAD)
def project_quality_annotator(request, slug: str, pk: int):
    project = project_reviewable_or_403(request.user, slug)
    person = project_person(project=project, pk=pk)
    if person is None:
        raise Http404
    return render(
        request,
        "labeling/quality_annotator.html",
        {
            "project": project,
            "person": person,
            "lists": annotator_items(project=project, annotator=person),
            "protection": preference_read(user=request.user, project=project)["protection"],
        },
    )
