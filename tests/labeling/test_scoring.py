"""Pool scoring with a real worker process, a real Redis broker and the test PostgreSQL."""

from __future__ import annotations

import math

import pytest
from django.core.files.storage import default_storage

from labeling.ml.cascade import load_cascade
from labeling.ml.datasets import ImageRow
from labeling.ml.scoring import score_rows
from labeling.models import Image, Job, JobShard, Label, QueueItem, Score
from labeling.services.jobs import job_create
from tests.factories import make_image, make_project, make_user
from tests.labeling import worker as loop_worker
from tests.labeling.worker import make_cascade_version, wait_for

# The real-worker fixtures (tests/labeling/worker.py).
celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _finished(job: Job) -> bool:
    job.refresh_from_db()
    return job.is_finished


def _pool(project, n: int, *, seed0: int) -> list[Image]:
    return [make_image(project, seed=seed0 + i) for i in range(n)]


def test_scoring_scores_every_image_of_the_project_exactly_once(celery_worker, worker_storage):
    """Pool and validation, labeled or not: the lead's review page needs the scores of labeled
    images (tests/labeling/test_selection.py checks selection still never queues them)."""
    engineer = make_user("site_engineer")
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    pool = _pool(project, 200, seed0=10_000)
    validation = [make_image(project, seed=20_000 + i, split="validation") for i in range(5)]
    labeled = pool[:6]
    for image in labeled:
        Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    corrupt = pool[6:8]
    for image in corrupt:  # a truncated upload: the bytes on disk are not an image any more
        with default_storage.open(image.file.name, "wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n not really")
    version = make_cascade_version(project)

    job = job_create(
        project=project,
        kind=Job.Kind.SCORE_POOL,
        params={"shard_size": 64, "batch_size": 32},
        created_by=engineer,
    )
    wait_for(lambda: _finished(job), timeout=60, worker=celery_worker, what="scoring")

    assert job.status == Job.Status.SUCCEEDED, (job.error, celery_worker.log())
    # Every image of the project, labeled and validation ones included, corrupt ones too.
    to_score = {image.pk for image in pool + validation}
    assert job.result["images"] == len(to_score)
    assert job.shards.count() == math.ceil(len(to_score) / 64)
    assert not job.shards.filter(status=JobShard.Status.PENDING).exists()
    scored = list(Score.objects.filter(model_version=version).values_list("image_id", flat=True))
    assert len(scored) == len(set(scored))  # exactly one score per image
    assert set(scored) == to_score - {image.pk for image in corrupt}
    assert job.result["scored"] == len(scored)
    # The corrupt files are reported per image, and did not stop the job.
    assert job.result["error_count"] == 2
    assert {e["image_id"] for e in job.result["errors"]} == {image.pk for image in corrupt}
    assert Score.objects.filter(model_version=version, image__in=validation + labeled).count() == (
        len(validation) + len(labeled)
    )
    assert job.percent == 100.0

    # The stored values are the cascade's: recompute a few in this process.
    cascade = load_cascade(version, device="cpu")
    sample = pool[10:15]
    outcome = score_rows(
        cascade,
        [ImageRow(image_id=i.pk, name=i.file.name) for i in sample],
        batch_size=5,
        num_workers=0,
    )
    stored = {s.image_id: s for s in Score.objects.filter(model_version=version, image__in=sample)}
    for record in outcome.records:
        row = stored[record.image_id]
        assert row.stage1 == pytest.approx(record.stage1, abs=1e-5)
        assert row.stage2 == pytest.approx(record.stage2, abs=1e-5)
        assert row.predicted_loss == pytest.approx(record.predicted_loss, abs=1e-4)
    for row in Score.objects.filter(model_version=version):
        assert row.score == pytest.approx(min(row.stage1, row.stage2))
        assert row.decision == (row.stage1 >= 0.5 and row.stage2 >= 0.5)
        assert row.predicted_loss is not None

    # Re-running scores nothing new: only the two unreadable images are tried again.
    before = dict(Score.objects.filter(model_version=version).values_list("image_id", "id"))
    again = job_create(project=project, kind=Job.Kind.SCORE_POOL, params={}, created_by=engineer)
    wait_for(lambda: _finished(again), timeout=60, worker=celery_worker, what="re-run")
    assert again.status == Job.Status.SUCCEEDED, again.error
    assert again.result["images"] == 2
    assert again.result["scored"] == 0
    after = dict(Score.objects.filter(model_version=version).values_list("image_id", "id"))
    assert after == before

    # Labeled and validation images have Scores now, yet selection never queues them: asked for
    # far more than exists, it queues exactly the unlabeled pool images that have a Score.
    select = job_create(
        project=project,
        kind=Job.Kind.SELECT,
        # Fixed sizes over the whole pool, no audit (the automatic sizes keep a share back).
        params={
            "k_band": 1000,
            "k_loss": 1000,
            "audit_share": 0.0,
            "sizing": "fixed",
            "max_share": 1.0,
        },
        created_by=engineer,
    )
    wait_for(lambda: _finished(select), timeout=60, worker=celery_worker, what="selection")
    assert select.status == Job.Status.SUCCEEDED, select.error
    queued = set(
        QueueItem.objects.filter(queue__project=project).values_list("image_id", flat=True)
    )
    unlabeled_scored = {image.pk for image in pool[6:]} - {image.pk for image in corrupt}
    assert queued == unlabeled_scored
