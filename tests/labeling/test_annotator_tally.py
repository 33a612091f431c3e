"""The per-annotator tallies (labeling.models.AnnotatorTally, GridTally) kept by the triggers of
migration 0015 agree with a direct computation over the labels, through votes, answers to gold
items, imports, undo, grid pages, a lead's corrections (and their undo), confirmations, review
items added before and after the labels, and labels dated out of order; and the backfill
computes the same rows as the triggers."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import AnnotatorTally, GridTally, Label, Queue, QueueItem, Strategy
from labeling.selectors import tally_sql
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db

KINDS = Label.Kind


def _expected(project) -> tuple[dict, dict]:
    """Both tables' rows computed from the labels, row by row (the module docstring of
    labeling.selectors.tally_sql)."""
    labels = list(Label.objects.filter(project=project))
    retracted = {lab.supersedes_id for lab in labels if lab.kind == KINDS.RETRACTION}
    corrections = [
        lab for lab in labels if lab.kind == KINDS.CORRECTION and lab.pk not in retracted
    ]
    in_review = set(
        QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.REVIEW).values_list(
            "image_id", flat=True
        )
    )
    tally: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    grid: dict[tuple, list[float]] = defaultdict(lambda: [0, 0.0])
    for lab in labels:
        if lab.kind != KINDS.ANNOTATION or lab.pk in retracted:
            continue
        hour = lab.created_at.replace(minute=0, second=0, microsecond=0)
        row = tally[(lab.annotator_id, lab.queue_id or 0, hour)]
        gold = lab.strategy == Strategy.GOLD
        row[0] += 1
        row[1] += int(gold)
        row[2] += int(lab.value == project.positive_class)
        row[3] += int(not gold and lab.image_id in in_review)
        row[4] += int(
            not gold
            and any(
                c.image_id == lab.image_id
                and c.created_at >= lab.created_at
                and c.value != lab.value
                for c in corrections
            )
        )
        if lab.page_size is not None:
            ms = -1 if lab.duration_ms is None else min(lab.duration_ms, tally_sql.GRID_MS_CAP)
            cell = grid[(lab.annotator_id, ms)]
            cell[0] += 1
            cell[1] += 1.0 / max(1, lab.page_size)
    return (
        {key: tuple(row) for key, row in tally.items() if any(row)},
        {key: (row[0], round(row[1], 6)) for key, row in grid.items() if row[0]},
    )


def _tables(project) -> tuple[dict, dict]:
    tally = {
        (row.annotator_id, row.queue_key, row.hour): (
            row.annotations,
            row.gold,
            row.positives,
            row.flagged,
            row.overturned,
        )
        for row in AnnotatorTally.objects.filter(project=project)
    }
    grid = {
        (row.annotator_id, row.ms): (row.tiles, round(row.pages, 6))
        for row in GridTally.objects.filter(project=project)
    }
    return (
        {key: row for key, row in tally.items() if any(row)},
        {key: row for key, row in grid.items() if row[0]},
    )


def _random_histories(project, images, people, lead, queues, rng):
    review = queues["review"]
    start = timezone.now() - timedelta(days=3)
    for step in range(500):
        image = rng.choice(images)
        labels = list(Label.objects.filter(image=image))
        retracted = {lab.supersedes_id for lab in labels if lab.kind == KINDS.RETRACTION}
        superseded = {lab.supersedes_id for lab in labels}
        open_ = [lab for lab in labels if lab.pk not in superseded and lab.kind != KINDS.RETRACTION]
        value = rng.choice(["normal", "positive"])
        # Mostly forward in time, sometimes dated hours back (imports, clocks): the rules
        # compare the labels' own times.
        when = start + timedelta(minutes=7 * step - (rng.random() < 0.15) * rng.randint(0, 600))
        move = rng.random()
        with mock.patch("django.utils.timezone.now", return_value=when):
            if move < 0.45:
                grid = rng.random() < 0.4
                Label.objects.create(
                    project=project,
                    image=image,
                    annotator=rng.choice(people),
                    value=value,
                    queue=rng.choice([queues["labeling"], queues["other"], None]),
                    strategy=Strategy.GOLD if rng.random() < 0.15 else "",
                    page_size=rng.choice([6, 12, 24]) if grid else None,
                    duration_ms=rng.choice([None, 90, 400, 1500, 70_000]),
                )
            elif move < 0.52:
                Label.objects.create(
                    project=project,
                    image=image,
                    annotator=rng.choice(people),
                    value=value,
                    kind=KINDS.IMPORTED,
                )
            elif open_ and move < 0.68:
                # Undo of anything open: annotations, corrections, imports.
                Label.objects.create(
                    project=project,
                    image=image,
                    annotator=lead,
                    kind=KINDS.RETRACTION,
                    supersedes=rng.choice(open_),
                )
            elif move < 0.8:
                Label.objects.create(
                    project=project,
                    image=image,
                    annotator=lead,
                    value=value,
                    kind=KINDS.CORRECTION,
                    supersedes=rng.choice(open_) if open_ and rng.random() < 0.5 else None,
                )
            elif move < 0.88:
                Label.objects.create(
                    project=project,
                    image=image,
                    annotator=lead,
                    value=value,
                    kind=KINDS.CONFIRMATION,
                )
            else:
                # Two review queues: an image's second review item changes nothing.
                QueueItem.objects.get_or_create(
                    queue=rng.choice(review), image=image, defaults={"strategy": "noise_review"}
                )
        assert not (retracted - {lab.pk for lab in labels})


def _queues(project):
    return {
        "labeling": make_queue(project),
        "other": make_queue(project),
        "review": [make_queue(project, kind=Queue.Kind.REVIEW) for _ in range(2)],
    }


def test_the_triggers_keep_the_tallies():
    project = make_project()
    other = make_project()
    images = [make_image(project, seed=i) for i in range(20)]
    people = [make_user("annotator") for _ in range(4)]
    _random_histories(
        project, images, people, make_user("lead"), _queues(project), random.Random(7)
    )
    expected = _expected(project)
    tally, grid = expected
    assert sum(row[3] for row in tally.values()) > 5, "some annotations flagged"
    assert sum(row[4] for row in tally.values()) > 5, "some annotations overturned"
    assert sum(row[1] for row in tally.values()) > 5, "some gold answers"
    assert len(grid) > 5
    assert _tables(project) == expected
    assert not AnnotatorTally.objects.filter(project=other).exists()


def test_the_backfill_computes_the_same_rows_as_the_triggers():
    project = make_project()
    images = [make_image(project, seed=i) for i in range(12)]
    people = [make_user("annotator") for _ in range(3)]
    _random_histories(
        project, images, people, make_user("lead"), _queues(project), random.Random(3)
    )
    by_trigger = _tables(project)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM labeling_annotatortally")
        cursor.execute("DELETE FROM labeling_gridtally")
        for statement in tally_sql.backfill(connection.vendor):
            cursor.execute(statement)
    assert _tables(project) == by_trigger == _expected(project)


def test_the_written_out_wilson_interval_is_scipys():
    from scipy.stats import binomtest

    from labeling.selectors.quality import wilson

    for answers in range(1, 80):
        for correct in range(answers + 1):
            ci = binomtest(correct, answers).proportion_ci(confidence_level=0.95, method="wilson")
            assert wilson(correct, answers) == (round(ci.low, 4), round(ci.high, 4))
    assert wilson(0, 0) is None


def test_exposure_reads_everyones_run_of_positives_at_once():
    from labeling.selectors.quality import exposure
    from labeling.services.gold import positive_streak

    project = make_project()
    image = make_image(project, seed=1)
    positive = project.positive_class
    people = [make_user("annotator") for _ in range(4)]
    runs = {people[0]: 0, people[1]: 3, people[2]: 12, people[3]: 2}
    for person, run in runs.items():
        for value in ["normal"] + [positive] * run:
            Label.objects.create(project=project, image=image, annotator=person, value=value)
    # An undone answer does not break the run: people[3]'s last normal is taken back.
    last = Label.objects.create(project=project, image=image, annotator=people[3], value="normal")
    Label.objects.create(
        project=project, image=image, annotator=people[3], kind=KINDS.RETRACTION, supersedes=last
    )
    rows = exposure(project=project)
    for person, run in runs.items():
        assert rows[person.pk]["streak"] == run
        assert run == positive_streak(project=project, annotator=person, limit=200)
    assert rows[people[2].pk]["positives_today"] == 12


def test_gold_accuracy_counted_in_the_database_is_the_answers_judged_one_by_one():
    from labeling.selectors.quality import HISTORY_DAYS, _rate, gold_accuracy
    from labeling.services.gold import gold_mark

    lead = make_user("lead")
    project = make_project(members=[lead])
    images = [make_image(project, seed=i) for i in range(4)]
    gold_mark(project=project, images=[im.pk for im in images[:2]], user=lead, value="normal")
    positive = project.positive_class
    gold_mark(project=project, images=[images[2].pk], user=lead, value=positive)
    people = [make_user("annotator") for _ in range(3)]
    rng = random.Random(5)
    now = timezone.now()
    for _ in range(150):
        when = now - timedelta(hours=rng.randint(0, 24 * (HISTORY_DAYS + 6)))
        with mock.patch("django.utils.timezone.now", return_value=when):
            answer = Label.objects.create(
                project=project,
                image=rng.choice(images),  # images[3] is no gold item: not judged
                annotator=rng.choice(people),
                value=rng.choice(["normal", positive]),
                strategy=Strategy.GOLD,
            )
            if rng.random() < 0.1:  # undone: no longer an answer
                Label.objects.create(
                    project=project,
                    image=answer.image,
                    annotator=answer.annotator,
                    kind=KINDS.RETRACTION,
                    supersedes=answer,
                )
    # A corrected gold item re-judges every answer to it.
    gold_mark(project=project, images=[images[1].pk], user=lead, value=positive)

    truth = {im.pk: v for im, v in zip(images[:3], ["normal", positive, positive])}
    since = timezone.localdate() - timedelta(days=HISTORY_DAYS - 1)
    expected: dict = {}
    undone = set(Label.objects.filter(kind=KINDS.RETRACTION).values_list("supersedes", flat=True))
    for person in people:
        answers = [
            lab
            for lab in Label.objects.filter(project=project, annotator=person, strategy="gold")
            if lab.pk not in undone and lab.image_id in truth
        ]
        if not answers:
            continue

        def rate(rows):
            return _rate(sum(r.value == truth[r.image_id] for r in rows), len(rows))

        days = sorted({timezone.localtime(r.created_at).date() for r in answers})
        expected[person.pk] = {
            **rate(answers),
            "per_class": {
                value: rate([r for r in answers if truth[r.image_id] == value])
                for value in sorted(set(truth.values()))
                if any(truth[r.image_id] == value for r in answers)
            },
            "days": [
                {
                    "day": day.isoformat(),
                    **rate([r for r in answers if timezone.localtime(r.created_at).date() == day]),
                }
                for day in days
                if day >= since
            ],
        }
    assert len(expected) == 3
    assert gold_accuracy(project=project) == expected
