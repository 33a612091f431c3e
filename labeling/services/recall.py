"""The `cold_start` job: fill the labeling queue with the images likeliest to be positives.

METHOD.md's cold start: a few hundred positives are "recalled from the content pool by image
retrieval", the nearest neighbours of a handful of seed images (positives from user feedback).
An engineer picks seed images of the project (by id, from thumbnails or a search by source name)
or uploads a few (they go through the import service like any image, so they are deduplicated,
validated and stored; they are not queued). The job (`labeling.tasks.ml_cold_start`, on the ml
queue because it runs a network):

1. embeds the seeds and every eligible pool image with the pretrained EfficientNet-Lite0 at
   224 px, in batches, with progress; the vectors go into the project's vector store
   (labeling.ml.recall, mlcore.vectorstore), so a second recall over the same pool embeds
   nothing, and per-image vector files of earlier versions are imported instead of recomputed;
2. ranks the eligible pool images, one of two ways:
   - *similarity* (while the project has fewer than PROBE_MIN_PER_CLASS labeled positives or
     negatives): cosine similarity to the seeds, aggregated over the seeds by the `aggregate`
     parameter (mean, soft-max or max; mlcore.recall's docstring compares them);
   - *probe* (once it has at least PROBE_MIN_PER_CLASS of each): the logistic probe on frozen
     features (mlcore.probe) fitted on the labeled pool images' embeddings, the seeds as extra
     positives, because what people labeled, negatives included, says more than a few seeds.
     Labels under noise review (an open re-review item) are left out, as training does;
3. puts the top `k` into the project's default labeling queue with strategy COLD_START,
   priority = the ranking's score, details = {job_id, rank, ranking, similarity and
   seed_image_id, or probability} (labeling.services.queues.queue_items_place): an image not
   queued yet is added; one already WAITING there (queued by an import, no label yet) is moved
   to the front with the new strategy, and `details.moved_from` keeps what it was.

Seeds are labels (`label_seeds`, on by default): an engineer who picks an image as a seed says
it is a positive, so each seed without a label gets one, the positive class, attributed to the
engineer who started the job, strategy SEED; its waiting queue items are removed (nobody needs
to label it again). A seed someone already labeled keeps that label.

The result says which ranking ran (`ranking`: mode, the mlcore function, the aggregation or the
probe's fit, and how many labeled positives and negatives the project had), how many items it
added and moved, the seeds it labeled, and, when it queued nothing, why (`notice`, shown on the
job page).

Eligible: POOL images (the frozen validation split is labeled on its own terms, never by a
model's choice, from its own queue) with no active label, not a seed, and in no queue of the
project except as a waiting item of the labeling queue. Safe to run twice: a second run moves
the same items to the same places.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from labeling.models import Image, Job, Label, Project, Queue, QueueItem, Strategy
from labeling.selectors.labels import current_labels, labels_active
from labeling.services.imports import Status, uploads_import
from labeling.services.jobs import job_create, job_progress, job_run
from labeling.services.params import JobSpec, boolean, choice, image_ids, integer
from labeling.services.queues import (
    MODEL_PRIORITY_BASE,
    queue_get_or_create,
    queue_items_place,
)

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
        boolean(
            "label_seeds",
            default=True,
            label=_("Label the seeds as positives"),
            help_text=_(
                "The seeds you pick are positives by your choice: record each unlabeled seed "
                "as a positive label by you (strategy seed) and take it out of the queues. "
                "Turn off when a seed only looks like what you want to find."
            ),
        ),
    ),
)


def cold_start_params_clean(*, project: Project, params: dict) -> dict:
    """The cold_start job's parameters, validated by `COLD_START`, defaults filled in."""
    return COLD_START.clean(project=project, params=params)


def _labeling_queue(project: Project) -> Queue:
    return queue_get_or_create(project=project, kind=Queue.Kind.LABELING)


def cold_start_eligible(
    *, project: Project, queue: Queue | None = None, exclude_ids: Iterable[int] = ()
):
    """Pool images with no active label and in no queue of the project, except as a waiting
    item (open, unlabeled) of `queue` (the labeling queue), which a ranking may move; by id."""
    queue = queue or _labeling_queue(project)
    blocking = QueueItem.objects.filter(image=OuterRef("pk"), queue__project=project).exclude(
        queue=queue, status=QueueItem.Status.OPEN, labels_done=0
    )
    return (
        Image.objects.filter(project=project, split=Image.Split.POOL)
        .exclude(Exists(labels_active(project=project).filter(image=OuterRef("pk"))))
        .exclude(Exists(blocking))
        .exclude(pk__in=list(exclude_ids))
        .order_by("pk")
    )


def cold_start_why_nothing(*, project: Project, queue: Queue, seed_ids: Iterable[int]) -> str:
    """Why no pool image was eligible, in the counts an engineer can act on (the seeds are
    counted once, as seeds, even when they are labeled now)."""
    seed_ids = set(seed_ids)
    pool = Image.objects.filter(project=project, split=Image.Split.POOL).exclude(pk__in=seed_ids)
    labeled = pool.filter(
        Exists(labels_active(project=project).filter(image=OuterRef("pk")))
    ).count()
    elsewhere = (
        pool.exclude(Exists(labels_active(project=project).filter(image=OuterRef("pk"))))
        .filter(
            Exists(
                QueueItem.objects.filter(image=OuterRef("pk"), queue__project=project).exclude(
                    queue=queue, status=QueueItem.Status.OPEN, labels_done=0
                )
            )
        )
        .count()
    )
    return gettext(
        "Nothing to rank: of %(pool)d pool images, %(labeled)d are labeled, %(elsewhere)d are "
        "in another queue (or done), and %(seeds)d are seeds. Import more images or label "
        "what is queued."
    ) % {
        "pool": pool.count() + len(seed_ids),
        "labeled": labeled,
        "elsewhere": elsewhere,
        "seeds": len(seed_ids),
    }


