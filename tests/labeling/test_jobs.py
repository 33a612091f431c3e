"""Jobs: the status guard, progress and cancel, the Celery task options, the API and pages, and
cancelling a running scoring job on a real worker."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from labeling.models import Job, JobShard, ModelVersion, Score
from labeling.services.jobs import (
    MAX_LOG_LINES,
    JobCancelled,
    job_cancel,
    job_create,
    job_progress,
    job_start,
)
from tests.factories import make_image, make_project, make_user
from tests.labeling import worker as loop_worker
from tests.labeling.worker import make_cascade_version, wait_for

# The real-worker fixtures (tests/labeling/worker.py).
celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir


def _ready_project():
    project = make_project()
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    version.checkpoint.name = "models/fake.safetensors"  # never read by these tests
    version.save()
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    return project


@pytest.mark.django_db
def test_job_start_is_a_status_guard_safe_to_run_twice(settings):
    project = make_project()
    job = Job.objects.create(project=project, kind=Job.Kind.SCORE_POOL)
    assert job_start(job=job) is True
    assert job.status == Job.Status.RUNNING and job.attempts == 1
    assert job_start(job=job) is False  # a second delivery while it runs does nothing
    # Its worker died: the heartbeat goes stale, and the next delivery resumes it.
    stale = timezone.now() - timedelta(seconds=settings.IMAGECLEAN_JOB_STALE_SECONDS + 5)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=stale)
    assert job_start(job=job) is True
    assert job.attempts == 2
    assert "resumed after its worker was lost" in job.log[-1]
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    assert job_start(job=job) is False


@pytest.mark.django_db
def test_progress_is_bounded_and_cancel_stops_a_running_job():
    project = make_project()
    engineer = make_user("site_engineer")
    job = Job.objects.create(project=project, kind=Job.Kind.SCORE_POOL)
    job_start(job=job)
    for n in range(MAX_LOG_LINES + 50):
        job_progress(job_id=job.pk, stage="scoring", percent=n / 3, line=f"line {n}")
    job.refresh_from_db()
    assert len(job.log) == MAX_LOG_LINES
    assert job.log[-1].endswith(f"line {MAX_LOG_LINES + 49}")
    assert job.percent == 83.0
    job_cancel(job=job, by=engineer)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.cancel_requested
    with pytest.raises(JobCancelled):
        job_progress(job_id=job.pk, stage="scoring", percent=90)
    with pytest.raises(JobCancelled):
        job_progress(job_id=job.pk, line="still there?")


@pytest.mark.django_db
def test_cancel_before_start_and_after_finish():
    project = _ready_project()
    engineer = make_user("site_engineer")
    job = job_create(project=project, kind=Job.Kind.SCORE_POOL, params={}, created_by=engineer)
    job_cancel(job=job, by=engineer)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job_start(job=job) is False  # the task's later delivery does nothing
    with pytest.raises(ValidationError):
        job_cancel(job=job, by=engineer)


@pytest.mark.django_db
@pytest.mark.bad_input
@pytest.mark.parametrize(
    "kind, params",
    [
        ("no_such_kind", {}),
        (Job.Kind.SCORE_POOL, {"shard_size": 0}),
        (Job.Kind.SCORE_POOL, {"batch_size": "many"}),
        (Job.Kind.SCORE_POOL, {"surprise": 1}),
        (Job.Kind.SCORE_POOL, {"model_version_id": 999_999}),
        (Job.Kind.SELECT, {"band": [0.9]}),
    ],
)
def test_bad_job_parameters_are_refused_and_create_nothing(kind, params):
    project = _ready_project()
    with pytest.raises(ValidationError):
        job_create(project=project, kind=kind, params=params, created_by=make_user("site_engineer"))
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_scoring_needs_a_ready_active_version():
    project = make_project()
    with pytest.raises(ValidationError, match="no active model version"):
        job_create(project=project, kind=Job.Kind.SCORE_POOL, params={})


def test_task_options_route_ml_tasks_with_longer_limits():
    from config.celery import app
    from labeling import tasks
    from labeling.services.jobs import TRANSIENT_ERRORS

    for task in (tasks.ml_score_pool, tasks.ml_score_shard, tasks.select_fill_queue):
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert set(TRANSIENT_ERRORS) <= set(task.autoretry_for)
        assert task.retry_backoff
    assert tasks.ml_score_shard.time_limit > tasks.select_fill_queue.time_limit
    assert tasks.ml_score_shard.soft_time_limit < tasks.ml_score_shard.time_limit
    router = app.amqp.router
    assert router.route({}, "labeling.tasks.ml_score_shard")["queue"].name == "ml"
    assert router.route({}, "labeling.tasks.ml_score_pool")["queue"].name == "ml"
    assert router.route({}, "labeling.tasks.select_fill_queue")["queue"].name == "default"
    beat = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "labeling.tasks.jobs_recover" in beat


@pytest.mark.django_db
def test_jobs_api_and_pages_for_engineers_only():
    project = _ready_project()
    engineer, lead, annotator = (
        make_user("site_engineer"),
        make_user("lead"),
        make_user("annotator"),
    )
    project.members.add(lead, annotator)
    client = Client()
    client.force_login(engineer)
    created = client.post(
        f"/api/v1/projects/{project.slug}/jobs/create/",
        {"kind": "score_pool", "params": {"shard_size": 100}},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    job_id = created.json()["id"]
    detail = client.get(f"/api/v1/jobs/{job_id}/").json()
    assert detail["status"] == "queued"
    assert detail["params"]["shard_size"] == 100
    assert detail["log_tail"] and "queued by" in detail["log_tail"][0]
    listing = client.get(f"/api/v1/projects/{project.slug}/jobs/").json()
    assert [row["id"] for row in listing["results"]] == [job_id]
    bad = client.post(
        f"/api/v1/projects/{project.slug}/jobs/create/",
        {"kind": "score_pool", "params": {"shard_size": -3}},
        content_type="application/json",
    )
    assert bad.status_code == 400 and "shard_size" in bad.json()
    cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    page = client.get(f"/jobs/{job_id}/")
    assert page.status_code == 200
    assert f'data-api-url="/api/v1/jobs/{job_id}/"'.encode() in page.content
    assert b"labeling/jobs.js" in page.content
    started = client.post(
        f"/projects/{project.slug}/jobs/start/", {"kind": "select", "k_band": "5", "seed": "3"}
    )
    new_job = Job.objects.exclude(pk=job_id).get()
    assert started.status_code == 302 and started["Location"] == f"/jobs/{new_job.pk}/"
    assert new_job.params["k_band"] == 5 and new_job.params["seed"] == 3
    refused = client.post(f"/projects/{project.slug}/jobs/start/", {"kind": "select", "high": "x"})
    assert refused.status_code == 302 and Job.objects.count() == 2
    assert client.get("/jobs/").status_code == 200

    for person in (lead, annotator):
        client.force_login(person)
        assert client.get(f"/api/v1/jobs/{job_id}/").status_code == 403
        assert client.post(f"/api/v1/jobs/{new_job.pk}/cancel/").status_code == 403
        assert client.get(f"/jobs/{job_id}/").status_code == 403
        assert client.get(f"/projects/{project.slug}/jobs/").status_code == 403
    new_job.refresh_from_db()
    assert new_job.status == Job.Status.QUEUED


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_scoring_job_on_a_real_worker(celery_worker, worker_storage):
    engineer = make_user("site_engineer")
    project = make_project()
    for i in range(200):
        make_image(project, seed=40_000 + i)
    make_cascade_version(project, input_size=64)
    job = job_create(
        project=project,
        kind=Job.Kind.SCORE_POOL,
        params={"shard_size": 4, "batch_size": 4},
        created_by=engineer,
    )
    wait_for(
        lambda: JobShard.objects.filter(job=job, status="done").exists(),
        timeout=60,
        worker=celery_worker,
        what="the first shard",
    )
    client = Client()
    client.force_login(engineer)
    assert client.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 200

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(finished, timeout=30, worker=celery_worker, what="the cancel")
    assert job.status == Job.Status.CANCELLED, job.status
    done = JobShard.objects.filter(job=job, status="done")
    assert 0 < done.count() < 50
    # Only whole shards were written: a shard's scores and its "done" commit together.
    done_images = {pk for ids in done.values_list("image_ids", flat=True) for pk in ids}
    assert set(Score.objects.values_list("image_id", flat=True)) == done_images
    # The shards still queued in the broker do nothing once they are delivered.
    count = done.count()
    time.sleep(2)
    assert JobShard.objects.filter(job=job, status="done").count() == count
    assert Score.objects.count() == len(done_images)
