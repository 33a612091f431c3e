"""PostgreSQL and Redis restarted in the middle of a scoring job (issue 8, item 2).

The shared servers are never touched: the module starts its own PostgreSQL (a copy of the test
database) and its own Redis (nothing kept on disk, as deployed), one real Celery worker against
both, and points this process's connection and broker at them. The same worker lives through
every restart below, so it also shows that a worker reconnects by itself.

Each test restarts a service twice over (SIGKILL, then the graceful way an operator would) while
a scoring job has shards left, and checks: the job finishes (the recovery sweep, sent once a
second here as beat sends it once a minute, re-enqueues what the broker lost, with a 3 s stale
window), every image has exactly one Score for the version, no Label changed, no model version
was added, and the health endpoint reports the outage and recovers without restarting anything.
"""

from __future__ import annotations

import time

import pytest
from celery import current_app
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection
from django.db.models import Count
from django.test import Client
from django.utils import timezone

from labeling.models import Job, JobShard, Label, ModelVersion, Score
from labeling.roles import ROLE_ORDER
from labeling.services.jobs import job_create, job_start, worker_identity
from tests.factories import make_image, make_project, make_user
from tests.labeling.private_services import DB_NAME, PrivatePostgres, PrivateRedis
from tests.labeling.worker import CeleryWorker, make_cascade_version, use_worker_storage, wait_for

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

IMAGES = 40
SHARD = {"shard_size": 4, "batch_size": 2}


@pytest.fixture(scope="module")
def private_postgres(django_db_setup, django_db_blocker):
    from django.conf import settings

    server = PrivatePostgres().init()
    server.clone_schema(settings.DATABASES["default"])
    yield server
    server.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("restarts-var")


@pytest.fixture(scope="module")
def worker(private_postgres, private_redis, var_dir):
    process = CeleryWorker(
        var_dir=var_dir,
        name="restarts",
        env={
            "DATABASE_URL": private_postgres.url(),
            "CELERY_BROKER_URL": private_redis.url(),
            "IMAGECLEAN_JOB_STALE_SECONDS": "3",
        },
    ).start(timeout=180)  # imports torch: slow on a loaded machine
    yield process
    process.stop()


def _switch_broker(url: str) -> None:
    # Celery copies broker_url into the read and write URLs when it is configured.
    current_app.conf.update(broker_url=url, broker_read_url=url, broker_write_url=url)
    # The producer pools are bound to the URL they were made for; Celery itself forgets them
    # this way after a fork (Celery._after_fork), without the signal a fork sends.
    current_app._pool = None
    current_app.amqp._producer_pool = None


@pytest.fixture
def services(transactional_db, private_postgres, private_redis, worker, settings, var_dir):
    """This test's ORM, web client and task sends go to the private servers."""
    use_worker_storage(settings, var_dir)
    db = connection.settings_dict
    saved = {key: db[key] for key in ("NAME", "HOST", "PORT")}
    broker = current_app.conf.broker_url
    connection.close()
    db.update(NAME=DB_NAME, HOST="127.0.0.1", PORT=str(private_postgres.port))
    _switch_broker(private_redis.url())
    try:
        for role in ROLE_ORDER:
            Group.objects.get_or_create(name=role.value)
        yield private_postgres, private_redis, worker
    finally:
        connection.close()
        db.update(saved)
        _switch_broker(broker)


def _health() -> tuple[int, dict]:
    response = Client().get("/health/")
    return response.status_code, response.json()


def _scoring_setup(seed: int):
    engineer = make_user("site_engineer")
    annotator = make_user("annotator")
    project = make_project(members=[annotator, engineer])
    images = [make_image(project, seed=seed + i) for i in range(IMAGES)]
    for image in images[:8]:
        Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    version = make_cascade_version(project, name=f"v{seed}", input_size=64)
    return engineer, project, version


def _snapshot(project):
    return (
        list(Label.objects.filter(project=project).order_by("pk").values_list("pk", "value")),
        ModelVersion.objects.filter(project=project).count(),
    )


def _mid_job(job: Job, worker: CeleryWorker) -> None:
    done = JobShard.objects.filter(job=job, status=JobShard.Status.DONE)
    wait_for(lambda: done.count() >= 2, timeout=60, worker=worker, what="two shards")


_last_sweep = [0.0]


def _finished(job: Job) -> bool:
    """The job's row, read afresh; a failed read (the database still coming back) is not done.
    Asks for the recovery sweep once a second, as beat does once a minute."""
    try:
        if time.monotonic() - _last_sweep[0] >= 1:
            current_app.send_task("labeling.tasks.jobs_recover")
            _last_sweep[0] = time.monotonic()
        job.refresh_from_db()
    except DatabaseError:
        connection.close()
        return False
    return job.is_finished


