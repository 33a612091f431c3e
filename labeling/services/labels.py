"""Writing labels: submit (one or a grid page), undo, and a lead's re-review.

Labels are append-only (labeling.models.Label): undo writes a RETRACTION that supersedes the
annotation, a lead's re-review writes a CONFIRMATION or CORRECTION that supersedes the image's
current label. No Label row is ever edited or deleted here.

Late submits. Nothing an annotator submits is lost: a label sent on an expired (or skipped)
lease is always stored. It is *counted* (lease completed, `labels_done` bumped) only when the
item still has a free slot for it; when somebody else took the slot meanwhile, the label is
stored as an extra annotation of the item (it still takes part in the image's majority vote,
see labeling.selectors.labels) but the item's count is left alone, so an item never has more
than `labels_needed` counted labels and nobody's lease is taken away.

Lock order (shared with labeling.services.queues): item rows by ascending id, then lease rows,
then the image row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from labeling.models import Image, Label, Lease, Project, Queue, QueueItem, Strategy
from labeling.permissions import can_label, can_review
from labeling.selectors.labels import image_current_label
from labeling.services import webhooks
from labeling.services.audit_log import Action, audit_record
from labeling.services.gold import gold_answer_locked
from labeling.services.label_limits import (
    MAX_BATCH,
    MAX_CLIENT_ID_LENGTH,
    MAX_DURATION_MS,
    MAX_UNDO,
)
from labeling.services.queues import lease_create_locked


# --- Validation -------------------------------------------------------------------------------
def label_value_validate(*, project: Project, value: str, subcategory: str = "") -> None:
    """`value` must be one of the project's classes; a sub-category refines the positive class."""
    errors: dict[str, str] = {}
    if not isinstance(value, str) or value not in project.class_keys:
        errors["value"] = (
            f"Unknown class {value!r}; this project's classes are {', '.join(project.class_keys)}."
        )
    if not isinstance(subcategory, str):
        errors["subcategory"] = "The sub-category must be a string."
    elif subcategory:
        if subcategory not in project.subcategory_keys:
            errors["subcategory"] = (
                f"Unknown sub-category {subcategory!r}; this project's sub-categories are "
                f"{', '.join(project.subcategory_keys) or '(none)'}."
            )
        elif value != project.positive_class:
            errors["subcategory"] = (
                f"A sub-category refines the positive class {project.positive_class!r} only."
            )
    if errors:
        raise ValidationError(errors)


def _validate_extras(*, duration_ms: int | None, client_id: str) -> None:
    if duration_ms is not None and (
        not isinstance(duration_ms, int)
        or isinstance(duration_ms, bool)
        or not 0 <= duration_ms <= MAX_DURATION_MS
    ):
        raise ValidationError(
            {
                "duration_ms": _("Must be a whole number of milliseconds, 0 to %(max)d.")
                % {"max": MAX_DURATION_MS}
            }
        )
    if not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID_LENGTH:
        raise ValidationError(
            {"client_id": _("At most %(max)d characters.") % {"max": MAX_CLIENT_ID_LENGTH}}
        )


# --- Submit -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    lease: Lease
    value: str
    subcategory: str
    duration_ms: int | None
    client_id: str
    page_size: int | None = None  # tiles of the grid page it came with


def _lock_item(item_id: int) -> QueueItem:
    # `of=("self",)`: lock the item row only. A plain FOR UPDATE over this join would also lock
    # the queue and project rows, and so make every submit in a project wait for every other.
    return (
        QueueItem.objects.select_for_update(of=("self",))
        .select_related("queue__project")
        .get(pk=item_id)
    )


def _has_free_slot(item: QueueItem, *, except_lease_id: int, now: datetime) -> bool:
    active = (
        Lease.objects.filter(item=item, state=Lease.State.ACTIVE, expires_at__gt=now)
        .exclude(pk=except_lease_id)
        .count()
    )
    return item.status == QueueItem.Status.OPEN and item.labels_done + active < item.labels_needed


