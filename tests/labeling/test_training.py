"""The train_cascade job: data gathering (suspects excluded, validation frozen), a real (tiny)
training run that stores a loadable ModelVersion with metrics and a PR curve, parameter and
too-few-labels errors, automatic promotion, and cancel through a real worker."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from PIL import Image as PILImage

from labeling.ml.cascade import load_cascade
from labeling.ml.datasets import ImageRow
from labeling.ml.scoring import score_rows
from labeling.models import Image, Job, Label, ModelVersion, Queue, QueueItem
from labeling.services.jobs import job_cancel, job_create
from labeling.services.training import train_cascade_params_clean, train_cascade_run
from tests.factories import make_project, make_user
from tests.labeling.worker import (  # noqa: F401, F811 (fixtures)
    celery_worker,
    wait_for,
    worker_storage,
    worker_var_dir,
)

TINY = {
    "preset": "cpu_tiny",
    "epochs": 2,
    "batch_a": 8,
    "hard_b": 4,
    "min_per_class": 6,
    "lp_epochs": 1,
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two cores shared by the whole team: inline training uses one thread, like the worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def class_png(positive: bool, seed: int, size: int = 24) -> bytes:
    """A learnable toy task: positives are reddish with a bright blob, negatives bluish."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    if positive:
        pixels[..., 0] += 150
        x, y = rng.integers(2, size - 8, size=2)
        pixels[y : y + 6, x : x + 6] = 250
    else:
        pixels[..., 2] += 150
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def class_image(project, *, positive: bool, seed: int, split: str = "pool") -> Image:
    data = class_png(positive, seed)
    content_hash = hashlib.sha256(data).hexdigest()
    image = Image(
        project=project,
        content_hash=content_hash,
        width=24,
        height=24,
        format="PNG",
        byte_size=len(data),
        source=f"toy-{seed}.png",
        split=split,
        metadata={"true_label": "disgusting" if positive else "normal"},
    )
    image.file.save(f"{content_hash}.png", ContentFile(data), save=False)
    image.save()
    return image


def labeled_world(*, pool_pos=16, pool_neg=24, val_pos=6, val_neg=10, unlabeled=16, seed0=0):
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    images = {"pool": [], "validation": [], "unlabeled": []}
    seed = seed0
    for split, n_pos, n_neg in (("pool", pool_pos, pool_neg), ("validation", val_pos, val_neg)):
        for i in range(n_pos + n_neg):
            positive = i < n_pos
            image = class_image(project, positive=positive, seed=seed, split=split)
            seed += 1
            Label.objects.create(
                project=project,
                image=image,
                annotator=annotator,
                value="disgusting" if positive else "normal",
            )
            images[split].append(image)
    for i in range(unlabeled):
        images["unlabeled"].append(class_image(project, positive=i % 5 == 0, seed=seed))
        seed += 1
    return project, annotator, images


