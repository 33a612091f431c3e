"""A training job stores its model version in one transaction (issue 8, item 9): the row is
inserted complete, with the snapshot that names its job, the PR curve and the job's link to it,
so a worker killed after the insert leaves a version its retried job finds, never an orphan
READY version. Uses the toy task of test_training (a real tiny training run)."""

from __future__ import annotations

import pytest
import torch
from django.db.models.signals import post_save

from labeling.models import Job, ModelVersion
from labeling.services.jobs import job_create
from labeling.services.training import train_cascade_run
from tests.factories import make_user
from tests.labeling.test_training import TINY, labeled_world

pytestmark = [pytest.mark.django_db, pytest.mark.fault, pytest.mark.slow]


def test_the_version_row_is_whole_when_inserted_and_a_retry_finds_it():
    torch.set_num_threads(1)
    engineer = make_user("site_engineer")
    project, _annotator, _images = labeled_world()
    job = job_create(project=project, kind=Job.Kind.TRAIN_CASCADE, params=TINY, created_by=engineer)
    inserted = []

    def on_save(sender, instance, created, **kwargs):
        if created:
            linked = Job.objects.filter(pk=job.pk, model_version=instance.pk).exists()
            inserted.append(
                (
                    instance.status,
                    instance.data_snapshot.get("job_id"),
                    bool(instance.pr_curve),
                    instance.training_seconds,
                    linked,
                )
            )

    post_save.connect(on_save, sender=ModelVersion, dispatch_uid="test-training-once")
    try:
        train_cascade_run(job_id=job.pk)
    finally:
        post_save.disconnect(dispatch_uid="test-training-once", sender=ModelVersion)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert len(inserted) == 1
    status, job_id, has_curve, seconds, _linked_yet = inserted[0]
    # Complete at insert: a crash right after it leaves a version the retry recognises.
    assert (status, job_id, has_curve) == (ModelVersion.Status.READY, job.pk, True)
    assert seconds and seconds > 0
    version = ModelVersion.objects.get(project=project)
    assert job.model_version_id == version.pk

    # The job is delivered again (its worker died after the commit, the sweep re-queued it):
    # it finds its version and stores no second one.
    Job.objects.filter(pk=job.pk).update(status=Job.Status.QUEUED)
    train_cascade_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.model_version_id == version.pk
    assert ModelVersion.objects.filter(project=project).count() == 1