def _free_slot_number(item: QueueItem, *, lease: Lease) -> int | None:
    used = set(
        Lease.objects.filter(item=item, state__in=[Lease.State.ACTIVE, Lease.State.COMPLETED])
        .exclude(pk=lease.pk)
        .values_list("slot", flat=True)
    )
    if lease.slot not in used:
        return lease.slot
    free = [slot for slot in range(item.labels_needed) if slot not in used]
    return free[0] if free else None


def _count_completion(item: QueueItem, lease: Lease, now: datetime) -> None:
    lease.state = Lease.State.COMPLETED
    lease.finished_at = now
    lease.save(update_fields=["state", "finished_at", "slot"])
    item.labels_done += 1
    fields = ["labels_done"]
    if item.labels_done >= item.labels_needed:
        item.status = QueueItem.Status.DONE
        item.done_at = now
        fields += ["status", "done_at"]
        webhooks.emit_queue_empty_on_commit(item.queue)
    item.save(update_fields=fields)


def _annotation(*, entry: _Entry, annotator: User, item: QueueItem, queue: Queue) -> Label:
    """The (unsaved) annotation an entry makes on a queue item: the general path saves it, the
    hot path writes it with its own SQL (labeling.services.hot_path)."""
    return Label(
        project_id=queue.project_id,
        image_id=item.image_id,
        annotator=annotator,
        kind=Label.Kind.ANNOTATION,
        value=entry.value,
        subcategory=entry.subcategory,
        queue=queue,
        queue_item=item,
        strategy=item.strategy,
        duration_ms=entry.duration_ms,
        page_size=entry.page_size,
        client_id=entry.client_id,
    )


def _submit_locked(*, entry: _Entry, annotator: User, item: QueueItem, now: datetime) -> Label:
    """Submit one entry; the caller holds the item's lock."""
    # One read answers both "is this a retry?" (same client_id) and "did this person already
    # label the item?" (an annotation of theirs on it that nothing superseded). Exact under the
    # item lock: every label write on an item (submit, undo, re-review) holds that lock.
    mine = Q(queue_item=item, kind=Label.Kind.ANNOTATION)
    if entry.client_id:
        mine |= Q(client_id=entry.client_id)
    seen = list(
        Label.objects.filter(mine, annotator=annotator)
        .annotate(superseded=Exists(Label.objects.filter(supersedes=OuterRef("pk"))))
        .order_by()
    )
    retried = next(
        (label for label in seen if entry.client_id and label.client_id == entry.client_id), None
    )
    if retried is not None:
        if retried.queue_item_id != item.pk:
            raise ValidationError(
                {"client_id": _("This client_id was already used for another item.")}
            )
        return retried  # a retried submit: same label, nothing new written
    lease = Lease.objects.select_for_update().get(pk=entry.lease.pk)
    queue = item.queue
    if queue.is_review:
        # The labeling page serves review queues too: a lead's answer there is a re-review.
        return _review_resolve_locked(
            item=item,
            lead=annotator,
            value=entry.value,
            subcategory=entry.subcategory,
            now=now,
            client_id=entry.client_id,
            duration_ms=entry.duration_ms,
        )
    if lease.state == Lease.State.COMPLETED:
        raise ValidationError(_("This item is already labeled; use undo to change your label."))
    if any(
        label.queue_item_id == item.pk
        and label.kind == Label.Kind.ANNOTATION
        and not label.superseded
        for label in seen
    ):
        raise ValidationError(_("You already labeled this item; use undo to change your label."))

    if item.strategy == Strategy.GOLD:
        # A gold item mixed into the person's queue: measured against its known answer, never
        # counted as a label of the image (labeling.services.gold).
        label = gold_answer_locked(
            item=item,
            lease=lease,
            annotator=annotator,
            value=entry.value,
            subcategory=entry.subcategory,
            duration_ms=entry.duration_ms,
            client_id=entry.client_id,
            page_size=entry.page_size,
            now=now,
        )
        entry.lease.state, entry.lease.finished_at = lease.state, lease.finished_at
        return label

    counted = False
    if item.status != QueueItem.Status.OPEN:
        # The item was taken out of the queue (or resolved) while this person worked on it:
        # keep the label, count nothing, and let the lease go.
        if lease.state == Lease.State.ACTIVE:
            lease.state, lease.finished_at = Lease.State.RELEASED, now
            lease.save(update_fields=["state", "finished_at"])
    elif lease.state == Lease.State.ACTIVE and lease.expires_at > now:
        counted = True
    else:
        # Late: expired, or skipped and then answered anyway. If the person meanwhile got a
        # fresh lease on the same item (undo does that), the answer belongs to that one.
        if lease.state == Lease.State.ACTIVE:
            lease.state, lease.finished_at = Lease.State.EXPIRED, now
            lease.save(update_fields=["state", "finished_at"])
        fresh = (
            Lease.objects.select_for_update()
            .filter(item=item, annotator=annotator, state=Lease.State.ACTIVE, expires_at__gt=now)
            .first()
        )
        if fresh is not None:
            lease, counted = fresh, True
        elif _has_free_slot(item, except_lease_id=lease.pk, now=now):
            slot = _free_slot_number(item, lease=lease)
            if slot is not None:
                lease.slot, counted = slot, True

    label = _annotation(entry=entry, annotator=annotator, item=item, queue=queue)
    label.save(force_insert=True)
    if counted:
        _count_completion(item, lease, now)
    entry.lease.state, entry.lease.finished_at = lease.state, lease.finished_at
    return label


