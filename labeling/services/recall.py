"""The `cold_start` job: fill the labeling queue with the images likeliest to be positives.

METHOD.md's cold start: a few hundred positives are "recalled from the content pool by image
retrieval", the nearest neighbours of a handful of seed images (positives from user feedback).
An engineer picks seed images of the project (by id, from thumbnails or a search by source name)
or uploads a few (they go through the import service like any image, so they are deduplicated,
validated and stored; they are not queued). The job (`labeling.tasks.ml_cold_start`, on the ml
queue because it runs a network):

1. embeds the seeds and every eligible pool image with the pretrained EfficientNet-Lite0 at
   224 px, in batches, with progress; embeddings are cached per content hash in storage
   (labeling.ml.recall), so a second recall over the same pool embeds nothing;
2. ranks the eligible pool images, one of two ways:
   - *similarity* (while the project has fewer than PROBE_MIN_PER_CLASS labeled positives or
     negatives): cosine similarity to the seeds, aggregated over the seeds by the `aggregate`
     parameter (mean, soft-max or max; mlcore.recall's docstring compares them);
   - *probe* (once it has at least PROBE_MIN_PER_CLASS of each): the logistic probe on frozen
     features (mlcore.probe) fitted on the labeled pool images' embeddings, the seeds as extra
     positives, because what people labeled, negatives included, says more than a few seeds.
     Labels under noise review (an open re-review item) are left out, as training does;
3. adds the top `k` to the project's default labeling queue with strategy COLD_START, priority
   = the ranking's score, details = {job_id, rank, ranking, similarity and seed_image_id, or
   probability}.

The result says which ranking ran (`ranking`: mode, the mlcore function, the aggregation or the
probe's fit, and how many labeled positives and negatives the project had).

Eligible: POOL images (the frozen validation split is labeled on its own terms, never by a
model's choice) with no active label, not already an item of any of the project's queues, and
not a seed. Safe to run twice: the queue write skips images already in the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from labeling.models import Image, Job, Project, Queue, QueueItem, Strategy
from labeling.selectors.labels import current_labels, labels_active
from labeling.services.imports import Status, uploads_import
from labeling.services.jobs import job_create, job_progress, job_run
from labeling.services.params import JobSpec, choice, image_ids, integer
from labeling.services.queues import queue_get_or_create, queue_items_add

MAX_SEEDS = 500
MAX_K = 100_000
MAX_BATCH = 512
# Labeled positives AND negatives (each) from which the probe ranks instead of the seeds.
PROBE_MIN_PER_CLASS = 5
# The probe's cross-validation folds are drawn with this seed: a rerun ranks the same way.
PROBE_SEED = 0


def _project_image_ids(*, project: Project, value: list[int]) -> list[int]:
    found = set(Image.objects.filter(project=project, pk__in=value).values_list("pk", flat=True))
    missing = [pk for pk in value if pk not in found]
    if missing:
        raise ValidationError(
            {
                "seed_image_ids": gettext("No images %(ids)s in project %(project)s.")
                % {"ids": missing[:20], "project": project.slug}
            }
        )
    return value


# The parameters of a cold_start job (labeling.services.params; docs/jobs.md). The cold-start
# page renders the seed picker itself and every other parameter from here.
COLD_START = JobSpec(
    kind=Job.Kind.COLD_START,
    params=(
        image_ids(
            "seed_image_ids",
            max_items=MAX_SEEDS,
            resolve=_project_image_ids,
            label=_("Seed images"),
            help_text=_("Ids of the project's images that show what to find (positives)."),
            empty_message=_("Pick at least one seed image."),
        ),
        integer(
            "k",
            default=100,
            low=1,
            high=MAX_K,
            label=_("Neighbours to queue"),
            help_text=_("How many of the seeds' nearest pool images go to the labeling queue."),
        ),
        integer(
            "batch_size",
            default=32,
            low=1,
            high=MAX_BATCH,
            label=_("Batch size"),
            help_text=_("Images per embedding batch."),
        ),
        # The values are mlcore.recall.AGGREGATES, the default DEFAULT_AGGREGATE (a test checks).
        choice(
            "aggregate",
            default="softmax",
            choices=(
                ("softmax", _("Soft maximum over the seeds")),
                ("mean", _("Mean over the seeds")),
                ("max", _("Maximum over the seeds")),
            ),
            label=_("Similarity to the seeds"),
            help_text=_(
                "How an image's similarities to the seeds combine. Soft maximum: close to the "
                "seeds of its own kind, several agreeing seeds weighing more than one (best "
                "in the benchmark); maximum: close to any one seed; mean: close to all of "
                "them. Once the project has labeled positives and negatives, a classifier "
                "trained on them ranks instead."
            ),
        ),
    ),
)


def cold_start_params_clean(*, project: Project, params: dict) -> dict:
    """The cold_start job's parameters, validated by `COLD_START`, defaults filled in."""
    return COLD_START.clean(project=project, params=params)


