"""Triage of the live pool: a promoted model sorts new pool images before any person sees them.

A *run* of triage (TriageRun) uses one ready model version and the thresholds of `TRIAGE`
(declared once: the page's form, the API's serializer and the validation come from it). Each
pass (`triage_pass`, task `labeling.tasks.ml_triage`, queued when a run starts, after an import
and after a scoring job) takes the pool images it may decide (`_candidates`), scores those the
version has not scored yet (in the task, in small batches) and sends each one down one route,
recorded as a TriageDecision:

- **accepted** (the version's stage-1 probability below ``accept_below``: the recall stage
  itself rules the image out): accepted without a person. Nothing is labeled: the image holds
  no Label, so no model trains on it unless an engineer asks (the training job's
  ``machine_accepted`` option); a waiting import item of the labeling queue is removed (the
  decision remembers it). Reversible: `triage_revert` undoes every decision of a run.
- **confirm** (the cascade's score, the smaller stage probability, at least ``confirm_at``): to
  the project's confirm queue, whose grid page pre-selects the positive class, so a person
  confirms a page of likely positives at a glance.
- **normal**: the rest stays where the normal flow puts it (import queue, selection rounds).

**The audit of the accepted part.** Each accepted image joins triage's own audit with chance
``audit_rate`` (a seeded coin per image, independent of everything else), so the audited images
are a uniform sample of the accepted ones. They go to the labeling queue as TRIAGE_AUDIT items
with priorities spread among the open items, like the pool audit's (annotators cannot tell
them apart). Their current labels measure triage's miss rate (the share of accepted images that
are positive) with an exact interval (mlcore.estimates.triage_error).

**Pausing itself.** After every pass and every audit label (`triage_check`, task
`labeling.tasks.triage_check`), the run pauses when its audit says so
(mlcore.estimates.triage_verdict): the upper bound of the miss rate is above ``max_error`` once
the audit holds enough labels for a clean audit to be under it, or even the lower bound is above
it. A paused run accepts nothing more and its audit goes on; the reason and the figures at that
moment are kept and shown on the estimates page. An engineer stops a run, reverts it, or starts
a new one (new thresholds, new audit).

Engineers start, stop and revert (labeling.permissions.can_manage); leads and engineers read
the figures (can_see_estimates); annotators see none of it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from labeling.ml import estimates as bridge
from labeling.models import (
    Image,
    Label,
    Lease,
    Project,
    Queue,
    QueueItem,
    Score,
    Strategy,
    TriageDecision,
    TriageRun,
)
from labeling.permissions import can_manage
from labeling.selectors.labels import current_labels
from labeling.services.jobs import task_enqueue
from labeling.services.params import (
    JobSpec,
    model_version,
    not_above,
    number,
    project_version,
    seed_param,
)
from labeling.services.queues import queue_get_or_create, queue_items_add

logger = logging.getLogger(__name__)

ROUTE_TASK = "labeling.tasks.ml_triage"
CHECK_TASK = "labeling.tasks.triage_check"
CONFIRM_QUEUE_NAME = "Confirm"
# Images one pass scores itself (new imports); the rest waits for the next pass or a scoring job.
MAX_SCORED_PER_PASS = 2000
SCORING_BATCH = 64
LIVE = (TriageRun.Status.RUNNING, TriageRun.Status.PAUSED)


# The parameters of a triage run (labeling.services.params): the estimates page's form, the
# API's serializer and `triage_start`'s validation all come from this declaration.
TRIAGE = JobSpec(
    kind="triage",
    params=(
        model_version(
            resolve=project_version(
                no_active=_("This project has no active model version."), ready_only=True
            ),
            help_text=_("The model version that triages; the project's active version if empty."),
        ),
        number(
            "accept_below",
            default=0.02,
            low=0.0,
            high=0.5,
            label=_("Accept below"),
            help_text=_(
                "Images whose stage-1 probability is below this are accepted as negative "
                "without a person (0: accept nothing)."
            ),
        ),
        number(
            "confirm_at",
            default=0.9,
            low=0.5,
            high=1.0,
            label=_("Confirm from"),
            help_text=_(
                "Images whose cascade score (the smaller stage probability) reaches this go to "
                "the confirm queue (grid mode)."
            ),
        ),
        number(
            "audit_rate",
            default=0.1,
            low=0.001,
            high=1.0,
            label=_("Audit share"),
            help_text=_(
                "Share of the accepted images drawn at random for a person to label, to "
                "measure how many positives triage accepts."
            ),
        ),
        number(
            "max_error",
            default=0.02,
            low=0.001,
            high=0.5,
            label=_("Bound on the miss rate"),
            help_text=_(
                "Triage pauses itself when the upper end of the interval (95%) of the share of "
                "positives among the accepted images is above this."
            ),
        ),
        seed_param(),
    ),
    checks=(
        not_above(
            "accept_below",
            "confirm_at",
            message=_("accept_below cannot exceed confirm_at."),
        ),
    ),
)


# --- Reads ------------------------------------------------------------------------------------
def triage_live_run(*, project: Project) -> TriageRun | None:
    """The project's running or paused run, if any."""
    return TriageRun.objects.filter(project=project, status__in=LIVE).first()


