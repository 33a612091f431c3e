"""Reads of the label history: active labels, an image's current label, stats and quality.

The current label of an image is derived from its append-only history, by one rule that every
reader shares (`_current_of`):
1. Active labels are those no other label supersedes, minus retractions (undo).
2. If a lead's CORRECTION or CONFIRMATION is active, the latest of them wins.
3. Otherwise the majority value of the active ANNOTATION and IMPORTED labels wins; a tie goes
   to the value labeled most recently.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta

from django.contrib.auth.models import User
from django.db.models import Count, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Least
from django.utils import timezone

from labeling.models import AnnotatorTally, Image, Label, Project, Queue, Strategy

LEAD_KINDS = (Label.Kind.CORRECTION, Label.Kind.CONFIRMATION)
VOTE_KINDS = (Label.Kind.ANNOTATION, Label.Kind.IMPORTED)


def labels_active(*, project: Project | None = None, image: Image | None = None) -> QuerySet[Label]:
    """Labels nobody superseded, without retractions and without answers to gold items (they
    measure the annotator, never label the image: labeling.services.gold)."""
    qs = (
        Label.objects.filter(superseded_by__isnull=True)
        .exclude(kind=Label.Kind.RETRACTION)
        .exclude(strategy=Strategy.GOLD)
    )
    if project is not None:
        qs = qs.filter(project=project)
    if image is not None:
        qs = qs.filter(image=image)
    return qs


def _current_of(rows: list[tuple]) -> tuple | None:
    """rows: (id, kind, value, created_at) of one image's active labels, in (created_at, id)
    order. Returns the row that decides the image's current label."""
    lead = [row for row in rows if row[1] in LEAD_KINDS]
    if lead:
        return lead[-1]
    votes = [row for row in rows if row[1] in VOTE_KINDS]
    if not votes:
        return None
    counts = Counter(row[2] for row in votes)
    top = max(counts.values())
    # The latest row whose value has the top count: the tie-break by recency falls out of the
    # ordering.
    for row in reversed(votes):
        if counts[row[2]] == top:
            return row
    return None  # unreachable: some vote has the top count


def image_current_label(*, image: Image) -> Label | None:
    """The label that decides the image's current value (see the module docstring)."""
    rows = list(
        labels_active(image=image)
        .order_by("created_at", "id")
        .values_list("id", "kind", "value", "created_at")
    )
    row = _current_of(rows)
    return None if row is None else Label.objects.get(pk=row[0])


def current_labels(*, project: Project, split: str | None = None) -> dict[int, str]:
    """{image id: current value} for every image of the project that has one.

    One query over the active labels (two small columns each), then the shared rule in Python:
    about a second for 100k images, and exactly the rule `image_current_label` applies.
    """
    qs = labels_active(project=project)
    if split is not None:
        qs = qs.filter(image__split=split)
    by_image: dict[int, list[tuple]] = defaultdict(list)
    for image_id, pk, kind, value, created_at in qs.order_by("created_at", "id").values_list(
        "image_id", "id", "kind", "value", "created_at"
    ):
        by_image[image_id].append((pk, kind, value, created_at))
    result: dict[int, str] = {}
    for image_id, rows in by_image.items():
        row = _current_of(rows)
        if row is not None:
            result[image_id] = row[2]
    return result


def label_history(*, image: Image) -> QuerySet[Label]:
    """Every label of the image, retractions and superseded ones included, oldest first."""
    return (
        Label.objects.filter(image=image)
        .select_related("annotator", "supersedes", "queue")
        .order_by("created_at", "id")
    )


def _not_retracted() -> Q:
    return ~Q(superseded_by__kind=Label.Kind.RETRACTION)


# One label's time counts up to this much toward the rate: an image left on screen longer
# is a pause (a break, a phone call), not work.
RATE_LABEL_CAP_MS = 60_000


