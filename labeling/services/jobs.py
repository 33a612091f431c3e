"""Background jobs: create, start (idempotently), report progress, cancel, finish, recover.

A Job row is the single source of truth about a background job: Celery only carries its id.
Every job kind is one entry of `JOB_KINDS` (the task that runs it and the declaration of its
parameters, a `labeling.services.params.JobSpec`), so new kinds (training, noise detection,
cold start) plug in without touching the machinery here.

Safe to run twice (CONVENTIONS.md, Celery): tasks are `acks_late` with
`reject_on_worker_lost`, so a message can be delivered again after a worker dies. `job_start`
is the status guard: only a QUEUED job starts, or a RUNNING one whose heartbeat went stale (its
worker died); a second delivery of a running job returns False and does nothing. Work inside a
job is written as upserts keyed by (job, shard) / (image, model version), so a repeated piece of
work rewrites the same rows instead of adding new ones.

Recovery: a worker killed with SIGKILL never acknowledges its message, and Redis re-delivers it
only after the broker's visibility_timeout (hours, longer than the longest task). The periodic
`jobs_recover` sweep finds RUNNING jobs whose heartbeat is older than
IMAGECLEAN_JOB_STALE_SECONDS and enqueues their task again, which resumes where the database
says the job stands (pending shards only). It also sends again a QUEUED job whose message the
broker does not hold: never sent (the broker was down; `task_enqueue` logs and goes on rather
than failing a committed request) or sent before the broker last started (Redis keeps nothing
on disk). docs/jobs.md, "Faults".

Cancel: `job_cancel` sets a flag; the job notices it at its next `job_progress` (which raises
JobCancelled) and stops. A job that has not started yet is cancelled at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import kombu.exceptions
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from labeling.models import Job, Project
from labeling.permissions import can_manage
from labeling.services import webhooks
from labeling.services.audit_log import Action, audit_record
from labeling.services.params import JobSpec

logger = logging.getLogger(__name__)

MAX_LOG_LINES = 200
MAX_LINE_CHARS = 500

# Errors worth retrying with backoff: the database or the broker went away for a moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    kombu.exceptions.OperationalError,
)


class JobCancelled(Exception):
    """Raised inside a running job when it was cancelled (or finished elsewhere): stop now."""


@dataclass(frozen=True)
class JobKind:
    """How to run one kind of job: the Celery task name (`labeling.tasks.ml_*` routes to the
    `ml` queue) and the dotted path of its parameters' `JobSpec` (by name: the service modules
    that declare them import this one)."""

    task_name: str
    spec: str


JOB_KINDS: dict[str, JobKind] = {
    Job.Kind.SCORE_POOL: JobKind(
        task_name="labeling.tasks.ml_score_pool",
        spec="labeling.services.scoring.SCORE_POOL",
    ),
    Job.Kind.SELECT: JobKind(
        task_name="labeling.tasks.select_fill_queue",
        spec="labeling.services.selection.SELECT",
    ),
    Job.Kind.TRAIN_CASCADE: JobKind(
        task_name="labeling.tasks.ml_train_cascade",
        spec="labeling.services.training.TRAIN_CASCADE",
    ),
    Job.Kind.DETECT_NOISE: JobKind(
        task_name="labeling.tasks.ml_detect_noise",
        spec="labeling.services.noise.DETECT_NOISE",
    ),
    Job.Kind.COLD_START: JobKind(
        task_name="labeling.tasks.ml_cold_start",
        spec="labeling.services.recall.COLD_START",
    ),
    Job.Kind.AUDIT: JobKind(
        task_name="labeling.tasks.pool_audit",
        spec="labeling.services.audit.AUDIT",
    ),
}


# Jobs the app starts itself, never from a form or the API (no JobSpec: their parameters are
# written by the service that creates them): kind -> task name.
INTERNAL_JOB_TASKS: dict[str, str] = {
    Job.Kind.IMPORT: "labeling.tasks.images_import_staged",
}


def job_task_name(kind: str) -> str | None:
    """The task that runs a job of `kind`, or None for a kind no longer known."""
    if kind in JOB_KINDS:
        return JOB_KINDS[kind].task_name
    return INTERNAL_JOB_TASKS.get(kind)


def job_spec(kind: str) -> JobSpec:
    """The parameters of job kind `kind` (a key of JOB_KINDS)."""
    return import_string(JOB_KINDS[kind].spec)


def _send(task_name: str, args: list) -> bool:
    """Hand one task to the broker; False (logged) when the broker cannot be reached. The
    database rows are the record of what should run, so a message that could not be sent is
    sent again by `jobs_recover` (a job's pending shards with the job), never lost for good."""
    from config.celery import app

    try:
        app.send_task(task_name, args=args)
    except kombu.exceptions.OperationalError as exc:
        logger.warning("broker unreachable, %s%s not sent now: %s", task_name, args, exc)
        return False
    return True


def task_enqueue(task_name: str, *args: Any) -> None:
    """Send the task once the surrounding transaction commits (a task never sees uncommitted
    rows). By name, so services need not import labeling.tasks (which imports services)."""
    transaction.on_commit(lambda: _send(task_name, list(args)))


def job_enqueue(job_id: int, kind: str) -> None:
    """Send job `job_id`'s task on commit and record when it reached the broker
    (`Job.enqueued_at`), which tells `jobs_recover` whether a queued job's message may have
    been lost (never sent, or sent before the broker last started)."""
    task_name = job_task_name(kind)

    def send() -> None:
        if _send(task_name, [job_id]):
            Job.objects.filter(pk=job_id).update(enqueued_at=timezone.now())

    transaction.on_commit(send)


def _line(text: str) -> str:
    stamp = timezone.now().strftime("%H:%M:%S")
    return f"{stamp} {text}"[:MAX_LINE_CHARS]


def _append_log(job: Job, text: str) -> None:
    job.log = [*(job.log or []), _line(text)][-MAX_LOG_LINES:]


# --- Create and cancel (called from the web) --------------------------------------------------
def job_create(
    *, project: Project, kind: str, params: dict | None = None, created_by: User | None = None
) -> Job:
    """Validate the parameters of a `kind` job, store it QUEUED and enqueue its task."""
    if created_by is not None and not can_manage(created_by, project):
        raise PermissionDenied(_("Only engineers start jobs."))
    if kind not in JOB_KINDS:
        known = ", ".join(sorted(JOB_KINDS))
        raise ValidationError(
            {
                "kind": _("Unknown job kind %(kind)r; known: %(known)s.")
                % {"kind": kind, "known": known}
            }
        )
    if params is not None and not isinstance(params, dict):
        raise ValidationError({"params": _("Parameters must be a JSON object.")})
    cleaned = job_spec(kind).clean(project=project, params=dict(params or {}))
    with transaction.atomic():
        job = Job.objects.create(
            project=project,
            kind=kind,
            params=cleaned,
            model_version_id=cleaned.get("model_version_id"),
            created_by=created_by,
            log=[_line(f"queued by {created_by.get_username() if created_by else 'system'}")],
        )
        job_enqueue(job.pk, kind)
        audit_record(
            actor=created_by,
            action=Action.JOB_STARTED,
            project=project,
            target=job,
            details={"kind": kind, "params": cleaned},
        )
    return job


def job_create_internal(
    *, project: Project, kind: str, params: dict, created_by: User | None = None
) -> Job:
    """Store a QUEUED job of one of INTERNAL_JOB_TASKS' kinds with the `params` its service
    wrote, and enqueue it. The caller checks permissions (it is a service, not a form)."""
    with transaction.atomic():
        job = Job.objects.create(
            project=project,
            kind=kind,
            params=params,
            created_by=created_by,
            log=[_line(f"queued by {created_by.get_username() if created_by else 'system'}")],
        )
        job_enqueue(job.pk, kind)
        audit_record(
            actor=created_by,
            action=Action.JOB_STARTED,
            project=project,
            target=job,
            details={"kind": kind, "params": params},
        )
    return job


def job_cancel(*, job: Job, by: User | None = None) -> Job:
    """Cancel a job: at once when it has not started, else at its next progress report."""
    if by is not None and not can_manage(by, job.project):
        raise PermissionDenied(_("Only engineers cancel jobs."))
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.is_finished:
            raise ValidationError(
                _("Job %(id)s already finished (%(status)s).")
                % {"id": locked.pk, "status": locked.get_status_display()}
            )
        who = by.get_username() if by else "system"
        locked.cancel_requested = True
        if locked.status == Job.Status.QUEUED:
            locked.status = Job.Status.CANCELLED
            locked.finished_at = timezone.now()
            _append_log(locked, f"cancelled by {who} before it started")
        else:
            _append_log(locked, f"cancel requested by {who}")
        locked.save(update_fields=["cancel_requested", "status", "finished_at", "log"])
        audit_record(
            actor=by,
            action=Action.JOB_CANCELLED,
            project=job.project,
            target=locked,
            details={"kind": locked.kind, "status": locked.status},
        )
    return locked


# --- Inside a task ----------------------------------------------------------------------------
def _stale_after() -> timedelta:
    return timedelta(seconds=settings.IMAGECLEAN_JOB_STALE_SECONDS)


def worker_identity() -> str:
    """This process as a job owner: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(pid: int) -> bool:
    """True when no live process has this pid here (a zombie, killed but not yet reaped by
    its parent, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name in parentheses: "pid (comm) S ...".
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def owner_gone(owner: str) -> bool:
    """The job's owner is provably gone: it ran on this host and its process no longer exists
    (a worker's pool process killed, the worker restarted). An owner on another host is never
    provably gone from here: only its heartbeat stopping says so."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if not pid.isdigit() or host != socket.gethostname():
        return False
    return int(pid) != os.getpid() and _process_gone(int(pid))


def job_start(*, job: Job, retry: bool = False) -> bool:
    """The status guard: move a QUEUED job to RUNNING, record this process as its owner and
    return True. A RUNNING job is taken over only when its owner is gone: provably (it ran on
    this host and its process no longer exists: a redelivery after a killed worker proceeds at
    once) or by its heartbeat going stale (an owner on another host), or with `retry` (this
    same task retrying after a transient error) when the owner is this process. Anything else
    returns False: the delivery is a duplicate and the job is never run by two workers at
    once."""
    now = timezone.now()
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job.pk).first()
        if locked is None:
            return False
        if locked.status == Job.Status.QUEUED and locked.cancel_requested:
            return False
        if locked.status == Job.Status.QUEUED:
            locked.status = Job.Status.RUNNING
            locked.started_at = now
            _append_log(locked, "started")
        elif locked.status == Job.Status.RUNNING:
            stale = locked.heartbeat_at is None or locked.heartbeat_at < now - _stale_after()
            gone = bool(locked.owner) and owner_gone(locked.owner)
            # A retry takes over at once only from an earlier attempt in this same process
            # (which has ended: a process runs one task at a time). Elsewhere the owner may be
            # a delivery the recovery sweep sent while this retry waited out its backoff (a
            # long database outage): the heartbeat decides, as for any other delivery.
            mine = locked.owner.rpartition(":")[0] == worker_identity()
            if not (stale or gone or (retry and mine)):
                return False
            if retry and mine:
                _append_log(locked, "retrying")
            elif gone:
                _append_log(locked, f"resumed: its worker process ({locked.owner}) is gone")
            else:
                _append_log(locked, "resumed after its worker was lost (heartbeat stopped)")
        else:
            return False
        locked.heartbeat_at = now
        locked.attempts += 1
        locked.owner = f"{worker_identity()}:{locked.attempts}"[:200]
        locked.save(
            update_fields=["status", "started_at", "heartbeat_at", "attempts", "owner", "log"]
        )
    job.refresh_from_db()
    return True


def job_progress(
    *, job_id: int, stage: str | None = None, percent: float | None = None, line: str | None = None
) -> None:
    """Record progress and beat the heartbeat. Raises JobCancelled when a cancel was requested
    or the job is no longer running (another shard failed it, say)."""
    now = timezone.now()
    fields: dict[str, Any] = {"heartbeat_at": now}
    if stage is not None:
        fields["stage"] = stage[:120]
    if percent is not None:
        fields["percent"] = max(0.0, min(100.0, float(percent)))
    if line is None:
        updated = Job.objects.filter(
            pk=job_id, status=Job.Status.RUNNING, cancel_requested=False
        ).update(**fields)
        if updated:
            return
        raise JobCancelled(f"job {job_id} was cancelled or is no longer running")
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Job.Status.RUNNING or job.cancel_requested:
            raise JobCancelled(f"job {job_id} was cancelled or is no longer running")
        for name, value in fields.items():
            setattr(job, name, value)
        _append_log(job, line)
        job.save(update_fields=[*fields, "log"])


def _finish(*, job_id: int, status: str, log_line: str, **fields: Any) -> bool:
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return False
        job.status = status
        job.finished_at = timezone.now()
        for name, value in fields.items():
            setattr(job, name, value)
        _append_log(job, log_line)
        job.save(update_fields=["status", "finished_at", "log", *fields])
    return True


def job_succeed(*, job_id: int, result: dict | None = None) -> bool:
    return _finish(
        job_id=job_id,
        status=Job.Status.SUCCEEDED,
        log_line="succeeded",
        result=result or {},
        percent=100.0,
        stage="done",
    )


def job_fail(*, job_id: int, error: str) -> bool:
    failed = _finish(
        job_id=job_id, status=Job.Status.FAILED, log_line=f"failed: {error}", error=error
    )
    if failed:
        job = Job.objects.select_related("project").filter(pk=job_id).first()
        if job is not None:
            webhooks.emit_job_failed(job)
    return failed


def job_mark_cancelled(*, job_id: int) -> bool:
    return _finish(
        job_id=job_id,
        status=Job.Status.CANCELLED,
        log_line="stopped (cancelled)",
        stage="cancelled",
    )


def job_run(*, job_id: int, body: Callable[[Job], dict | None], retry: bool = False) -> None:
    """Run `body(job)` under the status guard. `body` returns the result dict (the job
    succeeds) or None (the job goes on elsewhere: its shards finish it). Transient errors go up
    to Celery's autoretry; JobCancelled stops the job; anything else fails it."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        logger.warning("job %s no longer exists; nothing to do", job_id)
        return
    if not job_start(job=job, retry=retry):
        logger.info("job %s is %s; this delivery does nothing", job_id, job.status)
        return
    heartbeat = JobHeartbeat(job_id=job_id)
    heartbeat.start()
    try:
        result = body(job)
    except JobCancelled:
        job_mark_cancelled(job_id=job_id)
        return
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:  # the job's record is the error report; the worker lives on
        logger.exception("job %s failed", job_id)
        job_fail(job_id=job_id, error=f"{type(error).__name__}: {error}")
        return
    finally:
        heartbeat.stop()
    if result is not None:
        job_succeed(job_id=job_id, result=result)


class JobHeartbeat(threading.Thread):
    """Beats a running job's heartbeat every IMAGECLEAN_JOB_HEARTBEAT_SECONDS from a thread of
    its own (issue 8, item 1), so a job is alive as long as its process is, however long one
    step (a training epoch, a scoring batch) takes: `job_start` and `jobs_recover` take a job
    over only when the heartbeat stopped, i.e. its process is gone. The thread uses its own
    database connection and closes it when it stops."""

    def __init__(self, *, job_id: int):
        super().__init__(name=f"job-{job_id}-heartbeat", daemon=True)
        self.job_id = job_id
        # At least three beats per stale window, whatever the two settings say.
        self.every = min(
            float(settings.IMAGECLEAN_JOB_HEARTBEAT_SECONDS),
            settings.IMAGECLEAN_JOB_STALE_SECONDS / 3,
        )
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.wait(self.every):
                try:
                    Job.objects.filter(pk=self.job_id, status=Job.Status.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError as exc:  # the next beat tries again
                    logger.warning("job %s: heartbeat not recorded: %s", self.job_id, exc)
                    # A broken connection (PostgreSQL restarted) is dropped, so the next beat
                    # connects afresh instead of failing on the dead one for ever.
                    connections["default"].close_if_unusable_or_obsolete()
        finally:
            connections.close_all()  # this thread's connections only

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=self.every + 5)


# --- Recovery ---------------------------------------------------------------------------------
def broker_started_at() -> Any:
    """When the broker last started, for a Redis broker (its INFO uptime); None for others or
    when it cannot be asked. Redis as deployed here keeps nothing on disk, so every message
    sent before that moment is gone (docs/jobs.md, "Faults")."""
    from config.celery import app

    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        return None  # the filesystem broker keeps its messages across restarts
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        uptime = int(client.info("server")["uptime_in_seconds"])
    except (redis.RedisError, OSError, KeyError, ValueError) as exc:
        logger.warning("broker start time unknown: %s", exc)
        return None
    # Whole seconds: one more, so a message sent in the broker's first second counts as lost
    # (sending it again is harmless: `job_start` drops a duplicate delivery).
    return timezone.now() - timedelta(seconds=uptime + 1)


def _queued_and_lost(cutoff) -> list[tuple[int, str]]:
    """QUEUED jobs whose message is not in the broker: never sent (the broker was down when the
    job was created) or sent before the broker last started. `cutoff` leaves a job just created
    the moment its own on-commit send takes."""
    queued = Job.objects.filter(status=Job.Status.QUEUED, cancel_requested=False)
    lost = queued.filter(enqueued_at__isnull=True, created_at__lt=cutoff)
    started = broker_started_at()
    if started is not None:
        lost = lost | queued.filter(enqueued_at__lt=started)
    return list(lost.values_list("pk", "kind"))


def jobs_recover() -> list[int]:
    """Enqueue again every RUNNING job whose worker died: its heartbeat is older than
    IMAGECLEAN_JOB_STALE_SECONDS (the same threshold `job_start` applies), or its owner ran on
    this host and its process is gone (run at a worker's start, so a restarted worker picks up
    its predecessor's jobs in seconds); and every QUEUED job whose message the broker does not
    hold (`_queued_and_lost`). Returns the ids re-enqueued."""
    cutoff = timezone.now() - _stale_after()
    running = Job.objects.filter(status=Job.Status.RUNNING)
    stalled = list(running.filter(heartbeat_at__lt=cutoff).values_list("pk", "kind"))
    stalled += [
        (pk, kind)
        for pk, kind, owner in running.filter(heartbeat_at__gte=cutoff).values_list(
            "pk", "kind", "owner"
        )
        if owner and owner_gone(owner)
    ]
    stalled += _queued_and_lost(cutoff)
    recovered = []
    with transaction.atomic():
        for pk, kind in stalled:
            if job_task_name(kind) is None:
                continue
            job_enqueue(pk, kind)
            recovered.append(pk)
    if recovered:
        logger.warning("re-enqueued stalled jobs %s", recovered)
    return recovered
