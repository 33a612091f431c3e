"""Queues and leases: adding items, claiming them race-free, skipping, expiring.

How a claim stays race-free
---------------------------
An item has `labels_needed` slots (overlap k; 1 in a review queue). A slot is used by an ACTIVE,
unexpired lease or by a COMPLETED one (counted in `labels_done`). Every path that creates or
completes a lease first locks the item row (`SELECT ... FOR UPDATE`), then re-reads the item's
leases in a fresh statement and decides from what it sees, so two claimers never both see the
same free slot. On PostgreSQL the candidate rows are locked with `SKIP LOCKED`: a claimer steps
over items another claimer is deciding about instead of queueing behind it, so 1,000 people
claiming at once do not serialise on the head of the queue. SQLite has no row locks; there every
write transaction starts with `BEGIN IMMEDIATE` (config/settings/base.py), which serialises whole
claims, so the same re-read is exact there too. The partial unique constraints on Lease (one active
lease per slot, one active/completed lease per person and item) are the guard of last resort.

Lock order, everywhere: item rows (ascending id) before lease rows, and the image row last (only
label writes take it). The periodic expiry sweep skips rows that are locked instead of waiting,
so it can never join a deadlock.

Gold items (labeling.services.gold) are claimed after the ordinary items, with SKIP LOCKED only:
a claim that already holds item locks never waits for another lock, so mixing gold in cannot
join a deadlock either (tests/labeling/test_gold_race.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from labeling.models import Image, Label, Lease, Project, Queue, QueueItem, Strategy
from labeling.permissions import queue_access_check
from labeling.services import hot_sql
from labeling.services.gold import (
    gold_claim_locked,
    gold_draws,
    gold_mix,
    labeling_stop_check,
)
from labeling.services.label_limits import MAX_CLAIM

# The lowest priority a model-driven job (cold start, selection) gives an item: imports queue
# at 0 and cold-start scores lie in [-1, 1], so what a model chose is served before the rest.
MODEL_PRIORITY_BASE = 2.0
DEFAULT_QUEUE_NAMES = {Queue.Kind.LABELING: "Labeling", Queue.Kind.REVIEW: "Re-review"}


# --- Queues -----------------------------------------------------------------------------------
@transaction.atomic
def queue_get_or_create(*, project: Project, kind: str, name: str | None = None) -> Queue:
    """The project's queue of that kind and name (default "Labeling" / "Re-review")."""
    if kind not in Queue.Kind.values:
        raise ValidationError(
            {
                "kind": _("Unknown queue kind %(kind)r; use %(kinds)s.")
                % {"kind": kind, "kinds": Queue.Kind.values}
            }
        )
    name = (name or DEFAULT_QUEUE_NAMES[Queue.Kind(kind)]).strip()
    if not name or len(name) > 120:
        raise ValidationError({"name": _("A queue name needs 1 to 120 characters.")})
    queue, _created = Queue.objects.get_or_create(
        project=project, name=name, defaults={"kind": kind}
    )
    if queue.kind != kind:
        raise ValidationError(
            {
                "name": _("Queue %(name)r already exists in this project as a %(kind)s queue.")
                % {"name": name, "kind": queue.get_kind_display()}
            }
        )
    return queue


def _image_ids(images: Iterable[Image | int]) -> list[int]:
    ids: list[int] = []
    for image in images:
        pk = image if isinstance(image, int) else getattr(image, "pk", None)
        if not isinstance(pk, int):
            raise ValidationError(
                {"images": _("Not an image or image id: %(image)r.") % {"image": image}}
            )
        ids.append(pk)
    return list(dict.fromkeys(ids))  # drop repeats, keep order