def _entry(*, lease, annotator, value, subcategory, duration_ms, client_id) -> _Entry:
    if not isinstance(lease, Lease):
        raise ValidationError({"lease": _("Not a lease.")})
    if lease.annotator_id != annotator.pk:
        raise PermissionDenied(_("That lease is not yours."))
    project = lease.item.queue.project
    if not can_label(annotator, project):
        raise PermissionDenied(_("You are not a labeling member of this project."))
    subcategory = subcategory or ""
    label_value_validate(project=project, value=value, subcategory=subcategory)
    _validate_extras(duration_ms=duration_ms, client_id=client_id or "")
    return _Entry(lease, value, subcategory, duration_ms, client_id or "")


def lease_submit(
    *,
    lease: Lease,
    annotator: User,
    value: str,
    subcategory: str = "",
    duration_ms: int | None = None,
    client_id: str = "",
) -> Label:
    """Label the leased item. Retrying with the same `client_id` returns the same Label.

    On a review-queue lease (leads) the answer is a re-review: see `review_resolve`.
    """
    entry = _entry(
        lease=lease,
        annotator=annotator,
        value=value,
        subcategory=subcategory,
        duration_ms=duration_ms,
        client_id=client_id,
    )
    now = timezone.now()
    with transaction.atomic():
        item = _lock_item(lease.item_id)
        return _submit_locked(entry=entry, annotator=annotator, item=item, now=now)


