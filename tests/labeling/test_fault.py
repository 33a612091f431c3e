"""A worker killed with SIGKILL in the middle of a scoring job; a new worker finishes it.

The killed worker never acknowledges the shard it held (Redis would re-deliver that message
only after the visibility timeout, hours later) and never updates the job again. The recovery
sweep (`labeling.tasks.jobs_recover`, run by beat every minute in production and every second
here, with IMAGECLEAN_JOB_STALE_SECONDS=3 so the test is short) sees the stale heartbeat and
re-enqueues the job; the job re-enqueues the shard that was started and never finished. Every
image of the project (labeled ones included) ends with exactly one Score for the version, and no
Label row is touched.
"""

from __future__ import annotations

import time

import pytest

from config.celery import app
from labeling.models import Image, Job, JobShard, Label, Score
from labeling.services.jobs import job_create
from tests.factories import make_image, make_project, make_user
from tests.labeling.worker import (
    CeleryWorker,
    broker_flush,
    make_cascade_version,
    use_worker_storage,
    wait_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STALE = {"IMAGECLEAN_JOB_STALE_SECONDS": "3"}


def test_scoring_survives_a_worker_killed_mid_job(settings, tmp_path):
    var_dir = tmp_path / "var"
    use_worker_storage(settings, var_dir)
    engineer = make_user("site_engineer")
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    images = [make_image(project, seed=50_000 + i) for i in range(160)]
    for image in images[:10]:
        Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    labels_before = list(Label.objects.order_by("pk").values_list("pk", "image_id", "value"))
    version = make_cascade_version(project, input_size=64)

    broker_flush()
    first = CeleryWorker(var_dir=var_dir, env=STALE, name="doomed").start()
    second = None
    try:
        job = job_create(
            project=project,
            kind=Job.Kind.SCORE_POOL,
            params={"shard_size": 6, "batch_size": 3},
            created_by=engineer,
        )
        done = JobShard.objects.filter(job=job, status=JobShard.Status.DONE)
        wait_for(lambda: done.count() >= 3, timeout=60, worker=first, what="three shards")
        first.kill()
        killed_at = time.monotonic()
        job.refresh_from_db()
        total = job.shards.count()
        assert total == 27  # 160 images (10 of them labeled: scored too) in shards of 6
        assert job.status == Job.Status.RUNNING
        assert 3 <= done.count() < total, "the worker finished before it could be killed"

        second = CeleryWorker(var_dir=var_dir, env=STALE, name="rescuer").start()

        def finished() -> bool:
            # Beat's job, once a second: re-enqueue jobs whose heartbeat went stale.
            if time.monotonic() - killed_at > 3:
                app.send_task("labeling.tasks.jobs_recover")
            job.refresh_from_db()
            return job.is_finished

        wait_for(finished, timeout=90, worker=second, what="the job to complete")
    finally:
        first.stop()
        if second is not None:
            second.stop()

    assert job.status == Job.Status.SUCCEEDED, (job.error, job.log[-10:])
    assert job.attempts >= 2 and any("resumed" in line for line in job.log), job.log
    assert not job.shards.filter(status=JobShard.Status.PENDING).exists()
    pool = set(Image.objects.filter(project=project).values_list("pk", flat=True))
    scored = list(Score.objects.filter(model_version=version).values_list("image_id", flat=True))
    assert len(scored) == len(set(scored)) == len(pool)
    assert set(scored) == pool
    assert list(Label.objects.order_by("pk").values_list("pk", "image_id", "value")) == (
        labels_before
    )


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_training_resumes_from_its_last_epoch_after_its_worker_process_is_killed(
    settings, tmp_path, pool
):
    """kill -9 of the process running a training job, after an epoch was saved.

    prefork: the worker's master replaces its pool process and the message, rejected on the
    lost worker, comes back at once. solo: the worker is started again and asks for the
    recovery sweep when ready. Either way the new process sees that the job's owner (host and
    pid on the Job row) is gone and takes the job over without waiting for the stale window
    (set to 10 minutes here), resumes from the saved epoch, finishes once and stores one
    model version."""
    import os
    import signal

    from labeling.models import ModelVersion
    from tests.labeling.test_training import labeled_world

    var_dir = tmp_path / "var"
    use_worker_storage(settings, var_dir)
    engineer = make_user("site_engineer")
    project, _annotator, _images = labeled_world(pool_pos=20, pool_neg=40, unlabeled=0)
    env = {"IMAGECLEAN_JOB_STALE_SECONDS": "600"}
    broker_flush()
    worker = CeleryWorker(var_dir=var_dir, env=env, name=f"trainer-{pool}", pool=pool).start()
    rescuer = None
    try:
        job = job_create(
            project=project,
            kind=Job.Kind.TRAIN_CASCADE,
            params={"epochs": 6, "batch_a": 8, "hard_b": 4, "min_per_class": 6, "lp_epochs": 1},
            created_by=engineer,
        )

        def an_epoch_saved() -> bool:
            job.refresh_from_db()
            return any(" epoch 2/6:" in line for line in job.log)

        wait_for(an_epoch_saved, timeout=240, worker=worker, what="two training epochs")
        owner = job.owner
        os.kill(int(owner.split(":")[1]), signal.SIGKILL)
        killed_at = time.monotonic()
        if pool == "solo":
            worker.process.wait(timeout=10)
            rescuer = CeleryWorker(var_dir=var_dir, env=env, name="trainer-again").start()
        restarted_at = time.monotonic()

        def taken_over() -> bool:
            job.refresh_from_db()
            return job.attempts >= 2

        wait_for(taken_over, timeout=30, worker=rescuer or worker, what="the job to be taken over")
        took = time.monotonic() - restarted_at

        def finished() -> bool:
            job.refresh_from_db()
            return job.is_finished

        try:
            wait_for(finished, timeout=600, worker=rescuer or worker, what="the job to finish")
        except BaseException:
            print("job log:", *job.log, sep="\n")
            raise
    finally:
        worker.stop()
        if rescuer is not None:
            rescuer.stop()

    assert job.status == Job.Status.SUCCEEDED, (job.error, job.log[-12:])
    assert took < 30 and time.monotonic() - killed_at > 0
    assert job.attempts == 2 and job.owner != owner, (job.attempts, job.owner, owner)
    assert any("is gone" in line for line in job.log), job.log
    resumed = [line for line in job.log if "resuming after epoch" in line]
    assert len(resumed) == 1, job.log
    done_before_kill = int(resumed[0].rsplit("resuming after epoch", 1)[1].split()[0])
    assert done_before_kill >= 1
    # Not trained from the start: epoch 1 ran once; at most the epoch in flight at the kill
    # ran twice.
    epochs_logged = [
        line.split(" epoch ", 1)[1].split("/")[0]
        for line in job.log
        if " epoch " in line and "/6:" in line
    ]
    assert epochs_logged.count("1") == 1 and len(epochs_logged) <= 7, job.log
    assert ModelVersion.objects.filter(project=project).count() == 1
    assert job.model_version is not None
    state_dir = var_dir / "job-state" / f"job-{job.pk}"
    assert not state_dir.exists(), "the finished job left its epoch state behind"
