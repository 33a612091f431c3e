"""Reads of background jobs: a project's jobs, one job, the log tail the browser polls."""

from __future__ import annotations

from django.db.models import QuerySet

from labeling.models import Job, Project

LOG_TAIL = 30


def jobs_list(*, project: Project | None = None, kind: str | None = None) -> QuerySet[Job]:
    """Jobs, newest first, with what their rows show (project, model version, who started)."""
    qs = Job.objects.select_related("project", "model_version", "created_by").order_by(
        "-created_at", "-id"
    )
    if project is not None:
        qs = qs.filter(project=project)
    if kind is not None:
        qs = qs.filter(kind=kind)
    return qs


def job_shard_counts(*, job: Job) -> dict[str, int]:
    """{"total": n, "done": m} of a sharded job (zeros for a job without shards)."""
    total = job.shards.count()
    done = job.shards.filter(status="done").count() if total else 0
    return {"total": total, "done": done}
