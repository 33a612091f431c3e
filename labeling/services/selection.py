"""Selection: fill the labeling queue from a model version's scores (METHOD.md, the loop).

The union of two selectors, plus a small random audit:
- confidence band (`CONFIDENCE_BAND`): the model's confident positives (where its costly false
  positives are) and an uncertain band (where missed positives hide), interleaved. By default
  (`band_mode` "quantile") both are quantiles of the eligible images' scores: the top
  `high_share`, and `band_share` of them around `band_center`, grown to fill `k_band`, so the
  band always fills its budget when enough images are eligible, however rare the positives;
  `band_mode` "absolute" uses the fixed probabilities `high` and [`band_low`, `band_high`],
  which may fill fewer (mlcore.selection's docstring says why quantiles);
- loss-prediction top-K (`LOSS_RANKED`; Yoo & Kweon 2019): the images whose predicted loss is
  largest;
- an image both chose is queued once as `BAND_AND_LOSS`;
- `RANDOM_AUDIT`: a seeded random `audit_share` of the batch from the rest of the eligible pool,
  an unbiased sample to measure what the selectors miss.

Eligible: a pool image of the project with a Score from the version, never labeled (any Label
row, a retracted one included) and in no queue of the project. Each QueueItem records its
strategy and details (score, stages, decision, predicted loss, model version, job), and every
Label copies the strategy, so `labeling.selectors.strategies.strategy_yield` measures each
strategy's yield; the details also name the rule that chose the image (`rule`: high_score,
uncertain_band, loss_top_k or random_audit). The job's result counts the items per rule and
gives the band's thresholds in probability terms.

The database filters eligibility and takes the top predicted losses (index on (model_version,
predicted_loss)); every eligible score is read once (the band's quantiles need the whole
distribution, and the audit samples from the same ids); labeling.ml.selection ranks with
mlcore.selection.
"""

from __future__ import annotations

import math

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from labeling.models import (
    Image,
    Job,
    Label,
    ModelVersion,
    Project,
    Queue,
    QueueItem,
    Score,
    Strategy,
)
from labeling.services.jobs import job_progress, job_run
from labeling.services.params import (
    JobSpec,
    choice,
    integer,
    model_version,
    not_above,
    number,
    seed_param,
)
from labeling.services.queues import queue_get_or_create, queue_items_add

MAX_K = 100_000


def _selecting_version_id(*, project: Project, value: int | None) -> int:
    """The named version of the project, or its active one."""
    if value is None:
        if project.active_model_version_id is None:
            raise ValidationError(
                {
                    "model_version_id": gettext(
                        "This project has no active model version to select with."
                    )
                }
            )
        return project.active_model_version_id
    if not ModelVersion.objects.filter(pk=value, project=project).exists():
        raise ValidationError(
            {
                "model_version_id": gettext("No model version %(id)s in this project.")
                % {"id": value}
            }
        )
    return value


# The parameters of a select job (labeling.services.params; docs/jobs.md).
SELECT = JobSpec(
    kind=Job.Kind.SELECT,
    params=(
        model_version(
            resolve=_selecting_version_id,
            help_text=_(
                "The model version whose scores choose the images; the project's active "
                "version if empty."
            ),
        ),
        integer(
            "k_band",
            default=200,
            low=0,
            high=MAX_K,
            label=_("Band top-K"),
            help_text=_("At most this many images from the confidence band."),
        ),
        integer(
            "k_loss",
            default=200,
            low=0,
            high=MAX_K,
            label=_("Loss top-K"),
            help_text=_("At most this many images with the largest predicted loss."),
        ),
        number(
            "audit_share",
            default=0.05,
            low=0.0,
            high=1.0,
            label=_("Audit share"),
            help_text=_(
                "A random sample of the rest of the pool, as a share of the selection: an "
                "unbiased measure of what the selectors miss."
            ),
        ),
        # Defaults of the band's options: mlcore.selection.BandConfig's (a test checks).
        choice(
            "band_mode",
            default="quantile",
            choices=(
                ("quantile", _("Quantiles of the pool's scores")),
                ("absolute", _("Fixed probabilities")),
            ),
            label=_("Band thresholds"),
            help_text=_(
                "Quantiles: the confident and uncertain groups follow the distribution of the "
                "eligible images' scores, so the band fills its top-K however rare the "
                "positives. Fixed: the probabilities below, which may select fewer."
            ),
        ),
        number(
            "high_share",
            default=0.01,
            low=0.0,
            high=1.0,
            label=_("Confident share"),
            help_text=_(
                "Quantiles: the top share of the eligible images' scores taken as the model's "
                "confident positives (0.01: the top 1%)."
            ),
        ),
        number(
            "band_share",
            default=0.1,
            low=0.0,
            high=1.0,
            label=_("Band share"),
            help_text=_(
                "Quantiles: the share of the eligible images in the uncertain band; it grows "
                "when the band top-K needs more."
            ),
        ),
        number(
            "band_center",
            default=0.5,
            low=0.0,
            high=1.0,
            label=_("Band centre"),
            help_text=_(
                "Quantiles: the probability the uncertain band is centred on (0.5: where a "
                "calibrated model is least sure)."
            ),
        ),
        number(
            "high",
            default=0.9,
            low=0.0,
            high=1.0,
            label=_("Confident above"),
            help_text=_(
                "Fixed probabilities: scores at or above this are the model's confident positives."
            ),
        ),
        number(
            "band_low",
            default=0.3,
            low=0.0,
            high=1.0,
            label=_("Band from"),
            help_text=_(
                "Fixed probabilities: lowest score of the uncertain band, where missed "
                "positives hide."
            ),
        ),
        number(
            "band_high",
            default=0.6,
            low=0.0,
            high=1.0,
            label=_("Band to"),
            help_text=_("Fixed probabilities: highest score of the uncertain band."),
        ),
        seed_param(help_text=_("Seed of the random audit sample.")),
    ),
    checks=(not_above("band_low", "band_high"),),
)


