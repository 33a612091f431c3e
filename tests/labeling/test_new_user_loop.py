"""The loop as a new user meets it (issue 12), with a REAL Celery worker, Redis and PostgreSQL.

An engineer creates a project through the API and imports images through the import page with
its default options (every image queued). Cold start from three seeds then puts their nearest
neighbours at the front of the labeling queue (moving the import's waiting items rather than
skipping them), records the seeds as the engineer's positive labels, and says in its result how
many items it moved and added. The frozen validation split has its own queue, filled at import
and listed first; an annotator labels it and the pool through the queue API (answers from the
files' true class: a simulation), and training succeeds without any shell step.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from labeling.models import Image, Job, Label, ModelVersion, Project, Queue, QueueItem, Strategy
from tests.factories import make_user
from tests.labeling.test_e2e import TRAIN, _label_queue, _run
from tests.labeling.test_training import class_png
from tests.labeling.worker import (  # noqa: F401, F811 (fixtures)
    celery_worker,
    wait_for,
    worker_storage,
    worker_var_dir,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POSITIVES, NEGATIVES = 24, 56
SCHEMA = {
    "classes": [
        {"key": "normal", "name": "Normal", "hotkey": "1"},
        {"key": "disgusting", "name": "Disgusting", "hotkey": "2"},
    ],
    "positive": "disgusting",
    "default": "normal",
}


def test_import_cold_start_validation_queue_and_training_as_a_new_user(
    celery_worker,  # noqa: F811
    worker_storage,  # noqa: F811
):
    engineer, annotator = make_user("site_engineer"), make_user("annotator")
    engineer_api, annotator_api = APIClient(), APIClient()
    engineer_api.force_authenticate(engineer)
    annotator_api.force_authenticate(annotator)

    # 1. Create the project (no shell) and import with the import page's default options.
    response = engineer_api.post(
        reverse("api-project-create"),
        {
            "name": "New user",
            "slug": "new-user",
            "label_schema": SCHEMA,
            "validation_fraction": 0.3,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    project = Project.objects.get(slug="new-user")
    project.members.add(annotator)
    engineer_web = Client()
    engineer_web.force_login(engineer)
    form = engineer_web.get(reverse("project-import", kwargs={"slug": project.slug})).content
    assert b'name="add_to_queue" checked' in form  # the default a new user keeps
    files = [
        SimpleUploadedFile(f"img-{i}.png", class_png(i < POSITIVES, seed=7000 + i), "image/png")
        for i in range(POSITIVES + NEGATIVES)
    ]
    response = engineer_web.post(
        reverse("project-import", kwargs={"slug": project.slug}),
        {"files": files, "add_to_queue": "on"},
    )
    assert response.status_code == 200
    images = Image.objects.filter(project=project)
    assert images.count() == POSITIVES + NEGATIVES
    for image in images:
        positive = int(image.source.split("-")[1].split(".")[0]) < POSITIVES
        image.metadata = {"true_label": "disgusting" if positive else "normal"}
        image.save(update_fields=["metadata"])
    labeling = Queue.objects.get(project=project, kind=Queue.Kind.LABELING)
    pool = images.filter(split=Image.Split.POOL)
    validation_images = images.filter(split=Image.Split.VALIDATION)
    assert labeling.items.count() == pool.count()  # every pool image waits in the queue

    # The validation split has its own queue, filled at import, listed first for annotators.
    validation = Queue.objects.get(project=project, kind=Queue.Kind.VALIDATION)
    assert set(validation.items.values_list("image_id", flat=True)) == set(
        validation_images.values_list("pk", flat=True)
    )
    assert validation_images.count() >= 10
    assert not labeling.items.filter(image__split=Image.Split.VALIDATION).exists()
    annotator_web = Client()
    annotator_web.force_login(annotator)
    home = annotator_web.get(reverse("project-detail", kwargs={"slug": project.slug}))
    text = home.content.decode()
    first, second = (
        text.index(reverse("queue-annotate", args=[project.slug, queue.pk]))
        for queue in (validation, labeling)
    )
    assert first < second
    progress = engineer_api.get(
        reverse("api-validation-progress", kwargs={"slug": project.slug})
    ).json()
    assert progress["images"] == progress["open"] == validation_images.count()
    assert progress["labeled"] == 0 and progress["not_queued"] == 0

    # 2. Cold start from three seeds: their neighbours go to the front of the queue.
    seeds = list(
        pool.filter(metadata__true_label="disgusting").order_by("pk").values_list("pk", flat=True)
    )[:3]
    job = _run(
        engineer_api,
        project,
        Job.Kind.COLD_START,
        {"seed_image_ids": seeds, "k": 8, "batch_size": 16},
        celery_worker,
    )
    result = job.result
    # Every pool image was waiting in the queue since the import: the job moved 8, added 0.
    assert (result["moved"], result["added"], result["queued"]) == (8, 0, 8)
    assert result["pool"] == pool.count() - len(seeds)
    assert "notice" not in result
    recalled = QueueItem.objects.filter(queue=labeling, strategy=Strategy.COLD_START)
    assert recalled.count() == 8
    for item in recalled:
        assert item.details["moved_from"]["strategy"] == Strategy.MANUAL
        assert item.details["job_id"] == job.pk and item.details["rank"] >= 1
    # The seeds are the engineer's positive labels, and out of the annotators' way.
    seed_labels = Label.objects.filter(image_id__in=seeds)
    assert {(lb.image_id, lb.annotator_id, lb.value, lb.strategy) for lb in seed_labels} == {
        (pk, engineer.pk, "disgusting", Strategy.SEED) for pk in seeds
    }
    assert result["seeds_labeled"] == 3
    assert not QueueItem.objects.filter(
        image_id__in=seeds, queue=labeling, status=QueueItem.Status.OPEN
    ).exists()
    # The queue serves the neighbours first.
    response = annotator_api.post(
        reverse("api-queue-next", kwargs={"pk": labeling.pk}), {"count": 8}, format="json"
    )
    assert response.status_code == 200
    served = [lease["image"]["id"] for lease in response.json()["leases"]]
    assert set(served) == set(recalled.values_list("image_id", flat=True))
    ranks = [recalled.get(image_id=image_id).details["rank"] for image_id in served]
    assert ranks == sorted(ranks)  # in the order the recall ranked them

    # 3. The annotator labels the validation queue, then the pool.
    assert _label_queue(annotator_api, validation, wrong=set()) == validation_images.count()
    progress = engineer_api.get(
        reverse("api-validation-progress", kwargs={"slug": project.slug})
    ).json()
    assert progress["labeled"] == progress["images"] and progress["open"] == 0
    assert progress["positive"] >= 1 and progress["negative"] >= 1
    _label_queue(annotator_api, labeling, wrong=set())

    # 4. Training works, with no shell step, and its figures carry their counts and intervals.
    job = _run(engineer_api, project, Job.Kind.TRAIN_CASCADE, TRAIN, celery_worker)
    version = ModelVersion.objects.get(pk=job.result["model_version_id"])
    assert version.status == ModelVersion.Status.READY
    assert version.data_snapshot["validation_size"] == validation_images.count()
    cascade = version.metrics["cascade"]
    assert cascade["positives"] == progress["positive"]
    assert version.metrics["target"]["reached"] is (
        cascade["precision_ci"] is not None and cascade["precision_ci"][0] >= 0.95
    )
