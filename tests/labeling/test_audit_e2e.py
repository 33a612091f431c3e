"""The pool audit end to end (issue 10), with a REAL Celery worker, Redis broker and PostgreSQL.

SIMULATION: the model version's scores and the annotator's answers are simulated from a truth
the test plants in each image's metadata (``true_label``). The scores are written as Score rows
of a READY model version (what a scoring job would write: a noisy function of the truth), and
the simulated annotator labels whatever the queue API serves by reading that truth. Everything
else is the product: the audit jobs run in the worker, audit items go through the normal
labeling queue, labels are submitted through the queue API, and the estimates come from the
API that leads and engineers read.

Checks: the audit draws from every stratum and records its strategy on the items and labels;
nothing the annotator receives tells an audit item from another; a second job continues the
same audit (same strata, more labels, allocated with the labels so far); labels of images the
audit did not draw (a model-chosen batch labeled first) never enter the estimates: the point
estimate equals the Horvitz-Thompson sum over the audit's own labels; the 95% intervals of
prevalence, the cascade's precision and recall contain the planted truth; annotators cannot
read the estimates.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from labeling.models import Image, Job, Label, ModelVersion, Queue, QueueItem, Score, Strategy
from labeling.selectors.labels import current_labels
from labeling.services.queues import queue_get_or_create, queue_items_add
from tests.factories import make_image, make_project, make_user
from tests.labeling.simulated import answer_queue_by_api
from tests.labeling.worker import (  # noqa: F401, F811 (fixtures)
    celery_worker,
    wait_for,
    worker_storage,
    worker_var_dir,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POOL = 500
POSITIVES = 25  # 5% of the pool
THRESHOLD = 0.5
# Fields a lease may show an annotator: nothing about why the item is there.
FORBIDDEN = {"strategy", "details", "priority", "audit_id", "stratum", "score"}


def simulated_pool(
    project, *, size: int = POOL, positives: int = POSITIVES
) -> tuple[list[Image], np.ndarray]:
    """SIMULATION: ``size`` images with a planted truth in their metadata."""
    rng = np.random.default_rng(7)
    truth = np.zeros(size, dtype=bool)
    truth[rng.choice(size, size=positives, replace=False)] = True
    images = [
        make_image(
            project,
            seed=50_000 + i,
            metadata={"true_label": "disgusting" if truth[i] else "normal"},
        )
        for i in range(size)
    ]
    return images, truth


def simulated_version(project, images: list[Image], truth: np.ndarray) -> ModelVersion:
    """SIMULATION: a READY model version whose scores are a noisy function of the truth (what
    a scoring job would store), made the project's active version."""
    version = ModelVersion.objects.create(
        project=project,
        name="simulated",
        status=ModelVersion.Status.READY,
        metrics={"thresholds": {"stage1": THRESHOLD, "stage2": THRESHOLD}},
    )
    rng = np.random.default_rng(11)
    logits = np.where(truth, rng.normal(1.0, 1.5, len(truth)), rng.normal(-3.0, 1.5, len(truth)))
    p1 = 1.0 / (1.0 + np.exp(-logits))
    p2 = 1.0 / (1.0 + np.exp(-(logits + rng.normal(0.0, 0.5, len(truth)))))
    Score.objects.bulk_create(
        Score(
            image=image,
            model_version=version,
            stage1=float(a),
            stage2=float(b),
            score=float(min(a, b)),
            decision=bool(a >= THRESHOLD and b >= THRESHOLD),
        )
        for image, a, b in zip(images, p1, p2, strict=True)
    )
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    return version


