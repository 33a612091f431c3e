"""The whole loop with a REAL Celery worker process, a real Redis broker and the test PostgreSQL.

An engineer imports images through the import page (a first batch queued for labeling, a second
left in the pool), cold-start recall queues neighbours of two seeds, an annotator labels through
the queue API (two answers deliberately wrong), the engineer trains the cascade and promotes
it, scores the pool and fills the queue by selection, noise detection sends suspects to the
leads' re-review queue, a lead flips one through the review API, and a retrain on the cleaned
labels stores a second model version with metrics. Every check reads the database.

Tiny on purpose (toy 24 px images, small CNNs, 1-2 epochs) so it fits in a couple of minutes
on two shared cores.
"""

from __future__ import annotations

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from labeling.models import Image, Job, Label, ModelVersion, Queue, QueueItem, Score, Strategy
from labeling.selectors.labels import current_labels
from tests.factories import make_project, make_user
from tests.labeling.test_training import class_png
from tests.labeling.worker import (  # noqa: F401, F811 (fixtures)
    celery_worker,
    wait_for,
    worker_storage,
    worker_var_dir,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUEUED_POS, QUEUED_NEG = 20, 30  # first import, queued for labeling
POOL_POS, POOL_NEG = 10, 40  # second import, left in the pool for recall and selection
TRAIN = {
    "preset": "cpu_tiny",
    "epochs": 2,
    "batch_a": 8,
    "hard_b": 4,
    "min_per_class": 4,
    "lp_epochs": 1,
}


def _upload(client: Client, project, files: list[tuple[str, bytes]], *, queue: bool) -> None:
    data = {"files": [SimpleUploadedFile(name, content, "image/png") for name, content in files]}
    if queue:
        data["add_to_queue"] = "on"
    response = client.post(reverse("project-import", kwargs={"slug": project.slug}), data)
    assert response.status_code == 200, response.content[:500]


def _run(engineer_api: APIClient, project, kind: str, params: dict, worker) -> Job:
    response = engineer_api.post(
        reverse("api-project-job-create", kwargs={"slug": project.slug}),
        {"kind": kind, "params": params},
        format="json",
    )
    assert response.status_code == 201, response.json()
    job = Job.objects.get(pk=response.json()["id"])

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(finished, timeout=240, worker=worker, what=f"the {kind} job")
    assert job.status == Job.Status.SUCCEEDED, (job.error, worker.log())
    return job


def _label_queue(annotator_api: APIClient, queue: Queue, wrong: set[int]) -> int:
    """Label everything the queue serves, answering from the file's true class (flipped for
    the images in `wrong`). Returns how many labels were submitted."""
    done = 0
    while True:
        response = annotator_api.post(
            reverse("api-queue-next", kwargs={"pk": queue.pk}), {"count": 50}, format="json"
        )
        assert response.status_code == 200, response.json()
        leases = response.json()["leases"]
        if not leases:
            return done
        for lease in leases:
            image = Image.objects.get(pk=lease["image"]["id"])
            truth = image.metadata["true_label"]
            if image.pk in wrong:
                truth = "normal" if truth == "disgusting" else "disgusting"
            response = annotator_api.post(
                reverse("api-lease-submit", kwargs={"pk": lease["lease"]}),
                {"value": truth},
                format="json",
            )
            assert response.status_code == 200, response.json()
            done += 1


def test_the_active_learning_loop_end_to_end(celery_worker, worker_storage):  # noqa: F811
    started = time.monotonic()
    engineer, lead, annotator = (
        make_user("site_engineer"),
        make_user("lead"),
        make_user("annotator"),
    )
    project = make_project(members=[lead, annotator], validation_fraction=0.3)
    engineer_web = Client()
    engineer_web.force_login(engineer)
    engineer_api, lead_api, annotator_api = APIClient(), APIClient(), APIClient()
    engineer_api.force_authenticate(engineer)
    lead_api.force_authenticate(lead)
    annotator_api.force_authenticate(annotator)

    # 1. Import: the true class goes into the file name only; the test keeps it in metadata
    # (as `manage.py demo` does) so the simulated annotator can answer.
    first = [
        (f"q-{i}.png", class_png(i < QUEUED_POS, seed=i)) for i in range(QUEUED_POS + QUEUED_NEG)
    ]
    second = [
        (f"p-{i}.png", class_png(i < POOL_POS, seed=1000 + i)) for i in range(POOL_POS + POOL_NEG)
    ]
    _upload(engineer_web, project, first, queue=True)
    _upload(engineer_web, project, second, queue=False)
    assert Image.objects.filter(project=project).count() == len(first) + len(second)
    for image in Image.objects.filter(project=project):
        index = int(image.source.split("-")[1].split(".")[0])
        positive = index < (QUEUED_POS if image.source.startswith("q-") else POOL_POS)
        image.metadata = {"true_label": "disgusting" if positive else "normal"}
        image.save(update_fields=["metadata"])
    labeling = Queue.objects.get(project=project, kind=Queue.Kind.LABELING)

    # 2. Cold start: two positive seeds from the first batch recall neighbours from the pool.
    second_batch = set(
        Image.objects.filter(project=project, source__startswith="p-").values_list("pk", flat=True)
    )
    seeds = list(
        Image.objects.filter(
            project=project,
            source__startswith="q-",
            split=Image.Split.POOL,
            metadata__true_label="disgusting",
        ).values_list("pk", flat=True)[:2]
    )
    job = _run(
        engineer_api,
        project,
        Job.Kind.COLD_START,
        {"seed_image_ids": seeds, "k": 8, "batch_size": 16},
        celery_worker,
    )
    recalled = set(
        QueueItem.objects.filter(queue=labeling, strategy=Strategy.COLD_START).values_list(
            "image_id", flat=True
        )
    )
    assert job.result["queued"] == len(recalled) == 8
    assert not recalled & set(seeds)
    # Images of the first batch were waiting in the queue: recalled, they are moved (issue 12);
    # the second batch's are added.
    assert job.result["added"] == len(recalled & second_batch)
    assert job.result["moved"] == len(recalled - second_batch)
    # The seeds are the engineer's positive labels now, out of the annotators' queue.
    assert job.result["seeds_labeled"] == 2
    assert set(
        Label.objects.filter(annotator=engineer, strategy=Strategy.SEED).values_list(
            "image_id", flat=True
        )
    ) == set(seeds)

    # 3. Labels through the API, two of them deliberately wrong (negatives called positive).
    wrong = set(
        Image.objects.filter(
            project=project,
            source__startswith="q-",
            split=Image.Split.POOL,
            metadata__true_label="normal",
        ).values_list("pk", flat=True)[:2]
    )
    labeled = _label_queue(annotator_api, labeling, wrong)
    assert labeled == labeling.items.exclude(status=QueueItem.Status.REMOVED).count()
    # The validation split waits in its own queue (filled at import, whatever the box said).
    validation_queue = Queue.objects.get(project=project, kind=Queue.Kind.VALIDATION)
    validation_images = Image.objects.filter(project=project, split=Image.Split.VALIDATION)
    assert validation_queue.items.count() == validation_images.count()
    labeled += _label_queue(annotator_api, validation_queue, wrong=set())
    assert Label.objects.filter(project=project, annotator=annotator).count() == labeled

    # 4. Train v1 and promote it.
    job = _run(engineer_api, project, Job.Kind.TRAIN_CASCADE, TRAIN, celery_worker)
    v1 = ModelVersion.objects.get(pk=job.result["model_version_id"])
    assert v1.status == ModelVersion.Status.READY and v1.checkpoint and v1.pr_curve
    assert v1.data_snapshot["excluded_suspects"] == 0
    assert v1.metrics["cascade"]["ap"] is not None
    response = engineer_api.post(
        reverse("api-model-version-promote", kwargs={"slug": project.slug, "pk": v1.pk})
    )
    assert response.status_code == 200, response.json()

    # 5. Score the pool, then fill the queue by selection.
    job = _run(engineer_api, project, Job.Kind.SCORE_POOL, {"shard_size": 32}, celery_worker)
    # Every image of the project is scored, labeled and validation ones too (the lead's page
    # shows them); selection below still queues only unlabeled pool images.
    every_image = Image.objects.filter(project=project).count()
    assert Score.objects.filter(model_version=v1).count() == every_image == job.result["scored"]
    job = _run(engineer_api, project, Job.Kind.SELECT, {"k_band": 5, "k_loss": 5}, celery_worker)
    selected = QueueItem.objects.filter(
        queue=labeling,
        strategy__in=[
            Strategy.CONFIDENCE_BAND,
            Strategy.LOSS_RANKED,
            Strategy.BAND_AND_LOSS,
            Strategy.RANDOM_AUDIT,
        ],
    )
    assert selected.count() == job.result["total"] > 0
    assert selected.filter(strategy__in=[Strategy.LOSS_RANKED, Strategy.BAND_AND_LOSS]).exists()
    _label_queue(annotator_api, labeling, wrong)
    assert not labeling.items.filter(status=QueueItem.Status.OPEN).exists()

    # 6. Noise detection: suspects reach the leads' re-review queue; a lead flips one.
    review_items = QueueItem.objects.filter(
        queue__project=project, queue__kind=Queue.Kind.REVIEW, strategy=Strategy.NOISE_REVIEW
    )
    _run(
        engineer_api,
        project,
        Job.Kind.DETECT_NOISE,
        {
            "pretrain_epochs": 2,
            "cycle_length": 2,
            "n_cycles": 1,
            "fraction": 0.1,
            "batch_size": 16,
            "input_size": 16,
        },
        celery_worker,
    )
    flagged = review_items.count()
    assert flagged >= 1
    response = lead_api.get(reverse("api-review-next", kwargs={"slug": project.slug}))
    assert response.status_code == 200
    item = response.json()["item"]
    image = Image.objects.get(pk=item["image_id"])
    before = current_labels(project=project)[image.pk]
    flipped_to = "normal" if before == "disgusting" else "disgusting"
    response = lead_api.post(
        reverse("api-review-resolve", kwargs={"pk": item["id"]}),
        {"confirm": False, "value": flipped_to},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert current_labels(project=project)[image.pk] == flipped_to
    assert Label.objects.filter(image=image, kind=Label.Kind.CORRECTION, annotator=lead).exists()
    still_open = review_items.filter(status=QueueItem.Status.OPEN).count()
    assert still_open == flagged - 1

    # 7. Retrain on the cleaned labels: a second version, measured on the same validation split.
    job = _run(engineer_api, project, Job.Kind.TRAIN_CASCADE, {**TRAIN, "seed": 1}, celery_worker)
    v2 = ModelVersion.objects.get(pk=job.result["model_version_id"])
    assert v2.pk != v1.pk and v2.name == "v2"
    assert v2.metrics["cascade"]["ap"] is not None and v2.pr_curve
    assert v2.data_snapshot["validation_size"] == v1.data_snapshot["validation_size"]
    # The unresolved suspects (in the pool) train stage 1 but are kept from stage 2; the flipped
    # image trains with its new label.
    open_pool_suspects = review_items.filter(
        status=QueueItem.Status.OPEN, image__split=Image.Split.POOL
    ).count()
    assert v2.data_snapshot["excluded_suspects"] == open_pool_suspects
    pool_labels = current_labels(project=project, split=Image.Split.POOL)
    expected_pos = sum(1 for value in pool_labels.values() if value == "disgusting")
    assert v2.data_snapshot["labeled_positive"] == expected_pos
    assert all(epoch["stage2_excluded"] <= open_pool_suspects for epoch in v2.metrics["history"])
    assert job.result["comparison"]["old"]["name"] == v1.name
    project.refresh_from_db()
    assert project.active_model_version_id == v1.pk  # promotion stays an engineer's decision
    elapsed = time.monotonic() - started
    assert elapsed < 600, f"the loop took {elapsed:.0f} s"