def _finite(value, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError({field: _("%(value)r is not a number.") % {"value": value}}) from exc
    if not math.isfinite(number):
        raise ValidationError({field: _("Must be a finite number.")})
    return number


@transaction.atomic
def queue_items_add(
    *,
    queue: Queue,
    images: Iterable[Image | int],
    strategy: str,
    priority: float = 0.0,
    details: dict | None = None,
    created_by: User | None = None,
    priorities: Mapping[int, float] | None = None,
    details_by_image: Mapping[int, dict] | None = None,
) -> int:
    """Add images to a queue in bulk; images already in the queue are skipped. Returns how
    many items were added.

    `priority` and `details` apply to every new item; `priorities` / `details_by_image` (keyed by
    image id) override them per image, so a selection job can queue a ranked list in one call.
    """
    if strategy not in Strategy.values:
        raise ValidationError(
            {"strategy": _("Unknown strategy %(strategy)r.") % {"strategy": strategy}}
        )
    default_priority = _finite(priority, "priority")
    if details is not None and not isinstance(details, dict):
        raise ValidationError({"details": _("Details must be a JSON object.")})
    ids = _image_ids(images)
    if not ids:
        return 0
    project_id = queue.project_id
    found = dict(Image.objects.filter(pk__in=ids).values_list("pk", "project_id"))
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise ValidationError({"images": _("No images with ids %(ids)s.") % {"ids": missing[:20]}})
    foreign = [pk for pk in ids if found[pk] != project_id]
    if foreign:
        raise ValidationError(
            {"images": _("Images %(ids)s belong to another project.") % {"ids": foreign[:20]}}
        )
    existing = set(
        QueueItem.objects.filter(queue=queue, image_id__in=ids).values_list("image_id", flat=True)
    )
    labels_needed = queue.effective_labels_per_item
    new_items = []
    for pk in ids:
        if pk in existing:
            continue
        item_priority = default_priority
        if priorities is not None and pk in priorities:
            item_priority = _finite(priorities[pk], "priorities")
        item_details = details or {}
        if details_by_image is not None and pk in details_by_image:
            item_details = details_by_image[pk]
            if not isinstance(item_details, dict):
                raise ValidationError({"details_by_image": _("Details must be JSON objects.")})
        new_items.append(
            QueueItem(
                queue=queue,
                image_id=pk,
                strategy=strategy,
                priority=item_priority,
                labels_needed=labels_needed,
                details=item_details,
                created_by=created_by,
            )
        )
    # ignore_conflicts: a concurrent add of the same image is skipped, not an error.
    QueueItem.objects.bulk_create(new_items, batch_size=2000, ignore_conflicts=True)
    return len(new_items)


def item_is_waiting(item_status: str, labels_done: int) -> bool:
    """An item that is still waiting for its first label: a model-driven job may move it."""
    return item_status == QueueItem.Status.OPEN and labels_done == 0


@transaction.atomic
def queue_items_place(
    *,
    queue: Queue,
    ranked: Iterable[int],
    strategy: str,
    priorities: Mapping[int, float],
    details_by_image: Mapping[int, dict],
    created_by: User | None = None,
) -> dict[str, int]:
    """Put a model-driven job's ranked images into `queue`: images not in it are added; images
    already WAITING in it (open, no label yet, typically queued by an import) are moved: their
    strategy, priority and details become the job's, and `details["moved_from"]` keeps what
    they were, so each strategy's yield stays measurable and nobody loses the trail. Items
    someone already labeled, or that are done or removed, are left alone.

    Returns {"added": n, "moved": n, "kept": n (in the queue but not waiting)}."""
    ids = _image_ids(ranked)
    if strategy not in Strategy.values:
        raise ValidationError(
            {"strategy": _("Unknown strategy %(strategy)r.") % {"strategy": strategy}}
        )
    # Lock order (module docstring): item rows by ascending id.
    existing = list(
        QueueItem.objects.select_for_update()
        .filter(queue=queue, image_id__in=ids)
        .order_by("id")
        .only("id", "image_id", "status", "labels_done", "strategy", "priority", "details")
    )
    moved: list[QueueItem] = []
    kept = 0
    for item in existing:
        if not item_is_waiting(item.status, item.labels_done):
            kept += 1
            continue
        previous = item.details or {}
        item.details = {
            **details_by_image[item.image_id],
            "moved_from": {
                "strategy": item.strategy,
                "priority": item.priority,
                **({"job_id": previous["job_id"]} if previous.get("job_id") else {}),
            },
        }
        item.strategy = strategy
        item.priority = _finite(priorities[item.image_id], "priorities")
        moved.append(item)
    QueueItem.objects.bulk_update(moved, ["strategy", "priority", "details"], batch_size=2000)
    present = {item.image_id for item in existing}
    added = queue_items_add(
        queue=queue,
        images=[pk for pk in ids if pk not in present],
        strategy=strategy,
        priorities=priorities,
        details_by_image=details_by_image,
        created_by=created_by,
    )
    return {"added": added, "moved": len(moved), "kept": kept}


# --- Leases -----------------------------------------------------------------------------------
def _check_may_claim(*, queue: Queue, annotator: User) -> None:
    queue_access_check(annotator, queue)


def skip_cooldown(project: Project) -> timedelta:
    """How long an item someone skipped (or undid and let go) stays away from them."""
    return timedelta(seconds=project.lease_seconds)


def lease_create_locked(
    *,
    item: QueueItem,
    annotator: User,
    now: datetime,
    lease_seconds: int,
    served_in: Queue | None = None,
) -> Lease | None:
    """A new active lease on `item` for `annotator`, or None when no slot is free.

    The caller holds the item's row lock (that is what makes the re-read below exact). Stale
    active leases of the item are marked expired on the way. `served_in`: the queue the person
    works in, kept on a lease of a gold item (labeling.services.gold) and ignored otherwise.
    """
    # One read of the item's slot-holding leases; the stale ones among them (active but past
    # expiry) are marked expired here, and only when there are any, so the usual claim on a
    # fresh item costs one statement, not an UPDATE that matches nothing plus a SELECT.
    holding = []
    stale = []
    for pk, annotator_id, slot, state, expires_at in Lease.objects.filter(
        item_id=item.pk, state__in=[Lease.State.ACTIVE, Lease.State.COMPLETED]
    ).values_list("pk", "annotator_id", "slot", "state", "expires_at"):
        if state == Lease.State.ACTIVE and expires_at <= now:
            stale.append(pk)
        else:
            holding.append((annotator_id, slot, state))
    if stale:
        Lease.objects.filter(pk__in=stale, state=Lease.State.ACTIVE).update(
            state=Lease.State.EXPIRED, finished_at=now
        )
    if item.status != QueueItem.Status.OPEN:
        return None
    if any(annotator_id == annotator.pk for annotator_id, _slot, _state in holding):
        return None
    active = sum(1 for _a, _s, state in holding if state == Lease.State.ACTIVE)
    if item.labels_done + active >= item.labels_needed:
        return None
    used = {slot for _a, slot, _s in holding}
    free = [slot for slot in range(item.labels_needed) if slot not in used]
    if not free:
        return None
    try:
        with transaction.atomic():  # savepoint: a constraint hit must not poison the claim
            return Lease.objects.create(
                item=item,
                annotator=annotator,
                slot=free[0],
                expires_at=now + timedelta(seconds=lease_seconds),
                served_in=served_in if item.strategy == Strategy.GOLD else None,
            )
    except IntegrityError:
        # Cannot happen while every writer takes the item lock first; if one ever does not,
        # the constraint wins and this item is simply not served to this person now.
        return None


def leases_own_active(*, queue: Queue, annotator: User, now: datetime) -> list[Lease]:
    """The person's unexpired active leases on open items of this queue (gold items served in
    it included), oldest first, with item and image: one statement (labeling.services.hot_sql)."""
    return hot_sql.own_active_leases(queue=queue, annotator=annotator, now=now)


def _claimable(*, queue: Queue, annotator: User, now: datetime):
    """Open items with a free slot (as of this statement) that this person has not labeled,
    does not hold, and did not just skip; in serving order."""
    held = (
        Lease.objects.filter(item=OuterRef("pk"), state=Lease.State.ACTIVE, expires_at__gt=now)
        .order_by()
        .values("item")
        .annotate(n=Count("pk"))
        .values("n")
    )
    mine = Lease.objects.filter(item=OuterRef("pk"), annotator=annotator).filter(
        Q(state__in=[Lease.State.ACTIVE, Lease.State.COMPLETED])
        | Q(
            state=Lease.State.RELEASED,
            finished_at__gt=now - skip_cooldown(queue.project),
        )
    )
    my_labels = Label.objects.filter(
        queue_item=OuterRef("pk"),
        annotator=annotator,
        kind=Label.Kind.ANNOTATION,
        superseded_by__isnull=True,
    )
    return (
        QueueItem.objects.filter(queue=queue, status=QueueItem.Status.OPEN)
        .alias(held=Coalesce(Subquery(held), Value(0)))
        .filter(labels_needed__gt=F("labels_done") + F("held"))
        .exclude(Exists(mine))
        .exclude(Exists(my_labels))
        .order_by("-priority", "id")
    )


def _claim_ordinary(
    *,
    queue: Queue,
    annotator: User,
    now: datetime,
    needed: int,
    lease_seconds: int,
    tried: set[int],
    may_wait: bool,
) -> list[Lease]:
    """New leases on up to `needed` items of the queue, in serving order. `may_wait`: the
    transaction holds no row lock yet, so it may wait for a claim in flight (see below)."""
    new: list[Lease] = []
    cooldown_since = now - skip_cooldown(queue.project)
    expires_at = now + timedelta(seconds=lease_seconds)

    def candidates_locked(limit: int, skip_locked: bool) -> list[QueueItem]:
        # _claimable's rules, written out as SQL (labeling.services.hot_sql), locked.
        return hot_sql.claimable_locked(
            queue=queue,
            annotator=annotator,
            now=now,
            cooldown_since=cooldown_since,
            tried=tried,
            limit=limit,
            skip_locked=skip_locked,
        )

    while needed > 0:
        # Lock exactly as many rows as still needed: every spare row locked here would be
        # skipped by everybody else until this transaction ends.
        candidates = candidates_locked(needed, True)
        if not candidates and not tried and may_wait:
            # Everything claimable is locked by claims in flight right now. Rather than tell
            # this person the queue is empty, wait for the first such item's holder to
            # finish and re-check it. Safe from deadlock: this transaction holds no row lock
            # yet (nothing tried), so nobody can be waiting for it.
            candidates = candidates_locked(1, False)
        if not candidates:
            break
        for item in candidates:
            tried.add(item.pk)
            if needed == 0:
                break
            # One statement in the usual case; when it cannot tell (a stale lease on the
            # item, no slot), the general function decides under the same lock.
            lease = hot_sql.lease_insert_locked(
                item=item, annotator=annotator, now=now, expires_at=expires_at
            ) or lease_create_locked(
                item=item, annotator=annotator, now=now, lease_seconds=lease_seconds
            )
            if lease is not None:
                lease.item = item  # with its image, read in the claiming statement
                new.append(lease)
                needed -= 1
    return new


def queue_claim_next(
    *,
    queue: Queue,
    annotator: User,
    count: int = 1,
    now: datetime | None = None,
    may_wait: bool = True,
) -> list[Lease]:
    """The annotator's own unexpired leases in this queue (so reloading the page burns no
    items), then new leases on the next items, up to `count` in all.

    `may_wait=False`: never wait for another claim's row lock, for a caller whose transaction
    already holds row locks (submit-and-claim, labeling.api.queue_views): waiting then could
    deadlock. When everything claimable is locked at that moment, fewer items come back (the
    page asks `next`, which waits, when it runs short).

    Returns every own active lease even when there are more than `count`, oldest first, then the
    new ones in serving order (-priority, id). Leases carry `item` and `item.image` loaded.
    """
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_CLAIM:
        raise ValidationError(
            {"count": _("Claim between 1 and %(count)d items.") % {"count": MAX_CLAIM}}
        )
    _check_may_claim(queue=queue, annotator=annotator)
    if not queue.is_active:
        raise ValidationError(_("This queue is paused; no items are served from it."))
    now = now or timezone.now()
    # Paused for gold accuracy, or at today's exposure cap: no new items (a query only when the
    # project turns the rule on).
    labeling_stop_check(queue=queue, annotator=annotator, now=now)
    lease_seconds = queue.project.lease_seconds
    # Inside a caller's transaction (submit-and-claim) no savepoint: two round trips saved, and
    # an error here fails that whole request anyway.
    with transaction.atomic(savepoint=False):
        own = leases_own_active(queue=queue, annotator=annotator, now=now)
        needed = count - len(own)
        # Gold items (labeling.services.gold) replace some of the new items: each one with the
        # project's gold rate; none in a re-review queue.
        gold_wanted = (
            gold_draws(project=queue.project, count=needed)
            if needed > 0 and queue.kind != Queue.Kind.REVIEW
            else 0
        )
        tried: set[int] = set()
        new = _claim_ordinary(
            queue=queue,
            annotator=annotator,
            now=now,
            needed=needed - gold_wanted,
            lease_seconds=lease_seconds,
            tried=tried,
            may_wait=may_wait,
        )
        if gold_wanted:
            gold: list[Lease] = []
            # An empty queue stays empty: gold only beside work that is really there. The gold
            # claim comes after the ordinary one and never waits for a lock (SKIP LOCKED).
            if new or (
                needed == gold_wanted
                and _claimable(queue=queue, annotator=annotator, now=now).exists()
            ):
                gold = gold_claim_locked(
                    queue=queue, annotator=annotator, count=gold_wanted, now=now
                )
            if gold and len(gold) < gold_wanted:
                # Fewer gold items left than drawn: the rest are ordinary items. Rows are
                # locked already, so this pass never waits for another claim.
                new += _claim_ordinary(
                    queue=queue,
                    annotator=annotator,
                    now=now,
                    needed=gold_wanted - len(gold),
                    lease_seconds=lease_seconds,
                    tried=tried,
                    may_wait=False,
                )
            elif not gold:
                new += _claim_ordinary(
                    queue=queue,
                    annotator=annotator,
                    now=now,
                    needed=gold_wanted,
                    lease_seconds=lease_seconds,
                    tried=tried,
                    may_wait=may_wait and not new,
                )
            new = gold_mix(new, gold)
    return own + new


@transaction.atomic
def lease_skip(*, lease: Lease, annotator: User) -> None:
    """Give a leased item back unlabeled: the slot frees at once for others, and this person
    is not served the item again for `skip_cooldown` (the project's lease time)."""
    if lease.annotator_id != annotator.pk:
        raise PermissionDenied(_("That lease is not yours."))
    QueueItem.objects.select_for_update().filter(pk=lease.item_id).first()
    current = Lease.objects.select_for_update().get(pk=lease.pk)
    if current.state == Lease.State.COMPLETED:
        raise ValidationError(_("This item is already labeled; use undo to change your label."))
    if current.state in (Lease.State.RELEASED,):
        return  # skipping twice is harmless (a retried request)
    # An expired lease is skipped too: it records that this person passed on the item.
    current.state = Lease.State.RELEASED
    current.finished_at = timezone.now()
    current.save(update_fields=["state", "finished_at"])
    lease.state, lease.finished_at = current.state, current.finished_at


def leases_expire(*, now: datetime | None = None, batch_size: int = 5000) -> int:
    """Mark every active lease past its expiry as expired (a periodic sweep). Returns how many.

    Rows another transaction holds (a submit deciding about that very lease) are skipped, not
    waited for; the next sweep or the next claim on that item gets them.
    """
    now = now or timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                Lease.objects.filter(state=Lease.State.ACTIVE, expires_at__lte=now)
                .order_by("id")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return total
            total += Lease.objects.filter(pk__in=ids, state=Lease.State.ACTIVE).update(
                state=Lease.State.EXPIRED, finished_at=now
            )
        if len(ids) < batch_size:
            return total
