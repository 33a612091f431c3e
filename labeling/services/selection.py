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
- `RANDOM_AUDIT`: a seeded random `audit_share` of the round from the rest of the eligible
  pool, an unbiased sample to measure what the selectors miss; at least one image whenever the
  share is above 0, so it never silently empties on a small pool.

How much a round takes (`sizing`, mlcore.selection.round_sizes): never more than `max_share` of
the eligible images, audit included; "auto" (the default) takes about one day of the project's
labeling (its annotation rate over the last week; 400 ranked images with no history), "fixed"
takes `k_band` + `k_loss`; either way the ranked list (most informative first) is trimmed to
what leaves room for its audit under the cap. `selection_preview` says what a round would take
before it starts (the jobs page and the API show it), from an eligible count and a labeling
rate at most PREVIEW_CACHE_SECONDS old, and says how old (counting the eligible images takes
seconds at a million scores); the job itself counts afresh.

Eligible: a pool image of the project with a Score from the version, never labeled (any Label
row, a retracted one included) and in no queue of the project, except as a waiting item (open,
unlabeled: queued by an import, a cold start or an older version's selection) of the labeling
queue that this version has not chosen already: a chosen waiting item is moved
(its strategy, priority and details become the selection's; `details.moved_from` keeps what it
was; labeling.services.queues.queue_items_place). Each QueueItem records its
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

from datetime import timedelta

from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.timesince import timesince
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
    project_version,
    seed_param,
)
from labeling.services.queues import (
    MODEL_PRIORITY_BASE,
    queue_get_or_create,
    queue_items_place,
)
from labeling.services.triage import machine_accepted_exists

MAX_K = 100_000
# How old the eligible count `selection_preview` shows may be (selection_counts_recent).
PREVIEW_CACHE_SECONDS = 600
# The window over which the project's labeling rate is measured for automatic round sizes.
RATE_WINDOW = timedelta(days=7)


