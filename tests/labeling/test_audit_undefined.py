"""An audit of a model that calls no pool image positive: its precision is undefined, and the
audit, its history and the estimates page and API still work (issue 10). Undefined figures are
stored and served as null: JSON, PostgreSQL's jsonb and SQLite's JSON_VALID refuse NaN."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from labeling.models import Image, Job, Label, ModelVersion, QueueItem, Score, Strategy
from labeling.services.audit import audit_run
from labeling.services.jobs import job_create
from tests.factories import PASSWORD, make_image, make_project, make_user

pytestmark = pytest.mark.django_db


def test_audit_of_a_model_that_calls_nothing_positive():
    engineer, lead, annotator = make_user("engineer"), make_user("lead"), make_user("annotator")
    project = make_project(members=[engineer, lead, annotator])
    images = [make_image(project, seed=95_000 + i) for i in range(60)]
    version = ModelVersion.objects.create(
        project=project,
        name="shy",
        status=ModelVersion.Status.READY,
        metrics={"thresholds": {"stage1": 0.9, "stage2": 0.9}},
    )
    Score.objects.bulk_create(
        Score(image=image, model_version=version, stage1=s, stage2=s, score=s, decision=False)
        for image, s in zip(images, [i / 100 for i in range(60)], strict=True)
    )
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    for batch in range(2):
        job = job_create(
            project=project, kind=Job.Kind.AUDIT, params={"labels": 10}, created_by=engineer
        )
        audit_run(job_id=job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED, job.error
        # SIMULATION: one positive among what the audit asked, the rest negative.
        asked = QueueItem.objects.filter(strategy=Strategy.POOL_AUDIT, labels_done=0)
        for n, item in enumerate(asked):
            Label.objects.create(
                project=project,
                image=Image.objects.get(pk=item.image_id),
                annotator=annotator,
                value="disgusting" if (batch, n) == (0, 0) else "normal",
                strategy=Strategy.POOL_AUDIT,
            )
            QueueItem.objects.filter(pk=item.pk).update(labels_done=1, status="done")
    second = Job.objects.filter(kind=Job.Kind.AUDIT).order_by("-id").first()
    assert second.result["estimates_before"]["precision"]["estimate"] is None
    api = APIClient()
    api.force_authenticate(lead)
    response = api.get(reverse("api-project-estimates", args=[project.slug]))
    assert response.status_code == 200
    cascade = response.json()["audit"]["estimates"]["decisions"]["cascade"]
    assert cascade["predicted_positive"] == 0 and cascade["precision"]["estimate"] is None
    assert cascade["recall"]["estimate"] == 0.0
    client = Client()
    client.login(username=lead.username, password=PASSWORD)
    assert client.get(reverse("project-estimates", args=[project.slug])).status_code == 200