def cold_start_eligible(*, project: Project, exclude_ids: Iterable[int] = ()):
    """Pool images with no active label and in none of the project's queues, by id."""
    return (
        Image.objects.filter(project=project, split=Image.Split.POOL)
        .exclude(Exists(labels_active(project=project).filter(image=OuterRef("pk"))))
        .exclude(Exists(QueueItem.objects.filter(image=OuterRef("pk"), queue__project=project)))
        .exclude(pk__in=list(exclude_ids))
        .order_by("pk")
    )


def cold_start_start(
    *,
    project: Project,
    created_by: User,
    seed_image_ids: Iterable[Any] = (),
    uploads: Iterable[Any] = (),
    params: Mapping[str, Any] | None = None,
) -> tuple[Job, list[str]]:
    """Start a cold-start job from picked seed ids plus uploaded seed files; `params` holds
    the job's other parameters (`COLD_START`, e.g. {"k": 50}). Uploads are imported first (not
    queued); files the import rejects are reported back and the job runs on the rest. Returns
    the job and the import's messages."""
    seeds = list(seed_image_ids)
    notes: list[str] = []
    uploads = list(uploads)
    if uploads:
        report = uploads_import(
            project=project, uploads=uploads, created_by=created_by, add_to_queue=False
        )
        for entry in report.entries:
            if entry.status in (Status.IMPORTED, Status.DUPLICATE) and entry.image_id:
                seeds.append(entry.image_id)
            else:
                notes.append(f"{entry.name}: {entry.status} ({entry.reason})")
        notes.extend(report.archive_errors)
    job = job_create(
        project=project,
        kind=Job.Kind.COLD_START,
        params={**(params or {}), "seed_image_ids": seeds},
        created_by=created_by,
    )
    return job, notes


def _rows(images) -> list:
    from labeling.ml.recall import RecallRow

    return [
        RecallRow(image_id=pk, name=name, content_hash=content_hash)
        for pk, name, content_hash in images.values_list("pk", "file", "content_hash")
    ]


def _probe_labels(*, project: Project) -> dict[int, int]:
    """{image id: 1 positive / 0 negative} of the project's labeled pool images, without labels
    under noise review (training leaves them out too)."""
    from labeling.services.training import unresolved_suspect_ids

    suspects = unresolved_suspect_ids(project=project)
    positive = project.positive_class
    return {
        image_id: int(value == positive)
        for image_id, value in current_labels(project=project, split=Image.Split.POOL).items()
        if image_id not in suspects
    }


