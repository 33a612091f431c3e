"""A sharded scoring job end to end: two real worker processes, Redis, PostgreSQL.

Shards of three images, so the job is many Celery tasks that both workers take; it must end
with exactly one Score per image of the project, every shard done once, and a progress that
only moves forward and reaches 100 % (labeling.services.scoring; docs/jobs.md).
"""

from __future__ import annotations

import math
import time

import pytest

from labeling.models import Image, Job, JobShard, Score
from labeling.services.jobs import job_create
from tests.factories import make_image, make_project, make_user
from tests.labeling.worker import (
    CeleryWorker,
    broker_flush,
    make_cascade_version,
    use_worker_storage,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHARD_SIZE = 3


def test_a_sharded_scoring_job_writes_one_score_per_image_and_reaches_100_percent(
    settings, tmp_path
):
    var_dir = tmp_path / "var"
    use_worker_storage(settings, var_dir)
    engineer = make_user("site_engineer")
    project = make_project()
    images = [make_image(project, seed=70_000 + i) for i in range(22)]
    images += [make_image(project, seed=71_000 + i, split="validation") for i in range(2)]
    version = make_cascade_version(project)

    broker_flush()
    workers = [CeleryWorker(var_dir=var_dir, name=name) for name in ("left", "right")]
    try:
        for worker in workers:
            worker.start(timeout=300)  # a loaded machine takes a while to import torch
        job = job_create(
            project=project,
            kind=Job.Kind.SCORE_POOL,
            params={"shard_size": SHARD_SIZE, "batch_size": 2},
            created_by=engineer,
        )
        seen: list[float] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job.refresh_from_db()
            seen.append(job.percent)
            if job.is_finished:
                break
            time.sleep(0.1)
        logs = [worker.log_path.read_text(errors="replace") for worker in workers]
    finally:
        for worker in workers:
            worker.stop()

    assert job.status == Job.Status.SUCCEEDED, (job.error, job.log[-10:], logs[0][-3000:])
    shards = math.ceil(len(images) / SHARD_SIZE)
    assert job.shards.count() == shards
    assert not job.shards.filter(status=JobShard.Status.PENDING).exists()
    assert job.result["shards_done"] == shards and job.result["scored"] == len(images)
    # Exactly one Score per image of the project, none elsewhere.
    scored = list(Score.objects.filter(model_version=version).values_list("image_id", flat=True))
    assert len(scored) == len(set(scored)) == len(images)
    assert set(scored) == set(Image.objects.filter(project=project).values_list("pk", flat=True))
    # Progress aggregates the shards: it never went back and ended at 100 %.
    assert seen[-1] == 100.0 == job.percent
    assert all(a <= b for a, b in zip(seen, seen[1:], strict=False)), seen
    assert len(set(seen)) > 2, seen  # it was seen moving, not only at 0 and 100
    # The shards were spread: both workers ran some.
    for log in logs:
        assert "labeling.tasks.ml_score_shard[" in log
