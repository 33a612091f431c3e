"""Gold items, annotator pauses and exposure limits (issue 9, items 3 and 4).

Gold items
----------
A lead or engineer marks a labeled image as gold: its current label becomes the known answer
(`GoldItem.value`). The image gets an item in the project's hidden gold queue (`Queue.Kind.GOLD`,
listed nowhere). When an annotator claims items from a labeling or validation queue, each new
item is a gold item with probability `Project.gold_rate` (labeling.project_settings); the lease
on it carries `served_in` (the queue it was claimed from) and is otherwise a lease like any
other: the same fields, URLs and image addresses, so nothing tells the annotator which one it is.

Their answer is stored as a Label of kind ANNOTATION with strategy GOLD in the queue it was served
in (so undo and "my recent labels" treat it like the rest), but `labels_active` leaves strategy
GOLD out: it never becomes, outvotes or supersedes the image's label, and training, exports,
noise detection and the estimates never see it. It is measured against the gold value instead
(labeling.selectors.quality).

A gold item is answered at most once per person (the lease constraint one-per-annotator), never
shown to someone who labeled that image for real, and never served when the claim found no
ordinary item (an empty queue stays empty).

Pauses and exposure
-------------------
`labeling_stop_check` runs before a claim hands out new items: an annotator whose gold accuracy
fell under `gold_pause_below` (with at least `gold_pause_min_answers` answers since their last
lifted pause) is paused until a lead lifts it; one who labeled `exposure_daily_cap`
positive-class images today stops until tomorrow. Each check costs one query, and only when the
project turns that rule on.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from labeling.models import (
    AnnotatorPause,
    GoldItem,
    Image,
    Label,
    Lease,
    Project,
    Queue,
    QueueItem,
    Strategy,
)
from labeling.permissions import can_review
from labeling.selectors.labels import image_current_label

DEFAULT_GOLD_QUEUE = "Gold (hidden)"
# A gold item is answered by many people, each once: its "slots" are only the lease table's
# per-slot uniqueness among active leases, so it has as many as a small integer holds.
GOLD_SLOTS = 32767
MAX_GOLD_MARK = 500


# --- Marking ------------------------------------------------------------------------------------
def gold_queue_ensure(*, project: Project) -> Queue:
    queue = Queue.objects.filter(project=project, kind=Queue.Kind.GOLD).order_by("id").first()
    if queue is None:
        name = DEFAULT_GOLD_QUEUE
        if Queue.objects.filter(project=project, name=name).exists():
            name = f"{DEFAULT_GOLD_QUEUE} {project.pk}"
        queue, _created = Queue.objects.get_or_create(
            project=project, name=name, defaults={"kind": Queue.Kind.GOLD}
        )
    return queue


def _check_may_mark(user: User, project: Project) -> None:
    if not can_review(user, project):
        raise PermissionDenied(_("Gold items are marked by leads and engineers of the project."))


@transaction.atomic
def gold_mark(
    *, project: Project, images: Iterable[int], user: User, value: str | None = None
) -> list[GoldItem]:
    """Make each image a gold item whose answer is its current label (or `value` for every
    one of them). An image with no label and no `value` is refused; marking a gold image again
    updates its answer and serves it again."""
    _check_may_mark(user, project)
    ids = list(dict.fromkeys(images))
    if not ids or len(ids) > MAX_GOLD_MARK:
        raise ValidationError(
            {"images": _("Give 1 to %(count)d image ids.") % {"count": MAX_GOLD_MARK}}
        )
    if not all(isinstance(pk, int) and not isinstance(pk, bool) for pk in ids):
        raise ValidationError({"images": _("Image ids must be whole numbers.")})
    if value is not None and value not in project.class_keys:
        raise ValidationError(
            {
                "value": _("Unknown class %(value)r; this project's classes are %(classes)s.")
                % {"value": value, "classes": ", ".join(project.class_keys)}
            }
        )
    found = Image.objects.in_bulk(ids)
    missing = [pk for pk in ids if pk not in found or found[pk].project_id != project.pk]
    if missing:
        raise ValidationError(
            {"images": _("No images with ids %(ids)s in this project.") % {"ids": missing[:20]}}
        )
    answers: dict[int, tuple[str, str]] = {}
    unlabeled = []
    for pk in ids:
        if value is not None:
            answers[pk] = (value, "")
            continue
        current = image_current_label(image=found[pk])
        if current is None:
            unlabeled.append(pk)
        else:
            answers[pk] = (current.value, current.subcategory)
    if unlabeled:
        raise ValidationError(
            {
                "images": _(
                    "Images %(ids)s have no label yet; label them first or give the gold value."
                )
                % {"ids": unlabeled[:20]}
            }
        )
    queue = gold_queue_ensure(project=project)
    marked = []
    for pk in ids:
        gold_value, subcategory = answers[pk]
        item, _created = QueueItem.objects.get_or_create(
            queue=queue,
            image_id=pk,
            defaults={
                "strategy": Strategy.GOLD,
                "labels_needed": GOLD_SLOTS,
                "created_by": user,
            },
        )
        if item.status != QueueItem.Status.OPEN:
            item.status, item.done_at = QueueItem.Status.OPEN, None
            item.save(update_fields=["status", "done_at"])
        gold, created = GoldItem.objects.get_or_create(
            project=project,
            image_id=pk,
            defaults={
                "item": item,
                "value": gold_value,
                "subcategory": subcategory,
                "created_by": user,
            },
        )
        if not created:
            gold.value, gold.subcategory, gold.active = gold_value, subcategory, True
            gold.save(update_fields=["value", "subcategory", "active"])
        marked.append(gold)
    return marked


@transaction.atomic
def gold_unmark(*, project: Project, image_id: int, user: User) -> GoldItem:
    """Stop serving the image as gold; the answers given so far stay and keep counting."""
    _check_may_mark(user, project)
    gold = (
        GoldItem.objects.select_related("item").filter(project=project, image_id=image_id).first()
    )
    if gold is None:
        raise ValidationError({"image": _("Image %(id)s is not a gold item.") % {"id": image_id}})
    gold.active = False
    gold.save(update_fields=["active"])
    item = gold.item
    item.status, item.done_at = QueueItem.Status.REMOVED, timezone.now()
    item.save(update_fields=["status", "done_at"])
    Lease.objects.filter(item=item, state=Lease.State.ACTIVE).update(
        state=Lease.State.RELEASED, finished_at=timezone.now()
    )
    return gold


# --- Serving ------------------------------------------------------------------------------------
def gold_draws(*, project: Project, count: int, rng: random.Random | None = None) -> int:
    """How many of `count` new items are gold: each one with probability gold_rate."""
    rate = project.gold_rate
    if rate <= 0 or count <= 0:
        return 0
    draw = (rng or random).random
    return sum(1 for _i in range(count) if draw() < rate)


def _gold_lease_create_locked(
    *, item: QueueItem, annotator: User, now: datetime, lease_seconds: int, served_in: Queue
) -> Lease | None:
    """A lease on a gold item; the caller holds the item's row lock. Any free slot will do."""
    used = set(
        Lease.objects.filter(item=item, state=Lease.State.ACTIVE).values_list("slot", flat=True)
    )
    slot = next((n for n in range(GOLD_SLOTS) if n not in used), None)
    if slot is None:
        return None
    try:
        with transaction.atomic():
            return Lease.objects.create(
                item=item,
                annotator=annotator,
                slot=slot,
                served_in=served_in,
                expires_at=now + timedelta(seconds=lease_seconds),
            )
    except IntegrityError:
        return None  # this person already holds or answered it


