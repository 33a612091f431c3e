"""Celery tasks: thin wrappers that take primary keys and call one service.

Routing: tasks whose name starts with `labeling.tasks.ml_` go to the `ml` queue (one task per
GPU at a time); everything else goes to `default` (see CELERY_TASK_ROUTES).

Every job task is safe to run twice (the services' status guards and upserts), which is what
makes `acks_late` + `reject_on_worker_lost` correct: a message re-delivered after a worker died
resumes the job instead of duplicating it. Transient errors (the database or the broker gone
for a moment) are retried with exponential backoff and jitter; anything else is recorded on the
Job by the service. Time limits are per queue: ml tasks may run for hours, default ones not.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from .services import (
    audit,
    embeddings,
    imports,
    jobs,
    noise,
    queues,
    recall,
    scoring,
    selection,
    training,
    triage,
    webhooks,
)

_RETRY = {
    "autoretry_for": jobs.TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}
ML_TASK = {
    **_RETRY,
    "soft_time_limit": settings.IMAGECLEAN_ML_TASK_SOFT_TIME_LIMIT,
    "time_limit": settings.IMAGECLEAN_ML_TASK_TIME_LIMIT,
}
DEFAULT_TASK = {
    **_RETRY,
    "soft_time_limit": settings.IMAGECLEAN_DEFAULT_TASK_SOFT_TIME_LIMIT,
    "time_limit": settings.IMAGECLEAN_DEFAULT_TASK_TIME_LIMIT,
}


@shared_task(name="labeling.tasks.leases_expire", ignore_result=True)
def leases_expire() -> int:
    """Periodic sweep: expired leases give their slot back so the item is served again."""
    return queues.leases_expire()


@shared_task(name="labeling.tasks.jobs_recover", **DEFAULT_TASK)
def jobs_recover() -> list[int]:
    """Periodic sweep: re-enqueue running jobs whose worker died (stale heartbeat)."""
    return jobs.jobs_recover()


@shared_task(bind=True, name="labeling.tasks.ml_score_pool", **ML_TASK)
def ml_score_pool(self, job_id: int) -> None:
    """Plan a pool-scoring job into shards and enqueue one ml_score_shard per shard."""
    scoring.score_pool_run(job_id=job_id, retry=self.request.retries > 0)


@shared_task(name="labeling.tasks.ml_score_shard", **ML_TASK)
def ml_score_shard(job_id: int, shard_index: int) -> None:
    """Score one shard of a pool-scoring job; the last shard finishes the job."""
    scoring.score_shard_run(job_id=job_id, shard_index=shard_index)


@shared_task(bind=True, name="labeling.tasks.select_fill_queue", **DEFAULT_TASK)
def select_fill_queue(self, job_id: int) -> None:
    """Fill the labeling queue from a model version's scores (band ∪ loss top-K + audit)."""
    selection.select_run(job_id=job_id, retry=self.request.retries > 0)


@shared_task(bind=True, name="labeling.tasks.ml_train_cascade", **ML_TASK)
def ml_train_cascade(self, job_id: int) -> None:
    """Train the OHEM cascade on the project's cleaned labels; store a ModelVersion."""
    training.train_cascade_run(job_id=job_id, retry=self.request.retries > 0)


@shared_task(bind=True, name="labeling.tasks.ml_detect_noise", **ML_TASK)
def ml_detect_noise(self, job_id: int) -> None:
    """O2U-Net over the project's labels; the top suspects go to the lead's re-review queue."""
    noise.detect_noise_run(job_id=job_id, retry=self.request.retries > 0)


@shared_task(bind=True, name="labeling.tasks.ml_cold_start", **ML_TASK)
def ml_cold_start(self, job_id: int) -> None:
    """Embed the pool (cached) and queue the seed images' nearest neighbours for labeling."""
    recall.cold_start_run(job_id=job_id, retry=self.request.retries > 0)


@shared_task(name="labeling.tasks.ml_embed_images", **ML_TASK)
def ml_embed_images(project_id: int, image_ids: list[int]) -> dict:
    """Add newly imported images' vectors to the project's store (those it lacks; safe to run
    twice), so cold-start recall finds them embedded."""
    return embeddings.embed_images_run(project_id=project_id, image_ids=image_ids)


@shared_task(bind=True, name="labeling.tasks.pool_audit", **DEFAULT_TASK)
def pool_audit(self, job_id: int) -> None:
    """Draw the next batch of a stratified pool audit and queue it (no model runs: CPU queue)."""
    audit.audit_run(job_id=job_id, retry=self.request.retries > 0)


@shared_task(name="labeling.tasks.ml_triage", **ML_TASK)
def ml_triage(project_id: int) -> dict:
    """One pass of the project's running triage: score new pool images, route them (accepted,
    confirm queue, normal queues), sample the accepted for triage's audit, check the pause rule.
    On the ml queue: it may run the model."""
    return triage.triage_pass(project_id=project_id)


@shared_task(
    bind=True,
    name="labeling.tasks.images_import_staged",
    # The default queue (no model runs), with the ml queue's hours: a big batch may take long.
    **{**DEFAULT_TASK, **{key: ML_TASK[key] for key in ("soft_time_limit", "time_limit")}},
)
def images_import_staged(self, job_id: int) -> None:
    """Import a big batch of uploads staged to disk by the import page (resumes after the last
    file recorded when a worker died)."""
    imports.staged_import_run(job_id=job_id, retry=self.request.retries > 0)


@shared_task(name="labeling.tasks.import_staging_sweep", **DEFAULT_TASK)
def import_staging_sweep() -> list[str]:
    """Periodic: remove staged uploads no queued or running import job needs."""
    return imports.staging_sweep()


@shared_task(name="labeling.tasks.triage_check", **DEFAULT_TASK)
def triage_check(project_id: int) -> str | None:
    """Triage's pause rule, after an audit label arrives."""
    return triage.triage_check(project_id=project_id)


@shared_task(bind=True, name="labeling.tasks.webhook_deliver", **DEFAULT_TASK)
def webhook_deliver(self, delivery_id: int) -> None:
    """One POST of a webhook delivery; another one later, with the wait doubled, while the
    receiver is down or answers 5xx (the service counts the attempts on the delivery's row)."""
    delay = webhooks.webhook_attempt(delivery_id=delivery_id)
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=None)