def labels_submit_batch(*, annotator: User, entries: list[dict]) -> list[Label]:
    """Label a grid page in one transaction: every entry is stored, or none is.

    entries: dicts with `lease`, `value` and optionally `subcategory`, `duration_ms`,
    `client_id`. Errors name the entry: {"entries": ["entry 3 (lease 17): ..."]}.
    Returns the labels in the order of `entries`.
    """
    if not isinstance(entries, list) or not entries:
        raise ValidationError({"entries": _("Send at least one entry.")})
    if len(entries) > MAX_BATCH:
        raise ValidationError(
            {"entries": _("At most %(count)d entries per batch.") % {"count": MAX_BATCH}}
        )
    parsed: list[_Entry] = []
    errors: list[str] = []
    for index, raw in enumerate(entries):
        lease = raw.get("lease") if isinstance(raw, dict) else None
        where = _("entry %(index)s (lease %(lease)s)") % {
            "index": index,
            "lease": getattr(lease, "pk", lease),
        }
        try:
            if not isinstance(raw, dict):
                raise ValidationError(_("Each entry must be an object."))
            parsed.append(
                _entry(
                    lease=lease,
                    annotator=annotator,
                    value=raw.get("value"),
                    subcategory=raw.get("subcategory") or "",
                    duration_ms=raw.get("duration_ms"),
                    client_id=raw.get("client_id") or "",
                )
            )
        except ValidationError as exc:
            errors.append(f"{where}: {' '.join(exc.messages)}")
    if errors:
        raise ValidationError({"entries": errors})
    # Each label remembers the size of the page it came with (rubber-stamp checks).
    parsed = [replace(entry, page_size=len(parsed)) for entry in parsed]
    lease_ids = [entry.lease.pk for entry in parsed]
    if len(set(lease_ids)) != len(lease_ids):
        raise ValidationError({"entries": _("Each lease may appear once in a batch.")})

    now = timezone.now()
    labels: dict[int, Label] = {}
    with transaction.atomic():
        # Items are locked in ascending id so two overlapping grid pages cannot deadlock.
        order = sorted(range(len(parsed)), key=lambda i: parsed[i].lease.item_id)
        for index in order:
            entry = parsed[index]
            try:
                item = _lock_item(entry.lease.item_id)
                labels[index] = _submit_locked(entry=entry, annotator=annotator, item=item, now=now)
            except ValidationError as exc:
                where = _("entry %(index)s (lease %(lease)s)") % {
                    "index": index,
                    "lease": entry.lease.pk,
                }
                # Raising inside the atomic block rolls back every entry already written.
                raise ValidationError(
                    {
                        "entries": [
                            _("%(where)s: %(why)s")
                            % {"where": where, "why": " ".join(exc.messages)}
                        ]
                    }
                ) from exc
    return [labels[i] for i in range(len(parsed))]


