"""Embedding on import, end to end: a real worker, Redis, PostgreSQL and EfficientNet-Lite0.

Images imported through the import service get their vectors in the project's store from the
`ml_embed_images` task the import enqueues on commit (labeling.services.embeddings), with no
manual step; a cold-start recall started afterwards embeds nothing and ranks from the store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction

from labeling.ml.recall import project_store
from labeling.models import Job, QueueItem, Strategy
from labeling.services.embeddings import EMBED_BLOCK, embed_images_run, enqueue_embedding_for
from labeling.services.imports import Status, images_import
from labeling.services.jobs import job_create
from tests.factories import make_project, make_user
from tests.labeling import worker as loop_worker
from tests.labeling.worker import wait_for

celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STAMPS = Path("/usr/share/tuxpaint/stamps")


def _pngs(folder: Path, limit: int) -> list[Path]:
    return sorted(p for p in folder.rglob("*.png") if "_mirror" not in p.name)[:limit]


def _stored(project_id: int, ids: list[int]) -> bool:
    return bool(project_store(project_id).contains(ids).all())


def test_imported_images_are_embedded_by_the_worker_and_recall_reads_them(
    celery_worker, worker_storage
):
    engineer = make_user("site_engineer")
    project = make_project(validation_fraction=0.0)
    insects = _pngs(STAMPS / "animals" / "insects", 5)
    food = _pngs(STAMPS / "food", 7)
    assert len(insects) == 5 and len(food) == 7
    assert not project_store(project.pk).count()

    report = images_import(
        project=project,
        files=[(p.name, p.read_bytes()) for p in insects + food],
        created_by=engineer,
        add_to_queue=False,
    )
    ids = [e.image_id for e in report.entries if e.status == Status.IMPORTED]
    assert len(ids) == 12
    # No job started, no command run: the import's own task fills the store.
    wait_for(
        lambda: _stored(project.pk, ids),
        timeout=300,
        worker=celery_worker,
        what="the imported images' vectors",
    )
    store = project_store(project.pk)
    described = store.describe()
    assert described["keys"] == described["rows"] == len(ids)  # each embedded once
    assert store.get(ids).shape == (len(ids), 1280)
    assert "labeling.tasks.ml_embed_images" in celery_worker.log()

    # A redelivered message (a worker died before acknowledging) embeds nothing again.
    again = embed_images_run(project_id=project.pk, image_ids=ids)
    assert again["embedded"] == 0 and again["already_stored"] == len(ids)
    assert project_store(project.pk).describe()["rows"] == len(ids)

    # Cold-start recall afterwards: every vector comes from the store, none is computed.
    job = job_create(
        project=project,
        kind=Job.Kind.COLD_START,
        params={"seed_image_ids": ids[:2], "k": 4},
        created_by=engineer,
    )
    wait_for(
        lambda: Job.objects.get(pk=job.pk).is_finished,
        timeout=180,
        worker=celery_worker,
        what="the cold-start job",
    )
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["embedded"] == 0
    assert job.result["from_cache"] == len(ids)  # 2 seeds + a pool of 10
    assert job.result["queued"] == 4
    assert (
        QueueItem.objects.filter(strategy=Strategy.COLD_START, queue__project=project).count() == 4
    )


def test_a_large_import_is_split_into_blocks_of_tasks(django_capture_on_commit_callbacks):
    """One task per EMBED_BLOCK ids, sent only when the import's transaction commits."""
    project = make_project()
    ids = list(range(1, 2 * EMBED_BLOCK + 2))
    with transaction.atomic():
        with django_capture_on_commit_callbacks() as callbacks:
            sent = enqueue_embedding_for(project=project, image_ids=reversed(ids))
        transaction.set_rollback(True)  # nothing reaches the broker
    assert sent == 3 and len(callbacks) == 3
