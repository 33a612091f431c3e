"""The lead's review stream (issue 9, item 7): each step on a flagged item is a ReviewDecision.

Steps, one per flagged (REVIEW queue) item, each with an optional comment:
- confirm / correct: the CONFIRMATION or CORRECTION of `review_resolve` (labeling.services.labels),
  written under the same item lock as the decision row that records it.
- send back: the label the lead rejects goes back to the annotator who gave it, as Label Studio's
  review does. The annotation that decides the image's current value is retracted (a RETRACTION
  written by the lead), the annotator's labeling-queue item re-opens (their counted lease is
  released, `labels_done` goes down) and they get a fresh lease on it, so their next claim in
  that queue serves it first; the comment is shown to them (`returned_for_annotator`, the home
  page). A comment is required: the annotator has to know what to change.
- skip (defer): nothing is written but the step; the lead's next item comes from the items they
  have not deferred, and deferred ones come back after those, the longest-deferred first.

Undo (`review_undo_last`) walks back the lead's latest step that is not undone yet, in this
project. Labels stay append-only and each is superseded once, so the label a step replaced
cannot become active again; instead its value is written back after the step's RETRACTION
(`_restore`: an annotator's vote comes back as an IMPORTED vote by the same annotator, a lead's
decision as the same kind by the same lead), which gives the image the current label it had
before. A send-back's undo also gives the annotator's lease back and counts their item again,
unless they have answered it anew meanwhile (then the undo is refused: their new answer
stands). The review item re-opens and is the lead's next one.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from labeling.models import Image, Label, Lease, Project, Queue, QueueItem, ReviewDecision
from labeling.permissions import can_review
from labeling.selectors.labels import image_current_label
from labeling.services.labels import _lock_item, _review_resolve_locked
from labeling.services.queues import lease_create_locked

Action = ReviewDecision.Action
MAX_COMMENT = 2000
ACTIONS = tuple(Action.values)


def _clean_comment(comment) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise ValidationError({"comment": _("A comment is text.")})
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise ValidationError(
            {"comment": _("A comment has at most %(count)d characters.") % {"count": MAX_COMMENT}}
        )
    return comment


def _check(item: QueueItem, lead: User) -> Project:
    if not item.queue.is_review:
        raise ValidationError(_("Only re-review items are resolved by a lead's review."))
    project = item.queue.project
    if not can_review(lead, project):
        raise PermissionDenied(_("Re-review is for leads of this project."))
    return project


def review_decide(
    *,
    item: QueueItem,
    lead: User,
    action: str,
    value: str | None = None,
    subcategory: str = "",
    comment: str | None = "",
) -> ReviewDecision:
    """One step of the lead's stream on `item` (see the module docstring). `value` (and
    `subcategory`) only for a correction; a confirm may name a sub-category."""
    _check(item, lead)
    if action not in ACTIONS:
        raise ValidationError(
            {"action": _("Choose one of %(choices)s.") % {"choices": ", ".join(ACTIONS)}}
        )
    comment = _clean_comment(comment)
    now = timezone.now()
    with transaction.atomic():
        locked = _lock_item(item.pk)
        if locked.status != QueueItem.Status.OPEN:
            raise ValidationError(_("This review item is already resolved."))
        decision = ReviewDecision(item=locked, lead=lead, action=action, comment=comment)
        if action in (Action.CONFIRM, Action.CORRECT):
            decision.label = _review_resolve_locked(
                item=locked,
                lead=lead,
                value=value or None,
                subcategory=subcategory or "",
                now=now,
                confirm=action == Action.CONFIRM,
            )
        elif action == Action.SEND_BACK:
            _send_back_locked(decision=decision, item=locked, lead=lead, now=now)
        decision.save()
    item.status, item.labels_done, item.done_at = locked.status, locked.labels_done, locked.done_at
    return decision


def _send_back_locked(*, decision: ReviewDecision, item: QueueItem, lead: User, now) -> None:
    """The caller holds the review item's lock."""
    if not decision.comment:
        raise ValidationError({"comment": _("Say what to change: the annotator reads it.")})
    Image.objects.select_for_update().filter(pk=item.image_id).first()
    current = image_current_label(image=item.image)
    if (
        current is None
        or current.kind != Label.Kind.ANNOTATION
        or current.queue_item_id is None
        or current.queue_id is None
        or current.queue.kind == Queue.Kind.REVIEW
    ):
        raise ValidationError(
            _("Only an annotator's label can be sent back; this image's label is not one.")
        )
    # Lock order: item rows by ascending id (the review item is held already; a labeling item
    # with a lower id is locked after it, which is safe because nobody holds a labeling item
    # and then waits for a review item).
    returned = QueueItem.objects.select_for_update().get(pk=current.queue_item_id)
    retraction = Label.objects.create(
        project_id=current.project_id,
        image_id=current.image_id,
        annotator=lead,
        kind=Label.Kind.RETRACTION,
        value="",
        supersedes=current,
        queue=current.queue,
        queue_item=returned,
        strategy=current.strategy,
    )
    counted = (
        Lease.objects.select_for_update()
        .filter(item=returned, annotator_id=current.annotator_id, state=Lease.State.COMPLETED)
        .first()
    )
    if counted is not None:
        counted.state, counted.finished_at = Lease.State.RELEASED, now
        counted.save(update_fields=["state", "finished_at"])
        returned.labels_done = max(0, returned.labels_done - 1)
        if returned.status == QueueItem.Status.DONE:
            returned.status, returned.done_at = QueueItem.Status.OPEN, None
        returned.save(update_fields=["labels_done", "status", "done_at"])
    lease_create_locked(
        item=returned,
        annotator=current.annotator,
        now=now,
        lease_seconds=item.queue.project.lease_seconds,
        served_in=current.queue,
    )
    item.labels_done = item.labels_needed
    item.status, item.done_at = QueueItem.Status.DONE, now
    item.save(update_fields=["labels_done", "status", "done_at"])
    decision.label = retraction
    decision.returned_to_id = current.annotator_id
    decision.returned_item = returned


