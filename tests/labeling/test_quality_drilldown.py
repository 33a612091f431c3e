"""The quality page's drill-down (issue 9, item 9): from an annotator's row to their flagged,
overturned and gold-failed items, each with the image, their answer, the correct answer and
when; the lists agree with the figures of the rows they open from, and show no one else's."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from labeling.selectors.annotator_items import annotator_items
from labeling.selectors.labels import annotator_quality
from labeling.selectors.quality import annotator_checks
from tests.factories import make_project, make_user
from tests.labeling.drilldown_world import D, N, drilldown_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return drilldown_world()


def test_lists_hold_the_right_items_and_agree_with_the_quality_rows(world):
    project, ann = world["project"], world["ann"]
    lists = annotator_items(project=project, annotator=ann)
    gold_failed = {
        row["image_id"]: (row["answer"], row["correct"]) for row in lists["gold_failed"]["items"]
    }
    first, second, _third = world["gold_images"]
    assert gold_failed == {first.pk: (N, D), second.pk: (D, N)}
    overturned = lists["overturned"]["items"]
    assert [(r["image_id"], r["answer"], r["correct"], r["decided_by"]) for r in overturned] == [
        (world["overturned"].pk, N, D, "drill-lead")
    ]
    flagged = {row["image_id"]: row for row in lists["flagged"]["items"]}
    # Both images went to re-review; only one is decided (the other has no correct answer yet).
    assert set(flagged) == {world["overturned"].pk, world["flagged"].pk}
    assert flagged[world["flagged"].pk]["correct"] is None
    assert flagged[world["flagged"].pk]["o2u_rank"] == 2
    assert flagged[world["overturned"].pk]["correct"] == D
    # The page's figures: the same counts.
    row = next(r for r in annotator_quality(project=project) if r["annotator_id"] == ann.pk)
    assert (row["flagged"], row["overturned"]) == (
        lists["flagged"]["total"],
        lists["overturned"]["total"],
    )
    check = next(r for r in annotator_checks(project=project) if r["annotator_id"] == ann.pk)
    assert check["gold"]["answers"] - check["gold"]["correct"] == lists["gold_failed"]["total"]
    # Bob's wrong gold answer is his own.
    bob_lists = annotator_items(project=project, annotator=world["bob"])
    assert [r["image_id"] for r in bob_lists["gold_failed"]["items"]] == [_third.pk]


def test_page_from_the_row_link_shows_image_answers_and_time(world):
    project, ann, lead = world["project"], world["ann"], world["lead"]
    client = Client()
    client.force_login(lead)
    quality = client.get(reverse("project-quality", kwargs={"slug": project.slug})).content.decode()
    url = reverse("project-quality-annotator", kwargs={"slug": project.slug, "pk": ann.pk})
    assert f'href="{url}"' in quality
    page = client.get(url).content.decode()
    first = world["gold_images"][0]
    assert f'data-image="{first.pk}"' in page
    assert reverse("image-thumb", kwargs={"pk": first.pk}) in page
    assert "Gold items answered wrongly: 2" in page
    assert "Overturned by a lead: 1" in page and "Flagged for re-review (O2U): 2" in page
    assert "not decided yet" in page and "<time datetime=" in page
    # Annotators never reach it (gold stays invisible to them); a stranger is not found.
    annotator = Client()
    annotator.force_login(ann)
    assert annotator.get(url).status_code == 403
    stranger = make_user("annotator")
    make_project(members=[stranger])
    other = reverse("project-quality-annotator", kwargs={"slug": project.slug, "pk": stranger.pk})
    assert client.get(other).status_code == 404


def test_api_gives_the_same_lists_to_leads_only(world):
    from rest_framework.test import APIClient

    project, ann = world["project"], world["ann"]
    url = reverse("api-quality-annotator-items", kwargs={"slug": project.slug, "pk": ann.pk})
    client = APIClient()
    client.force_authenticate(world["lead"])
    body = client.get(url).json()
    assert body["username"] == "drill-ann"
    assert body["gold_failed"]["total"] == 2 and body["overturned"]["total"] == 1
    first = world["gold_images"][0]
    row = next(r for r in body["gold_failed"]["items"] if r["image_id"] == first.pk)
    assert (row["answer"], row["correct"]) == (N, D)
    assert row["image_url"] == reverse("image-file", kwargs={"pk": first.pk})
    undecided = next(r for r in body["flagged"]["items"] if r["image_id"] == world["flagged"].pk)
    assert undecided["correct"] is None and undecided["o2u_rank"] == 2
    annotator = APIClient()
    annotator.force_authenticate(ann)
    assert annotator.get(url).status_code == 403
