"""The `train_cascade` job: retrain the OHEM cascade on the project's cleaned labels.

What trains (METHOD.md, the loop):
- labeled: the current label (labeling.selectors.labels.current_labels, the one rule every
  reader shares) of every POOL image, as "positive class of the schema" (1) vs any other (0),
  where the unresolved suspects (images with an OPEN item in the project's REVIEW queue: the
  noise detector flagged them and no lead has answered yet, so their label is in doubt) train
  stage 1 but are never passed to stage 2 as hard examples;
- unlabeled: pool images with no current label (up to `unlabeled_max`, a seeded sample), for
  stage 1's Mean Teacher consistency;
- validation: the labeled images of the frozen VALIDATION split, never trained on; thresholds
  and every metric come from it, so versions are comparable.

The result is a READY ModelVersion (checkpoint through labeling.ml.cascade.save_cascade, config,
class keys, data snapshot, metrics, PR curve PNG, training seconds); the job's result holds the
comparison with the version active when it finished. Promotion is an engineer's click
(labeling.services.models.model_version_promote), or automatic when the job's
`auto_promote_precision` and `auto_promote_recall` are both met by the lower bounds of the
cascade's cross-fitted intervals on validation (mlcore.evaluation).

Safe to run twice: a second delivery of a finished job does nothing (job_run's status guard),
and a retried job whose version was already stored returns that version instead of training a
second one.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from labeling.ml.presets import DEFAULT_PRESET, preset_defaults
from labeling.ml.presets import PRESETS as ML_PRESETS
from labeling.models import Image, Job, ModelVersion, Project, Queue, QueueItem
from labeling.selectors.labels import current_labels
from labeling.services import webhooks
from labeling.services.jobs import TRANSIENT_ERRORS, job_progress, job_run
from labeling.services.models import model_version_promote, model_versions_compare
from labeling.services.params import (
    JobSpec,
    PerChoice,
    all_or_none,
    boolean,
    choice,
    integer,
    not_above,
    number,
    optional_number,
    seed_param,
)

# The ML bridge (torch) is imported inside the functions that train, as labeling.services.scoring
# does, so web processes that only validate parameters never load torch.
PRESETS = tuple(ML_PRESETS)
# Defaults that depend on the preset, from their one declaration (mlcore.presets): name ->
# {preset: default}.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    name: preset_defaults(name) for name in ("input_size", "epochs", "lr", "mean_teacher")
}
DEFAULT_INPUT_SIZE = PRESET_DEFAULTS["input_size"]
AUTO_PROMOTE = ("auto_promote_precision", "auto_promote_recall")


def _per_preset(name: str) -> PerChoice:
    return PerChoice("preset", PRESET_DEFAULTS[name])


# The parameters of a train_cascade job (labeling.services.params; docs/jobs.md).
TRAIN_CASCADE = JobSpec(
    kind=Job.Kind.TRAIN_CASCADE,
    params=(
        choice(
            "preset",
            default=DEFAULT_PRESET,
            choices=(
                ("cpu_transfer", _("cpu_transfer (pretrained, CPU)")),
                ("cpu_small", _("cpu_small (from scratch)")),
                ("cpu_tiny", _("cpu_tiny (from scratch, tests)")),
                ("full", _("full (pretrained, GPU)")),
            ),
            label=_("Preset"),
            help_text=_(
                "The networks of the two stages and their training defaults. cpu_transfer: "
                "EfficientNet-Lite0 from its ImageNet weights, last stage fine-tuned, 112 px; "
                "cpu_small, cpu_tiny: small CNNs trained from scratch at 32 and 24 px (tests "
                "and comparison); full: DenseNet161 + ResNet50 from torchvision's ImageNet "
                "weight files placed in the weights folder, 224 px, for a GPU."
            ),
        ),
        integer(
            "input_size",
            default=_per_preset("input_size"),
            low=16,
            high=512,
            label=_("Input size (px)"),
            help_text=_("Images are resized to this square size."),
        ),
        boolean(
            "cbam",
            default=True,
            label=_("CBAM"),
            help_text=_("Channel and spatial attention blocks in the trained layers."),
        ),
        boolean(
            "mean_teacher",
            default=_per_preset("mean_teacher"),
            label=_("Mean Teacher"),
            help_text=_(
                "Semi-supervised stage 1: a consistency cost on unlabeled pool images against "
                "an averaged teacher."
            ),
        ),
        integer(
            "epochs",
            default=_per_preset("epochs"),
            low=1,
            high=500,
            label=_("Epochs"),
            help_text=_("Passes over the labeled images."),
        ),
        integer(
            "batch_a",
            default=32,
            low=2,
            high=1024,
            label=_("Batch A"),
            help_text=_("Images per batch of stage 1."),
        ),
        integer(
            "hard_b",
            default=8,
            low=1,
            high=1024,
            label=_("Hard B"),
            help_text=_("The hardest B of each batch of A train stage 2 (OHEM); at most A."),
        ),
        number(
            "lr",
            default=_per_preset("lr"),
            low=1e-6,
            high=10.0,
            label=_("Learning rate"),
            help_text=_("Learning rate of both stages."),
        ),
        number(
            "target_precision",
            default=0.95,
            low=0.01,
            high=1.0,
            label=_("Target precision"),
            help_text=_("The thresholds are chosen on the validation split for this precision."),
        ),
        integer(
            "min_per_class",
            default=10,
            low=2,
            high=1_000_000,
            label=_("Min labels per class"),
            help_text=_("The job refuses to train with fewer positives or negatives."),
        ),
        integer(
            "unlabeled_max",
            default=2000,
            low=0,
            high=10_000_000,
            label=_("Unlabeled images"),
            help_text=_(
                "At most this many unlabeled pool images (a seeded sample) for Mean Teacher."
            ),
        ),
        integer(
            "lp_epochs",
            default=3,
            low=0,
            high=100,
            label=_("Loss-prediction epochs"),
            help_text=_("Epochs of the loss-prediction module used by selection; 0 skips it."),
        ),
        seed_param(),
        boolean(
            "machine_accepted",
            default=False,
            label=_("Train on machine-accepted images"),
            help_text=_(
                "Also train on the images triage accepted without a person, as negatives. Off: "
                "only people's labels train."
            ),
        ),
        optional_number(
            "auto_promote_precision",
            low=0.0,
            high=1.0,
            label=_("Auto-promote at precision"),
            help_text=_(
                "Promote the new version automatically when the lower bounds of the cascade's "
                "cross-fitted confidence intervals on validation reach this precision and the "
                "recall below; give both or neither."
            ),
        ),
        optional_number(
            "auto_promote_recall",
            low=0.0,
            high=1.0,
            label=_("… and recall"),
            help_text=_("The recall the cascade must also reach for automatic promotion."),
        ),
    ),
    checks=(
        not_above("hard_b", "batch_a", message=_("hard_b (B) cannot exceed batch_a (A).")),
        all_or_none(*AUTO_PROMOTE),
    ),
)


class TrainingDataError(ValueError):
    """The project's labels cannot train or measure a model yet; the message says what to do."""


