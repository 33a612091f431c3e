"""The audit's second opinion on the called negatives (issue 10): with labels of both classes
at its start, an audit cuts the images the model calls negative by rank on the logistic probe
of the project's stored embeddings (real image files, the real embedder), keeps those values in
a file so that later jobs and the estimates cut the same strata, and says so clearly, losing
nothing, when that file is gone. Without enough labels it cuts them on the model's score.

SIMULATION: the model version's scores and the labels are written by the test."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from labeling.models import Image, Job, Label, ModelVersion, Score, Strategy
from labeling.services.audit import audit_run
from labeling.services.jobs import job_create
from labeling.services.recall import PROBE_MIN_PER_CLASS
from tests.factories import make_image, make_project, make_user

pytestmark = pytest.mark.django_db

# Enough images called negative (240) for their rank strata (the top 1%, 2%, 4%... merged to
# at least 10 images each) to be more than one.
POOL = 300


def _world(labeled_per_class: int):
    engineer, lead, annotator = make_user("engineer"), make_user("lead"), make_user("annotator")
    project = make_project(members=[engineer, lead, annotator])
    images = [make_image(project, seed=97_000 + i) for i in range(POOL)]
    version = ModelVersion.objects.create(
        project=project,
        name="v",
        status=ModelVersion.Status.READY,
        metrics={"thresholds": {"stage1": 0.8, "stage2": 0.8}},
    )
    scores = np.linspace(0.01, 0.99, POOL)
    Score.objects.bulk_create(
        Score(image=image, model_version=version, stage1=s, stage2=s, score=s, decision=s >= 0.8)
        for image, s in zip(images, scores, strict=True)
    )
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    # Loop labels before the audit: the highest scores positive, the lowest negative.
    for image in images[-labeled_per_class:]:
        _label(project, image, annotator, "disgusting", Strategy.CONFIDENCE_BAND)
    for image in images[:labeled_per_class]:
        _label(project, image, annotator, "normal", Strategy.CONFIDENCE_BAND)
    return project, engineer, lead, annotator


def _label(project, image, annotator, value, strategy):
    Label.objects.create(
        project=project, image=image, annotator=annotator, value=value, strategy=strategy
    )


def _audit(project, engineer, labels: int) -> Job:
    job = job_create(
        project=project, kind=Job.Kind.AUDIT, params={"labels": labels}, created_by=engineer
    )
    audit_run(job_id=job.pk)
    job.refresh_from_db()
    return job


def test_audit_cuts_called_negatives_on_the_probe_and_says_when_its_file_is_lost():
    project, engineer, lead, annotator = _world(labeled_per_class=8)
    first = _audit(project, engineer, 20)
    assert first.status == Job.Status.SUCCEEDED, first.error
    design = first.result["design"]
    facts = design["negatives_by"]
    assert facts["by"] == "probe", facts
    assert (facts["positives"], facts["negatives"]) == (8, 8)
    with default_storage.open(facts["file"], "rb") as handle:
        values = np.load(io.BytesIO(handle.read()), allow_pickle=False)
    assert values.shape == (POOL,) and ((values > 0) & (values < 1)).all()
    # The frame is sorted by image id; the images called negative are the first 240 (score
    # < 0.8). Their strata follow the probe's values: each stratum's values lie above the one
    # below it, whatever the scores.
    ids = sorted(Image.objects.filter(project=project).values_list("pk", flat=True))
    negative_positions = [
        i
        for i, pk in enumerate(ids)
        if not Score.objects.get(image_id=pk, model_version=project.active_model_version).decision
    ]
    drawn_strata = dict(zip(first.result["drawn"], first.result["drawn_strata"], strict=True))
    by_stratum: dict[int, list[float]] = {}
    for position in negative_positions:
        stratum = drawn_strata.get(ids[position])
        if stratum is not None:
            by_stratum.setdefault(stratum, []).append(values[position])
    ordered = [by_stratum[h] for h in sorted(by_stratum)]
    assert len(ordered) >= 2
    for lower, upper in zip(ordered, ordered[1:], strict=False):
        assert max(lower) <= min(upper)

    # SIMULATION: the audit items get labels; the estimates come with them.
    for image_id in first.result["drawn"]:
        if not Label.objects.filter(image_id=image_id).exists():
            image = Image.objects.get(pk=image_id)
            _label(project, image, annotator, "normal", Strategy.POOL_AUDIT)
    api = APIClient()
    api.force_authenticate(lead)
    audit = api.get(reverse("api-project-estimates", args=[project.slug])).json()["audit"]
    assert audit["estimates"]["labels"] == 20 and "error" not in audit

    # The file is lost: the page and the API say which file, nothing fails, and a job that
    # would continue the audit fails with the same words instead of drawing other strata.
    default_storage.delete(facts["file"])
    audit = api.get(reverse("api-project-estimates", args=[project.slug])).json()["audit"]
    assert audit["estimates"] is None and facts["file"] in audit["error"]
    web = Client()
    web.force_login(lead)
    page = web.get(reverse("project-estimates", args=[project.slug]))
    assert page.status_code == 200 and b'id="estimates-error"' in page.content
    second = _audit(project, engineer, 10)
    assert second.status == Job.Status.FAILED and facts["file"] in second.error


def test_audit_without_labels_of_both_classes_cuts_on_the_score():
    project, engineer, _lead, _annotator = _world(labeled_per_class=PROBE_MIN_PER_CLASS - 1)
    job = _audit(project, engineer, 20)
    assert job.status == Job.Status.SUCCEEDED, job.error
    facts = job.result["design"]["negatives_by"]
    assert facts["by"] == "score" and str(PROBE_MIN_PER_CLASS) in facts["why"]