def select_params_clean(*, project: Project, params: dict) -> dict:
    """The select job's parameters, validated by `SELECT`, defaults filled in."""
    return SELECT.clean(project=project, params=params)


def eligible_scores(
    *, project: Project, model_version: ModelVersion, queue: Queue | None = None
) -> QuerySet[Score]:
    """Scores of `model_version` on pool images that were never labeled and are in no queue
    of the project."""
    return (
        Score.objects.filter(
            model_version=model_version, image__project=project, image__split=Image.Split.POOL
        )
        .exclude(Exists(Label.objects.filter(image_id=OuterRef("image_id"))))
        .exclude(
            Exists(QueueItem.objects.filter(queue__project=project, image_id=OuterRef("image_id")))
        )
    )


def _interleave(ranked: list[int], audit: list[int]) -> list[int]:
    """Spread the audit items evenly through the ranked list (audit item i after ranked
    position (i + 1) * step), so a queue served by priority labels some of them early."""
    step = max(1, len(ranked) // (len(audit) + 1))
    after: dict[int, list[int]] = {}
    for i, image_id in enumerate(audit):
        after.setdefault(min(len(ranked), (i + 1) * step), []).append(image_id)
    merged: list[int] = list(after.get(0, []))
    for position, image_id in enumerate(ranked, start=1):
        merged.append(image_id)
        merged.extend(after.get(position, []))
    return merged


# Band options a caller may leave out (None): the SELECT spec's defaults then apply.
BAND_OPTIONS = ("band_mode", "high_share", "band_share", "band_center")
# The rule behind each image of a selection, as details["rule"] and the result's by_rule.
RULE_AUDIT = "random_audit"


def queue_fill_from_scores(
    *,
    project: Project,
    model_version: ModelVersion,
    k_band: int,
    k_loss: int,
    audit_share: float,
    high: float,
    band: tuple[float, float] | list[float],
    seed: int,
    band_mode: str | None = None,
    high_share: float | None = None,
    band_share: float | None = None,
    band_center: float | None = None,
    job: Job | None = None,
    created_by: User | None = None,
) -> dict:
    """Queue the band ∪ loss top-K selection plus a random audit into the project's labeling
    queue. Band options left as None take the SELECT spec's defaults (quantile mode).

    Returns the queue's id, how many items each strategy added (`added`, `total`), how many
    the plan took from each rule (`by_rule`: high_score, uncertain_band, loss_top_k,
    band_and_loss for images both selectors chose, random_audit), the band's thresholds in
    probability terms (`band_thresholds`) and the function that ranked the band."""
    import numpy as np

    from labeling.ml.selection import RULE_BAND, RULE_HIGH, RULE_LOSS, audit_sample, plan_selection

    if model_version.project_id != project.pk:
        raise ValidationError(gettext("The model version belongs to another project."))
    given = {
        "band_mode": band_mode,
        "high_share": high_share,
        "band_share": band_share,
        "band_center": band_center,
    }
    cleaned = select_params_clean(
        project=project,
        params={
            "model_version_id": model_version.pk,
            "k_band": k_band,
            "k_loss": k_loss,
            "audit_share": audit_share,
            "high": high,
            "band_low": band[0],
            "band_high": band[1],
            "seed": seed,
            **{name: value for name, value in given.items() if value is not None},
        },
    )
    with transaction.atomic():
        queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
        eligible = eligible_scores(project=project, model_version=model_version)
        # Every eligible (id, score), ids ascending: the band's quantiles and the audit's ids.
        pairs = list(eligible.order_by("image_id").values_list("image_id", "score"))
        eligible_ids = np.fromiter((pair[0] for pair in pairs), dtype=np.int64, count=len(pairs))
        eligible_scores_ = np.fromiter(
            (pair[1] for pair in pairs), dtype=np.float64, count=len(pairs)
        )
        by_loss = list(
            eligible.filter(predicted_loss__isnull=False)
            .order_by("-predicted_loss", "image_id")
            .values_list("image_id", "predicted_loss")[: cleaned["k_loss"]]
        )
        plan = plan_selection(
            candidate_ids=eligible_ids,
            candidate_scores=eligible_scores_,
            loss_candidates=by_loss,
            k_band=cleaned["k_band"],
            k_loss=cleaned["k_loss"],
            band_mode=cleaned["band_mode"],
            high_share=cleaned["high_share"],
            band_share=cleaned["band_share"],
            band_center=cleaned["band_center"],
            high=cleaned["high"],
            band=(cleaned["band_low"], cleaned["band_high"]),
        )
        audit_k = math.ceil(cleaned["audit_share"] * len(plan.ranked_ids))
        audit: list[int] = []
        if audit_k:
            audit = audit_sample(
                eligible_ids, exclude_ids=plan.ranked_ids, k=audit_k, seed=cleaned["seed"]
            )
        ordered = _interleave(plan.ranked_ids, audit)
        strategy_of: dict[int, str] = dict.fromkeys(audit, Strategy.RANDOM_AUDIT)
        rule_of = {**plan.rule_of, **dict.fromkeys(audit, RULE_AUDIT)}
        by_rule = dict.fromkeys((RULE_HIGH, RULE_BAND, RULE_LOSS, "band_and_loss", RULE_AUDIT), 0)
        for image_id in plan.ranked_ids:
            in_b, in_l = image_id in plan.band_ids, image_id in plan.loss_ids
            strategy_of[image_id] = (
                Strategy.BAND_AND_LOSS
                if in_b and in_l
                else Strategy.CONFIDENCE_BAND
                if in_b
                else Strategy.LOSS_RANKED
            )
            by_rule[rule_of[image_id]] += 1
            by_rule["band_and_loss"] += int(in_b and in_l)
        by_rule[RULE_AUDIT] = len(audit)
        scores = {
            row["image_id"]: row
            for row in Score.objects.filter(
                model_version=model_version, image_id__in=ordered
            ).values("image_id", "stage1", "stage2", "score", "decision", "predicted_loss")
        }
        priorities = {image_id: float(len(ordered) - n) for n, image_id in enumerate(ordered)}
        details = {
            image_id: {
                "score": scores[image_id]["score"],
                "stage1": scores[image_id]["stage1"],
                "stage2": scores[image_id]["stage2"],
                "decision": scores[image_id]["decision"],
                "predicted_loss": scores[image_id]["predicted_loss"],
                "rule": rule_of[image_id],
                "model_version_id": model_version.pk,
                "model_version": model_version.name,
                "job_id": job.pk if job is not None else None,
            }
            for image_id in ordered
        }
        added: dict[str, int] = {}
        for strategy in (
            Strategy.BAND_AND_LOSS,
            Strategy.CONFIDENCE_BAND,
            Strategy.LOSS_RANKED,
            Strategy.RANDOM_AUDIT,
        ):
            ids = [i for i in ordered if strategy_of[i] == strategy]
            added[strategy.value] = queue_items_add(
                queue=queue,
                images=ids,
                strategy=strategy,
                priorities={i: priorities[i] for i in ids},
                details_by_image={i: details[i] for i in ids},
                created_by=created_by,
            )
    return {
        "queue_id": queue.pk,
        "added": added,
        "total": sum(added.values()),
        "by_rule": by_rule,
        "band_thresholds": plan.band_thresholds,
        "function": plan.function,
    }


def _select(job: Job) -> dict:
    params = job.params
    version = ModelVersion.objects.get(pk=params["model_version_id"])
    job_progress(job_id=job.pk, stage="selecting", percent=10.0, line=f"selecting with {version}")
    result = queue_fill_from_scores(
        project=job.project,
        model_version=version,
        k_band=params["k_band"],
        k_loss=params["k_loss"],
        audit_share=params["audit_share"],
        high=params["high"],
        band=(params["band_low"], params["band_high"]),
        seed=params["seed"],
        # Jobs queued before the quantile band existed keep the fixed thresholds they asked for.
        band_mode=params.get("band_mode", "absolute"),
        **{name: params[name] for name in BAND_OPTIONS[1:] if name in params},
        job=job,
        created_by=job.created_by,
    )
    thresholds = result["band_thresholds"]
    band_line = gettext("band thresholds (%(mode)s): high >= %(high)s, band %(band)s") % {
        "mode": thresholds["mode"],
        "high": _shown(thresholds["high"]),
        "band": _shown(thresholds["band"]),
    }
    job_progress(
        job_id=job.pk,
        stage="selecting",
        percent=100.0,
        line=", ".join(f"{k}: {v}" for k, v in result["by_rule"].items()) + "; " + band_line,
    )
    return result


def _shown(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return f"{value:.4g}"


def select_run(*, job_id: int, retry: bool = False) -> None:
    """The `select` job: one `queue_fill_from_scores` with the job's parameters."""
    job_run(job_id=job_id, body=_select, retry=retry)