# The parameters of a select job (labeling.services.params; docs/jobs.md).
SELECT = JobSpec(
    kind=Job.Kind.SELECT,
    params=(
        model_version(
            resolve=project_version(
                no_active=_("This project has no active model version to select with."),
                ready_only=False,
            ),
            help_text=_(
                "The model version whose scores choose the images; the project's active "
                "version if empty."
            ),
        ),
        choice(
            "sizing",
            default="auto",
            choices=(
                ("auto", _("From the pool and the labeling rate")),
                ("fixed", _("The top-K below")),
            ),
            label=_("Round size"),
            help_text=_(
                "Automatic: about one day of this project's labeling (400 ranked images "
                "before anyone has labeled), split evenly between band and loss. Fixed: the "
                "band and loss top-K below. Either way the round stays within the share below."
            ),
        ),
        number(
            "max_share",
            default=0.2,
            low=0.001,
            high=1.0,
            label=_("Largest share of the pool"),
            help_text=_(
                "A round never takes more than this share of the eligible unlabeled images, "
                "the audit included (0.2: a fifth)."
            ),
        ),
        integer(
            "k_band",
            default=200,
            low=0,
            high=MAX_K,
            label=_("Band top-K"),
            help_text=_("Fixed size: at most this many images from the confidence band."),
        ),
        integer(
            "k_loss",
            default=200,
            low=0,
            high=MAX_K,
            label=_("Loss top-K"),
            help_text=_("Fixed size: at most this many images with the largest predicted loss."),
        ),
        number(
            "audit_share",
            default=0.05,
            low=0.0,
            high=1.0,
            label=_("Audit share"),
            help_text=_(
                "A random sample of the rest of the pool, as a share of the round (at least "
                "one image when above 0): an unbiased measure of what the selectors miss."
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
    of the project, except as waiting items (open, unlabeled) of `queue` that this version did
    not choose already: a selection may move those (an import's, a cold start's, an older
    version's), while a second round with the same version takes new images."""
    blocking = QueueItem.objects.filter(queue__project=project, image_id=OuterRef("image_id"))
    if queue is not None:
        movable = Q(queue=queue, status=QueueItem.Status.OPEN, labels_done=0) & (
            Q(details__model_version_id__isnull=True)
            | ~Q(details__model_version_id=model_version.pk)
        )
        blocking = blocking.exclude(movable)
    return (
        Score.objects.filter(
            model_version=model_version, image__project=project, image__split=Image.Split.POOL
        )
        .exclude(Exists(Label.objects.filter(image_id=OuterRef("image_id"))))
        .exclude(Exists(blocking))
        .exclude(machine_accepted_exists())
    )


def labeling_daily_rate(*, project: Project) -> float | None:
    """Annotations per day in the project over the last RATE_WINDOW; None with none."""
    since = timezone.now() - RATE_WINDOW
    count = Label.objects.filter(
        project=project, kind=Label.Kind.ANNOTATION, created_at__gte=since
    ).count()
    return count / RATE_WINDOW.days if count else None


def _round_sizes(*, eligible: int, cleaned: dict, daily_rate: float | None):
    """mlcore's round sizes; `daily_rate` (labeling_daily_rate) sizes an automatic round."""
    from labeling.ml.selection import round_sizes

    fixed = cleaned["sizing"] == "fixed"
    return round_sizes(
        eligible,
        max_share=cleaned["max_share"],
        audit_share=cleaned["audit_share"],
        k_band=cleaned["k_band"] if fixed else None,
        k_loss=cleaned["k_loss"] if fixed else None,
        daily_rate=None if fixed else daily_rate,
    )


def _sizes_dict(sizes) -> dict:
    return {
        "eligible": sizes.eligible,
        "cap": sizes.cap,
        "max_share": sizes.max_share,
        "k_band": sizes.k_band,
        "k_loss": sizes.k_loss,
        "ranked_max": sizes.ranked_max,
        "audit": sizes.audit,
        "audit_share": sizes.audit_share,
        "most": sizes.total,
        "rule": _sizes_rule(sizes),
    }


def _sizes_rule(sizes) -> str:
    """How the round's size was reached, in the reader's language (mlcore says it in English
    in `sizes.rule`)."""
    from labeling.ml.selection import AUTO_ROUND_DEFAULT

    if not sizes.automatic:
        text = gettext("fixed: band top-%(band)d + loss top-%(loss)d") % {
            "band": sizes.k_band,
            "loss": sizes.k_loss,
        }
    elif sizes.daily_rate:
        text = gettext("automatic: about one day of labeling (%(rate)d labels a day)") % {
            "rate": round(sizes.daily_rate)
        }
    else:
        text = gettext("automatic: %(count)d ranked images (no labeling history yet)") % {
            "count": AUTO_ROUND_DEFAULT
        }
    if sizes.capped:
        text += gettext(
            "; capped at %(share)s of %(eligible)d eligible images: %(cap)d in all, at most "
            "%(ranked)d ranked"
        ) % {
            "share": f"{sizes.max_share:g}",
            "eligible": sizes.eligible,
            "cap": sizes.cap,
            "ranked": sizes.ranked_max,
        }
    return text


def _preview_key(*, project: Project, model_version: ModelVersion) -> str:
    return f"selection-preview-counts:{project.pk}:{model_version.pk}"


def selection_counts_recent(*, project: Project, model_version: ModelVersion) -> dict:
    """What a round's size depends on, other than its parameters: the eligible images of
    `model_version` and the project's labeling rate, with when they were counted
    (`counted_at`). Counted at most once per PREVIEW_CACHE_SECONDS per project and version:
    at a million scores the eligibility anti-joins take seconds, too long for every load of
    the jobs page and every change of its form. The select job counts afresh."""
    key = _preview_key(project=project, model_version=model_version)
    counts = cache.get(key)
    if counts is None:
        queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
        counts = {
            "eligible": eligible_scores(
                project=project, model_version=model_version, queue=queue
            ).count(),
            "daily_rate": labeling_daily_rate(project=project),
            "counted_at": timezone.now(),
        }
        cache.set(key, counts, PREVIEW_CACHE_SECONDS)
    return counts


def selection_counts_forget(*, project: Project, model_version: ModelVersion) -> None:
    """Drop the counts `selection_preview` shows (a round just changed what is eligible), so
    the next preview counts again instead of showing the figures from before the round."""
    cache.delete(_preview_key(project=project, model_version=model_version))


def selection_preview(*, project: Project, params: dict | None = None) -> dict:
    """What a select job with `params` (defaults filled in) would take, before it starts:
    the eligible images, the cap, band / loss / audit sizes and the rule that set them, from
    counts at most PREVIEW_CACHE_SECONDS old (`selection_counts_recent`; `counted_at` and
    `counted` say when). Raises ValidationError as the job would (e.g. no active model
    version)."""
    cleaned = select_params_clean(project=project, params=dict(params or {}))
    version = ModelVersion.objects.get(pk=cleaned["model_version_id"])
    counts = selection_counts_recent(project=project, model_version=version)
    sizes = _round_sizes(
        eligible=counts["eligible"],
        cleaned=cleaned,
        daily_rate=counts["daily_rate"],
    )
    summary = gettext(
        "With these settings a round takes at most %(most)d of the %(eligible)d eligible "
        "images: band ≤ %(band)d, loss ≤ %(loss)d, random audit %(audit)d (never more than "
        "%(share)s of them: %(cap)d)."
    ) % {
        "most": sizes.total,
        "eligible": sizes.eligible,
        "band": sizes.k_band,
        "loss": sizes.k_loss,
        "audit": sizes.audit,
        "share": f"{sizes.max_share:g}",
        "cap": sizes.cap,
    }
    return {
        "model_version_id": version.pk,
        "model_version": version.name,
        **_sizes_dict(sizes),
        "summary": summary,
        "counted_at": counts["counted_at"],
        "counted": gettext(
            "Eligible images counted %(age)s ago (recounted at most every %(minutes)d minutes)."
        )
        % {
            "age": timesince(counts["counted_at"]),
            "minutes": PREVIEW_CACHE_SECONDS // 60,
        },
    }


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
    sizing: str = "fixed",
    max_share: float = 1.0,
    job: Job | None = None,
    created_by: User | None = None,
) -> dict:
    """Queue the band ∪ loss top-K selection plus a random audit into the project's labeling
    queue. Band options left as None take the SELECT spec's defaults (quantile mode). A caller
    that names its sizes gets them (`sizing` "fixed", within `max_share` of the eligible
    images, the whole pool by default); the select job passes its own, "auto" by default.

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
            "sizing": sizing,
            "max_share": max_share,
            **{name: value for name, value in given.items() if value is not None},
        },
    )
    with transaction.atomic():
        queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
        eligible = eligible_scores(project=project, model_version=model_version, queue=queue)
        # Every eligible (id, score), ids ascending: the band's quantiles and the audit's ids.
        pairs = list(eligible.order_by("image_id").values_list("image_id", "score"))
        eligible_ids = np.fromiter((pair[0] for pair in pairs), dtype=np.int64, count=len(pairs))
        eligible_scores_ = np.fromiter(
            (pair[1] for pair in pairs), dtype=np.float64, count=len(pairs)
        )
        sizes = _round_sizes(
            eligible=len(pairs),
            cleaned=cleaned,
            daily_rate=None
            if cleaned["sizing"] == "fixed"
            else labeling_daily_rate(project=project),
        )
        by_loss = list(
            eligible.filter(predicted_loss__isnull=False)
            .order_by("-predicted_loss", "image_id")
            .values_list("image_id", "predicted_loss")[: sizes.k_loss]
        )
        plan = plan_selection(
            candidate_ids=eligible_ids,
            candidate_scores=eligible_scores_,
            loss_candidates=by_loss,
            k_band=sizes.k_band,
            k_loss=sizes.k_loss,
            band_mode=cleaned["band_mode"],
            high_share=cleaned["high_share"],
            band_share=cleaned["band_share"],
            band_center=cleaned["band_center"],
            high=cleaned["high"],
            band=(cleaned["band_low"], cleaned["band_high"]),
        )
        # The cap (max_share of the eligible images) holds the audit too: the ranked list, most
        # informative first, is trimmed to what leaves room for its audit.
        ranked = plan.ranked_ids[: sizes.ranked_max]
        audit_k = sizes.audit_for(len(ranked))
        audit: list[int] = []
        if audit_k:
            audit = audit_sample(eligible_ids, exclude_ids=ranked, k=audit_k, seed=cleaned["seed"])
        ordered = _interleave(ranked, audit)
        strategy_of: dict[int, str] = dict.fromkeys(audit, Strategy.RANDOM_AUDIT)
        rule_of = {**plan.rule_of, **dict.fromkeys(audit, RULE_AUDIT)}
        by_rule = dict.fromkeys((RULE_HIGH, RULE_BAND, RULE_LOSS, "band_and_loss", RULE_AUDIT), 0)
        for image_id in ranked:
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
        # Above everything an import queued and any cold start (labeling.services.queues).
        priorities = {
            image_id: MODEL_PRIORITY_BASE + float(len(ordered) - n)
            for n, image_id in enumerate(ordered)
        }
        band_of = {
            RULE_HIGH: {"high": plan.band_thresholds.get("high")},
            RULE_BAND: {"band": plan.band_thresholds.get("band")},
        }
        details = {
            image_id: {
                "rank": n + 1,
                "score": scores[image_id]["score"],
                "stage1": scores[image_id]["stage1"],
                "stage2": scores[image_id]["stage2"],
                "decision": scores[image_id]["decision"],
                "predicted_loss": scores[image_id]["predicted_loss"],
                "rule": rule_of[image_id],
                **band_of.get(rule_of[image_id], {}),
                "model_version_id": model_version.pk,
                "model_version": model_version.name,
                "job_id": job.pk if job is not None else None,
            }
            for n, image_id in enumerate(ordered)
        }
        added: dict[str, int] = {}
        moved: dict[str, int] = {}
        for strategy in (
            Strategy.BAND_AND_LOSS,
            Strategy.CONFIDENCE_BAND,
            Strategy.LOSS_RANKED,
            Strategy.RANDOM_AUDIT,
        ):
            ids = [i for i in ordered if strategy_of[i] == strategy]
            placed = queue_items_place(
                queue=queue,
                ranked=ids,
                strategy=strategy,
                priorities={i: priorities[i] for i in ids},
                details_by_image={i: details[i] for i in ids},
                created_by=created_by,
            )
            added[strategy.value] = placed["added"]
            moved[strategy.value] = placed["moved"]
    total = sum(added.values()) + sum(moved.values())
    result = {
        "queue_id": queue.pk,
        "added": added,
        "moved": moved,
        "total": total,
        "by_rule": by_rule,
        "sizes": _sizes_dict(sizes),
        "band_thresholds": plan.band_thresholds,
        "function": plan.function,
    }
    if not total:
        result["notice"] = _why_nothing(
            project=project, model_version=model_version, eligible=len(pairs)
        )
    return result


def _why_nothing(*, project: Project, model_version: ModelVersion, eligible: int) -> str:
    """Why a selection queued nothing, in counts an engineer can act on."""
    pool = Image.objects.filter(project=project, split=Image.Split.POOL)
    scored = Score.objects.filter(
        model_version=model_version, image__project=project, image__split=Image.Split.POOL
    ).count()
    if not scored:
        return gettext(
            "Nothing to select: %(version)s has scored none of the pool's images; run "
            '"Score the pool" first.'
        ) % {"version": model_version.name}
    return gettext(
        "Nothing to select: %(eligible)d of %(scored)d scored pool images (of %(pool)d) are "
        "unlabeled and not queued elsewhere. Import more images or score new ones."
    ) % {"eligible": eligible, "scored": scored, "pool": pool.count()}


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
        # Jobs queued before round sizes scaled with the pool keep their fixed sizes.
        sizing=params.get("sizing", "fixed"),
        max_share=params.get("max_share", 1.0),
        job=job,
        created_by=job.created_by,
    )
    # The preview's eligible count is from before this round (this process's cache, or the
    # shared one where REDIS_CACHE_URL sets it).
    selection_counts_forget(project=job.project, model_version=version)
    thresholds = result["band_thresholds"]
    band_line = gettext("band thresholds (%(mode)s): high >= %(high)s, band %(band)s") % {
        "mode": thresholds["mode"],
        "high": _shown(thresholds["high"]),
        "band": _shown(thresholds["band"]),
    }
    sizes = result["sizes"]
    size_line = gettext(
        "round: at most %(most)d of %(eligible)d eligible (cap %(cap)d = %(share)s of them; "
        "%(rule)s)"
    ) % {
        "most": sizes["most"],
        "eligible": sizes["eligible"],
        "cap": sizes["cap"],
        "share": sizes["max_share"],
        "rule": sizes["rule"],
    }
    job_progress(
        job_id=job.pk,
        stage="selecting",
        percent=100.0,
        line=", ".join(f"{k}: {v}" for k, v in result["by_rule"].items())
        + "; "
        + band_line
        + "; "
        + (result.get("notice") or size_line),
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
