"""The current-label table (labeling.models.CurrentLabel) kept by the trigger of migration 0011
agrees with the Python rule (labeling.selectors.labels.current_labels) on every image, through
votes, ties, imports, undo, a lead's corrections and confirmations, and answers to gold items."""

from __future__ import annotations

import random

import pytest
from django.db import connection

from labeling.models import CurrentLabel, Label, Strategy
from labeling.selectors import current_sql
from labeling.selectors.labels import current_labels
from tests.factories import make_image, make_project, make_user

pytestmark = pytest.mark.django_db


def _table(project) -> dict[int, str]:
    return dict(CurrentLabel.objects.filter(project=project).values_list("image_id", "value"))


def _random_histories(project, images, people, lead, rng):
    for _step in range(400):
        image = rng.choice(images)
        active = list(
            Label.objects.filter(image=image, superseded_by__isnull=True).exclude(
                kind=Label.Kind.RETRACTION
            )
        )
        move = rng.random()
        value = rng.choice(["normal", "positive"])
        if move < 0.5:
            Label.objects.create(
                project=project, image=image, annotator=rng.choice(people), value=value
            )
        elif move < 0.6:
            Label.objects.create(
                project=project,
                image=image,
                annotator=rng.choice(people),
                value=value,
                kind=Label.Kind.IMPORTED,
            )
        elif move < 0.7:
            Label.objects.create(
                project=project,
                image=image,
                annotator=rng.choice(people),
                value=value,
                strategy=Strategy.GOLD,
            )
        elif active and move < 0.8:
            Label.objects.create(
                project=project,
                image=image,
                annotator=lead,
                kind=Label.Kind.RETRACTION,
                supersedes=rng.choice(active),
            )
        elif active and move < 0.9:
            Label.objects.create(
                project=project,
                image=image,
                annotator=lead,
                value=value,
                kind=Label.Kind.CORRECTION,
                supersedes=rng.choice(active),
            )
        else:
            Label.objects.create(
                project=project,
                image=image,
                annotator=lead,
                value=value,
                kind=Label.Kind.CONFIRMATION,
            )


def test_the_trigger_keeps_the_rule_of_current_labels():
    project = make_project()
    other = make_project()
    images = [make_image(project, seed=i) for i in range(25)]
    people = [make_user("annotator") for _ in range(4)]
    lead = make_user("lead")
    _random_histories(project, images, people, lead, random.Random(11))
    unlabeled = make_image(project, seed=100)
    gold_only = make_image(project, seed=101)
    Label.objects.create(
        project=project,
        image=gold_only,
        annotator=people[0],
        value="positive",
        strategy=Strategy.GOLD,
    )
    expected = current_labels(project=project)
    assert len(expected) > 10
    assert unlabeled.pk not in expected and gold_only.pk not in expected
    assert _table(project) == expected
    assert not CurrentLabel.objects.filter(project=other).exists()
    # Each row carries its image's split.
    for row in CurrentLabel.objects.filter(project=project).select_related("image"):
        assert row.split == row.image.split


def test_the_backfill_computes_the_same_rows_as_the_trigger():
    project = make_project()
    images = [make_image(project, seed=i) for i in range(15)]
    people = [make_user("annotator") for _ in range(3)]
    _random_histories(project, images, people, make_user("lead"), random.Random(5))
    by_trigger = _table(project)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM labeling_currentlabel")
        cursor.execute(current_sql.BACKFILL_SQL)
    assert _table(project) == by_trigger == current_labels(project=project)


def test_a_tie_goes_to_the_value_labeled_last_and_undo_takes_it_back():
    project = make_project()
    image = make_image(project, seed=1)
    first, second = make_user("annotator"), make_user("annotator")
    Label.objects.create(project=project, image=image, annotator=first, value="normal")
    last = Label.objects.create(project=project, image=image, annotator=second, value="positive")
    assert _table(project) == {image.pk: "positive"}
    Label.objects.create(
        project=project,
        image=image,
        annotator=second,
        kind=Label.Kind.RETRACTION,
        supersedes=last,
    )
    assert _table(project) == {image.pk: "normal"} == current_labels(project=project)
