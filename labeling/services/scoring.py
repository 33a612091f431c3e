"""Scoring: the job's model version scores every image of the project, in shards.

Every image: pool and validation, labeled or not. Selection needs the unlabeled pool's scores,
but people need the others: the lead re-reviewing a flagged (hence labeled) image sees what the
active model says about it, and an engineer can compare a version's scores with the labels.
Selection reads only what it may queue (labeling.services.selection.eligible_scores: pool
images never labeled and in no queue), so scoring labeled images never sends them back to
annotators.

`score_pool_run` (task `labeling.tasks.ml_score_pool`; the job kind keeps its historical name)
plans the job: the project's images with no Score from the job's model version, by ascending
id, cut into JobShards of at most `shard_size` ids; then one task
`labeling.tasks.ml_score_shard(job_id, index)` per pending shard, so every running `ml` worker
takes a share. Re-running the job kind later skips what that version already scored; an image
imported or labeled later is scored by the next run (a label does not change a Score).

`score_shard_run` scores one shard and, in ONE transaction under a row lock on the Job, upserts
the Score rows (keyed by (image, model version)), marks the shard done and counts the shards
still pending; the shard that sees zero finishes the job. There is no chord and no result
backend: the database's count is the only thing that says the job is complete, so a shard that
runs twice (after a worker died) rewrites the same rows and changes nothing.

An image whose file is missing or corrupt gets no Score; it is recorded in the job's result
(`errors`, capped, and `error_count`) and the job carries on. A later run tries it again.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from labeling.models import Image, Job, JobShard, ModelVersion, Project, Score
from labeling.services.jobs import (
    TRANSIENT_ERRORS,
    JobCancelled,
    job_fail,
    job_mark_cancelled,
    job_progress,
    job_run,
    task_enqueue,
)
from labeling.services.params import JobSpec, integer, model_version

SHARD_TASK = "labeling.tasks.ml_score_shard"
MAX_SHARD_SIZE = 10_000
MAX_BATCH_SIZE = 1024
MAX_RECORDED_ERRORS = 100


def model_version_for_scoring(*, project: Project, model_version_id=None) -> ModelVersion:
    """The version to score with: the one named, or the project's active one; READY, with a
    checkpoint file."""
    if model_version_id in (None, ""):
        version = project.active_model_version
        if version is None:
            raise ValidationError(
                {"model_version_id": _("This project has no active model version to score with.")}
            )
    else:
        try:
            version = ModelVersion.objects.get(pk=int(model_version_id), project=project)
        except (ValueError, TypeError, ModelVersion.DoesNotExist) as error:
            raise ValidationError(
                {
                    "model_version_id": _("No model version %(id)r in this project.")
                    % {"id": model_version_id}
                }
            ) from error
    if version.status != ModelVersion.Status.READY or not version.checkpoint:
        raise ValidationError(
            {
                "model_version_id": _("Model version %(name)r is not ready to score.")
                % {"name": version.name}
            }
        )
    return version


def _scoring_version_id(*, project: Project, value: int | None) -> int:
    return model_version_for_scoring(project=project, model_version_id=value).pk


# The parameters of a score_pool job (labeling.services.params; docs/jobs.md).
SCORE_POOL = JobSpec(
    kind=Job.Kind.SCORE_POOL,
    params=(
        model_version(
            resolve=_scoring_version_id,
            help_text=_(
                "The ready model version that scores the pool; the project's active version "
                "if empty."
            ),
        ),
        integer(
            "shard_size",
            default=settings.IMAGECLEAN_SCORING_SHARD_SIZE,
            low=1,
            high=MAX_SHARD_SIZE,
            label=_("Images per shard"),
            help_text=_(
                "Images per scoring task; every running ml worker takes shards, so smaller "
                "shards spread the work wider."
            ),
        ),
        integer(
            "batch_size",
            default=settings.IMAGECLEAN_SCORING_BATCH_SIZE,
            low=1,
            high=MAX_BATCH_SIZE,
            label=_("Batch size"),
            help_text=_("Images per forward pass of the network."),
        ),
    ),
)


def score_pool_params_clean(*, project: Project, params: dict) -> dict:
    """The score_pool job's parameters, validated by `SCORE_POOL`, defaults filled in."""
    return SCORE_POOL.clean(project=project, params=params)


def images_to_score(*, project: Project, model_version: ModelVersion):
    """Every image of the project (any split, labeled or not) with no Score from
    `model_version`, by id."""
    return (
        Image.objects.filter(project=project)
        .exclude(Exists(Score.objects.filter(image=OuterRef("pk"), model_version=model_version)))
        .order_by("pk")
    )


