"""What leads read about each annotator beyond agreement: accuracy on gold items (with its
count and a 95% Wilson interval, per class and per day), grid pages submitted faster than a
person can look (rubber-stamping), and exposure to the positive class (today, this week, the
current run of positives) with any pause (issue 9, items 3 and 4).

The interval is the Wilson score interval, the method mlcore.evaluation.proportion_interval
uses for the model metrics (labeling.selectors may not import mlcore), written out (`wilson`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from statistics import NormalDist

from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, OuterRef, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from labeling.models import (
    AnnotatorPause,
    AnnotatorTally,
    GoldItem,
    GridTally,
    Label,
    Project,
    Strategy,
)
from labeling.services.gold import (
    STREAK_FIRST_READ,
    day_start,
    latest_answers,
    positive_streak,
    run_length,
)

CONFIDENCE = 0.95
HISTORY_DAYS = 14
# A streak is read back at most this far for the leads' table.
STREAK_LOOKBACK = 200


def wilson(correct: int, answers: int) -> tuple[float, float] | None:
    """95% Wilson score interval of correct / answers; None with no answers.

    Written out rather than scipy's `binomtest(...).proportion_ci(method="wilson")` (the
    method mlcore.evaluation.proportion_interval uses; tests/labeling/test_gold_exposure.py
    compares the two): that call costs about 0.3 ms, and the table asks for one interval per
    annotator, class and day, hundreds on one page."""
    if answers <= 0:
        return None
    z = _Z
    share = correct / answers
    denominator = 1.0 + z * z / answers
    centre = (share + z * z / (2 * answers)) / denominator
    half = z * math.sqrt(share * (1.0 - share) / answers + z * z / (4 * answers * answers))
    half /= denominator
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


# The normal quantile of the interval's confidence, two-sided.
_Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)


def _rate(correct: int, answers: int) -> dict:
    interval = wilson(correct, answers)
    return {
        "answers": answers,
        "correct": correct,
        "accuracy": round(correct / answers, 4) if answers else None,
        "ci_low": interval[0] if interval else None,
        "ci_high": interval[1] if interval else None,
    }


def gold_answers(*, project: Project, annotator: User | None = None):
    """Active (not undone) answers to gold items: (annotator id, image id, value, created_at)."""
    qs = Label.objects.filter(
        project=project,
        strategy=Strategy.GOLD,
        kind=Label.Kind.ANNOTATION,
        superseded_by__isnull=True,
    )
    if annotator is not None:
        qs = qs.filter(annotator=annotator)
    return qs.order_by("created_at", "id").values_list(
        "annotator_id", "image_id", "value", "created_at"
    )


def _gold_answer_counts(*, project: Project, since=None, by_day: bool = False):
    """(annotator id, image id, value[, local day], answers) of the active answers to gold
    items, counted in the database: one row per distinct answer (and day), however many times
    it was given."""
    qs = gold_answers(project=project).order_by()
    keys = ["annotator_id", "image_id", "value"]
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if by_day:
        qs = qs.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        keys.append("day")
    return qs.values_list(*keys).annotate(answers=Count("id")).values_list(*keys, "answers")


def gold_accuracy(*, project: Project) -> dict[int, dict]:
    """{annotator id: {overall rate, per_class {gold value: rate}, days [{day, rate}]}}, each
    rate with answers, correct, accuracy and its 95% interval. Answers are judged against the
    gold value as it stands now (a corrected gold item re-judges every answer to it)."""
    truth = dict(GoldItem.objects.filter(project=project).values_list("image_id", "value"))
    since = timezone.localdate() - timedelta(days=HISTORY_DAYS - 1)
    tallies: dict[int, dict] = defaultdict(
        lambda: {
            "all": [0, 0],
            "class": defaultdict(lambda: [0, 0]),
            "day": defaultdict(lambda: [0, 0]),
        }
    )
    # Counted per distinct answer in the database, not row by row here: a project answering
    # gold items at a few percent of its labels has hundreds of thousands of answers.
    for annotator_id, image_id, value, answers in _gold_answer_counts(project=project):
        expected = truth.get(image_id)
        if expected is None:
            continue
        tally = tallies[annotator_id]
        for bucket in (tally["all"], tally["class"][expected]):
            bucket[0] += answers * int(value == expected)
            bucket[1] += answers
    start = timezone.make_aware(datetime.combine(since, time.min))
    for annotator_id, image_id, value, day, answers in _gold_answer_counts(
        project=project, since=start, by_day=True
    ):
        expected = truth.get(image_id)
        if expected is None:
            continue
        bucket = tallies[annotator_id]["day"][day]
        bucket[0] += answers * int(value == expected)
        bucket[1] += answers
    result = {}
    for annotator_id, tally in tallies.items():
        result[annotator_id] = {
            **_rate(*tally["all"]),
            "per_class": {key: _rate(*counts) for key, counts in sorted(tally["class"].items())},
            "days": [
                {"day": day.isoformat(), **_rate(*counts)}
                for day, counts in sorted(tally["day"].items())
            ],
        }
    return result


def rubber_stamping(*, project: Project) -> dict[int, dict]:
    """Per annotator: grid tiles labeled, how many came on pages submitted faster than the
    project's `grid_min_ms_per_tile` per tile, and those pages' count (a page's labels share
    one per-tile time, so a page counts 1/page_size per tile).

    Read from GridTally (one row per annotator and time per tile, kept by the triggers of
    labeling.selectors.tally_sql), not from the labels: times per tile are capped there at
    GRID_MS_CAP, above the largest floor a project may set, so the counts are exact; the median
    reads as the cap when it is beyond it."""
    floor = project.grid_min_ms_per_tile
    rows = (
        GridTally.objects.filter(project=project, tiles__gt=0)
        .order_by("annotator_id", "ms")
        .values_list("annotator_id", "ms", "tiles", "pages")
    )
    out: dict[int, dict] = defaultdict(
        lambda: {"tiles": 0, "fast_tiles": 0, "pages": 0.0, "fast_pages": 0.0, "ms": []}
    )
    for annotator_id, ms, tiles, pages in rows:
        entry = out[annotator_id]
        entry["tiles"] += tiles
        entry["pages"] += pages
        if ms >= 0:
            entry["ms"].append((ms, tiles))
            if floor and ms < floor:
                entry["fast_tiles"] += tiles
                entry["fast_pages"] += pages
    result = {}
    for annotator_id, entry in out.items():
        entry["median_ms_per_tile"] = _median(entry.pop("ms"))
        entry["pages"] = round(entry["pages"])
        entry["fast_pages"] = round(entry["fast_pages"])
        entry["fast_share"] = (
            round(entry["fast_tiles"] / entry["tiles"], 4) if entry["tiles"] else None
        )
        result[annotator_id] = entry
    return result


def _median(counts: list[tuple[int, int]]) -> int | None:
    """The upper median (the element at n // 2 of the sorted times) of (time, how many)
    pairs in ascending time."""
    n = sum(count for _ms, count in counts)
    if not n:
        return None
    seen = 0
    for ms, count in counts:
        seen += count
        if seen > n // 2:
            return ms
    return None  # unreachable: the counts add up to n


def exposure(*, project: Project) -> dict[int, dict]:
    """Per annotator who labeled in the project: positive-class answers today and in the last
    7 days (undone ones excluded; gold answers included), and their current run of positives.

    Summed from the hourly AnnotatorTally rows (UTC hours): exact where the site's time zone is
    a whole number of hours from UTC; elsewhere "today" starts at the hour before midnight."""
    start = day_start()
    week = start - timedelta(days=6)
    since = _hour_floor(week)
    rows = (
        AnnotatorTally.objects.filter(project=project, hour__gte=since)
        .values("annotator_id")
        .annotate(
            labels=Sum("annotations"),
            today=Sum("positives", filter=Q(hour__gte=_hour_floor(start))),
            week=Sum("positives"),
        )
        .filter(labels__gt=0)
    )
    streaks = _streaks(project=project, annotator_ids=[row["annotator_id"] for row in rows])
    return {
        row["annotator_id"]: {
            "positives_today": row["today"] or 0,
            "positives_7_days": row["week"] or 0,
            "streak": streaks[row["annotator_id"]],
        }
        for row in rows
    }


def _streaks(*, project: Project, annotator_ids: list[int]) -> dict[int, int]:
    """Each annotator's current run of positives (labeling.services.gold.positive_streak, up to
    STREAK_LOOKBACK). On PostgreSQL the first STREAK_FIRST_READ answers of everyone come in one
    statement (an array subquery per annotator, each a short index read), and only a person
    whose answers there are all positive is read further."""
    positive = project.positive_class
    if connection.vendor != "postgresql":
        users = User.objects.in_bulk(annotator_ids)
        return {
            pk: positive_streak(project=project, annotator=users[pk], limit=STREAK_LOOKBACK)
            for pk in annotator_ids
        }
    # One query built once, not one per annotator: building and compiling fifty querysets
    # (a UNION of them) cost more Python time than PostgreSQL spent answering it.
    from django.contrib.postgres.expressions import ArraySubquery

    first_answers = ArraySubquery(
        latest_answers(project=project, annotator_id=OuterRef("pk")).values("value")[
            :STREAK_FIRST_READ
        ]
    )
    rows = User.objects.filter(pk__in=annotator_ids).annotate(values=first_answers)
    result = {}
    for annotator_id, values in rows.values_list("pk", "values"):
        if len(values) == STREAK_FIRST_READ and run_length(values, positive) == len(values):
            user = User.objects.get(pk=annotator_id)
            result[annotator_id] = positive_streak(
                project=project, annotator=user, limit=STREAK_LOOKBACK
            )
        else:
            result[annotator_id] = run_length(values, positive)
    return result


def _hour_floor(moment):
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def pauses_active(*, project: Project) -> dict[int, AnnotatorPause]:
    return {
        pause.annotator_id: pause
        for pause in AnnotatorPause.objects.filter(project=project, lifted_at__isnull=True)
    }


def annotator_checks(*, project: Project) -> list[dict]:
    """One row per annotator with any gold answer, grid page, recent label or pause: the
    quality page's gold / rubber-stamp / exposure table and the API's answer."""
    gold = gold_accuracy(project=project)
    stamps = rubber_stamping(project=project)
    exposed = exposure(project=project)
    pauses = pauses_active(project=project)
    ids = set(gold) | set(stamps) | set(exposed) | set(pauses)
    users = User.objects.in_bulk(list(ids))
    rows = []
    for annotator_id in ids:
        pause = pauses.get(annotator_id)
        rows.append(
            {
                "annotator_id": annotator_id,
                "username": users[annotator_id].username,
                "gold": gold.get(annotator_id, _rate(0, 0) | {"per_class": {}, "days": []}),
                "grid": stamps.get(annotator_id),
                "exposure": exposed.get(
                    annotator_id, {"positives_today": 0, "positives_7_days": 0, "streak": 0}
                ),
                "pause": None
                if pause is None
                else {
                    "id": pause.pk,
                    "since": pause.created_at,
                    "accuracy": round(pause.accuracy, 4),
                    "answers": pause.answers,
                    "threshold": pause.threshold,
                },
            }
        )
    rows.sort(key=lambda row: row["username"])
    return rows


def gold_items(*, project: Project, limit: int = 200) -> list[GoldItem]:
    return list(
        GoldItem.objects.filter(project=project, active=True)
        .annotate(
            answers=Count(
                "item__labels",
                filter=Q(
                    item__labels__kind=Label.Kind.ANNOTATION,
                    item__labels__superseded_by__isnull=True,
                ),
            )
        )
        .order_by("-created_at")[:limit]
    )