def annotator_stats(
    *, project: Project, annotator: User, window_minutes: int = 10, queue: Queue | None = None
) -> dict:
    """The annotator's own throughput: annotations (undone ones excluded) in the project (or in
    one `queue` of it, so a labeling page's "by you" counts the same queue as its "done in
    queue"), in the last `window_minutes`, and their rate per minute of the time the person
    actually spent on them (each label's duration_ms, capped at RATE_LABEL_CAP_MS): 40 labels in
    10 s read 240/min, not 4/min. Labels that carry no duration (API clients) fall back to the
    window."""
    window_minutes = max(1, int(window_minutes))
    since = timezone.now() - timedelta(minutes=window_minutes)
    recent = Q(created_at__gte=since)
    timed = recent & Q(duration_ms__isnull=False)
    labels = Label.objects.filter(project=project, annotator=annotator, kind=Label.Kind.ANNOTATION)
    tallies = AnnotatorTally.objects.filter(project=project, annotator_id=annotator.pk)
    if queue is not None:
        labels = labels.filter(queue=queue)
        tallies = tallies.filter(queue_key=queue.pk)
    # The window's labels through the (project, annotator, created_at) index; the total from
    # the tallies the triggers keep (labeling.selectors.tally_sql): the person's whole history
    # is not read on each call.
    counts = labels.filter(_not_retracted(), recent).aggregate(
        last_window=Count("id"),
        timed=Count("id", filter=timed),
        active_ms=Sum(Least(F("duration_ms"), Value(RATE_LABEL_CAP_MS)), filter=timed),
    )
    counts["total"] = tallies.aggregate(total=Sum("annotations"))["total"] or 0
    active_ms = counts["active_ms"] or 0
    if counts["timed"] and active_ms > 0:
        # Untimed labels in the window, if any, take the timed ones' mean time each.
        per_label_ms = active_ms / counts["timed"]
        per_minute = 60_000 / per_label_ms
    else:
        per_minute = counts["last_window"] / window_minutes
    return {
        "total": counts["total"],
        "last_window": counts["last_window"],
        "per_minute": round(per_minute, 2),
        "window_minutes": window_minutes,
    }


def annotator_quality(*, project: Project) -> list[dict]:
    """Per annotator: annotations (undone ones excluded), how many of them sit on an image in a
    re-review queue (flagged), and how many a lead's correction contradicted (overturned).

    Departure from "superseded by a CORRECTION": with overlap k > 1 a correction supersedes one
    label (the image's current one), yet every annotator who gave that value was overturned, so
    an annotation counts as overturned when a later CORRECTION on its image has another value.
    With k = 1 both readings give the same number.
    """
    # Counted by the triggers of labeling.selectors.tally_sql, which apply this rule on each
    # write (tests/labeling/test_annotator_tally.py checks them against it): one row per
    # annotator, queue and hour is read, not every label of the project.
    rows = (
        AnnotatorTally.objects.filter(project=project)
        .values("annotator_id")
        .annotate(
            total=Sum("annotations"),
            gold_answers=Sum("gold"),
            flagged=Sum("flagged"),
            overturned=Sum("overturned"),
        )
        .order_by("annotator_id")
    )
    rows = [
        {
            "annotator": row["annotator_id"],
            "labels": row["total"] - row["gold_answers"],
            "flagged": row["flagged"],
            "overturned": row["overturned"],
        }
        for row in rows
        if row["total"] - row["gold_answers"] > 0
    ]
    rows = list(rows)
    users = User.objects.in_bulk([row["annotator"] for row in rows])
    result = [
        {
            "annotator": users[row["annotator"]],
            "annotator_id": row["annotator"],
            "username": users[row["annotator"]].username,
            "labels": row["labels"],
            "flagged": row["flagged"],
            "overturned": row["overturned"],
        }
        for row in rows
    ]
    result.sort(key=lambda entry: entry["username"])
    return result


RECENT_LABELS_MAX = 100


def annotator_recent_labels(*, annotator: User, queue: Queue, limit: int = 30) -> list[dict]:
    """The person's own latest annotations in `queue`, newest first, for their "my recent
    labels" list. `state` says what became of each: "current" (can still be changed by undo),
    "undone" (the person took it back) or "reviewed" (a lead confirmed or corrected it; the
    answer the lead gave is not shown, as nobody's labels but one's own are)."""
    limit = max(1, min(int(limit), RECENT_LABELS_MAX))
    rows = (
        Label.objects.filter(queue=queue, annotator=annotator, kind=Label.Kind.ANNOTATION)
        .order_by("-created_at", "-id")
        .values("id", "image_id", "value", "subcategory", "created_at", "superseded_by__kind")[
            :limit
        ]
    )
    out = []
    for row in rows:
        kind = row.pop("superseded_by__kind")
        if kind is None:
            row["state"] = "current"
        elif kind == Label.Kind.RETRACTION:
            row["state"] = "undone"
        else:
            row["state"] = "reviewed"
        out.append(row)
    return out