def _assert_scored_once(job: Job, project, version, before) -> None:
    assert job.status == Job.Status.SUCCEEDED, (job.status, job.error, job.log[-5:])
    per_image = Score.objects.filter(model_version=version).values("image").annotate(n=Count("pk"))
    assert per_image.count() == IMAGES
    assert {row["n"] for row in per_image} == {1}
    assert _snapshot(project) == before


@pytest.mark.parametrize("how", ["kill", "fast"])
def test_scoring_job_through_a_postgres_restart(services, how):
    postgres, _redis, worker = services
    engineer, project, version = _scoring_setup(seed=61_000 if how == "kill" else 62_000)
    before = _snapshot(project)
    browser = Client()
    browser.force_login(engineer)
    assert _health() == (200, {"database": "ok", "broker": "ok"})

    job = job_create(project=project, kind=Job.Kind.SCORE_POOL, params=SHARD, created_by=engineer)
    _mid_job(job, worker)
    total = job.shards.count()
    if how == "kill":
        postgres.kill()
    else:
        postgres.stop("fast")
    connection.close()
    try:
        assert _health() == (503, {"database": "unavailable", "broker": "ok"})
        page = browser.get(f"/projects/{project.slug}/")
        assert page.status_code == 503 and page["Retry-After"]
        assert "Traceback" not in page.content.decode()
        time.sleep(1.5)  # the worker meets the outage: its next query fails
    finally:
        postgres.start()
    # Back by itself: neither the web app nor the worker is restarted.
    wait_for(lambda: _health()[0] == 200, timeout=20, what="the health endpoint")
    assert browser.get(f"/projects/{project.slug}/").status_code == 200
    connection.close()
    assert JobShard.objects.filter(job=job, status=JobShard.Status.DONE).count() < total, (
        "the job finished before the outage: the test proved nothing"
    )
    wait_for(lambda: _finished(job), timeout=150, worker=worker, what="the job to finish")
    _assert_scored_once(job, project, version, before)


@pytest.mark.parametrize("how", ["kill", "graceful"])
def test_scoring_jobs_through_a_redis_restart(services, how):
    """The broker comes back empty: the running job's pending shards, a queued job's message
    and the message of a job created while it was down are all gone or never sent. The Job rows
    say what should run; the sweep sends it again."""
    _postgres, redis_server, worker = services
    engineer, project, version = _scoring_setup(seed=63_000 if how == "kill" else 64_000)
    second = make_cascade_version(project, name=f"w-{how}", activate=False, input_size=64)
    before = _snapshot(project)

    running = job_create(
        project=project, kind=Job.Kind.SCORE_POOL, params=SHARD, created_by=engineer
    )
    queued = job_create(
        project=project,
        kind=Job.Kind.SCORE_POOL,
        params={**SHARD, "model_version_id": second.pk},
        created_by=engineer,
    )
    _mid_job(running, worker)
    total = running.shards.count()
    if how == "kill":
        redis_server.kill()
    else:
        redis_server.stop()
    try:
        assert _health() == (503, {"database": "ok", "broker": "unavailable"})
        # Starting a job while the broker is down does not fail the request: the row is
        # stored and sent once the broker is back.
        late = job_create(
            project=project,
            kind=Job.Kind.SCORE_POOL,
            params={**SHARD, "model_version_id": second.pk},
            created_by=engineer,
        )
        late.refresh_from_db()
        assert late.status == Job.Status.QUEUED and late.enqueued_at is None
    finally:
        redis_server.start()
    wait_for(lambda: _health()[0] == 200, timeout=20, what="the health endpoint")
    assert JobShard.objects.filter(job=running, status=JobShard.Status.DONE).count() < total

    for job in (running, queued, late):
        wait_for(lambda job=job: _finished(job), timeout=150, worker=worker, what=f"job {job.pk}")
    _assert_scored_once(running, project, version, before)
    assert queued.status == Job.Status.SUCCEEDED, (queued.error, queued.log[-5:])
    per_image = Score.objects.filter(model_version=second).values("image").annotate(n=Count("pk"))
    assert per_image.count() == IMAGES and {row["n"] for row in per_image} == {1}
    # The late job scored nothing new (the queued one had scored every image) and did no harm.
    assert late.status == Job.Status.SUCCEEDED, (late.error, late.log[-5:])


def test_a_retry_takes_over_only_from_its_own_process():
    """A task retried after a long database outage may find its job already resumed by the
    recovery sweep's delivery in another worker: it must not run the job a second time."""
    project = make_project()
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.SCORE_POOL,
        status=Job.Status.RUNNING,
        heartbeat_at=timezone.now(),
        owner="another-host:4242:2",
        attempts=2,
    )
    assert not job_start(job=job, retry=True)
    job.refresh_from_db()
    assert job.owner == "another-host:4242:2"
    Job.objects.filter(pk=job.pk).update(owner=f"{worker_identity()}:2")
    assert job_start(job=job, retry=True)
    job.refresh_from_db()
    assert job.owner == f"{worker_identity()}:3" and job.log[-1].endswith("retrying")