def machine_accepted_ids(*, project: Project) -> set[int]:
    """Pool images accepted without a person by any run, not reverted."""
    return set(
        TriageDecision.objects.filter(
            run__project=project,
            route=TriageDecision.Route.ACCEPTED,
            reverted_at__isnull=True,
            image__split=Image.Split.POOL,
        ).values_list("image_id", flat=True)
    )


def machine_accepted_exists(outer_image_ref: str = "image_id") -> Exists:
    """`Exists(...)` for a queryset whose rows name an image: it was machine-accepted (any run,
    not reverted). For selection, which never queues what triage accepted."""
    return Exists(
        TriageDecision.objects.filter(
            image_id=OuterRef(outer_image_ref),
            route=TriageDecision.Route.ACCEPTED,
            reverted_at__isnull=True,
        )
    )


def _audit_observations(run: TriageRun) -> tuple[int, int, int, int]:
    """(accepted, audited, labeled, positive) of a run's accepted images and their audit."""
    accepted = run.decisions.filter(route=TriageDecision.Route.ACCEPTED, reverted_at__isnull=True)
    audited = list(accepted.filter(audited=True).values_list("image_id", flat=True))
    labels = current_labels(project=run.project, split=Image.Split.POOL)
    positive = run.project.positive_class
    seen = [labels[i] for i in audited if i in labels]
    return accepted.count(), len(audited), len(seen), sum(1 for v in seen if v == positive)


def triage_error_of(run: TriageRun) -> dict:
    """The run's miss rate with its interval and the pause rule's verdict."""
    accepted, _audited, labeled, errors = _audit_observations(run)
    return bridge.triage_audit(
        accepted=accepted, labels=labeled, errors=errors, bound=run.params["max_error"]
    )


def triage_figures(*, project: Project) -> dict[str, Any] | None:
    """What the estimates page and the API show: the latest run (live or not), its routes,
    its audit's miss rate with the interval and the pause rule's state. None before any run.
    Never writes."""
    run = TriageRun.objects.filter(project=project).select_related("model_version").first()
    if run is None:
        return None
    decisions = run.decisions.filter(reverted_at__isnull=True)
    routes = {route: decisions.filter(route=route).count() for route in TriageDecision.Route}
    accepted, audited, labeled, errors = _audit_observations(run)
    error = bridge.triage_audit(
        accepted=accepted, labels=labeled, errors=errors, bound=run.params["max_error"]
    )
    pool = Image.objects.filter(project=project, split=Image.Split.POOL).count()
    return {
        "run_id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "model_version": {"id": run.model_version_id, "name": run.model_version.name},
        "params": run.params,
        "started_at": run.created_at.isoformat(),
        "paused_at": run.paused_at.isoformat() if run.paused_at else None,
        "stopped_at": run.stopped_at.isoformat() if run.stopped_at else None,
        "reverted_at": run.reverted_at.isoformat() if run.reverted_at else None,
        "pause_reason": run.pause_reason or None,
        "pause_reason_text": pause_reason_text(run.pause_reason, run.pause_figures),
        "pause_figures": run.pause_figures or None,
        "pool": pool,
        "routes": {str(route): count for route, count in routes.items()},
        "accepted_share": routes[TriageDecision.Route.ACCEPTED] / pool if pool else None,
        "audit": {"drawn": audited, "labeled": labeled, "pending": audited - labeled},
        "error": error,
        "verdict": error["verdict"],
    }


