"""One annotator's items behind the figures of their quality row (issue 9, item 9): the labels
that were flagged (their image sits in a re-review queue, O2U), overturned (a lead's later
correction on the image gave another value) and gold-failed (an answer to a gold item that is
not its gold value), each with the image, their answer, the correct answer and when.

The three rules are those the quality page counts by (labeling.selectors.labels.
annotator_quality for flagged and overturned, labeling.selectors.quality.gold_answers and
gold_accuracy for gold), so a row's figure and its list agree; tests/labeling/
test_quality_drilldown.py checks they do. The queries are this module's own (the quality
page's aggregate reads are tuned separately).
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Exists, F, OuterRef, Q, Subquery

from labeling.models import GoldItem, Label, Project, Queue, QueueItem, Strategy

# Each list shows this many items, newest first; the total is counted in full.
DRILL_LIMIT = 100
LEAD_KINDS = (Label.Kind.CORRECTION, Label.Kind.CONFIRMATION)


def _annotations(project: Project, annotator: User):
    """The annotator's annotations that count on the quality page: not undone, not gold."""
    return (
        Label.objects.filter(project=project, annotator=annotator, kind=Label.Kind.ANNOTATION)
        .filter(~Q(superseded_by__kind=Label.Kind.RETRACTION))
        .exclude(strategy=Strategy.GOLD)
    )


def _lead_verdicts(image_ids: list[int]) -> dict[int, Label]:
    """The latest lead decision (correction or confirmation) of each image."""
    verdicts: dict[int, Label] = {}
    rows = (
        Label.objects.filter(image_id__in=image_ids, kind__in=LEAD_KINDS)
        .select_related("annotator")
        .order_by("created_at", "id")
    )
    for label in rows:
        verdicts[label.image_id] = label
    return verdicts


def flagged_items(*, project: Project, annotator: User, limit: int = DRILL_LIMIT) -> dict:
    """Annotations on images the noise detector (or a lead) sent to re-review."""
    review = QueueItem.objects.filter(
        queue__kind=Queue.Kind.REVIEW, queue__project=project, image=OuterRef("image")
    )
    labels = _annotations(project, annotator).filter(Exists(review))
    total = labels.count()
    rows = list(
        labels.annotate(
            review_item_id=Subquery(review.order_by("-id").values("id")[:1]),
            review_status=Subquery(review.order_by("-id").values("status")[:1]),
            review_details=Subquery(review.order_by("-id").values("details")[:1]),
        )
        .select_related("image")
        .order_by("-created_at", "-id")[:limit]
    )
    verdicts = _lead_verdicts([label.image_id for label in rows])
    items = []
    for label in rows:
        verdict = verdicts.get(label.image_id)
        details = label.review_details or {}
        items.append(
            {
                "label_id": label.pk,
                "image_id": label.image_id,
                "image": label.image,
                "answer": label.value,
                "answered_at": label.created_at,
                # None while the review is open: nobody has said what is right yet.
                "correct": verdict.value if verdict else None,
                "decided_at": verdict.created_at if verdict else None,
                "decided_by": verdict.annotator.username if verdict else None,
                "review_item_id": label.review_item_id,
                "review_status": label.review_status,
                "o2u_rank": details.get("rank"),
            }
        )
    return {"total": total, "items": items}


def overturned_items(*, project: Project, annotator: User, limit: int = DRILL_LIMIT) -> dict:
    """Annotations a later lead correction on the image contradicted."""
    corrected = Label.objects.filter(
        image=OuterRef("image"),
        kind=Label.Kind.CORRECTION,
        created_at__gte=OuterRef("created_at"),
    ).exclude(value=OuterRef("value"))
    labels = _annotations(project, annotator).filter(Exists(corrected))
    total = labels.count()
    rows = list(
        labels.annotate(
            correction_id=Subquery(corrected.order_by("-created_at", "-id").values("id")[:1])
        )
        .select_related("image")
        .order_by("-created_at", "-id")[:limit]
    )
    corrections = Label.objects.select_related("annotator").in_bulk(
        [label.correction_id for label in rows]
    )
    items = []
    for label in rows:
        correction = corrections[label.correction_id]
        items.append(
            {
                "label_id": label.pk,
                "image_id": label.image_id,
                "image": label.image,
                "answer": label.value,
                "answered_at": label.created_at,
                "correct": correction.value,
                "decided_at": correction.created_at,
                "decided_by": correction.annotator.username,
            }
        )
    return {"total": total, "items": items}


def gold_failed_items(*, project: Project, annotator: User, limit: int = DRILL_LIMIT) -> dict:
    """Answers to gold items that differ from the gold value as it stands now (the rule of
    labeling.selectors.quality.gold_accuracy)."""
    gold = GoldItem.objects.filter(project=project, image=OuterRef("image"))
    labels = (
        Label.objects.filter(
            project=project,
            annotator=annotator,
            strategy=Strategy.GOLD,
            kind=Label.Kind.ANNOTATION,
            superseded_by__isnull=True,
        )
        .annotate(gold_value=Subquery(gold.values("value")[:1]))
        .filter(gold_value__isnull=False)
        .exclude(value=F("gold_value"))
    )
    total = labels.count()
    rows = list(labels.select_related("image").order_by("-created_at", "-id")[:limit])
    items = [
        {
            "label_id": label.pk,
            "image_id": label.image_id,
            "image": label.image,
            "answer": label.value,
            "answered_at": label.created_at,
            "correct": label.gold_value,
        }
        for label in rows
    ]
    return {"total": total, "items": items}


def project_person(*, project: Project, pk: int) -> User | None:
    """The person with id `pk` if they belong to the project's work (a member, or someone who
    labeled in it), else None: ids of other projects' people reveal nothing."""
    person = User.objects.filter(pk=pk).first()
    if person is None:
        return None
    if (
        project.members.filter(pk=person.pk).exists()
        or Label.objects.filter(project=project, annotator=person).exists()
    ):
        return person
    return None


def annotator_items(*, project: Project, annotator: User, limit: int = DRILL_LIMIT) -> dict:
    """The three lists of one annotator, each {total, items}."""
    return {
        "flagged": flagged_items(project=project, annotator=annotator, limit=limit),
        "overturned": overturned_items(project=project, annotator=annotator, limit=limit),
        "gold_failed": gold_failed_items(project=project, annotator=annotator, limit=limit),
    }