# --- Undo -------------------------------------------------------------------------------------
def label_undo_last(
    *, annotator: User, queue: Queue, count: int = 1, label_ids: list[int] | None = None
) -> list[Lease]:
    """Retract the annotator's `count` most recent still-active annotations in `queue`, or
    exactly the annotations `label_ids` (a grid page reopened, a label changed from the recent
    list): all of them must be the annotator's own current annotations in this queue.

    For each: a RETRACTION label superseding it; if it was counted, the lease is released,
    `labels_done` goes down and a DONE item re-opens; the annotator gets a fresh lease on the
    item so the page can show it again. Returns those leases, most recent label first (an item
    with no free slot left, after a late uncounted label, gets no lease). Each lease carries
    `undone`: the retracted label (the page highlights the answer that was given).
    """
    if label_ids is None and (
        not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_UNDO
    ):
        raise ValidationError(
            {"count": _("Undo between 1 and %(count)d labels.") % {"count": MAX_UNDO}}
        )
    if label_ids is not None and (
        not isinstance(label_ids, list)
        or not 1 <= len(label_ids) <= MAX_UNDO
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in label_ids)
    ):
        raise ValidationError({"labels": _("Give 1 to %(count)d label ids.") % {"count": MAX_UNDO}})
    if not can_label(annotator, queue.project):
        raise PermissionDenied(_("You are not a labeling member of this project."))
    now = timezone.now()
    with transaction.atomic():
        mine = Label.objects.filter(
            queue=queue,
            annotator=annotator,
            kind=Label.Kind.ANNOTATION,
            superseded_by__isnull=True,
            queue_item__isnull=False,
        ).order_by("-created_at", "-id")
        if label_ids is None:
            picked = list(mine.values_list("pk", "queue_item_id")[:count])
            if not picked:
                raise ValidationError(_("There is nothing of yours to undo in this queue."))
        else:
            picked = list(mine.filter(pk__in=set(label_ids)).values_list("pk", "queue_item_id"))
            missing = sorted(set(label_ids) - {pk for pk, _item in picked})
            if missing:
                raise ValidationError(
                    {
                        "labels": _(
                            "Labels %(ids)s are not your current labels in this queue "
                            "(already changed, reviewed, or not yours)."
                        )
                        % {"ids": missing}
                    }
                )
        items = {
            item.pk: item
            for item in QueueItem.objects.select_for_update()
            .filter(pk__in={item_id for _pk, item_id in picked})
            .order_by("pk")
        }
        # Image rows after item rows (the shared lock order): a lead's re-review of the same
        # image waits here instead of both superseding one label.
        list(
            Image.objects.select_for_update()
            .filter(pk__in={item.image_id for item in items.values()})
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        leases: list[Lease] = []
        for label_pk, item_id in picked:
            item = items[item_id]
            # Re-read under the lock: a lead may have superseded the label meanwhile.
            label = Label.objects.filter(pk=label_pk, superseded_by__isnull=True).first()
            if label is None:
                if label_ids is not None:
                    raise ValidationError(
                        {
                            "labels": _("Label %(id)s was just changed by someone else.")
                            % {"id": label_pk}
                        }
                    )
                continue
            Label.objects.create(
                project_id=label.project_id,
                image_id=label.image_id,
                annotator=annotator,
                kind=Label.Kind.RETRACTION,
                value="",
                supersedes=label,
                queue=queue,
                queue_item=item,
                strategy=label.strategy,
            )
            counted = (
                Lease.objects.select_for_update()
                .filter(item=item, annotator=annotator, state=Lease.State.COMPLETED)
                .first()
            )
            if counted is not None:
                counted.state, counted.finished_at = Lease.State.RELEASED, now
                counted.save(update_fields=["state", "finished_at"])
                item.labels_done = max(0, item.labels_done - 1)
                if item.status == QueueItem.Status.DONE:
                    item.status, item.done_at = QueueItem.Status.OPEN, None
                item.save(update_fields=["labels_done", "status", "done_at"])
            lease = lease_create_locked(
                item=item,
                annotator=annotator,
                now=now,
                lease_seconds=queue.project.lease_seconds,
                served_in=queue,
            )
            if lease is not None:
                lease.item = item
                lease.undone = label
                leases.append(lease)
        images = Image.objects.in_bulk([lease.item.image_id for lease in leases])
        for lease in leases:
            lease.item.image = images[lease.item.image_id]
    return leases


def lease_unskip(*, lease: Lease, annotator: User) -> Lease:
    """Walk back a skip: a fresh lease for the same person on the item they skipped, if they
    have not labeled it since and a slot is still free (the skip freed theirs for others).
    The skipped lease stays as it was (it records the skip); the new one is an ordinary lease
    under the item's lock, so the slot and one-person-per-item rules hold as for a claim."""
    if lease.annotator_id != annotator.pk:
        raise PermissionDenied(_("That lease is not yours."))
    queue = lease.item.queue
    if not can_label(annotator, queue.project):
        raise PermissionDenied(_("You are not a labeling member of this project."))
    now = timezone.now()
    with transaction.atomic():
        item = _lock_item(lease.item_id)
        current = Lease.objects.select_for_update().get(pk=lease.pk)
        item.image = Image.objects.get(pk=item.image_id)
        if current.state == Lease.State.ACTIVE and current.expires_at > now:
            current.item = item
            return current  # never sent, or a retried unskip: the lease is still theirs
        if current.state != Lease.State.RELEASED:
            raise ValidationError(_("This lease was not skipped."))
        fresh = Lease.objects.filter(
            item=item, annotator=annotator, state=Lease.State.ACTIVE, expires_at__gt=now
        ).first()
        if fresh is None:
            fresh = lease_create_locked(
                item=item,
                annotator=annotator,
                now=now,
                lease_seconds=queue.project.lease_seconds,
                served_in=lease.served_in,
            )
        if fresh is None:
            raise ValidationError(
                _("This image can no longer be brought back: it was labeled or is held by others.")
            )
        fresh.item = item
    return fresh


# --- Lead re-review ---------------------------------------------------------------------------
def _review_resolve_locked(
    *,
    item: QueueItem,
    lead: User,
    value: str | None,
    subcategory: str,
    now: datetime,
    confirm: bool | None = None,
    client_id: str = "",
    duration_ms: int | None = None,
) -> Label:
    """The caller holds the item's lock. `confirm=None` means: decide from `value` (a confirm
    when it equals the current label's value)."""
    project = item.queue.project
    if item.status != QueueItem.Status.OPEN:
        raise ValidationError(_("This review item is already resolved."))
    Image.objects.select_for_update().filter(pk=item.image_id).first()
    current = image_current_label(image=item.image)
    if confirm is None:
        confirm = current is not None and value == current.value
    if confirm:
        if current is None:
            raise ValidationError(_("The image has no label to confirm; give a value instead."))
        if value not in (None, "", current.value):
            raise ValidationError(
                {"value": _("A confirmation keeps the current value; use confirm=False to flip.")}
            )
        value = current.value
        subcategory = subcategory or (current.subcategory if current.value == value else "")
        kind = Label.Kind.CONFIRMATION
    else:
        if not value:
            raise ValidationError({"value": _("A correction needs the new value.")})
        kind = Label.Kind.CORRECTION
    label_value_validate(project=project, value=value, subcategory=subcategory)
    label = Label.objects.create(
        project=project,
        image_id=item.image_id,
        annotator=lead,
        kind=kind,
        value=value,
        subcategory=subcategory,
        supersedes=current,
        queue=item.queue,
        queue_item=item,
        strategy=item.strategy,
        duration_ms=duration_ms,
        client_id=client_id,
    )
    lease = (
        Lease.objects.select_for_update()
        .filter(item=item, annotator=lead, state=Lease.State.ACTIVE)
        .first()
    )
    if lease is not None:
        lease.state, lease.finished_at = Lease.State.COMPLETED, now
        lease.save(update_fields=["state", "finished_at"])
    # Other people's leases on a resolved item are moot: release them so nobody labels it.
    Lease.objects.filter(item=item, state=Lease.State.ACTIVE).exclude(annotator=lead).update(
        state=Lease.State.RELEASED, finished_at=now
    )
    item.labels_done = item.labels_needed
    item.status, item.done_at = QueueItem.Status.DONE, now
    item.save(update_fields=["labels_done", "status", "done_at"])
    webhooks.emit_queue_empty_on_commit(item.queue)
    if kind == Label.Kind.CORRECTION:
        audit_record(
            actor=lead,
            action=Action.LABEL_CORRECTED,
            project=project,
            target=f"image {item.image_id}",
            details={
                "label_id": label.pk,
                "from": current.value if current is not None else None,
                "to": value,
                "subcategory": subcategory,
            },
        )
    return label


def review_resolve(
    *,
    item: QueueItem,
    lead: User,
    confirm: bool,
    value: str | None = None,
    subcategory: str = "",
) -> Label:
    """A lead answers a re-review item: CONFIRMATION (keep the current value) or CORRECTION
    (new `value`), superseding the image's current label; the item is done."""
    if not item.queue.is_review:
        raise ValidationError(_("Only re-review items are resolved by a lead's review."))
    if not can_review(lead, item.queue.project):
        raise PermissionDenied(_("Re-review is for leads of this project."))
    if not isinstance(confirm, bool):
        raise ValidationError({"confirm": _("Must be true or false.")})
    with transaction.atomic():
        locked = _lock_item(item.pk)
        label = _review_resolve_locked(
            item=locked,
            lead=lead,
            value=value,
            subcategory=subcategory or "",
            now=timezone.now(),
            confirm=confirm,
        )
    item.status, item.labels_done, item.done_at = locked.status, locked.labels_done, locked.done_at
    return label