def pause_reason_text(reason: str, figures: dict | None) -> str:
    """The pause rule that fired, in words, with the figures of that moment."""
    if not reason:
        return ""
    rate = (figures or {}).get("rate") or {}
    values = {
        "low": f"{rate.get('low', float('nan')):.4f}",
        "high": f"{rate.get('high', float('nan')):.4f}",
        "bound": f"{(figures or {}).get('bound', float('nan')):.4f}",
        "errors": (figures or {}).get("errors", 0),
        "labels": (figures or {}).get("labels", 0),
    }
    if reason == "lower_bound":
        return (
            gettext(
                "Paused: %(errors)s of %(labels)s audited accepted images were positive; even "
                "the lower end of the miss rate's 95%% interval (%(low)s) is above the bound "
                "%(bound)s."
            )
            % values
        )
    return (
        gettext(
            "Paused: %(errors)s of %(labels)s audited accepted images were positive; the upper "
            "end of the miss rate's 95%% interval (%(high)s) is above the bound %(bound)s."
        )
        % values
    )


# --- Start, stop, revert (engineers) ------------------------------------------------------------
def _must_manage(user: User | None, project: Project) -> None:
    if user is not None and not can_manage(user, project):
        raise PermissionDenied(gettext("Only engineers start, stop or revert triage."))


def triage_start(*, project: Project, params: dict | None, by: User | None) -> TriageRun:
    """Start a run with `params` (validated by TRIAGE) and queue its first pass over the
    scored pool. A live run (running or paused) is stopped first: one run at a time."""
    _must_manage(by, project)
    if params is not None and not isinstance(params, dict):
        raise ValidationError({"params": gettext("Parameters must be a JSON object.")})
    cleaned = TRIAGE.clean(project=project, params=dict(params or {}))
    now = timezone.now()
    with transaction.atomic():
        TriageRun.objects.select_for_update().filter(project=project, status__in=LIVE).update(
            status=TriageRun.Status.STOPPED, stopped_at=now
        )
        run = TriageRun.objects.create(
            project=project,
            model_version_id=cleaned["model_version_id"],
            params=cleaned,
            started_by=by,
        )
        task_enqueue(ROUTE_TASK, project.pk)
    return run


def triage_stop(*, project: Project, by: User | None) -> TriageRun:
    """Stop the live run: nothing more is accepted; its decisions stay (revert undoes them)."""
    _must_manage(by, project)
    with transaction.atomic():
        run = TriageRun.objects.select_for_update().filter(project=project, status__in=LIVE).first()
        if run is None:
            raise ValidationError(gettext("Triage is not running in this project."))
        run.status = TriageRun.Status.STOPPED
        run.stopped_at = timezone.now()
        run.save(update_fields=["status", "stopped_at"])
    return run