def gold_claim_locked(*, queue: Queue, annotator: User, count: int, now: datetime) -> list[Lease]:
    """Up to `count` leases on gold items this person never saw, inside the caller's claim
    transaction. Items are locked with SKIP LOCKED, so claimers never wait on each other."""
    if count <= 0:
        return []
    project = queue.project
    seen = Lease.objects.filter(
        item=OuterRef("pk"),
        annotator=annotator,
        state__in=[Lease.State.ACTIVE, Lease.State.COMPLETED, Lease.State.RELEASED],
    )
    labeled = Label.objects.filter(image=OuterRef("image_id"), annotator=annotator)
    candidates = list(
        QueueItem.objects.filter(
            queue__project=project, queue__kind=Queue.Kind.GOLD, status=QueueItem.Status.OPEN
        )
        .exclude(Exists(seen))
        .exclude(Exists(labeled))
        .select_related("image")
        .select_for_update(skip_locked=True, of=("self",))
        .order_by("?")[:count]
    )
    leases = []
    for item in candidates:
        lease = _gold_lease_create_locked(
            item=item,
            annotator=annotator,
            now=now,
            lease_seconds=project.lease_seconds,
            served_in=queue,
        )
        if lease is not None:
            lease.item = item
            leases.append(lease)
    return leases