def _start_audit(engineer_api: APIClient, project, labels: int, worker) -> Job:
    response = engineer_api.post(
        reverse("api-project-job-create", kwargs={"slug": project.slug}),
        {"kind": "audit", "params": {"labels": labels, "strata": 5}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    job = Job.objects.get(pk=response.json()["id"])

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(finished, timeout=120, worker=worker, what="the audit job")
    assert job.status == Job.Status.SUCCEEDED, (job.error, worker.log())
    return job


def _horvitz_thompson_prevalence(project, jobs: list[Job]) -> float:
    """The prevalence estimate recomputed by hand from the audit's own draws and labels."""
    design = jobs[0].result["design"]
    sizes = design["sizes"]
    labels = current_labels(project=project)
    drawn, positives = np.zeros(len(sizes)), np.zeros(len(sizes))
    strata: dict[int, int] = {}
    for job in jobs:
        strata.update(zip(job.result["drawn"], job.result["drawn_strata"], strict=True))
    for job in jobs:
        for image_id in job.result["drawn"]:
            if image_id in labels:
                drawn[strata[image_id]] += 1
                positives[strata[image_id]] += labels[image_id] == "disgusting"
    return float(np.sum(np.array(sizes) * positives / drawn) / sum(sizes))


def test_pool_audit_end_to_end(celery_worker, worker_storage):  # noqa: F811
    engineer, lead, annotator = (
        make_user("site_engineer"),
        make_user("lead"),
        make_user("annotator"),
    )
    project = make_project(members=[lead, annotator])
    engineer_api, lead_api, annotator_api = APIClient(), APIClient(), APIClient()
    engineer_api.force_authenticate(engineer)
    lead_api.force_authenticate(lead)
    annotator_api.force_authenticate(annotator)
    images, truth = simulated_pool(project)
    version = simulated_version(project, images, truth)
    scores = Score.objects.filter(model_version=version)
    decision = {s.image_id: s.decision for s in scores}
    by_id = {image.pk: bool(t) for image, t in zip(images, truth, strict=True)}
    tp = sum(1 for pk, d in decision.items() if d and by_id[pk])
    facts = {
        "prevalence": POSITIVES / POOL,
        "precision": tp / sum(decision.values()),
        "recall": tp / POSITIVES,
    }

    # Model-driven work labeled first: the 40 highest scores, as a selection job would queue
    # them. Their labels must not enter the estimates unless the audit draws the image.
    queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    top = [s.image_id for s in scores.order_by("-score")[:40]]
    queue_items_add(queue=queue, images=top, strategy=Strategy.CONFIDENCE_BAND, priority=3.0)
    assert answer_queue_by_api(annotator_api, queue, forbidden=FORBIDDEN) == 40

    # Nothing to estimate before an audit; annotators may not even ask.
    assert lead_api.get(reverse("api-project-estimates", args=[project.slug])).json() == {
        "audit": None
    }
    denied = annotator_api.get(reverse("api-project-estimates", args=[project.slug]))
    assert denied.status_code == 403

    first = _start_audit(engineer_api, project, 60, celery_worker)
    design = first.result["design"]
    assert first.result["audit_id"] == first.pk and design["frame_size"] == POOL
    assert len(design["sizes"]) >= 3 and all(n > 0 for n in first.result["drawn_per_stratum"])
    # The 40 labels hold both classes, so the called negatives are cut on the probe's second
    # opinion (frozen embeddings of the real image files), kept in a file for the later jobs.
    assert design["negatives_by"]["by"] == "probe", design["negatives_by"]
    assert design["negatives_by"]["positives"] + design["negatives_by"]["negatives"] == 40
    assert len(first.result["drawn"]) == 60
    # Drawn images someone already labeled are observed, not asked again.
    asked = QueueItem.objects.filter(queue=queue, strategy=Strategy.POOL_AUDIT)
    assert asked.count() == first.result["queued"] == 60 - first.result["already_labeled"]
    answered = answer_queue_by_api(annotator_api, queue, forbidden=FORBIDDEN)
    assert answered == asked.count()
    assert Label.objects.filter(strategy=Strategy.POOL_AUDIT, project=project).count() == answered

    second = _start_audit(engineer_api, project, 90, celery_worker)
    assert second.result["audit_id"] == first.pk and "design" not in second.result
    assert second.result["sample_before"] == 60
    assert not set(second.result["drawn"]) & set(first.result["drawn"])
    answer_queue_by_api(annotator_api, queue, forbidden=FORBIDDEN)

    response = lead_api.get(reverse("api-project-estimates", args=[project.slug]))
    assert response.status_code == 200
    audit = response.json()["audit"]
    assert audit["audit_id"] == first.pk and audit["drawn"] == 150 and audit["pending"] == 0
    estimates = audit["estimates"]
    assert estimates["labels"] == 150
    # Correct weights, audit labels only: the point estimate is the Horvitz-Thompson sum.
    assert estimates["prevalence"]["estimate"] == pytest.approx(
        _horvitz_thompson_prevalence(project, [first, second])
    )
    cascade = estimates["decisions"]["cascade"]
    found = {
        "prevalence": estimates["prevalence"],
        "precision": cascade["precision"],
        "recall": cascade["recall"],
    }
    for name, interval in found.items():
        assert interval["low"] <= facts[name] <= interval["high"], (name, interval, facts)
    assert set(estimates["decisions"]) == {"cascade", "stage1", "stage2"}
    known = sum(1 for pk in current_labels(project=project) if by_id[pk])
    assert estimates["unlabeled_positives"]["estimate"] == pytest.approx(
        max(0.0, estimates["positives"]["estimate"] - known)
    )
    assert estimates["forecast"]["recall"]["more_labels"] is not None
    # History: the second job kept the estimates of the first batch's labels.
    history = audit["history"]
    assert [row["job_id"] for row in history] == [first.pk, second.pk]
    assert history[0]["estimates"] is None
    assert history[1]["estimates"]["labels"] == 60
    assert audit["now"]["labels"] == 150

    # The page: leads read it, annotators are refused.
    lead_web, annotator_web = Client(), Client()
    lead_web.force_login(lead)
    annotator_web.force_login(annotator)
    page = lead_web.get(reverse("project-estimates", args=[project.slug]))
    assert page.status_code == 200 and b'id="estimates"' in page.content
    assert annotator_web.get(reverse("project-estimates", args=[project.slug])).status_code == 403
    # The model comparison page shows the version's pool estimates beside its validation ones.
    models_page = lead_web.get(reverse("project-models", args=[project.slug]))
    assert b'class="pool-estimates"' in models_page.content