@pytest.mark.django_db
def test_params_defaults_and_errors():
    project = make_project()
    cleaned = train_cascade_params_clean(project=project, params={})
    assert cleaned["preset"] == "cpu_transfer" and cleaned["input_size"] == 112
    assert cleaned["target_precision"] == 0.95 and cleaned["cbam"] is True
    assert cleaned["auto_promote_precision"] is None
    full = train_cascade_params_clean(project=project, params={"preset": "full", "cbam": "off"})
    assert full["input_size"] == 224 and full["cbam"] is False
    for bad, field in [
        ({"preset": "huge"}, "preset"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_a": 8, "hard_b": 9}, "hard_b"),
        ({"target_precision": 1.5}, "target_precision"),
        ({"auto_promote_precision": 0.9}, "auto_promote_precision"),
        ({"cbam": "maybe"}, "cbam"),
        ({"learning_rate": 0.1}, "params"),
    ]:
        with pytest.raises(ValidationError) as info:
            train_cascade_params_clean(project=project, params=bad)
        assert field in info.value.message_dict, (bad, info.value.message_dict)


@pytest.mark.django_db
def test_too_few_labels_fails_the_job_with_a_clear_error():
    engineer = make_user("site_engineer")
    project, _annotator, _images = labeled_world(pool_pos=3, pool_neg=12, unlabeled=0)
    job = job_create(project=project, kind=Job.Kind.TRAIN_CASCADE, params=TINY, created_by=engineer)
    train_cascade_run(job_id=job.pk)  # inline: the same body the worker runs
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "need at least 6 positive and 6 negative labels" in job.error
    assert "have 3 positive and 12 negative" in job.error
    assert not ModelVersion.objects.filter(project=project).exists()


@pytest.mark.django_db
@pytest.mark.slow
def test_training_stores_a_comparable_version_suspects_kept_from_stage2_validation_unseen():
    engineer = make_user("site_engineer")
    project, annotator, images = labeled_world()
    # Two pool images flagged for re-review and not yet resolved: they train stage 1 but never
    # reach stage 2 as hard examples.
    review = Queue.objects.create(project=project, name="Re-review", kind=Queue.Kind.REVIEW)
    suspects = images["pool"][:1] + images["pool"][-1:]
    for image in suspects:
        QueueItem.objects.create(queue=review, image=image, strategy="noise_review")
    # A resolved review item does not exclude its image.
    QueueItem.objects.create(queue=review, image=images["pool"][5], status=QueueItem.Status.DONE)

    job = job_create(project=project, kind=Job.Kind.TRAIN_CASCADE, params=TINY, created_by=engineer)
    train_cascade_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    version = ModelVersion.objects.get(project=project)
    assert job.model_version_id == version.pk
    assert version.status == ModelVersion.Status.READY and version.checkpoint
    assert version.data_snapshot["labeled_positive"] == 16
    assert version.data_snapshot["labeled_negative"] == 24
    assert version.data_snapshot["excluded_suspects"] == 2
    assert version.data_snapshot["validation_size"] == 16
    assert version.data_snapshot["validation_positive"] == 6
    assert version.data_snapshot["unlabeled"] == 16
    assert version.training_seconds > 0
    with version.pr_curve.open("rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

    metrics = version.metrics
    assert metrics["validation"] == {"size": 16, "positives": 6, "negatives": 10, "unreadable": 0}
    assert metrics["target_precision"] == 0.95
    assert metrics["thresholds"]["found"] is True
    assert "chosen on the whole validation split" in metrics["thresholds"]["rule"]
    for stage in ("stage1", "stage2", "cascade"):
        assert metrics[stage]["tp"] + metrics[stage]["fn"] == 6 == metrics[stage]["positives"]
        low, high = metrics[stage]["recall_ci"]
        assert 0.0 <= low <= metrics[stage]["recall"] <= high <= 1.0
    # Cross-fitted: two folds, each decided by thresholds chosen on the other.
    folds = metrics["evaluation"]["folds"]
    assert [fold["reported_on"] for fold in folds] == [8, 8]
    assert sum(fold["reported_on_positives"] for fold in folds) == 6
    # Six validation positives cannot show a precision of 0.95: the Wilson interval of 6/6 starts
    # near 0.61, so the target is not called reached whatever the point estimate.
    assert metrics["target"]["reached"] is False
    assert metrics["target"]["precision_lower"] < 0.95
    # The toy task (reddish with a blob vs bluish) is easy: a cascade that learned anything
    # separates it; an untrained one scores about the prevalence (6/16).
    assert metrics["cascade"]["ap"] >= 0.9
    assert metrics["cascade"]["precision"] >= 0.95
    assert len(metrics["history"]) == 2
    assert metrics["mean_teacher"] is True
    # Each epoch kept the two suspects (if labeled and in a batch) away from stage 2.
    assert all(epoch["stage2_excluded"] == 2 for epoch in metrics["history"])

    # The stored thresholds and metrics are the checkpoint's: recompute the cascade's decision
    # on validation from the loaded networks.
    cascade = load_cascade(version, device="cpu")
    assert cascade.thresholds == (
        pytest.approx(metrics["thresholds"]["stage1"], abs=1e-5),
        pytest.approx(metrics["thresholds"]["stage2"], abs=1e-5),
    )
    assert cascade.loss_prediction is not None
    outcome = score_rows(
        cascade,
        [ImageRow(i.pk, i.file.name) for i in images["validation"]],
        batch_size=16,
        num_workers=0,
    )
    truth = {i.pk: i.metadata["true_label"] == "disgusting" for i in images["validation"]}
    # The reported counts are cross-fitted; the deployed pair's own counts on these images are
    # kept apart (in_sample_counts), and the checkpoint reproduces them. A threshold is one of
    # the validation scores, so a score recomputed by another batch can land a float's width
    # either side of it: compare with that tolerance.
    t1, t2 = cascade.thresholds
    decided = {r.image_id: r.stage1 >= t1 - 1e-5 and r.stage2 >= t2 - 1e-5 for r in outcome.records}
    assert all(r.decision == decided[r.image_id] for r in outcome.records if r.decision)
    tp = sum(1 for i, d in decided.items() if d and truth[i])
    fp = sum(1 for i, d in decided.items() if d and not truth[i])
    in_sample = metrics["thresholds"]["in_sample_counts"]
    assert tp == in_sample["tp"] and fp == in_sample["fp"]
    assert in_sample["tp"] + in_sample["fn"] == metrics["cascade"]["positives"]

    # The job result compares with the active version (none yet) and did not promote.
    assert job.result["model_version"] == version.name
    assert job.result["comparison"]["old"] is None
    assert job.result["promoted"] is False
    project.refresh_from_db()
    assert project.active_model_version is None


@pytest.mark.django_db
@pytest.mark.slow
def test_automatic_promotion_when_targets_are_met_and_comparison_with_the_active():
    engineer = make_user("site_engineer")
    project, _annotator, _images = labeled_world(seed0=5000)
    first = job_create(
        project=project,
        kind=Job.Kind.TRAIN_CASCADE,
        params={**TINY, "epochs": 1, "auto_promote_precision": 0.0, "auto_promote_recall": 0.0},
        created_by=engineer,
    )
    train_cascade_run(job_id=first.pk)
    first.refresh_from_db()
    assert first.status == Job.Status.SUCCEEDED, first.error
    project.refresh_from_db()
    v1 = ModelVersion.objects.get(pk=first.result["model_version_id"])
    # Targets of 0 are met by any measured precision and recall.
    assert v1.metrics["cascade"]["precision"] is not None
    assert first.result["promoted"] is True
    assert project.active_model_version_id == v1.pk and v1.promoted_at is not None

    # Unreachable targets: stored, compared with the active version, not promoted.
    second = job_create(
        project=project,
        kind=Job.Kind.TRAIN_CASCADE,
        params={
            **TINY,
            "seed": 1,
            "auto_promote_precision": 1.0,
            "auto_promote_recall": 1.0,
            "target_precision": 0.5,
        },
        created_by=engineer,
    )
    train_cascade_run(job_id=second.pk)
    second.refresh_from_db()
    assert second.status == Job.Status.SUCCEEDED, second.error
    v2 = ModelVersion.objects.get(pk=second.result["model_version_id"])
    comparison = second.result["comparison"]
    assert comparison["old"]["name"] == v1.name
    assert comparison["new"]["name"] == v2.name != v1.name
    assert comparison["delta"]["ap"] == pytest.approx(
        v2.metrics["cascade"]["ap"] - v1.metrics["cascade"]["ap"], abs=1e-5
    )
    # Targets count as met on the lower bounds of the intervals, never on a point estimate: a
    # Wilson interval's lower bound is below 1 for any finite count, so 1.0 is never met.
    assert (
        v2.metrics["cascade"]["precision_ci"] is None
        or v2.metrics["cascade"]["precision_ci"][0] < 1.0
    )
    assert second.result["promoted"] is False
    project.refresh_from_db()
    assert project.active_model_version_id == v1.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_cancel_stops_training_through_a_real_worker(celery_worker, worker_storage):  # noqa: F811
    engineer = make_user("site_engineer")
    project, _annotator, _images = labeled_world(seed0=9000)
    job = job_create(
        project=project,
        kind=Job.Kind.TRAIN_CASCADE,
        params={**TINY, "epochs": 200},
        created_by=engineer,
    )

    def in_training() -> bool:
        job.refresh_from_db()
        return job.stage.startswith("training epoch")

    wait_for(in_training, timeout=90, worker=celery_worker, what="the first epoch")
    job_cancel(job=job, by=engineer)
    wait_for(
        lambda: job.refresh_from_db() or job.is_finished,
        timeout=60,
        worker=celery_worker,
        what="the cancel",
    )
    assert job.status == Job.Status.CANCELLED
    assert not ModelVersion.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_the_jobs_page_starts_a_training_job_with_its_form_fields():
    from django.test import Client
    from django.urls import reverse

    project = make_project()
    client = Client()
    client.force_login(make_user("site_engineer"))
    page = client.get(reverse("project-jobs", kwargs={"slug": project.slug}))
    assert 'id="start-train-cascade"' in page.content.decode()
    response = client.post(
        reverse("project-job-start", kwargs={"slug": project.slug}),
        {"kind": "train_cascade", "preset": "full", "cbam": "false", "epochs": "7", "lr": ""},
    )
    assert response.status_code == 302
    job = Job.objects.get(project=project, kind=Job.Kind.TRAIN_CASCADE)
    assert job.params["preset"] == "full" and job.params["input_size"] == 224
    assert job.params["cbam"] is False and job.params["epochs"] == 7
    assert job.params["lr"] == 0.01  # empty field: the full preset's default (mlcore.presets)
    response = client.post(
        reverse("project-job-start", kwargs={"slug": project.slug}),
        {"kind": "train_cascade", "hard_b": "64", "batch_a": "8"},
        follow=True,
    )
    assert "hard_b (B) cannot exceed batch_a (A)" in response.content.decode()
    assert Job.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_simulate_annotators_labels_from_true_classes_with_seeded_noise():
    from django.core.management import call_command

    from labeling.services.projects import project_default_queues_ensure
    from labeling.services.queues import queue_items_add

    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    queue, _review = project_default_queues_ensure(project=project)
    images = [class_image(project, positive=i % 4 == 0, seed=20_000 + i) for i in range(30)]
    no_truth = class_image(project, positive=False, seed=30_000)
    no_truth.metadata = {}
    no_truth.save()
    queue_items_add(queue=queue, images=[no_truth, *images], strategy="manual")
    out = io.StringIO()
    call_command(
        "simulate_annotators",
        project.slug,
        labels=20,
        noise=0.25,
        seed=3,
        username=annotator.username,
        stdout=out,
    )
    text = out.getvalue()
    assert text.startswith("SIMULATION:")
    labels = Label.objects.filter(project=project, annotator=annotator)
    assert labels.count() == 20
    wrong = [
        label
        for label in labels.select_related("image")
        if label.value != label.image.metadata["true_label"]
    ]
    assert 0 < len(wrong) < 20
    assert f"{len(wrong)} answers deliberately wrong (noise 0.25, seed 3)" in text
    assert "1 skipped without a true label" in text
    assert not labels.filter(image=no_truth).exists()
    assert all(label.queue_id == queue.pk and label.strategy == "manual" for label in labels)
    # The same seed gives the same answers.
    project2 = make_project(members=[annotator])
    queue2, _ = project_default_queues_ensure(project=project2)
    images2 = [class_image(project2, positive=i % 4 == 0, seed=20_000 + i) for i in range(30)]
    queue_items_add(queue=queue2, images=images2, strategy="manual")
    call_command(
        "simulate_annotators",
        project2.slug,
        labels=20,
        noise=0.25,
        seed=3,
        username=annotator.username,
        stdout=io.StringIO(),
    )
    first = [(label.image.source, label.value) for label in labels.order_by("id")]
    second = [
        (label.image.source, label.value)
        for label in Label.objects.filter(project=project2).select_related("image").order_by("id")
    ]
    assert first == second


@pytest.mark.django_db
def test_simulated_rare_class_mistakes_miss_positives_and_rarely_raise_false_alarms():
    from labeling.management.commands.simulate_annotators import simulate_labeling
    from labeling.services.projects import project_default_queues_ensure
    from labeling.services.queues import queue_items_add

    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    queue, _review = project_default_queues_ensure(project=project)
    images = [class_image(project, positive=i % 5 == 0, seed=40_000 + i) for i in range(40)]
    queue_items_add(queue=queue, images=images, strategy="manual")
    report = simulate_labeling(
        project=project, annotator=annotator, labels=40, miss_rate=0.9, false_alarm_rate=0.0
    )
    labels = Label.objects.filter(project=project).select_related("image")
    truth = {label.image_id: label.image.metadata["true_label"] for label in labels}
    positive = project.positive_class
    missed = [x for x in labels if truth[x.image_id] == positive and x.value != positive]
    false_alarms = [x for x in labels if truth[x.image_id] != positive and x.value == positive]
    assert len(missed) >= 4 and not false_alarms  # 8 positives, 90% missed; no negative flipped
    assert sorted(report.noisy_image_ids) == sorted(x.image_id for x in missed)


@pytest.mark.django_db
@pytest.mark.slow
def test_the_job_and_the_transfer_benchmark_run_the_same_pipeline_function():
    """The train_cascade job (default preset, pretrained) and `python -m bench transfer` must
    both train through mlcore.pipeline.fit_cascade: each records the function that really ran
    (a decorator stamps the result), so a copy of the training code in either place fails."""
    from bench import transfer

    engineer = make_user("site_engineer")
    project, _annotator, _images = labeled_world()
    params = {"epochs": 1, "batch_a": 8, "hard_b": 4, "min_per_class": 6, "lp_epochs": 1}
    job = job_create(
        project=project, kind=Job.Kind.TRAIN_CASCADE, params=params, created_by=engineer
    )
    train_cascade_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    version = ModelVersion.objects.get(project=project)
    assert job.params["preset"] == "cpu_transfer"
    assert version.metrics["preset"] == "cpu_transfer"
    assert "ImageNet" in version.metrics["started_from"]["stage1"]
    assert version.metrics["baseline"]["function"] == "mlcore.probe.fit_linear_probe"
    assert version.config["temperatures"][0] > 0

    figures = transfer.run(
        quick=True,
        seed=0,
        pool=400,
        validation=200,
        test=200,
        seeds=1,
        views=1,
        epochs=1,
        scratch_preset="cpu_tiny",
        scratch_epochs=1,
    )
    (task,) = figures["tasks"].values()
    (record,) = task["runs"]
    assert record["cpu_transfer"]["function"] == version.metrics["pipeline"]
    assert record["cpu_tiny"]["function"] == version.metrics["pipeline"]
    assert version.metrics["pipeline"] == "mlcore.pipeline.fit_cascade"
