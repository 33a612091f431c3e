"""Reads for the lead's re-review page, the annotator-quality page and the cold-start page.

Scoping: every function takes the project and (where it matters) the user, and checks the role
rule from labeling.permissions, so a view cannot forget it.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.utils.translation import gettext as _

from labeling.models import Image, Project, Queue, QueueItem, Score
from labeling.permissions import can_review


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
    return items.filter(status=QueueItem.Status.OPEN).order_by("-priority", "id").first()


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
    """Open and resolved items of the project's review queues."""
    return QueueItem.objects.filter(
        queue__project=project, queue__kind=Queue.Kind.REVIEW
    ).aggregate(
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
