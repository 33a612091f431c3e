"""One place for each rule that safety depends on (issue 8, item 9): the labeling limits are the
services' and the API is built from them; the review-queue rule is stated only in
labeling/permissions.py; one exception handler gives every service error a body."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from rest_framework.test import APIClient

from labeling.api import queue_serializers as s
from labeling.api.exceptions import exception_handler
from labeling.services import label_limits
from labeling.services.labels import labels_submit_batch
from labeling.services.queues import queue_claim_next
from tests.factories import make_project, make_queue, make_user

pytestmark = pytest.mark.django_db

LABELING = Path(__file__).resolve().parents[2] / "labeling"


def test_the_api_accepts_exactly_what_the_services_accept():
    project = make_project()
    annotator = make_user("annotator")
    project.members.add(annotator)
    queue = make_queue(project)
    top = label_limits.MAX_CLAIM
    assert s.ClaimInput(data={"count": top}).is_valid()
    assert not s.ClaimInput(data={"count": top + 1}).is_valid()
    assert queue_claim_next(queue=queue, annotator=annotator, count=top) == []
    with pytest.raises(ValidationError):
        queue_claim_next(queue=queue, annotator=annotator, count=top + 1)
    assert not s.UndoInput(data={"count": label_limits.MAX_UNDO + 1}).is_valid()
    assert s.BatchInput().fields["entries"].max_length == label_limits.MAX_BATCH
    too_many = [{"lease": 1, "value": "normal"}] * (label_limits.MAX_BATCH + 1)
    with pytest.raises(ValidationError):
        labels_submit_batch(annotator=annotator, entries=too_many)


def test_the_api_checks_a_label_against_the_schema_with_the_services_rule():
    project = make_project()
    entry = s.SubmitInput(data={"value": "cat"}, context={"project": project})
    assert not entry.is_valid()
    assert "value" in entry.errors
    entry = s.SubmitInput(
        data={"value": "normal", "subcategory": "animal"}, context={"project": project}
    )
    assert not entry.is_valid()
    assert "subcategory" in entry.errors


def test_the_review_queue_rule_is_written_once():
    """Only labeling/permissions.py compares a queue's kind with the review kind to decide who
    may open it; everything else asks it (queue_access_check, queue_kinds_closed_to)."""
    offenders = []
    for path in LABELING.rglob("*.py"):
        if path.name == "permissions.py" or "migrations" in path.parts:
            continue
        text = path.read_text()
        if re.search(
            r"is_review\s+and\s+not\s+can_review|if not can_review\([^)]*\):\s*\n\s*qs", text
        ):
            offenders.append(str(path.relative_to(LABELING)))
    assert not offenders


def test_service_errors_get_a_status_and_a_body():
    response = exception_handler(ValidationError({"count": ["Too many."]}), {})
    assert (response.status_code, response.data) == (400, {"count": ["Too many."]})
    response = exception_handler(ValidationError("Plain."), {})
    assert (response.status_code, response.data) == (400, {"detail": "Plain."})
    response = exception_handler(PermissionDenied("Leads only."), {})
    assert (response.status_code, str(response.data["detail"])) == (403, "Leads only.")
    response = exception_handler(PermissionDenied(), {})
    assert response.status_code == 403 and response.data["detail"]


def test_a_service_validation_error_through_the_api_is_a_400_with_the_field():
    client = APIClient()
    client.force_authenticate(make_user("site_engineer"))
    response = client.post(
        "/api/v1/projects/create/",
        {"name": "A", "slug": "a-project", "label_schema": {"classes": []}},
        format="json",
    )
    assert response.status_code == 400
    assert "label_schema" in response.json()