# --- The planning task ------------------------------------------------------------------------
def shards_plan(job: Job) -> list[int]:
    """Cut what the job's version has not scored into JobShards of at most `shard_size` ids
    (ascending), start the job's counters, and return the ids. Inside the planner's
    transaction; bench/scoring.py times it at pool scale."""
    ids = list(
        images_to_score(project=job.project, model_version=job.model_version).values_list(
            "pk", flat=True
        )
    )
    size = int(job.params["shard_size"])
    JobShard.objects.bulk_create(
        [
            JobShard(job=job, index=n, image_ids=ids[start : start + size])
            for n, start in enumerate(range(0, len(ids), size))
        ],
        ignore_conflicts=True,  # a concurrent planner made them: same ids, same rows
        batch_size=500,
    )
    # The counters the shards' commits keep (_shard_counts).
    job.result = {
        "images": len(ids),
        "shards": (len(ids) + size - 1) // size,
        "shards_done": 0,
        "scored": 0,
        "error_count": 0,
        "errors": [],
    }
    Job.objects.filter(pk=job.pk).update(result=job.result)
    return ids


def _plan(job: Job) -> dict | None:
    version = job.model_version
    if version is None:
        raise ValueError("the job's model version was deleted")
    with transaction.atomic():
        if not job.shards.exists():
            ids = shards_plan(job)
            size = int(job.params["shard_size"])
            if not ids:
                return {"images": 0, "shards": 0, "scored": 0, "error_count": 0, "errors": []}
            job_progress(
                job_id=job.pk,
                stage="scoring",
                percent=0.0,
                line=f"{len(ids)} images to score with {version.name} in "
                f"{(len(ids) + size - 1) // size} shards of at most {size}",
            )
            pending = job.shards.filter(status=JobShard.Status.PENDING)
        else:
            # Resuming after the worker was lost: re-enqueue every shard not done yet. Not only
            # the ones a worker started: a dead worker may also have reserved (prefetched)
            # shards it never started, and Redis gives those back only after the visibility
            # timeout (hours). A shard sent twice is harmless (it returns at once when DONE, and
            # its scores are upserts); recovery runs only after a whole stale period with no
            # progress, so this cannot flood the queue.
            pending = job.shards.filter(status=JobShard.Status.PENDING)
        for index in pending.order_by("index").values_list("index", flat=True):
            task_enqueue(SHARD_TASK, job.pk, index)
    return None  # the last shard finishes the job


def score_pool_run(*, job_id: int, retry: bool = False) -> None:
    job_run(job_id=job_id, body=_plan, retry=retry)


# --- One shard --------------------------------------------------------------------------------
def _merge_errors(job: Job, errors: list[tuple[int, str]]) -> None:
    result = dict(job.result or {})
    recorded = list(result.get("errors") or [])
    room = MAX_RECORDED_ERRORS - len(recorded)
    recorded += [{"image_id": pk, "error": text[:300]} for pk, text in errors[: max(0, room)]]
    result["errors"] = recorded
    result["error_count"] = int(result.get("error_count") or 0) + len(errors)
    job.result = result


def score_shard_run(*, job_id: int, shard_index: int) -> None:
    """Score one shard (see the module docstring). Safe to run twice."""
    job = Job.objects.select_related("model_version").filter(pk=job_id).first()
    if job is None or job.status != Job.Status.RUNNING:
        return  # deleted, cancelled, failed or finished: nothing to do
    shard = JobShard.objects.filter(job=job, index=shard_index).first()
    if shard is None or shard.status == JobShard.Status.DONE:
        return
    # The ML bridge is imported here, not at module level: the web process validates scoring
    # parameters through this module and should not pay for importing torch.
    from labeling.ml.cascade import CheckpointError, load_cascade_cached
    from labeling.ml.datasets import ImageRow
    from labeling.ml.scoring import score_rows

    # Mark the shard started (its attempts count), so recovery knows which shards a dead
    # worker held: a pending shard with attempts > 0 and a stale job heartbeat.
    JobShard.objects.filter(pk=shard.pk).update(attempts=F("attempts") + 1)
    total_shards, done_shards = _shard_counts(job)
    try:
        cascade = load_cascade_cached(job.model_version, device=settings.IMAGECLEAN_ML_DEVICE)
        names = dict(Image.objects.filter(pk__in=shard.image_ids).values_list("pk", "file"))
        rows = [ImageRow(image_id=pk, name=names[pk]) for pk in shard.image_ids if pk in names]

        def on_batch(done: int, total: int) -> None:
            job_progress(job_id=job_id, stage="scoring")  # heartbeat; raises when cancelled
            fraction = (done_shards + done / max(1, total)) / total_shards
            _progress_at_least(job_id, 100.0 * fraction)

        job_progress(job_id=job_id, stage="scoring")
        outcome = score_rows(
            cascade,
            rows,
            batch_size=int(job.params.get("batch_size", settings.IMAGECLEAN_SCORING_BATCH_SIZE)),
            num_workers=settings.IMAGECLEAN_SCORING_LOADER_WORKERS,
            on_batch=on_batch,
        )
    except JobCancelled:
        job_mark_cancelled(job_id=job_id)
        return
    except TRANSIENT_ERRORS:
        raise
    except CheckpointError as error:
        job_fail(job_id=job_id, error=str(error))
        return
    except Exception as error:  # one broken shard fails the job, visibly, not the worker
        job_fail(job_id=job_id, error=f"shard {shard_index}: {type(error).__name__}: {error}")
        return
    _shard_commit(job_id=job_id, shard=shard, outcome=outcome)


