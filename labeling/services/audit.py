"""The pool audit: a stratified probability sample of the pool, and the pool estimates it gives.

Labels the loop collects are chosen by the model, so they say nothing unbiased about the pool.
An audit job draws a sample whose inclusion probabilities are known (mlcore.estimates; the
math: docs/estimates.md):

- **Frame and strata.** The first audit job of a model version fixes its frame: the pool images
  that version has scored, as of the job's start (``design.frame_until``), sorted by image id.
  The strata cut the frame's ranking scores (``Score.score``) by the score distribution, with
  the version's decision thresholds as boundaries, and never mix images the cascade calls
  positive with the others (``design.split_by``: its AND of two stages is no threshold on the
  ranking score). Later audit jobs of the same version continue
  the same audit: same frame, same strata (``audit_id`` names the first job).
- **A second opinion on the called negatives.** The recall interval is made of the positives
  the model misses, spread over the images it calls negative. When the project has
  ``PROBE_MIN_PER_CLASS`` labels of each class, those images are cut instead by rank on the
  logistic probe of cold start (frozen embeddings of the project's vector store, fitted on the
  labels of the audit's start; ``labeling.ml.recall.probe_second_opinion``), which ranks the
  model's misses better than its own score does. Its values are kept in a file of the media
  storage (``design.negatives_by.file``) so later jobs and the estimates cut the same strata.
- **Allocation, updated as labels arrive.** Each job adds ``labels`` items, allocated by
  Neyman's rule from the positive rates the audit's labels show so far (the model's mean score
  while there are few), then drawn uniformly within each stratum. ``target`` says which
  estimate the allocation favours.
- **Served like any other work.** Drawn images go to the project's labeling queue
  (``queue_items_add``) with strategy ``POOL_AUDIT`` and priorities drawn uniformly up to the
  highest open priority there, so they are served among the rest and an annotator cannot tell
  them apart (the queue API shows no strategy or details). A drawn image already waiting in the
  queue keeps its item; it is in the sample all the same.
  Every Label copies the strategy, as for every queue. A drawn image somebody already labeled
  is not asked again: its current label is the observation.
- **Only audit labels, with their weights.** The estimates read the current label of the drawn
  images only (``current_labels``, the one rule for that); labels of images the audit did not
  draw never enter them. Each drawn image of stratum h stands for N_h / n_h images.

`pool_estimates_get` (a read) computes the estimates of the latest audit of a version, with the
forecast of labels needed for a requested interval width and, per model-driven strategy, the
labels expected to find the next positives at its yield so far.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from labeling.ml import estimates as bridge
from labeling.models import Image, Job, ModelVersion, Project, Queue, QueueItem, Score, Strategy
from labeling.selectors.labels import current_labels
from labeling.selectors.strategies import strategy_yield
from labeling.services.jobs import job_progress, job_run
from labeling.services.params import (
    JobSpec,
    choice,
    integer,
    model_version,
    project_version,
    seed_param,
)
from labeling.services.queues import queue_get_or_create, queue_items_add

DECISIONS = ("cascade", "stage1", "stage2")
# The decision no stratum straddles, so the labels of a stratum speak for one side of it.
SPLIT_BY = "cascade"
# Strategies whose yield the forecast reports (the ones a model drives).
MODEL_STRATEGIES = (
    Strategy.CONFIDENCE_BAND,
    Strategy.LOSS_RANKED,
    Strategy.BAND_AND_LOSS,
    Strategy.COLD_START,
)
DEFAULT_WIDTH = 0.1
NEXT_POSITIVES = 10


# The parameters of an audit job (labeling.services.params; docs/jobs.md).
AUDIT = JobSpec(
    kind=Job.Kind.AUDIT,
    params=(
        model_version(
            resolve=project_version(
                no_active=_("This project has no active model version to audit."), ready_only=True
            ),
            help_text=_(
                "The model version to audit; the project's active version if empty. A second "
                "audit job of the same version continues its audit (same strata, more labels)."
            ),
        ),
        integer(
            "labels",
            default=200,
            low=1,
            high=100_000,
            label=_("Audit labels to add"),
            help_text=_(
                "How many pool images this job adds to the audit sample, allocated across the "
                "score strata by the uncertainty the labels so far show."
            ),
        ),
        integer(
            "strata",
            default=8,
            low=1,
            high=50,
            label=_("Score strata"),
            help_text=_(
                "Strata cut from the score distribution when the audit starts (1: uniform "
                "random sampling). Ignored when the job continues an audit."
            ),
        ),
        choice(
            "target",
            default="balanced",
            choices=(
                ("balanced", _("Prevalence, precision and recall alike")),
                ("prevalence", _("Prevalence")),
                ("precision", _("Precision")),
                ("recall", _("Recall")),
            ),
            label=_("Allocate for"),
            help_text=_("Which estimate the labels should narrow most."),
        ),
        seed_param(),
    ),
)


# --- The frame --------------------------------------------------------------------------------
def _frame(version: ModelVersion, until) -> dict[str, Any]:
    """The audited pool, sorted by image id: ids (N,), scores (N,), decisions name -> (N,)."""
    rows = list(
        Score.objects.filter(
            model_version=version,
            image__project_id=version.project_id,
            image__split=Image.Split.POOL,
            created_at__lte=until,
        )
        .order_by("image_id")
        .values_list("image_id", "score", "stage1", "stage2", "decision")
    )
    if not rows:
        raise ValidationError(
            gettext("Model version %(name)s has scored no pool image: score the pool first.")
            % {"name": version.name}
        )
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    scores = np.array([row[1] for row in rows], dtype=np.float64)
    stage1 = np.array([row[2] for row in rows], dtype=np.float64)
    stage2 = np.array([np.nan if row[3] is None else row[3] for row in rows], dtype=np.float64)
    thresholds = (version.metrics or {}).get("thresholds") or {}
    decisions = {"cascade": np.array([bool(row[4]) for row in rows])}
    for name, values in (("stage1", stage1), ("stage2", stage2)):
        threshold = thresholds.get(name)
        if threshold is not None and np.isfinite(values).all():
            decisions[name] = values >= float(threshold)
    cut_points = sorted(
        {float(thresholds[name]) for name in ("stage1", "stage2") if thresholds.get(name)}
    )
    return {"ids": ids, "scores": scores, "decisions": decisions, "cut_points": cut_points}


def _second_opinion(job: Job, frame: dict) -> tuple[np.ndarray | None, dict]:
    """A new audit's ranking of the frame for the strata of the called negatives: the probe's
    values, saved to a file named in the returned facts, or None (then the model's score)."""
    from labeling.ml.recall import RecallRow, probe_second_opinion
    from labeling.services.recall import PROBE_MIN_PER_CLASS, PROBE_SEED, probe_labels

    project = job.project
    labels = probe_labels(project=project)
    positives = sum(labels.values())
    if min(positives, len(labels) - positives) < PROBE_MIN_PER_CLASS:
        return None, {
            "by": "score",
            "why": f"fewer than {PROBE_MIN_PER_CLASS} labeled pool images of each class",
        }
    wanted = set(labels) | set(frame["ids"].tolist())
    rows = {
        pk: RecallRow(image_id=pk, name=name, content_hash=content_hash)
        for pk, name, content_hash in Image.objects.filter(project=project)
        .order_by("pk")
        .values_list("pk", "file", "content_hash")
        .iterator(chunk_size=10_000)
        if pk in wanted
    }

    def on_batch(done: int, total: int) -> None:
        # Raises JobCancelled when an engineer cancelled.
        job_progress(
            job_id=job.pk,
            stage=f"embedding the pool ({done}/{total} new)",
            percent=2.0 + 15.0 * done / max(total, 1),
        )

    values, facts = probe_second_opinion(
        project_id=project.pk,
        labeled_rows=[rows[pk] for pk in sorted(labels) if pk in rows],
        labels=labels,
        frame_rows=[rows[int(pk)] for pk in frame["ids"]],
        seed=PROBE_SEED,
        on_batch=on_batch,
    )
    if values is None:
        return None, {"by": "score", **facts}
    name = f"audits/project-{project.pk}/audit-{job.pk}-negatives-by.npy"
    if default_storage.exists(name):  # a retried job writes its file again
        default_storage.delete(name)
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    saved = default_storage.save(name, ContentFile(buffer.getvalue()))
    return values, {"by": "probe", "file": saved, **facts}


def _negatives_by(design: dict, frame: dict) -> np.ndarray | None:
    """The second opinion an audit's strata were cut on (``_second_opinion``), or None."""
    facts = design.get("negatives_by") or {}
    if facts.get("by") != "probe":
        return None
    try:
        with default_storage.open(facts["file"], "rb") as handle:
            values = np.load(io.BytesIO(handle.read()), allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValidationError(
            gettext(
                "This audit's strata file %(name)s cannot be read (%(error)s); start a new "
                "audit of another model version, or restore the file."
            )
            % {"name": facts["file"], "error": error}
        ) from error
    if values.shape != frame["ids"].shape:
        raise ValidationError(
            gettext("This audit's strata file %(name)s does not match its frame.")
            % {"name": facts["file"]}
        )
    return values


def _split(design: dict, frame: dict) -> np.ndarray | None:
    """The decision the audit's strata were split by: the cascade's since strata are split
    (its AND of two stages is no threshold on the ranking score); audits started before keep
    plain score strata."""
    name = design.get("split_by")
    return None if name is None else frame["decisions"][name]


def _audit_jobs(project: Project, audit_id: int) -> list[Job]:
    """The jobs of one audit (its first job and those that continued it), oldest first."""
    return [
        job
        for job in Job.objects.filter(
            project=project, kind=Job.Kind.AUDIT, status=Job.Status.SUCCEEDED
        ).order_by("created_at", "id")
        if (job.result or {}).get("audit_id") == audit_id
    ]


def _current_audit(project: Project, version_id: int) -> Job | None:
    """The first job of the version's audit, if one has started."""
    for job in Job.objects.filter(
        project=project,
        kind=Job.Kind.AUDIT,
        status=Job.Status.SUCCEEDED,
        model_version_id=version_id,
    ).order_by("created_at", "id"):
        result = job.result or {}
        if result.get("audit_id") == job.pk and result.get("design"):
            return job
    return None


def _observations(
    project: Project, frame_ids: np.ndarray, drawn: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labeled positions, their 0/1 labels, pending positions) of the drawn images, from the
    images' current labels (any value other than the positive class is a negative)."""
    labels = current_labels(project=project)
    positive = project.positive_class
    positions = np.searchsorted(frame_ids, np.asarray(drawn, dtype=np.int64))
    labeled, values, pending = [], [], []
    for image_id, position in zip(drawn, positions, strict=True):
        value = labels.get(image_id)
        if value is None:
            pending.append(position)
        else:
            labeled.append(position)
            values.append(int(value == positive))
    return (
        np.array(labeled, dtype=np.int64),
        np.array(values, dtype=np.int64),
        np.array(pending, dtype=np.int64),
    )


# --- The job ----------------------------------------------------------------------------------
def audit_run(*, job_id: int, retry: bool = False) -> None:
    job_run(job_id=job_id, body=_audit_body, retry=retry)


def _audit_body(job: Job) -> dict:
    project = job.project
    params = job.params
    version = ModelVersion.objects.get(pk=params["model_version_id"], project=project)
    first = _current_audit(project, version.pk)
    if first is None:
        until = timezone.now()
        frame = _frame(version, until)
        negatives_by, second_opinion = _second_opinion(job, frame)
        design = {
            **bridge.audit_design(
                frame["scores"],
                n_strata=params["strata"],
                cut_points=frame["cut_points"],
                split=frame["decisions"][SPLIT_BY],
                negatives_by=negatives_by,
            ),
            "split_by": SPLIT_BY,
            "negatives_by": second_opinion,
            "frame_until": until.isoformat(),
            "frame_size": int(len(frame["ids"])),
            "model_version_id": version.pk,
            "decisions": sorted(frame["decisions"]),
        }
        audit_id, previous_jobs = job.pk, []
    else:
        design = first.result["design"]
        frame = _frame(version, parse_datetime(design["frame_until"]))
        negatives_by = _negatives_by(design, frame)
        audit_id, previous_jobs = first.pk, _audit_jobs(project, first.pk)
    job_progress(job_id=job.pk, stage="allocating", percent=20)
    drawn = [image_id for previous in previous_jobs for image_id in previous.result["drawn"]]
    labeled, values, pending = _observations(project, frame["ids"], drawn)
    # The estimates as they stand before this batch: the audit's history over time.
    snapshot = None
    if len(labeled):
        snapshot = _summary(
            bridge.pool_estimates(
                frame["scores"],
                edges=design["edges"],
                split=_split(design, frame),
                decisions=frame["decisions"],
                primary="cascade",
                labeled=labeled,
                labels=values,
                known_positives=0,
                widths={},
                negatives_by=negatives_by,
            )
        )
    positions, strata = bridge.audit_next(
        frame["scores"],
        edges=design["edges"],
        split=_split(design, frame),
        decision=frame["decisions"]["cascade"],
        labeled=labeled,
        labels=values,
        pending=pending,
        add=params["labels"],
        target=params["target"],
        # Deterministic per audit batch: the same seed and history draw the same images.
        seed=params["seed"] * 1_000_003 + len(previous_jobs),
        negatives_by=negatives_by,
    )
    job_progress(job_id=job.pk, stage="queueing", percent=60)
    new_ids = [int(i) for i in frame["ids"][positions]]
    already = current_labels(project=project)
    to_ask = [image_id for image_id in new_ids if image_id not in already]
    # Priorities spread uniformly up to the highest open priority in the queue, so audit items
    # are served among the rest, neither first nor last.
    rng = np.random.default_rng([params["seed"], len(previous_jobs)])
    queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    top = queue.items.filter(status=QueueItem.Status.OPEN).aggregate(top=Max("priority"))["top"]
    spread = max(1.0, float(top or 0.0))
    stratum_of = dict(zip(new_ids, (int(h) for h in strata), strict=True))
    added = queue_items_add(
        queue=queue,
        images=to_ask,
        strategy=Strategy.POOL_AUDIT,
        priorities={image_id: float(rng.uniform(0.0, spread)) for image_id in to_ask},
        details_by_image={
            image_id: {
                "audit_id": audit_id,
                "job_id": job.pk,
                "stratum": stratum_of[image_id],
                "model_version_id": version.pk,
                "rule": "pool_audit",
            }
            for image_id in to_ask
        },
        created_by=job.created_by,
    )
    per_stratum = np.bincount(strata, minlength=len(design["sizes"]))
    return {
        "audit_id": audit_id,
        **({"design": design} if first is None else {}),
        "model_version_id": version.pk,
        "drawn": new_ids,
        "drawn_strata": [int(h) for h in strata],
        "drawn_per_stratum": [int(v) for v in per_stratum],
        "already_labeled": len(new_ids) - len(to_ask),
        # Drawn images already waiting in the queue keep their item (and its strategy); they
        # are in the sample all the same, and their label counts once it comes.
        "queued": added,
        "already_queued": len(to_ask) - added,
        "sample_before": int(len(drawn)),
        "estimates_before": snapshot,
        "function": "mlcore.estimates.audit_allocation + audit_draw",
    }


# --- The estimates ----------------------------------------------------------------------------
def _summary(estimates: dict) -> dict:
    """The figures a history row keeps: labels, prevalence and the cascade's precision and
    recall with their intervals."""
    cascade = estimates["decisions"].get("cascade") or {}
    return {
        "labels": estimates["labels"],
        "prevalence": estimates["prevalence"],
        "precision": cascade.get("precision"),
        "recall": cascade.get("recall"),
    }


def _history(project: Project) -> list[dict[str, Any]]:
    """Every audit job of the project, oldest first, with the estimates as they stood when it
    started (None for an audit's first job): the estimates over time and over versions."""
    names = dict(ModelVersion.objects.filter(project=project).values_list("pk", "name"))
    rows = []
    for job in Job.objects.filter(
        project=project, kind=Job.Kind.AUDIT, status=Job.Status.SUCCEEDED
    ).order_by("created_at", "id"):
        result = job.result or {}
        rows.append(
            {
                "job_id": job.pk,
                "audit_id": result.get("audit_id"),
                "at": job.created_at.isoformat(),
                "model_version": names.get(result.get("model_version_id")),
                "added": len(result.get("drawn") or []),
                "estimates": result.get("estimates_before"),
            }
        )
    return rows


def pool_estimates_get(
    *,
    project: Project,
    model_version_id: int | None = None,
    width: float = DEFAULT_WIDTH,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The estimates of the audit of ``model_version_id`` (default: the active version, else
    the latest audited one), or None when no audit has started. Never writes."""
    version_id = model_version_id or project.active_model_version_id
    first = _current_audit(project, version_id) if version_id else None
    if first is None and model_version_id is None:
        latest = (
            Job.objects.filter(project=project, kind=Job.Kind.AUDIT, status=Job.Status.SUCCEEDED)
            .order_by("-created_at", "-id")
            .first()
        )
        if latest is not None:
            version_id = (latest.result or {}).get("model_version_id")
            first = _current_audit(project, version_id) if version_id else None
    if first is None:
        return None
    version = ModelVersion.objects.get(pk=version_id)
    design = first.result["design"]
    frame = _frame(version, parse_datetime(design["frame_until"]))
    jobs = _audit_jobs(project, first.pk)
    drawn = [image_id for job in jobs for image_id in job.result["drawn"]]
    labeled, values, pending = _observations(project, frame["ids"], drawn)
    labels = current_labels(project=project, split=Image.Split.POOL)
    known_positives = sum(1 for value in labels.values() if value == project.positive_class)
    figures: dict[str, Any] = {
        "audit_id": first.pk,
        "model_version": {"id": version.pk, "name": version.name},
        "started_at": first.created_at.isoformat(),
        "frame_size": design["frame_size"],
        "drawn": len(drawn),
        "labeled": int(len(labeled)),
        "pending": int(len(pending)),
        "jobs": [job.pk for job in jobs],
        "known_positives": known_positives,
        "estimates": None,
        "history": _history(project),
    }
    if len(labeled) == 0:
        return figures
    try:
        negatives_by = _negatives_by(design, frame)
    except ValidationError as error:
        # A lost strata file: the page says so instead of failing; nothing is estimated.
        figures["error"] = " ".join(error.messages)
        return figures
    estimates = bridge.pool_estimates(
        frame["scores"],
        edges=design["edges"],
        split=_split(design, frame),
        decisions=frame["decisions"],
        primary="cascade",
        labeled=labeled,
        labels=values,
        known_positives=known_positives,
        widths={"prevalence": width, "precision": width, "recall": width},
        seed=seed,
        negatives_by=negatives_by,
    )
    figures["estimates"] = estimates
    figures["now"] = _summary(estimates)
    remaining = (estimates.get("unlabeled_positives") or {}).get("estimate")
    figures["yield_forecast"] = [
        {
            "strategy": row["strategy"],
            "name": row["name"],
            "labeled": row["labeled"],
            "positive": row["positive"],
            **bridge.yield_forecast(
                positives=row["positive"],
                labels=row["labeled"],
                wanted=NEXT_POSITIVES,
                remaining=remaining,
            ),
        }
        for row in strategy_yield(project=project)
        if row["strategy"] in MODEL_STRATEGIES and row["labeled"] > 0
    ]
    return figures