def _recall(job: Job) -> dict:
    from labeling.ml.recall import embed_rows, recall_by_probe, recall_nearest

    project = job.project
    params = job.params
    seed_ids = [int(pk) for pk in params["seed_image_ids"]]
    job_progress(job_id=job.pk, stage="finding the pool", percent=1.0)
    labels = _probe_labels(project=project)
    labeled_positives = sum(labels.values())
    labeled_negatives = len(labels) - labeled_positives
    use_probe = min(labeled_positives, labeled_negatives) >= PROBE_MIN_PER_CLASS
    # The seeds are positives, unless someone has labeled one otherwise since.
    positive_ids = {i for i, y in labels.items() if y} | {
        i for i in seed_ids if labels.get(i, 1) == 1
    }
    # The probe trains on the labeled images and the seeds; similarity needs the seeds only.
    train_ids = sorted(set(seed_ids) | set(labels)) if use_probe else seed_ids
    seed_rows = _rows(Image.objects.filter(project=project, pk__in=train_ids).order_by("pk"))
    pool_rows = _rows(cold_start_eligible(project=project, exclude_ids=seed_ids))
    job_progress(
        job_id=job.pk,
        stage="embedding seeds",
        percent=2.0,
        line=gettext(
            "%(seeds)d seeds, %(positives)d labeled positives and %(negatives)d labeled "
            "negatives, %(pool)d eligible pool images"
        )
        % {
            "seeds": len(seed_ids),
            "positives": labeled_positives,
            "negatives": labeled_negatives,
            "pool": len(pool_rows),
        },
    )
    known = embed_rows(seed_rows, batch_size=params["batch_size"])

    def on_batch(done: int, total: int) -> None:
        # Raises JobCancelled when an engineer cancelled: embedding stops at this batch.
        job_progress(
            job_id=job.pk,
            stage=f"embedding the pool ({done}/{total} new)",
            percent=3.0 + 92.0 * done / max(total, 1),
        )

    pool = embed_rows(pool_rows, batch_size=params["batch_size"], on_batch=on_batch)
    job_progress(
        job_id=job.pk,
        stage="ranking",
        percent=96.0,
        line=f"pool: {pool.computed} embedded, {pool.cached} from the cache",
    )
    if use_probe:
        ranking = recall_by_probe(
            pool=pool,
            labeled=known,
            positive_ids=positive_ids,
            k=params["k"],
            exclude_ids=set(seed_ids),
            seed=PROBE_SEED,
        )
    else:
        ranking = recall_nearest(
            pool=pool,
            seeds=known,
            k=params["k"],
            exclude_ids=set(seed_ids),
            # Jobs queued before the parameter existed ranked by the maximum.
            aggregate=params.get("aggregate", "max"),
        )
    score_name = "probability" if ranking.mode == "probe" else "similarity"
    job_progress(
        job_id=job.pk,
        stage="ranking",
        percent=98.0,
        line=gettext("ranked by %(mode)s (%(function)s)")
        % {"mode": ranking.mode, "function": ranking.function},
    )
    queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    added = queue_items_add(
        queue=queue,
        images=[r.image_id for r in ranking.items],
        strategy=Strategy.COLD_START,
        priorities={r.image_id: r.score for r in ranking.items},
        details_by_image={
            r.image_id: {
                "job_id": job.pk,
                "rank": r.rank,
                "ranking": ranking.mode,
                score_name: round(r.score, 6),
                **({"seed_image_id": r.seed_image_id} if r.seed_image_id is not None else {}),
            }
            for r in ranking.items
        },
    )
    return {
        "seeds": len(set(known.image_ids) & set(seed_ids)),  # the readable ones
        "pool": len(pool_rows),
        "embedded": pool.computed + known.computed,
        "from_cache": pool.cached + known.cached,
        "unreadable": (known.unreadable + pool.unreadable)[:100],
        "recalled": len(ranking.items),
        "queued": added,
        "queue_id": queue.pk,
        "ranking": {
            "mode": ranking.mode,
            "function": ranking.function,
            "labeled_positives": labeled_positives,
            "labeled_negatives": labeled_negatives,
            "probe_min_per_class": PROBE_MIN_PER_CLASS,
            **ranking.details,
        },
    }


def cold_start_run(*, job_id: int, retry: bool = False) -> None:
    """The task body: recall under job_run's status guard (errors land on the Job)."""
    job_run(job_id=job_id, body=_recall, retry=retry)
