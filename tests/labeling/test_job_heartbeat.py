"""A job's heartbeat comes from a thread of its task (issue 8, item 1, in part): one step longer
than the stale window (a long training epoch) does not make the job look dead, so a second
delivery in the meantime does nothing and the recovery sweep leaves it alone; once the task ends
the heartbeat stops with it."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from labeling.models import Job
from labeling.services.jobs import job_run, jobs_recover
from tests.factories import make_project

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]

STALE_S = 2
STEP_S = 6  # one step without any progress report, three stale windows long


def test_a_step_longer_than_the_stale_window_is_never_started_twice(settings):
    settings.IMAGECLEAN_JOB_STALE_SECONDS = STALE_S
    settings.IMAGECLEAN_JOB_HEARTBEAT_SECONDS = 0.5
    job = Job.objects.create(project=make_project(), kind=Job.Kind.SCORE_POOL)
    runs = []
    during = {}

    def body(job):
        runs.append(job.pk)
        time.sleep(STEP_S)
        return {"done": True}

    def second_delivery():
        time.sleep(STALE_S * 2)  # the first delivery's heartbeat would be stale by now
        try:
            during["recovered"] = jobs_recover()
            job_run(job_id=job.pk, body=body)  # a redelivery of the same task
        finally:
            connections.close_all()

    other = threading.Thread(target=second_delivery)
    other.start()
    job_run(job_id=job.pk, body=body)
    other.join(timeout=30)
    job.refresh_from_db()
    assert runs == [job.pk]  # the body ran once
    assert during["recovered"] == []  # the sweep saw a live job
    assert job.status == Job.Status.SUCCEEDED
    assert job.attempts == 1
    # The heartbeat stopped with the task.
    beat = job.heartbeat_at
    time.sleep(1.5)
    job.refresh_from_db()
    assert job.heartbeat_at == beat
