"""The `detect_noise` job and the lead's re-review: O2U suspects go to the REVIEW queue.

What is ranked: the current label (labeling.selectors.labels.current_labels, the one rule every
reader shares) of every labeled POOL image, as an index into the project's class keys (all
classes, not positive-vs-rest; see labeling.ml.noise). The frozen validation split is never
trained on, so it is never ranked either.

What is written: the top `fraction` (METHOD.md: 5%) become items of the project's REVIEW queue
(strategy NOISE_REVIEW, priority = normalised loss so the most suspicious is served first), with
`details` = {job_id, rank, score, label, samples}. An image already in the review queue (open or
resolved) is not added again (queue_items_add skips it), so re-running the job never duplicates
items; the result counts those as `already_queued`.

How it ranks: `mlcore.o2u.find_label_noise` (through labeling.ml.noise), the same function
bench/noise.py measures; `method` "o2u" (O2U-Net's cyclic phase) or "loss" (the plain loss after
pre-training). The result records which (`method`, `pipeline_function`).

Heat maps (`explain`, on by default): when the project has an active READY model version, the
Grad-CAM overlay (positive class, stage 1; labeling.ml.explain) of every flagged image is stored
at `gradcam/v<version id>/<image id>.png` in Django storage and recorded on its REVIEW item as
`details["gradcam"]` = {model_version_id, model_version, file, focused}; the result counts them
(`heatmaps`, `heatmaps_existing`, `heatmaps_no_focus`, errors). `review_gradcam` serves the
stored one to the review page and renders on request only when it is missing (another version
became active, the job ran with none, or the item came from elsewhere: a disagreement, a manual
re-review); what it renders on request it stores and records the same way, so each map is
rendered once per version. The review page asks for the next items' maps ahead of time
(static/labeling/review.js), so they are stored before the lead gets there.

Leads answer with `review_resolve` (labeling.services.labels): confirm keeps the label (a
CONFIRMATION), a flip writes a superseding CORRECTION.

Safe to run twice: job_run's status guard stops a duplicate delivery, and the queue write is
idempotent (unique (queue, image)); a re-delivered job after a crash recomputes the ranking
(same seed, same labels: the same suspects) and adds only what is missing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from labeling.models import Image, Job, ModelVersion, Project, Queue, QueueItem, Strategy
from labeling.permissions import can_review
from labeling.selectors.labels import current_labels
from labeling.selectors.review import review_gradcam_stored, review_item_of_image
from labeling.services.jobs import job_progress, job_run
from labeling.services.params import JobSpec, boolean, choice, integer, number, seed_param
from labeling.services.queues import queue_get_or_create, queue_items_add

MIN_SAMPLES = 10

# The parameters of a detect_noise job (labeling.services.params; docs/jobs.md).
DETECT_NOISE = JobSpec(
    kind=Job.Kind.DETECT_NOISE,
    params=(
        choice(
            "backbone",
            default="small_cnn",
            choices=(
                ("small_cnn", _("small_cnn (CPU)")),
                ("mobilenet_v2", _("mobilenet_v2")),
                ("resnet18", _("resnet18")),
            ),
            label=_("Backbone"),
            help_text=_("The network trained from scratch on the current labels to rank them."),
        ),
        choice(
            "method",
            default="o2u",
            choices=(
                ("o2u", _("O2U-Net (cyclic learning rate)")),
                ("loss", _("Plain loss after pre-training (faster)")),
            ),
            label=_("Ranking"),
            help_text=_(
                "O2U-Net ranks by the mean loss over the cyclic phase; the plain ranking skips "
                "that phase and ranks by the loss after pre-training (docs/benchmarks.md "
                "compares them)."
            ),
        ),
        integer(
            "input_size",
            default=32,
            low=16,
            high=256,
            label=_("Input size (px)"),
            help_text=_("Images are resized to this square size."),
        ),
        integer(
            "pretrain_epochs",
            default=5,
            low=1,
            high=200,
            label=_("Pre-training epochs"),
            help_text=_("Epochs of ordinary training before the cyclic phase."),
        ),
        integer(
            "cycle_length",
            default=5,
            low=1,
            high=100,
            label=_("Cycle length (epochs)"),
            help_text=_("Epochs per learning-rate cycle of O2U-Net's cyclic phase."),
        ),
        integer(
            "n_cycles",
            default=2,
            low=1,
            high=50,
            label=_("Cycles"),
            help_text=_("Learning-rate cycles; each sample's loss is averaged over them."),
        ),
        number(
            "fraction",
            default=0.05,
            low=0.001,
            high=0.5,
            label=_("Share flagged"),
            help_text=_("The top share of labels by mean loss sent to the leads' re-review."),
        ),
        integer(
            "batch_size",
            default=64,
            low=2,
            high=1024,
            label=_("Batch size"),
            help_text=_("Images per training step."),
        ),
        number(
            "lr",
            default=0.05,
            low=1e-5,
            high=1.0,
            label=_("Learning rate"),
            help_text=_("Pre-training learning rate and the top of each cycle."),
        ),
        seed_param(),
        boolean(
            "explain",
            default=True,
            label=_("Grad-CAM of the flagged"),
            help_text=_(
                "After ranking, store the active model version's Grad-CAM heat map of every "
                "flagged image for the review page."
            ),
        ),
    ),
)


def detect_noise_params_clean(*, project: Project, params: dict) -> dict:
    """The detect_noise job's parameters, validated by `DETECT_NOISE`, defaults filled in."""
    return DETECT_NOISE.clean(project=project, params=params)