def triage_revert(*, project: Project, run_id: int, by: User | None) -> int:
    """Undo every decision of a run (stopping it first when live): the images it accepted are
    no longer machine-accepted, the waiting items it removed are open again, and confirm items
    nobody labeled yet leave the confirm queue. Audit items and labels stay (people's labels
    are never undone by a machine). Returns the decisions reverted."""
    _must_manage(by, project)
    now = timezone.now()
    with transaction.atomic():
        run = TriageRun.objects.select_for_update().filter(project=project, pk=run_id).first()
        if run is None:
            raise ValidationError(gettext("No triage run %(id)s in this project.") % {"id": run_id})
        if run.status in LIVE:
            run.status = TriageRun.Status.STOPPED
            run.stopped_at = now
        live = run.decisions.filter(reverted_at__isnull=True)
        removed = list(
            live.filter(removed_item__isnull=False).values_list("removed_item_id", flat=True)
        )
        QueueItem.objects.filter(pk__in=removed, status=QueueItem.Status.REMOVED).update(
            status=QueueItem.Status.OPEN
        )
        confirm_images = live.filter(route=TriageDecision.Route.CONFIRM).values("image_id")
        QueueItem.objects.filter(
            queue__project=project,
            queue__kind=Queue.Kind.CONFIRM,
            strategy=Strategy.TRIAGE_CONFIRM,
            status=QueueItem.Status.OPEN,
            labels_done=0,
            image_id__in=confirm_images,
        ).exclude(leases__state=Lease.State.ACTIVE).update(status=QueueItem.Status.REMOVED)
        count = live.update(reverted_at=now)
        run.reverted_at = now
        run.save(update_fields=["status", "stopped_at", "reverted_at"])
    return count