def _restore(*, replaced: Label | None, retraction: Label) -> Label | None:
    """Write back the value of `replaced` (the label a decision superseded or a send-back
    retracted) as a new label after `retraction`: labels are superseded once and never edited,
    so an undo cannot make the old row active again. A lead's decision comes back as the same
    kind by the same lead; an annotator's vote comes back as IMPORTED by the same annotator: it
    counts in the majority as before, and the annotator's stats (annotations only) do not count
    their answer twice."""
    if replaced is None or replaced.kind == Label.Kind.RETRACTION:
        return None
    kind = Label.Kind.IMPORTED if replaced.kind == Label.Kind.ANNOTATION else replaced.kind
    return Label.objects.create(
        project_id=replaced.project_id,
        image_id=replaced.image_id,
        annotator_id=replaced.annotator_id,
        kind=kind,
        value=replaced.value,
        subcategory=replaced.subcategory,
        supersedes=retraction,
        queue_id=replaced.queue_id,
        queue_item_id=replaced.queue_item_id,
        strategy=replaced.strategy,
    )


def _retract(*, label: Label, lead: User, item: QueueItem) -> Label:
    if Label.objects.filter(supersedes=label).exists():
        raise ValidationError(
            _("The decision's label was changed since; it can no longer be undone.")
        )
    return Label.objects.create(
        project_id=label.project_id,
        image_id=label.image_id,
        annotator=lead,
        kind=Label.Kind.RETRACTION,
        value="",
        supersedes=label,
        queue_id=label.queue_id,
        queue_item=item,
        strategy=label.strategy,
    )


def review_undo_last(*, project: Project, lead: User) -> ReviewDecision:
    """Walk back the lead's latest step in `project` that is not undone (see the module
    docstring). Returns it, with `undone_at` set; its item is open again."""
    if not can_review(lead, project):
        raise PermissionDenied(_("Re-review is for leads of this project."))
    now = timezone.now()
    with transaction.atomic():
        decision = (
            ReviewDecision.objects.select_for_update()
            .filter(lead=lead, item__queue__project=project, undone_at__isnull=True)
            .order_by("-created_at", "-id")
            .first()
        )
        if decision is None:
            raise ValidationError(_("There is no review decision of yours to undo."))
        item = _lock_item(decision.item_id)
        Image.objects.select_for_update().filter(pk=item.image_id).first()
        if decision.action == Action.SEND_BACK:
            _undo_send_back_locked(decision=decision, lead=lead, now=now)
        elif decision.action != Action.SKIP:
            label = decision.label
            _restore(
                replaced=label.supersedes, retraction=_retract(label=label, lead=lead, item=item)
            )
        if decision.action != Action.SKIP:
            Lease.objects.filter(item=item, annotator=lead, state=Lease.State.COMPLETED).update(
                state=Lease.State.RELEASED, finished_at=now
            )
            item.labels_done = 0
            item.status, item.done_at = QueueItem.Status.OPEN, None
            item.save(update_fields=["labels_done", "status", "done_at"])
        decision.undone_at = now
        decision.save(update_fields=["undone_at"])
    return decision


def _undo_send_back_locked(*, decision: ReviewDecision, lead: User, now) -> None:
    retraction = decision.label
    returned = QueueItem.objects.select_for_update().get(pk=decision.returned_item_id)
    answered_again = Label.objects.filter(
        queue_item=returned,
        annotator_id=decision.returned_to_id,
        kind=Label.Kind.ANNOTATION,
        created_at__gt=decision.created_at,
    ).exists()
    if answered_again or Label.objects.filter(supersedes=retraction).exists():
        raise ValidationError(
            _("The annotator has answered this image again; their new answer stands.")
        )
    _restore(replaced=retraction.supersedes, retraction=retraction)
    # The lease the send-back gave them goes; their original one counts again.
    Lease.objects.filter(
        item=returned, annotator_id=decision.returned_to_id, state=Lease.State.ACTIVE
    ).update(state=Lease.State.RELEASED, finished_at=now)
    original = (
        Lease.objects.select_for_update()
        .filter(
            item=returned,
            annotator_id=decision.returned_to_id,
            state=Lease.State.RELEASED,
            created_at__lt=decision.created_at,
        )
        .order_by("-finished_at", "-id")
        .first()
    )
    if original is not None and returned.labels_done < returned.labels_needed:
        original.state, original.finished_at = Lease.State.COMPLETED, now
        original.save(update_fields=["state", "finished_at"])
        returned.labels_done += 1
        if returned.labels_done >= returned.labels_needed:
            returned.status, returned.done_at = QueueItem.Status.DONE, now
        returned.save(update_fields=["labels_done", "status", "done_at"])