def noise_candidates(*, project: Project) -> list[tuple[int, str, str]]:
    """(image id, storage name, current value) of every labeled pool image whose current value
    is one of the schema's classes, by image id."""
    values = current_labels(project=project, split=Image.Split.POOL)
    keys = set(project.class_keys)
    names = dict(
        Image.objects.filter(pk__in=list(values), project=project).values_list("pk", "file")
    )
    return [
        (pk, names[pk], values[pk]) for pk in sorted(values) if pk in names and values[pk] in keys
    ]


def _detect(job: Job) -> dict:
    from labeling.ml.noise import NoiseSample, NoiseSpec, detect_noise_on_samples

    project = job.project
    params = job.params
    job_progress(job_id=job.pk, stage="gathering labels", percent=1.0)
    candidates = noise_candidates(project=project)
    if len(candidates) < MIN_SAMPLES:
        raise ValueError(
            f"only {len(candidates)} labeled pool images; noise detection needs at least "
            f"{MIN_SAMPLES}"
        )
    class_keys = project.class_keys
    samples = [
        NoiseSample(image_id=pk, name=name, label=class_keys.index(value))
        for pk, name, value in candidates
    ]
    value_of = {pk: value for pk, _name, value in candidates}
    spec = NoiseSpec(
        backbone=params["backbone"],
        input_size=params["input_size"],
        pretrain_epochs=params["pretrain_epochs"],
        cycle_length=params["cycle_length"],
        n_cycles=params["n_cycles"],
        fraction=params["fraction"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        seed=params["seed"],
        method=params.get("method", "o2u"),  # jobs from before the parameter: O2U
    )
    job_progress(
        job_id=job.pk,
        stage="pre-training",
        percent=2.0,
        line=f"ranking {len(samples)} labeled pool images over {spec.total_epochs} epochs",
    )

    def on_epoch(stage: str, done: int, total: int) -> None:
        # Raises JobCancelled when an engineer cancelled: training stops at this epoch.
        job_progress(
            job_id=job.pk,
            stage=f"{stage} (epoch {done}/{total})",
            percent=2.0 + 88.0 * done / total,  # 90-100: the heat maps
            line=f"epoch {done}/{total}: {stage}",
        )

    outcome = detect_noise_on_samples(
        samples, num_classes=len(class_keys), spec=spec, on_epoch=on_epoch
    )
    queued, already = noise_suspects_queue(
        project=project,
        job=job,
        suspects=[(s.image_id, s.rank, s.score) for s in outcome.suspects],
        values=value_of,
        samples=outcome.samples,
    )
    heatmaps = {"heatmaps": 0}
    if params.get("explain", True):  # jobs created before the parameter existed: explain

        def on_batch(done: int, total: int) -> None:
            job_progress(
                job_id=job.pk,
                stage=f"heat maps ({done}/{total})",
                percent=90.0 + 9.0 * done / max(1, total),
            )

        heatmaps = noise_suspects_explain(
            project=project,
            image_ids=[s.image_id for s in outcome.suspects],
            on_batch=on_batch,
        )
        job_progress(job_id=job.pk, stage="heat maps", percent=99.0, line=heatmaps["summary"])
    return {
        "samples": outcome.samples,
        "method": outcome.method,
        "pipeline_function": outcome.function,
        "suspects": len(outcome.suspects),
        "queued": queued,
        "already_queued": already,
        **heatmaps,
        "unreadable": outcome.unreadable[:100],
        "unreadable_count": len(outcome.unreadable),
        "top": [
            {"image_id": s.image_id, "rank": s.rank, "score": round(s.score, 4)}
            for s in outcome.suspects[:20]
        ],
    }


@transaction.atomic
def noise_suspects_queue(
    *,
    project: Project,
    job: Job | None,
    suspects: list[tuple[int, int, float]],
    values: dict[int, str],
    samples: int,
) -> tuple[int, int]:
    """Add (image id, rank, score) suspects to the project's REVIEW queue. Returns (added,
    already in the queue)."""
    queue = queue_get_or_create(project=project, kind=Queue.Kind.REVIEW)
    details = {
        pk: {
            "job_id": job.pk if job else None,
            "rank": rank,
            "score": round(float(score), 6),
            "label": values.get(pk, ""),
            "samples": samples,
        }
        for pk, rank, score in suspects
    }
    added = queue_items_add(
        queue=queue,
        images=[pk for pk, _rank, _score in suspects],
        strategy=Strategy.NOISE_REVIEW,
        priorities={pk: float(score) for pk, _rank, score in suspects},
        details_by_image=details,
    )
    return added, len(suspects) - added


def detect_noise_run(*, job_id: int, retry: bool = False) -> None:
    """The task body: rank under job_run's status guard (errors land on the Job)."""
    job_run(job_id=job_id, body=_detect, retry=retry)


# --- Grad-CAM heat maps of the flagged images -------------------------------------------------
GRADCAM_DIR = "gradcam"
MAX_RECORDED_ERRORS = 100


def gradcam_storage_name(*, model_version_id: int, image_id: int) -> str:
    """Where the heat map of `image_id` by `model_version_id` is stored (Django storage)."""
    return f"{GRADCAM_DIR}/v{model_version_id}/{image_id}.png"


def noise_suspects_explain(
    *, project: Project, image_ids: list[int], on_batch=None, storage: Storage | None = None
) -> dict:
    """Render and store the Grad-CAM overlay (positive class, stage 1 of the project's active
    model version) of each flagged image, and record it on the image's REVIEW QueueItem as
    `details["gradcam"]` = {model_version_id, model_version, file, focused}. An item that
    already holds one from that version is left alone, so a re-run renders nothing twice.
    Returns counts for the job's result: heatmaps (made now), heatmaps_existing, errors, and a
    one-line summary. Without an active READY version nothing is rendered."""
    from labeling.ml.cascade import CheckpointError
    from labeling.ml.explain import gradcam_overlays

    storage = storage or default_storage
    version = project.active_model_version
    if version is None or version.status != ModelVersion.Status.READY or not version.checkpoint:
        return {
            "heatmaps": 0,
            "summary": "no heat maps: the project has no active model version",
        }
    items = list(
        QueueItem.objects.filter(
            queue__project=project, queue__kind=Queue.Kind.REVIEW, image_id__in=image_ids
        ).select_related("image")
    )
    todo = [
        item
        for item in items
        if not (
            (record := review_gradcam_stored(item=item, model_version_id=version.pk)) is not None
            and storage.exists(record.get("file", ""))
        )
    ]
    try:
        outcome = gradcam_overlays(
            model_version=version,
            images=[item.image for item in todo],
            device=settings.IMAGECLEAN_ML_DEVICE,
            storage=storage,
            on_batch=on_batch,
        )
    except CheckpointError as error:
        return {
            "heatmaps": 0,
            "heatmap_error_count": len(todo),
            "summary": f"no heat maps: {version.name} cannot be loaded ({error})",
        }
    made = 0
    for item in todo:
        picture = outcome.pictures.get(item.image_id)
        if picture is None:
            continue
        name = gradcam_storage_name(model_version_id=version.pk, image_id=item.image_id)
        if storage.exists(name):  # a half-finished earlier run: same version, same picture
            storage.delete(name)
        stored = storage.save(name, ContentFile(picture.png))
        record = {
            "model_version_id": version.pk,
            "model_version": version.name,
            "file": stored,
            "focused": picture.focused,
        }
        with transaction.atomic():
            # Locked and re-read: a lead may be resolving this item right now.
            locked = QueueItem.objects.select_for_update().get(pk=item.pk)
            locked.details = {**(locked.details or {}), "gradcam": record}
            locked.save(update_fields=["details"])
        made += 1
    unfocused = sum(1 for p in outcome.pictures.values() if not p.focused)
    summary = f"{made} heat maps from {version.name}"
    if unfocused:
        summary += f" ({unfocused} with no focus)"
    if outcome.errors:
        summary += f", {len(outcome.errors)} images unreadable"
    return {
        "heatmaps": made,
        "heatmaps_existing": len(items) - len(todo),
        "heatmaps_no_focus": unfocused,
        "heatmaps_model_version_id": version.pk,
        "heatmap_errors": [
            {"image_id": pk, "error": text[:300]}
            for pk, text in outcome.errors[:MAX_RECORDED_ERRORS]
        ],
        "heatmap_error_count": len(outcome.errors),
        "summary": summary,
    }


# --- The lead's review ----------------------------------------------------------------------
class GradcamUnavailable(Exception):
    """No Grad-CAM for this image: no active model version, or its checkpoint or the image
    file cannot be read. The message says which."""


@dataclass(frozen=True)
class ReviewGradcam:
    """The overlay PNG for the review page; `focused` False: a flat map ("no focus");
    `stored` True: made by the noise job, False: rendered for this request."""

    png: bytes
    focused: bool
    stored: bool


def review_gradcam(*, image: Image, user, storage: Storage | None = None) -> ReviewGradcam:
    """Grad-CAM of the positive class from the active model version's stage 1 blended over the
    image (leads of the project only): the one the noise job stored when there is one (instant),
    else rendered now."""
    from labeling.ml.cascade import CheckpointError
    from labeling.ml.explain import gradcam_overlay

    storage = storage or default_storage
    project = image.project
    if not can_review(user, project):
        raise PermissionDenied(_("Grad-CAM is for leads of this project."))
    version = project.active_model_version
    if version is None:
        raise GradcamUnavailable("This project has no active model version.")
    item = review_item_of_image(project=project, image=image)
    record = review_gradcam_stored(item=item, model_version_id=version.pk)
    if record is not None:
        try:
            with storage.open(record["file"], "rb") as handle:
                return ReviewGradcam(png=handle.read(), focused=record["focused"], stored=True)
        except (OSError, KeyError):
            pass  # deleted or never finished: render it instead
    try:
        picture = gradcam_overlay(model_version=version, image=image)
    except (CheckpointError, OSError, ValueError) as error:
        raise GradcamUnavailable(str(error)) from error
    if item is not None:
        # Kept like the job's, so the next request (the page opened again, another lead, or
        # the page's prefetch of the items after this one having rendered it) is instant.
        _gradcam_keep(item=item, version=version, picture=picture, storage=storage)
    return ReviewGradcam(png=picture.png, focused=picture.focused, stored=False)


def _gradcam_keep(*, item: QueueItem, version: ModelVersion, picture, storage: Storage) -> None:
    name = gradcam_storage_name(model_version_id=version.pk, image_id=item.image_id)
    if storage.exists(name):  # another request rendered it meanwhile: same version, same picture
        storage.delete(name)
    stored = storage.save(name, ContentFile(picture.png))
    record = {
        "model_version_id": version.pk,
        "model_version": version.name,
        "file": stored,
        "focused": picture.focused,
        "made_by": "review",  # rendered for the review page, not by the noise job
    }
    with transaction.atomic():
        locked = QueueItem.objects.select_for_update().get(pk=item.pk)
        locked.details = {**(locked.details or {}), "gradcam": record}
        locked.save(update_fields=["details"])


@functools.cache
def gradcam_legend() -> tuple[str, ...]:
    """The heat map's colours, low to high, for the review page's legend."""
    from labeling.ml.explain import legend_colours

    return tuple(legend_colours())


def review_gradcam_png(*, image: Image, user) -> bytes:
    """PNG bytes of :func:`review_gradcam`."""
    return review_gradcam(image=image, user=user).png
