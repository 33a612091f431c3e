"""Reads for the lead's re-review page, the annotator-quality page and the cold-start page.

Scoping: every function takes the project and (where it matters) the user, and checks the role
rule from labeling.permissions, so a view cannot forget it.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.utils.translation import gettext as _

from labeling.models import (
    Image,
    Label,
    Project,
    Queue,
    QueueItem,
    ReviewDecision,
    Score,
    Strategy,
)
from labeling.permissions import can_review
from labeling.selectors.labels import VOTE_KINDS


def review_item_for_lead(*, project: Project, lead, item_id: int | None = None) -> QueueItem | None:
    """The review item to show: `item_id` when given (any status, so a resolved one can be
    looked at again), else the next OPEN one (highest priority, i.e. most suspicious, first)."""
    if not can_review(lead, project):
        raise PermissionDenied(_("Re-review is for leads of this project."))
    items = QueueItem.objects.select_related("image", "queue").filter(
        queue__project=project, queue__kind=Queue.Kind.REVIEW
    )
    if item_id is not None:
        return items.filter(pk=item_id).first()
    upcoming = review_upcoming(project=project, lead=lead, limit=1)
    return upcoming[0] if upcoming else None


def review_upcoming(
    *, project: Project, lead, limit: int = 3, exclude_id: int | None = None
) -> list[QueueItem]:
    """The lead's next open items in serving order: those they have not deferred (skipped),
    most suspicious (highest priority) first, then the deferred ones, longest-deferred first.

    Two queries rather than one sort over a computed column: the first walks the queue's
    serving index (queue, status, -priority, id) and skips deferred items by an anti-join, so
    a long review queue costs the same as a short one; the second runs only when fewer than
    `limit` undeferred items are left, and reads the lead's own skips."""
    if not can_review(lead, project):
        raise PermissionDenied(_("Re-review is for leads of this project."))
    skips = ReviewDecision.objects.filter(
        lead=lead, action=ReviewDecision.Action.SKIP, undone_at__isnull=True
    )
    # The review queue's id first (a project has one or a few), so the item query is a plain
    # walk of the (queue, status, -priority, id) index rather than a join the planner sorts.
    queue_ids = list(
        Queue.objects.filter(project=project, kind=Queue.Kind.REVIEW).values_list("pk", flat=True)
    )
    open_items = QueueItem.objects.select_related("image", "queue").filter(
        queue_id__in=queue_ids, status=QueueItem.Status.OPEN
    )
    if exclude_id is not None:
        open_items = open_items.exclude(pk=exclude_id)
    fresh = list(
        open_items.exclude(Exists(skips.filter(item=OuterRef("pk")))).order_by("-priority", "id")[
            :limit
        ]
    )
    if len(fresh) >= limit:
        return fresh
    last_skip = skips.filter(item=OuterRef("pk")).order_by("-created_at").values("created_at")[:1]
    deferred = (
        open_items.filter(Exists(skips.filter(item=OuterRef("pk"))))
        .annotate(deferred_at=Subquery(last_skip))
        .order_by("deferred_at", "-priority", "id")[: limit - len(fresh)]
    )
    return fresh + list(deferred)


def review_answers(*, image: Image) -> list[Label]:
    """Each annotator's answer on the image (overlap k > 1 gives several), oldest first: their
    latest vote that nobody retracted (an answer a lead's decision superseded is still what they
    said; an undone or sent-back one is not). Gold answers are not answers about the image."""
    votes = (
        Label.objects.filter(image=image, kind__in=VOTE_KINDS)
        .exclude(superseded_by__kind=Label.Kind.RETRACTION)
        .exclude(strategy=Strategy.GOLD)
        .select_related("annotator", "queue")
        .order_by("created_at", "id")
    )
    latest: dict[int, Label] = {}
    for label in votes:
        latest[label.annotator_id] = label
    return sorted(latest.values(), key=lambda label: (label.created_at, label.pk))


def review_decisions(*, item: QueueItem) -> QuerySet[ReviewDecision]:
    """The lead steps taken on an item (comments included), newest first."""
    return ReviewDecision.objects.filter(item=item).select_related("lead", "returned_to")


def review_last_decision(*, project: Project, lead) -> ReviewDecision | None:
    """What "undo" would walk back: the lead's latest step in the project not undone yet."""
    return (
        ReviewDecision.objects.filter(
            lead=lead, item__queue__project=project, undone_at__isnull=True
        )
        .select_related("item__image")
        .order_by("-created_at", "-id")
        .first()
    )


def returned_for_annotator(*, annotator, limit: int = 20) -> QuerySet[ReviewDecision]:
    """Labels of this annotator a lead sent back (not undone), newest first, with the comment,
    the image and the labeling queue it went back to."""
    return (
        ReviewDecision.objects.filter(
            returned_to=annotator,
            action=ReviewDecision.Action.SEND_BACK,
            undone_at__isnull=True,
        )
        .select_related("lead", "returned_item__queue__project", "returned_item__image", "label")
        .order_by("-created_at", "-id")[:limit]
    )


def review_item_of_image(*, project: Project, image: Image) -> QueueItem | None:
    """The image's item in the project's REVIEW queue, or None (queue_items_add puts an image
    in a queue once)."""
    return (
        QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.REVIEW, image=image)
        .order_by("-id")
        .first()
    )


def review_gradcam_stored(*, item: QueueItem | None, model_version_id: int | None) -> dict | None:
    """The heat map the noise job stored on `item` (details["gradcam"]: model_version_id,
    model_version, file, focused) when it was made by `model_version_id`; else None."""
    if item is None or model_version_id is None:
        return None
    record = (item.details or {}).get("gradcam")
    if isinstance(record, dict) and record.get("model_version_id") == model_version_id:
        return record
    return None


def review_counts(*, project: Project) -> dict[str, int]:
    """Open and resolved items of the project's review queues.

    The queues' ids are read first and given as values: PostgreSQL then estimates the items
    from queue_id's own statistics and counts them from queueitem_next. Joined on the queue's
    kind it could only guess (a third of all items when a project has three queues) and read
    the million labeling items to count a review queue's few thousand."""
    queues = list(
        Queue.objects.filter(project=project, kind=Queue.Kind.REVIEW).values_list("pk", flat=True)
    )
    return QueueItem.objects.filter(queue_id__in=queues).aggregate(
        open=Count("id", filter=Q(status=QueueItem.Status.OPEN)),
        done=Count("id", filter=Q(status=QueueItem.Status.DONE)),
    )


def image_scores(*, image: Image) -> QuerySet[Score]:
    """Every model version's score of the image, newest version first."""
    return (
        Score.objects.filter(image=image)
        .select_related("model_version")
        .order_by("-model_version__created_at", "-id")
    )


def seed_candidates(*, project: Project, search: str = "", limit: int = 120) -> QuerySet[Image]:
    """Images an engineer may pick as cold-start seeds: the project's images, optionally those
    whose source name contains `search` (case-insensitive), newest first."""
    images = Image.objects.filter(project=project)
    search = search.strip()
    if search:
        images = images.filter(source__icontains=search)
    return images.order_by("-id")[:limit]