@transaction.atomic
def cold_start_seeds_label(*, project: Project, seed_ids: Iterable[int], engineer) -> dict:
    """Record the seeds as positive labels by `engineer` (strategy SEED), except seeds that
    already have a label, and remove their waiting queue items. Returns the counts."""
    seed_ids = sorted(set(seed_ids))
    labeled = set(
        labels_active(project=project)
        .filter(image_id__in=seed_ids)
        .values_list("image_id", flat=True)
    )
    new = [pk for pk in seed_ids if pk not in labeled]
    rows = []
    for pk in new:
        label = Label(
            project=project,
            image_id=pk,
            annotator=engineer,
            kind=Label.Kind.ANNOTATION,
            value=project.positive_class,
            strategy=Strategy.SEED,
        )
        label.full_clean(exclude=["queue", "queue_item", "supersedes"])
        rows.append(label)
    Label.objects.bulk_create(rows)
    # Nobody needs to label a seed again: its waiting items leave the annotators' queues (lock
    # order: item rows by ascending id).
    waiting = list(
        QueueItem.objects.select_for_update()
        .filter(
            Q(queue__kind=Queue.Kind.LABELING) | Q(queue__kind=Queue.Kind.VALIDATION),
            queue__project=project,
            image_id__in=new,
            status=QueueItem.Status.OPEN,
            labels_done=0,
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    QueueItem.objects.filter(pk__in=waiting).update(status=QueueItem.Status.REMOVED)
    return {
        "seeds_labeled": len(rows),
        "seeds_already_labeled": len(labeled),
        "seed_items_removed": len(waiting),
    }


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


def probe_labels(*, project: Project) -> dict[int, int]:
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
    from labeling.ml.recall import embed_rows, project_store, recall_by_probe, recall_nearest

    project = job.project
    params = job.params
    seed_ids = [int(pk) for pk in params["seed_image_ids"]]
    job_progress(job_id=job.pk, stage="finding the pool", percent=1.0)
    seeded: dict[str, int] = {}
    # Jobs queued before the parameter existed did not ask for seed labels.
    if params.get("label_seeds", False) and job.created_by is not None:
        seeded = cold_start_seeds_label(project=project, seed_ids=seed_ids, engineer=job.created_by)
    queue = _labeling_queue(project)
    labels = probe_labels(project=project)
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
    pool_rows = _rows(cold_start_eligible(project=project, queue=queue, exclude_ids=seed_ids))
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
    store = project_store(project.pk)
    known = embed_rows(seed_rows, store=store, batch_size=params["batch_size"])

    def on_batch(done: int, total: int) -> None:
        # Raises JobCancelled when an engineer cancelled: embedding stops at this batch.
        job_progress(
            job_id=job.pk,
            stage=f"embedding the pool ({done}/{total} new)",
            percent=3.0 + 92.0 * done / max(total, 1),
        )

    # The similarity ranking searches the store; only the probe scores every pool vector.
    pool = embed_rows(
        pool_rows,
        store=store,
        batch_size=params["batch_size"],
        on_batch=on_batch,
        load_vectors=use_probe,
    )
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
            store=store,
        )
    score_name = "probability" if ranking.mode == "probe" else "similarity"
    job_progress(
        job_id=job.pk,
        stage="ranking",
        percent=98.0,
        line=gettext("ranked by %(mode)s (%(function)s)")
        % {"mode": ranking.mode, "function": ranking.function},
    )
    placed = queue_items_place(
        queue=queue,
        ranked=[r.image_id for r in ranking.items],
        strategy=Strategy.COLD_START,
        # Above everything an import queued (priority 0): the neighbours are served first.
        priorities={r.image_id: MODEL_PRIORITY_BASE + r.score for r in ranking.items},
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
        created_by=job.created_by,
    )
    queued = placed["added"] + placed["moved"]
    result = {
        "seeds": len(set(known.image_ids) & set(seed_ids)),  # the readable ones
        "pool": len(pool_rows),
        "embedded": pool.computed + known.computed,
        "from_cache": pool.cached + known.cached,
        "unreadable": (known.unreadable + pool.unreadable)[:100],
        "recalled": len(ranking.items),
        "queued": queued,
        "added": placed["added"],
        "moved": placed["moved"],
        "queue_id": queue.pk,
        **seeded,
        "ranking": {
            "mode": ranking.mode,
            "function": ranking.function,
            "labeled_positives": labeled_positives,
            "labeled_negatives": labeled_negatives,
            "probe_min_per_class": PROBE_MIN_PER_CLASS,
            **ranking.details,
        },
    }
    if not queued:
        result["notice"] = cold_start_why_nothing(project=project, queue=queue, seed_ids=seed_ids)
    job_progress(
        job_id=job.pk,
        stage="ranking",
        percent=99.0,
        line=result.get("notice")
        or gettext("%(added)d added to the queue, %(moved)d waiting items moved up")
        % {"added": placed["added"], "moved": placed["moved"]},
    )
    return result


def cold_start_run(*, job_id: int, retry: bool = False) -> None:
    """The task body: recall under job_run's status guard (errors land on the Job)."""
    job_run(job_id=job_id, body=_recall, retry=retry)