def gold_mix(new: list[Lease], gold: list[Lease], rng: random.Random | None = None) -> list[Lease]:
    """The gold leases put at random places among the new ones."""
    mixed = list(new)
    pick = (rng or random).randint
    for lease in gold:
        mixed.insert(pick(0, len(mixed)), lease)
    return mixed


# --- Answering ----------------------------------------------------------------------------------
def gold_answer_locked(
    *,
    item: QueueItem,
    lease: Lease,
    annotator: User,
    value: str,
    subcategory: str,
    duration_ms: int | None,
    client_id: str,
    page_size: int | None,
    now: datetime,
) -> Label:
    """Store an answer to a gold item; the caller holds the item's lock and the lease's. The
    lease completes (an answer on an expired lease is kept too); nothing is counted."""
    served_in_id = lease.served_in_id
    if served_in_id is None:
        # A fresh lease from undo: the answer goes where the undone one was.
        served_in_id = (
            Label.objects.filter(queue_item=item, annotator=annotator)
            .order_by("-created_at", "-id")
            .values_list("queue_id", flat=True)
            .first()
        )
    label = Label.objects.create(
        project_id=item.queue.project_id,
        image_id=item.image_id,
        annotator=annotator,
        kind=Label.Kind.ANNOTATION,
        value=value,
        subcategory=subcategory,
        queue_id=served_in_id,
        queue_item=item,
        strategy=Strategy.GOLD,
        duration_ms=duration_ms,
        page_size=page_size,
        client_id=client_id,
    )
    other = (
        Lease.objects.filter(item=item, annotator=annotator, state=Lease.State.COMPLETED)
        .exclude(pk=lease.pk)
        .exists()
    )
    if lease.state != Lease.State.COMPLETED and not other:
        lease.state, lease.finished_at = Lease.State.COMPLETED, now
        lease.save(update_fields=["state", "finished_at"])
    gold_pause_check(project=item.queue.project, annotator=annotator)
    return label


# --- Pauses -------------------------------------------------------------------------------------
def _gold_rows_since(*, project: Project, annotator: User, since: datetime | None):
    answers = Label.objects.filter(
        project=project,
        annotator=annotator,
        strategy=Strategy.GOLD,
        kind=Label.Kind.ANNOTATION,
        superseded_by__isnull=True,
    )
    if since is not None:
        answers = answers.filter(created_at__gt=since)
    gold = GoldItem.objects.filter(
        project=project, image=OuterRef("image_id"), value=OuterRef("value")
    )
    return answers.annotate(correct=Exists(gold)).values_list("correct", flat=True)


def gold_pause_check(*, project: Project, annotator: User) -> AnnotatorPause | None:
    """Pause the annotator if the project's rule says so (after a gold answer)."""
    threshold = project.gold_pause_below
    if threshold <= 0:
        return None
    if AnnotatorPause.objects.filter(
        project=project, annotator=annotator, lifted_at__isnull=True
    ).exists():
        return None
    last_lift = (
        AnnotatorPause.objects.filter(project=project, annotator=annotator)
        .exclude(lifted_at__isnull=True)
        .order_by("-lifted_at")
        .values_list("lifted_at", flat=True)
        .first()
    )
    rows = list(_gold_rows_since(project=project, annotator=annotator, since=last_lift))
    answers = len(rows)
    if answers < project.gold_pause_min_answers:
        return None
    accuracy = sum(rows) / answers
    if accuracy >= threshold:
        return None
    try:
        with transaction.atomic():
            return AnnotatorPause.objects.create(
                project=project,
                annotator=annotator,
                accuracy=accuracy,
                answers=answers,
                threshold=threshold,
            )
    except IntegrityError:
        return None  # paused meanwhile


@transaction.atomic
def pause_lift(*, pause: AnnotatorPause, lead: User) -> AnnotatorPause:
    if not can_review(lead, pause.project):
        raise PermissionDenied(_("Pauses are lifted by leads of the project."))
    pause = AnnotatorPause.objects.select_for_update().get(pk=pause.pk)
    if pause.lifted_at is None:
        pause.lifted_at, pause.lifted_by = timezone.now(), lead
        pause.save(update_fields=["lifted_at", "lifted_by"])
    return pause