# --- A pass (the ml_triage task) ----------------------------------------------------------------
def _candidates(project: Project) -> list[int]:
    """Pool images a pass may decide: no Label at all, no decision of a live or earlier run
    (reverted ones aside: a new run may decide them again), and in no queue except as a waiting
    import item of the labeling queue (what people or a model queued on purpose, and any
    audit item, stays as it is)."""
    untouched_import = Q(
        queue__kind=Queue.Kind.LABELING,
        strategy=Strategy.MANUAL,
        status=QueueItem.Status.OPEN,
        labels_done=0,
    )
    # A confirm item a reverted run withdrew (nobody labeled it) does not block either.
    withdrawn = Q(
        queue__kind=Queue.Kind.CONFIRM,
        strategy=Strategy.TRIAGE_CONFIRM,
        status=QueueItem.Status.REMOVED,
        labels_done=0,
    )
    blocking = QueueItem.objects.filter(image_id=OuterRef("pk")).filter(
        (~untouched_import & ~withdrawn) | Q(leases__state=Lease.State.ACTIVE)
    )
    decided = TriageDecision.objects.filter(image_id=OuterRef("pk"), reverted_at__isnull=True)
    return list(
        Image.objects.filter(project=project, split=Image.Split.POOL)
        .exclude(Exists(Label.objects.filter(image_id=OuterRef("pk"))))
        .exclude(Exists(blocking))
        .exclude(Exists(decided))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _score_missing(run: TriageRun, image_ids: list[int]) -> int:
    """Score (and store, as a scoring job would) the images the run's version has not scored.
    Returns how many were scored; the ML bridge is imported here only (web processes never
    load torch through this module)."""
    version = run.model_version
    scored = set(
        Score.objects.filter(model_version=version, image_id__in=image_ids).values_list(
            "image_id", flat=True
        )
    )
    missing = [pk for pk in image_ids if pk not in scored][:MAX_SCORED_PER_PASS]
    if not missing or not version.checkpoint:
        return 0
    from django.conf import settings

    from labeling.ml.cascade import load_cascade_cached
    from labeling.ml.datasets import ImageRow
    from labeling.ml.scoring import score_rows

    cascade = load_cascade_cached(version, device=settings.IMAGECLEAN_ML_DEVICE)
    names = dict(Image.objects.filter(pk__in=missing).values_list("pk", "file"))
    rows = [ImageRow(image_id=pk, name=names[pk]) for pk in missing if pk in names]
    outcome = score_rows(cascade, rows, batch_size=SCORING_BATCH, num_workers=0)
    Score.objects.bulk_create(
        [
            Score(
                image_id=r.image_id,
                model_version=version,
                stage1=r.stage1,
                stage2=r.stage2,
                score=r.score,
                decision=r.decision,
                predicted_loss=r.predicted_loss,
            )
            for r in outcome.records
        ],
        update_conflicts=True,
        unique_fields=["image", "model_version"],
        update_fields=["stage1", "stage2", "score", "decision", "predicted_loss"],
        batch_size=1000,
    )
    for image_id, error in outcome.errors:
        logger.warning("triage: image %s could not be scored: %s", image_id, error)
    return len(outcome.records)


def triage_pass(*, project_id: int) -> dict[str, Any]:
    """One pass of the project's running triage (see the module docstring). Safe to run twice
    or concurrently: decisions are unique per (run, image) and written under a lock on the run.
    Returns what it did (for logs and tests)."""
    project = Project.objects.filter(pk=project_id).first()
    run = triage_live_run(project=project) if project else None
    if run is None or run.status != TriageRun.Status.RUNNING:
        return {"decided": 0, "reason": "not running"}
    candidates = _candidates(project)
    scored = _score_missing(run, candidates)
    outcome = _decide(run.pk, candidates)
    outcome["scored"] = scored
    triage_check(project_id=project.pk)
    return outcome


def _decide(run_id: int, candidates: list[int]) -> dict[str, Any]:
    with transaction.atomic():
        run = TriageRun.objects.select_for_update().select_related("project").get(pk=run_id)
        if run.status != TriageRun.Status.RUNNING:
            return {"decided": 0, "reason": "not running"}
        project, params = run.project, run.params
        # Again under the lock: a concurrent pass may have decided some of them meanwhile.
        taken = set(
            TriageDecision.objects.filter(
                image_id__in=candidates, reverted_at__isnull=True
            ).values_list("image_id", flat=True)
        )
        rows = list(
            Score.objects.filter(model_version=run.model_version_id, image_id__in=candidates)
            .exclude(image_id__in=taken)
            .order_by("image_id")
            .values_list("image_id", "stage1", "score")
        )
        if not rows:
            return {"decided": 0, "accepted": 0, "confirm": 0, "normal": 0, "audited": 0}
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        stage1 = np.array([row[1] for row in rows], dtype=np.float64)
        score = np.array([row[2] for row in rows], dtype=np.float64)
        accept = stage1 < params["accept_below"]
        confirm = ~accept & (score >= params["confirm_at"])
        # The audit's coin per image: seeded by the run's seed and the image's content hash, so
        # a pass run twice (or a run repeated with the same seed) draws the same images, and
        # independent of the image's score.
        hashes = dict(Image.objects.filter(pk__in=ids.tolist()).values_list("pk", "content_hash"))
        coins = np.array(
            [
                np.random.default_rng([params["seed"], int(hashes[int(i)][:15], 16)]).random()
                for i in ids
            ]
        )
        audited = accept & (coins < params["audit_rate"])
        labeling = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
        waiting = dict(
            QueueItem.objects.filter(
                queue=labeling,
                image_id__in=ids.tolist(),
                strategy=Strategy.MANUAL,
                status=QueueItem.Status.OPEN,
                labels_done=0,
            ).values_list("image_id", "pk")
        )
        decisions = []
        to_remove: list[int] = []
        for i, image_id in enumerate(ids.tolist()):
            route = (
                TriageDecision.Route.ACCEPTED
                if accept[i]
                else TriageDecision.Route.CONFIRM
                if confirm[i]
                else TriageDecision.Route.NORMAL
            )
            removed = None
            if route != TriageDecision.Route.NORMAL and not audited[i] and image_id in waiting:
                removed = waiting[image_id]
                to_remove.append(removed)
            decisions.append(
                TriageDecision(
                    run=run,
                    image_id=image_id,
                    route=route,
                    score=float(stage1[i] if accept[i] else score[i]),
                    audited=bool(audited[i]),
                    removed_item_id=removed,
                )
            )
        TriageDecision.objects.bulk_create(decisions, batch_size=1000, ignore_conflicts=True)
        QueueItem.objects.filter(pk__in=to_remove, status=QueueItem.Status.OPEN).update(
            status=QueueItem.Status.REMOVED
        )
        _queue_audit(run, labeling, ids[audited].tolist(), waiting)
        if confirm.any():
            confirm_queue = queue_get_or_create(
                project=project, kind=Queue.Kind.CONFIRM, name=CONFIRM_QUEUE_NAME
            )
            queue_items_add(
                queue=confirm_queue,
                images=ids[confirm].tolist(),
                strategy=Strategy.TRIAGE_CONFIRM,
                priorities={int(i): float(s) for i, s in zip(ids[confirm], score[confirm])},
                details_by_image={
                    int(i): {"triage_run": run.pk, "score": float(s), "rule": "triage_confirm"}
                    for i, s in zip(ids[confirm], score[confirm])
                },
            )
            # Withdrawn by a reverted run: open again for this one.
            QueueItem.objects.filter(
                queue=confirm_queue,
                image_id__in=ids[confirm].tolist(),
                strategy=Strategy.TRIAGE_CONFIRM,
                status=QueueItem.Status.REMOVED,
                labels_done=0,
            ).update(status=QueueItem.Status.OPEN)
    return {
        "decided": len(decisions),
        "accepted": int(accept.sum()),
        "confirm": int(confirm.sum()),
        "normal": int(len(ids) - accept.sum() - confirm.sum()),
        "audited": int(audited.sum()),
    }


def _queue_audit(run: TriageRun, queue: Queue, image_ids: list[int], waiting: dict) -> None:
    """The audited accepted images, as TRIAGE_AUDIT items of the labeling queue with priorities
    spread uniformly up to the highest open one (served among the rest, like the pool audit's).
    An audited image already waiting there as an import item keeps its item, which now says
    why it is there."""
    if not image_ids:
        return
    rng = np.random.default_rng([run.params["seed"], run.pk, len(image_ids), image_ids[0]])
    top = queue.items.filter(status=QueueItem.Status.OPEN).aggregate(top=Max("priority"))["top"]
    spread = max(1.0, float(top or 0.0))
    priorities = {int(i): float(rng.uniform(0.0, spread)) for i in image_ids}
    details = {int(i): {"triage_run": run.pk, "rule": "triage_audit"} for i in image_ids}
    for image_id in image_ids:
        if image_id in waiting:
            QueueItem.objects.filter(pk=waiting[image_id]).update(
                strategy=Strategy.TRIAGE_AUDIT,
                priority=priorities[image_id],
                details=details[image_id],
            )
    queue_items_add(
        queue=queue,
        images=[i for i in image_ids if i not in waiting],
        strategy=Strategy.TRIAGE_AUDIT,
        priorities=priorities,
        details_by_image=details,
    )


# --- The pause rule -----------------------------------------------------------------------------
def triage_check(*, project_id: int) -> str | None:
    """Apply the pause rule to the project's running run; returns the reason it paused, or
    None. Called after every pass and every triage-audit label."""
    with transaction.atomic():
        run = (
            TriageRun.objects.select_for_update()
            .filter(project_id=project_id, status=TriageRun.Status.RUNNING)
            .select_related("project")
            .first()
        )
        if run is None:
            return None
        error = triage_error_of(run)
        reason = error["verdict"]
        if reason is None:
            return None
        run.status = TriageRun.Status.PAUSED
        run.pause_reason = reason
        run.pause_figures = error
        run.paused_at = timezone.now()
        run.save(update_fields=["status", "pause_reason", "pause_figures", "paused_at"])
    logger.warning("triage run %s paused itself: %s", run.pk, reason)
    return reason


# --- Hooks: what queues a pass or a check --------------------------------------------------------
def triage_after_new_images(*, project: Project) -> bool:
    """After an import or a scoring job: queue a pass when triage is running (on commit).
    Returns whether it did."""
    if not TriageRun.objects.filter(project=project, status=TriageRun.Status.RUNNING).exists():
        return False
    task_enqueue(ROUTE_TASK, project.pk)
    return True


def triage_after_label(*, label: Label) -> None:
    """A triage-audit label arrived: queue the pause rule's check (on commit)."""
    if (
        label.strategy == Strategy.TRIAGE_AUDIT
        and TriageRun.objects.filter(
            project_id=label.project_id, status=TriageRun.Status.RUNNING
        ).exists()
    ):
        task_enqueue(CHECK_TASK, label.project_id)