# The values a Score takes from a record; on conflict (the image already has a Score from this
# version) they replace the old ones, `created_at` stays.
_SCORE_VALUES = ("stage1", "stage2", "score", "decision", "predicted_loss")
_PG_TYPES = {"decision": "boolean"}  # the others are float8


def scores_upsert(*, model_version_id: int, records) -> int:
    """Insert or update the Score of each record (labeling.ml.scoring.ScoreRecord) for the
    version; returns how many. On PostgreSQL one statement per call: the records go in as one
    array per column and `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE` writes them
    (half the time of the ORM's bulk_create with update_conflicts, which builds a model and
    eight parameters per row: bench/scoring.py measures both). Elsewhere (the embedded
    SQLite) the ORM's upsert."""
    records = list(records)
    if not records:
        return 0
    if connection.vendor != "postgresql":
        Score.objects.bulk_create(
            [
                Score(
                    model_version_id=model_version_id,
                    image_id=r.image_id,
                    **{name: getattr(r, name) for name in _SCORE_VALUES},
                )
                for r in records
            ],
            update_conflicts=True,
            unique_fields=["image", "model_version"],
            update_fields=list(_SCORE_VALUES),
            batch_size=500,
        )
        return len(records)
    columns = ", ".join(_SCORE_VALUES)
    arrays = ", ".join(f"%s::{_PG_TYPES.get(name, 'float8')}[]" for name in _SCORE_VALUES)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in _SCORE_VALUES)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Score._meta.db_table} (image_id, model_version_id, {columns}, created_at)
            SELECT r.image_id, %s, {", ".join(f"r.{name}" for name in _SCORE_VALUES)}, now()
            FROM unnest(%s::bigint[], {arrays}) AS r(image_id, {columns})
            ON CONFLICT (image_id, model_version_id) DO UPDATE SET {updates}
            """,  # noqa: S608 (names from this module, values as parameters)
            [
                model_version_id,
                [r.image_id for r in records],
                *([getattr(r, name) for r in records] for name in _SCORE_VALUES),
            ],
        )
    return len(records)


def _shard_counts(job: Job) -> tuple[int, int]:
    """(shards, shards done). Kept as counters in the job's result: set by the planner, and
    `shards_done` raised by each shard's commit, which marks its shard done under the job's
    row lock, so the counter is exact without counting a million-image job's thousands of
    shard rows at every commit (that cost grew with the job: bench/scoring.py). A job planned
    before the counters existed is counted."""
    result = job.result or {}
    if "shards" in result and "shards_done" in result:
        return int(result["shards"]), int(result["shards_done"])
    return job.shards.count(), job.shards.filter(status=JobShard.Status.DONE).count()


def _progress_at_least(job_id: int, percent: float) -> None:
    """Raise the job's percent to `percent`, never lower it. Shards run in parallel and each
    estimates from the shards done when it started plus its own batches, so one shard's
    estimate can be below another's; the job's progress only ever moves forward. Each estimate
    is at most the true share of images scored, and so is their maximum."""
    Job.objects.filter(pk=job_id, percent__lt=percent).update(percent=min(100.0, percent))


def _shard_commit(*, job_id: int, shard: JobShard, outcome) -> None:
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status != Job.Status.RUNNING:
            return  # cancelled or failed while this shard ran: its results are dropped
        total, done = _shard_counts(job)  # before this shard is marked
        marked = JobShard.objects.filter(pk=shard.pk, status=JobShard.Status.PENDING).update(
            status=JobShard.Status.DONE, finished_at=now
        )
        if not marked:
            return  # a duplicate delivery got here first and wrote the same scores
        scores_upsert(model_version_id=job.model_version_id, records=outcome.records)
        _merge_errors(job, outcome.errors)
        result = job.result
        result["scored"] = int(result.get("scored") or 0) + len(outcome.records)
        pending = total - (done + 1)
        result["shards"] = total
        result["shards_done"] = done + 1
        # The aggregate over the shards: the share done (at least any shard's estimate).
        job.percent = max(job.percent, 100.0 * (total - pending) / total)
        job.heartbeat_at = now
        line = f"shard {shard.index}: {len(outcome.records)} scored"
        if outcome.errors:
            line += f", {len(outcome.errors)} unreadable (first: image {outcome.errors[0][0]})"
        job.log = [*(job.log or []), f"{now:%H:%M:%S} {line}"][-200:]
        fields = ["result", "percent", "heartbeat_at", "log"]
        if pending == 0:
            job.status = Job.Status.SUCCEEDED
            job.stage = "done"
            job.finished_at = now
            job.log = [*job.log, f"{now:%H:%M:%S} succeeded"][-200:]
            fields += ["status", "stage", "finished_at"]
        job.save(update_fields=fields)
        if pending == 0:
            # Chained: a running triage routes what this job scored (on commit).
            from labeling.services.triage import triage_after_new_images

            triage_after_new_images(project=job.project)