# --- Exposure -------------------------------------------------------------------------------------
def day_start(now: datetime | None = None) -> datetime:
    """Midnight of today in the site's time zone: the daily cap resets there."""
    local = timezone.localtime(now or timezone.now())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def positives_today(*, project: Project, annotator: User, now: datetime | None = None) -> int:
    """Positive-class answers the annotator gave today in the project (undone ones excluded;
    gold answers included: they saw the image all the same)."""
    return (
        Label.objects.filter(
            project=project,
            annotator=annotator,
            kind=Label.Kind.ANNOTATION,
            value=project.positive_class,
            created_at__gte=day_start(now),
        )
        .exclude(superseded_by__kind=Label.Kind.RETRACTION)
        .count()
    )


# positive_streak reads this many answers first (its comment).
STREAK_FIRST_READ = 8


def latest_answers(*, project: Project, annotator_id: int):
    """The annotator's answers in the project (undone ones excluded), newest first: what a
    run of positives is counted over."""
    return (
        Label.objects.filter(project=project, annotator_id=annotator_id, kind=Label.Kind.ANNOTATION)
        .exclude(superseded_by__kind=Label.Kind.RETRACTION)
        .order_by("-created_at", "-id")
    )


def run_length(values, positive: str) -> int:
    """How many of `values` (newest first) in a row are `positive`."""
    streak = 0
    for value in values:
        if value != positive:
            break
        streak += 1
    return streak


def positive_streak(*, project: Project, annotator: User, limit: int) -> int:
    """How many of the annotator's latest answers in the project, in a row, are positive
    (looking back at most `limit`)."""
    if limit <= 0:
        return 0
    latest = latest_answers(project=project, annotator_id=annotator.pk).values_list(
        "value", flat=True
    )
    # Positives are rare, so a run usually ends within the first few answers: read those first
    # and the rest (up to `limit`) only when they are all positive (the quality page asks this
    # of every annotator).
    first = min(limit, STREAK_FIRST_READ)
    values = list(latest[:first])
    if len(values) == first and first < limit and all(v == project.positive_class for v in values):
        values += list(latest[first:limit])
    return run_length(values, project.positive_class)


def exposure_cap_message(cap: int) -> str:
    return ngettext(
        "You have labeled %(cap)d disturbing image today, this project's daily limit. "
        "Labeling stops here until tomorrow. Thank you, and take care.",
        "You have labeled %(cap)d disturbing images today, this project's daily limit. "
        "Labeling stops here until tomorrow. Thank you, and take care.",
        cap,
    ) % {"cap": cap}


def pause_message() -> str:
    return _(
        "Your labeling in this project is paused: your answers on check images fell below the "
        "project's accuracy threshold. A lead will review it with you and lift the pause."
    )


def labeling_stop_check(*, queue: Queue, annotator: User, now: datetime | None = None) -> None:
    """PermissionDenied with a message for the person when they may take no new items from
    `queue` now (paused, or at today's exposure cap). Leads' re-review queues are exempt."""
    if queue.kind == Queue.Kind.REVIEW:
        return
    project = queue.project
    if (
        project.gold_pause_below > 0
        and AnnotatorPause.objects.filter(
            project=project, annotator=annotator, lifted_at__isnull=True
        ).exists()
    ):
        raise PermissionDenied(pause_message())
    cap = project.exposure_daily_cap
    if cap > 0 and positives_today(project=project, annotator=annotator, now=now) >= cap:
        raise PermissionDenied(exposure_cap_message(cap))


def exposure_status(*, project: Project, annotator: User) -> dict:
    """What a labeling page needs to stop at the cap and remind of breaks (page config)."""
    cap, breaks = project.exposure_daily_cap, project.exposure_break_after
    return {
        "positive": project.positive_class,
        "cap": cap,
        "today": positives_today(project=project, annotator=annotator) if cap else 0,
        "breakAfter": breaks,
        "streak": positive_streak(project=project, annotator=annotator, limit=breaks)
        if breaks
        else 0,
        "capMessage": exposure_cap_message(cap) if cap else "",
    }
