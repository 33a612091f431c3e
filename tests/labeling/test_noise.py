"""Noise detection (O2U) over a project's labels: planted mislabels reach the lead's re-review
queue with rank and score and a stored Grad-CAM heat map, re-running adds nothing twice, the
plain loss ranking is an option, the job runs the same detector as the benchmark, bad
parameters are refused, progress is per epoch, and cancel stops a running job on a real
worker."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from labeling.models import Image, Job, Label, Queue, QueueItem, Strategy
from labeling.services.jobs import job_cancel, job_create
from labeling.services.noise import detect_noise_params_clean, detect_noise_run
from tests.factories import make_project, make_user
from tests.labeling import worker as loop_worker
from tests.labeling.worker import make_cascade_version, wait_for

celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir


def textured_png(seed: int, *, bright: bool) -> bytes:
    """A 32 px image: noise around a dark red (class normal) or a bright blue (class
    disgusting) mean, so a small CNN separates the two classes within a few epochs."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 60, 40] if not bright else [40, 90, 220], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def add_image(project, data: bytes, *, source: str) -> Image:
    content_hash = hashlib.sha256(data).hexdigest()
    image = Image(
        project=project,
        content_hash=content_hash,
        width=32,
        height=32,
        format="PNG",
        byte_size=len(data),
        source=source,
        split=Image.Split.POOL,
    )
    image.file.save(f"{content_hash}.png", ContentFile(data), save=False)
    image.save()
    return image


def labeled_pool(*, n: int = 60, flipped: int = 3, annotators=None):
    """n pool images, half of each class, each labeled by an annotator; the first `flipped`
    bright ones carry the wrong label. Returns (project, planted image ids, annotators)."""
    annotators = annotators or [make_user("annotator"), make_user("annotator")]
    project = make_project(members=annotators)
    planted = []
    for i in range(n):
        bright = i % 2 == 1
        image = add_image(project, textured_png(i, bright=bright), source=f"tex-{i}.png")
        value = "disgusting" if bright else "normal"
        if bright and len(planted) < flipped:
            value = "normal"
            planted.append(image.pk)
        Label.objects.create(
            project=project, image=image, annotator=annotators[i % len(annotators)], value=value
        )
    return project, planted, annotators


FAST = {"pretrain_epochs": 6, "cycle_length": 3, "n_cycles": 2, "batch_size": 16, "lr": 0.05}


@pytest.mark.django_db
def test_planted_mislabels_go_to_the_review_queue_with_rank_and_score():
    project, planted, _ = labeled_pool()
    version = make_cascade_version(project)  # active: the job also makes heat maps
    engineer = make_user("site_engineer")
    job = job_create(project=project, kind=Job.Kind.DETECT_NOISE, params=FAST, created_by=engineer)
    assert job.params["fraction"] == 0.05 and job.params["backbone"] == "small_cnn"
    assert job.params["method"] == "o2u" and job.params["explain"] is True
    detect_noise_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["samples"] == 60 and job.result["suspects"] == 3  # 5% of 60
    assert job.result["method"] == "o2u"
    assert job.result["pipeline_function"] == "mlcore.o2u.find_label_noise"
    # One Grad-CAM heat map per flagged image, from the active version, stored and recorded.
    assert job.result["heatmaps"] == 3 and job.result["heatmap_error_count"] == 0, job.result
    assert any(f"3 heat maps from {version.name}" in line for line in job.log), job.log
    # Progress was reported per epoch: 6 pre-training + 6 cyclic epochs.
    epoch_lines = [line for line in job.log if " epoch " in line]
    assert len(epoch_lines) == 12, job.log
    items = list(
        QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.REVIEW).order_by(
            "-priority"
        )
    )
    assert len(items) == 3
    assert all(item.strategy == Strategy.NOISE_REVIEW for item in items)
    assert [item.details["rank"] for item in items] == [1, 2, 3]
    scores = [item.details["score"] for item in items]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 1.0  # above an average sample
    assert all(item.details["job_id"] == job.pk for item in items)
    found = {item.image_id for item in items} & set(planted)
    # Three planted among 60: chance would put ~0.15 of them in a top 3.
    assert len(found) >= 2, (planted, [(i.image_id, i.details) for i in items])
    for item in items:
        if item.image_id in planted:
            assert item.details["label"] == "normal"
        record = item.details["gradcam"]
        assert record["model_version_id"] == version.pk
        with default_storage.open(record["file"], "rb") as handle:
            assert PILImage.open(handle).format == "PNG"

    # Re-running flags the same images and adds nothing twice.
    again = job_create(
        project=project, kind=Job.Kind.DETECT_NOISE, params=FAST, created_by=engineer
    )
    detect_noise_run(job_id=again.pk)
    again.refresh_from_db()
    assert again.status == Job.Status.SUCCEEDED, again.error
    assert again.result["queued"] + again.result["already_queued"] == 3
    assert QueueItem.objects.filter(queue__project=project).count() == 3
    assert again.result["heatmaps"] == 0 and again.result["heatmaps_existing"] == 3