def train_cascade_params_clean(*, project: Project, params: dict) -> dict:
    """The train_cascade job's parameters, validated by `TRAIN_CASCADE`, defaults (those of
    the chosen preset where they depend on it) filled in."""
    return TRAIN_CASCADE.clean(project=project, params=params)


def _spec(params: dict):
    from django.conf import settings

    from labeling.ml.training import CascadeTrainingSpec

    return CascadeTrainingSpec(
        preset=params["preset"],
        input_size=params["input_size"],
        cbam=params["cbam"],
        epochs=params["epochs"],
        batch_a=params["batch_a"],
        hard_b=params["hard_b"],
        lr=params["lr"],
        mean_teacher=params["mean_teacher"],
        target_precision=params["target_precision"],
        lp_epochs=params["lp_epochs"],
        seed=params["seed"],
        device=getattr(settings, "IMAGECLEAN_ML_DEVICE", "auto"),
    )


def unresolved_suspect_ids(*, project: Project) -> set[int]:
    """Images with an OPEN item in the project's re-review queue(s)."""
    return set(
        QueueItem.objects.filter(
            queue__project=project, queue__kind=Queue.Kind.REVIEW, status=QueueItem.Status.OPEN
        ).values_list("image_id", flat=True)
    )


def training_data(*, project: Project, params: dict) -> dict:
    """The rows that train and validate, and the counts stored as the version's data snapshot.
    Raises TrainingDataError when there are too few labels."""
    from labeling.ml.datasets import ImageRow
    from labeling.ml.training import LabeledRow

    positive = project.positive_class
    suspects = unresolved_suspect_ids(project=project)
    pool_labels = current_labels(project=project, split=Image.Split.POOL)
    # Labels under noise review still train stage 1 (a flagged rare positive is often a true
    # one) but never reach stage 2 as hard examples, where wrong labels concentrate (issue 7).
    excluded = suspects & set(pool_labels)
    train_labels = {i: int(v == positive) for i, v in pool_labels.items()}
    # Machine-accepted images (labeling.services.triage) hold no Label; they train only when
    # the engineer asks, as negatives, and never override a person's label.
    machine = 0
    if params.get("machine_accepted"):
        from labeling.services.triage import machine_accepted_ids

        for image_id in machine_accepted_ids(project=project) - set(pool_labels):
            train_labels[image_id] = 0
            machine += 1
    n_pos = sum(train_labels.values())
    n_neg = len(train_labels) - n_pos
    need = params["min_per_class"]
    if n_pos < need or n_neg < need:
        raise TrainingDataError(
            f"need at least {need} positive and {need} negative labels in the pool split; "
            f"have {n_pos} positive and {n_neg} negative. Label more images (or lower "
            f"min_per_class)."
        )
    validation = {
        i: int(v == positive)
        for i, v in current_labels(project=project, split=Image.Split.VALIDATION).items()
    }
    v_pos = sum(validation.values())
    v_neg = len(validation) - v_pos
    if v_pos < 1 or v_neg < 1:
        from labeling.selectors.validation import validation_progress

        progress = validation_progress(project=project)
        raise TrainingDataError(
            f"the frozen validation split needs labeled positives and negatives to measure the "
            f"model; it has {v_pos} positive and {v_neg} negative labels "
            f"({progress['labeled']} of {progress['images']} images labeled). Label the "
            f"validation queue ({progress['open']} open items); {progress['not_queued']} "
            f"unlabeled validation images are in no queue: refill it from the jobs page or "
            f"POST /api/v1/projects/{project.slug}/validation/fill/."
        )
    unlabeled_ids = list(
        Image.objects.filter(project=project, split=Image.Split.POOL)
        .exclude(pk__in=list(train_labels))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if len(unlabeled_ids) > params["unlabeled_max"]:
        unlabeled_ids = sorted(
            random.Random(params["seed"]).sample(unlabeled_ids, params["unlabeled_max"])
        )
    names = dict(
        Image.objects.filter(pk__in=[*train_labels, *validation, *unlabeled_ids]).values_list(
            "pk", "file"
        )
    )
    return {
        "train": [LabeledRow(i, names[i], y) for i, y in sorted(train_labels.items())],
        "validation": [LabeledRow(i, names[i], y) for i, y in sorted(validation.items())],
        "unlabeled": [ImageRow(i, names[i]) for i in unlabeled_ids],
        "doubtful": excluded,
        "snapshot": {
            "labeled_positive": n_pos,
            "labeled_negative": n_neg,
            "unlabeled": len(unlabeled_ids),
            "excluded_suspects": len(excluded),
            "machine_accepted": machine,
            "validation_size": len(validation),
            "validation_positive": v_pos,
            "validation_negative": v_neg,
        },
    }


def _next_name(project: Project) -> str:
    taken = set(ModelVersion.objects.filter(project=project).values_list("name", flat=True))
    n = len(taken) + 1
    while f"v{n}" in taken:
        n += 1
    return f"v{n}"


def _targets_met(params: dict, metrics: dict) -> bool:
    want_p, want_r = params.get("auto_promote_precision"), params.get("auto_promote_recall")
    if want_p is None or want_r is None:
        return False
    cascade = metrics.get("cascade") or {}
    # The lower bounds of the cross-fitted intervals (mlcore.evaluation): a target counts as met
    # only when the interval supports it, never on a point estimate from a handful of images.
    # Versions trained before the intervals existed have none, and are not auto-promoted.
    got_p = (cascade.get("precision_ci") or [None])[0]
    got_r = (cascade.get("recall_ci") or [None])[0]
    return got_p is not None and got_r is not None and got_p >= want_p and got_r >= want_r


def _result(version: ModelVersion, comparison: dict, promoted: bool) -> dict:
    return {
        "model_version_id": version.pk,
        "model_version": version.name,
        "data": version.data_snapshot,
        "thresholds": (version.metrics or {}).get("thresholds"),
        "cascade": (version.metrics or {}).get("cascade"),
        "target": (version.metrics or {}).get("target"),
        "training_seconds": version.training_seconds,
        "comparison": comparison,
        "promoted": promoted,
    }


def _training_state_path(job: Job) -> Path:
    return Path(settings.IMAGECLEAN_JOB_STATE_DIR) / f"job-{job.pk}" / "training.safetensors"


def _training_state_discard(job: Job) -> None:
    shutil.rmtree(_training_state_path(job).parent, ignore_errors=True)


def _train(job: Job) -> dict:
    from labeling.ml.cascade import save_cascade
    from labeling.ml.training import (
        LP_HIDDEN,
        POSITIVE_INDEX,
        read_training_state,
        train_cascade_on_rows,
        write_training_state,
    )

    project = job.project
    params = job.params
    already = ModelVersion.objects.filter(project=project, data_snapshot__job_id=job.pk).first()
    if already is not None:  # a retried delivery after the version was stored
        active = project.active_model_version
        old = active if active and active.pk != already.pk else None
        return _result(already, model_versions_compare(new=already, old=old), False)

    # A redelivery after the worker died finds the state its last epoch saved and goes on
    # from there, on the rows that attempt trained on (labels added since wait for the next
    # version).
    state_path = _training_state_path(job)
    saved = read_training_state(state_path, params=params)
    if saved is not None:
        resume, data = saved
        job_progress(
            job_id=job.pk,
            stage="resuming",
            percent=2.0,
            line=f"resuming after epoch {resume.epochs_done} of the interrupted attempt",
        )
    else:
        resume = None
        job_progress(job_id=job.pk, stage="gathering labels", percent=1.0)
        data = training_data(project=project, params=params)
    snapshot = data["snapshot"]
    job_progress(
        job_id=job.pk,
        stage="training",
        percent=2.0,
        line=(
            f"training on {snapshot['labeled_positive']} positive and "
            f"{snapshot['labeled_negative']} negative labels, {snapshot['unlabeled']} unlabeled "
            f"({snapshot['excluded_suspects']} unresolved suspects kept from stage 2); "
            f"validating on {snapshot['validation_size']}"
        ),
    )
    epochs = params["epochs"]

    def on_epoch(epoch: int, metrics: dict) -> None:
        # job_progress raises JobCancelled when the job was cancelled: training stops here.
        job_progress(
            job_id=job.pk,
            stage=f"training epoch {epoch + 1}/{epochs}",
            percent=2.0 + 88.0 * (epoch + 1) / epochs,
            line=(
                f"epoch {epoch + 1}/{epochs}: stage-1 loss {metrics['stage1_loss']:.4f}, "
                f"stage-2 loss {metrics['stage2_loss']:.4f}, {metrics['seconds']:.1f} s"
            ),
        )

    def on_stage(name: str, done: int, total: int) -> None:
        # Encoding images through the frozen trunk comes before the first epoch.
        job_progress(job_id=job.pk, stage=name, percent=2.0 * done / max(1, total))

    outcome = train_cascade_on_rows(
        train_rows=data["train"],
        unlabeled_rows=data["unlabeled"],
        validation_rows=data["validation"],
        spec=_spec(params),
        doubtful_ids=data["doubtful"],
        on_epoch=on_epoch,
        on_stage=on_stage,
        title=f"{project.slug}: validation PR",
        resume=resume,
        on_checkpoint=lambda state: write_training_state(
            state_path, state, params=params, data=data
        ),
    )
    job_progress(job_id=job.pk, stage="saving", percent=95.0)
    snapshot = {**snapshot, "job_id": job.pk, "unreadable_images": outcome.unreadable[:100]}
    name = _next_name(project)
    # One transaction: the version row (with the snapshot naming this job, so a retried
    # delivery finds it above) and the job's link to it. No orphan READY version can be left.
    version = save_cascade(
        project=project,
        name=name,
        stage1=outcome.stage1,
        stage2=outcome.stage2,
        thresholds=outcome.thresholds,
        temperatures=outcome.temperatures,
        positive_index=POSITIVE_INDEX,
        loss_prediction=outcome.loss_prediction,
        loss_prediction_options={"hidden": LP_HIDDEN},
        metadata={"job_id": job.pk, "params": params, "data": snapshot},
        metrics=outcome.metrics,
        created_by=job.created_by,
        data_snapshot=snapshot,
        training_seconds=round(outcome.seconds, 3),
        pr_curve_png=outcome.pr_curve_png,
        on_saved=lambda saved: Job.objects.filter(pk=job.pk).update(model_version=saved),
    )
    _training_state_discard(job)
    webhooks.emit_trained(version, job_id=job.pk)
    project.refresh_from_db()
    comparison = model_versions_compare(new=version, old=project.active_model_version)
    promoted = False
    if _targets_met(params, outcome.metrics):
        model_version_promote(version=version, by=None)
        promoted = True
    job_progress(
        job_id=job.pk,
        stage="done",
        percent=99.0,
        line=_stored_line(version.name, outcome.metrics, promoted),
    )
    return _result(version, comparison, promoted)


def _rate_text(rate: float | None, hits: int, total: int, interval: list | None) -> str:
    if rate is None:
        return gettext("n/a (0 of 0)")
    low, high = interval or (None, None)
    return gettext("%(rate).3f (%(hits)d of %(total)d; 95%% CI %(low).3f-%(high).3f)") % {
        "rate": rate,
        "hits": hits,
        "total": total,
        "low": low,
        "high": high,
    }


def _stored_line(name: str, metrics: dict, promoted: bool) -> str:
    """The job log's last line: the cascade's cross-fitted figures with their counts."""
    cascade = metrics["cascade"]
    target = metrics.get("target") or {}
    line = gettext(
        "stored %(name)s: cascade precision %(precision)s, recall %(recall)s, AP %(ap)s; "
        "target precision %(target)s %(verdict)s"
    ) % {
        "name": name,
        "precision": _rate_text(
            cascade["precision"],
            cascade["tp"],
            cascade["tp"] + cascade["fp"],
            cascade["precision_ci"],
        ),
        "recall": _rate_text(
            cascade["recall"], cascade["tp"], cascade["tp"] + cascade["fn"], cascade["recall_ci"]
        ),
        "ap": cascade["ap"],
        "target": target.get("precision"),
        "verdict": gettext("reached (the interval's lower bound is above it)")
        if target.get("reached")
        else gettext("not shown to be reached (the interval reaches below it)"),
    }
    if promoted:
        line += gettext("; promoted automatically (targets met)")
    return line


def train_cascade_run(*, job_id: int, retry: bool = False) -> None:
    """The task body: train under job_run's status guard (errors land on the Job)."""
    job_run(job_id=job_id, body=_train_keeping_state_for_retries, retry=retry)


def _train_keeping_state_for_retries(job: Job) -> dict:
    """The epoch state outlives an attempt only when the job will run again: a transient error
    (Celery retries it) or a dead worker (no code runs then). A job that fails, is cancelled or
    succeeds leaves nothing behind."""
    try:
        return _train(job)
    except TRANSIENT_ERRORS:
        raise
    except Exception:
        _training_state_discard(job)
        raise