@pytest.mark.django_db
def test_plain_loss_ranking_skips_the_cyclic_phase_and_heat_maps_can_be_off():
    project, planted, _ = labeled_pool()
    make_cascade_version(project)
    engineer = make_user("site_engineer")
    job = job_create(
        project=project,
        kind=Job.Kind.DETECT_NOISE,
        params={**FAST, "method": "loss", "explain": False},
        created_by=engineer,
    )
    detect_noise_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["method"] == "loss" and job.result["suspects"] == 3
    assert len([line for line in job.log if " epoch " in line]) == 6  # pre-training only
    items = QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.REVIEW)
    assert len({item.image_id for item in items} & set(planted)) >= 2
    assert job.result["heatmaps"] == 0 and not any("gradcam" in i.details for i in items)


@pytest.mark.django_db
def test_the_job_and_the_benchmark_run_the_same_detector():
    """bench/noise.py must measure the function the job runs, not a copy of it."""
    from bench import noise as bench_noise

    project, _planted, _ = labeled_pool(n=20, flipped=1)
    job = job_create(
        project=project,
        kind=Job.Kind.DETECT_NOISE,
        params={**FAST, "pretrain_epochs": 1, "n_cycles": 1, "explain": False},
        created_by=make_user("site_engineer"),
    )
    detect_noise_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(16, 28, 28), dtype=np.uint8)
    budget = bench_noise.QUICK
    measured = {
        bench_noise._find(
            images,
            np.arange(16) % 10,
            num_classes=10,
            method=method,
            pretrain_epochs=1,
            budget=budget,
            seed=0,
        ).function
        for method in ("o2u", "loss")
    }
    assert measured == {job.result["pipeline_function"]}


@pytest.mark.django_db
def test_bad_parameters_and_too_few_labels_are_refused_clearly():
    project, _, _ = labeled_pool(n=6, flipped=0)
    for params, field in [
        ({"fraction": 2}, "fraction"),
        ({"backbone": "vgg"}, "backbone"),
        ({"pretrain_epochs": "many"}, "pretrain_epochs"),
        ({"cycle_length": 0}, "cycle_length"),
        ({"epochs": 3}, "params"),
    ]:
        with pytest.raises(ValidationError) as error:
            detect_noise_params_clean(project=project, params=params)
        assert field in error.value.message_dict
    engineer = make_user("site_engineer")
    job = job_create(project=project, kind=Job.Kind.DETECT_NOISE, params=FAST, created_by=engineer)
    detect_noise_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "only 6 labeled pool images" in job.error
    assert not QueueItem.objects.filter(queue__project=project).exists()


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_noise_job_on_a_real_worker(celery_worker, worker_storage):
    project, _, _ = labeled_pool(n=40, flipped=2)
    engineer = make_user("site_engineer")
    job = job_create(
        project=project,
        kind=Job.Kind.DETECT_NOISE,
        params={"pretrain_epochs": 200, "cycle_length": 5, "n_cycles": 2, "batch_size": 8},
        created_by=engineer,
    )
    wait_for(
        lambda: (
            Job.objects.get(pk=job.pk).log
            and any("epoch 2/" in line for line in Job.objects.get(pk=job.pk).log)
        ),
        timeout=120,
        worker=celery_worker,
        what="the job to report its second epoch",
    )
    job_cancel(job=Job.objects.get(pk=job.pk), by=engineer)
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status == Job.Status.CANCELLED,
        timeout=60,
        worker=celery_worker,
        what="the job to stop",
    )
    job.refresh_from_db()
    assert job.percent < 50
    assert not QueueItem.objects.filter(queue__project=project).exists()
