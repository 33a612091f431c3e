"""Agreement between annotators (issue 9, item 8): Cohen's kappa per pair, per annotator the mean
kappa and the share against the majority, Fleiss' kappa, the disagreements and their re-review.

The example below is small enough to work out by hand (the figures in the comments), and the
same figures come back from the libraries. Gold answers and undone labels are left out.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from labeling.models import Label, Queue, QueueItem, Strategy
from labeling.selectors.agreement import agreement, cohen_kappa, fleiss, majority
from labeling.services.agreement import disagreements_queue
from tests.factories import PASSWORD, make_image, make_project, make_user

pytestmark = pytest.mark.django_db

D, N = "disgusting", "normal"
# Six items, three annotators (overlap k = 3).
VOTES = {
    "a": [D, D, D, N, N, N],
    "b": [D, D, N, N, N, D],
    "c": [D, N, D, N, N, N],
}


def _label(project, image, user, value, **extra):
    return Label.objects.create(
        project=project,
        image=image,
        annotator=user,
        kind=Label.Kind.ANNOTATION,
        value=value,
        strategy=extra.pop("strategy", Strategy.MANUAL),
        **extra,
    )


@pytest.fixture
def world():
    lead = make_user("lead")
    people = {name: make_user("annotator", username=f"agr-{name}") for name in VOTES}
    stray = make_user("annotator", username="agr-d")
    project = make_project(members=[lead, stray, *people.values()], labels_per_item=3)
    images = [make_image(project) for _ in range(7)]
    for name, values in VOTES.items():
        for image, value in zip(images, values, strict=False):
            _label(project, image, people[name], value)
    # Left out: a's later answer to image 1 as a gold item (strategy gold), d's undone label on
    # image 4 (superseded by a retraction), and image 7 with a single vote.
    _label(project, images[0], people["a"], N, strategy=Strategy.GOLD)
    undone = _label(project, images[3], stray, D)
    Label.objects.create(
        project=project,
        image=images[3],
        annotator=stray,
        kind=Label.Kind.RETRACTION,
        value="",
        supersedes=undone,
    )
    _label(project, images[6], people["a"], D)
    return {"lead": lead, "people": people, "stray": stray, "project": project, "images": images}


def test_kappas_match_the_hand_computed_figures_and_the_libraries(world):
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    result = agreement(project=world["project"])
    assert result["shared_items"] == 6  # image 7 has one vote; d's vote was undone
    pairs = {(p["annotator_a"], p["annotator_b"]): p for p in result["pairs"]}
    assert set(pairs) == {("agr-a", "agr-b"), ("agr-a", "agr-c"), ("agr-b", "agr-c")}
    # a-b: same on 4 of 6 (po 2/3); each says D three times (pe 1/2): (2/3 - 1/2) / (1/2) = 1/3.
    # a-c: same on 5 of 6 (po 5/6); pe = 1/2 * 2/6 + 1/2 * 4/6 = 1/2: kappa 2/3.
    # b-c: same on 3 of 6 (po 1/2); pe 1/2: kappa 0.
    expected = {("agr-a", "agr-b"): 1 / 3, ("agr-a", "agr-c"): 2 / 3, ("agr-b", "agr-c"): 0.0}
    agreed = {("agr-a", "agr-b"): 4, ("agr-a", "agr-c"): 5, ("agr-b", "agr-c"): 3}
    for key, kappa in expected.items():
        first, second = (VOTES[name.removeprefix("agr-")] for name in key)
        assert pairs[key]["items"] == 6
        assert pairs[key]["agreed"] == agreed[key]
        assert pairs[key]["kappa"] == pytest.approx(kappa, abs=1e-4)
        assert pairs[key]["kappa"] == pytest.approx(cohen_kappa_score(first, second), abs=1e-4)
    people = {row["username"]: row for row in result["annotators"]}
    # Mean kappa: a (1/3 + 2/3) / 2, b (1/3 + 0) / 2, c (2/3 + 0) / 2.
    assert people["agr-a"]["mean_kappa"] == pytest.approx(0.5, abs=1e-4)
    assert people["agr-b"]["mean_kappa"] == pytest.approx(1 / 6, abs=1e-4)
    assert people["agr-c"]["mean_kappa"] == pytest.approx(1 / 3, abs=1e-4)
    # Majorities D D D N N N: b is against it on images 3 and 6, c on image 2, a never.
    assert [people[n]["against_majority"] for n in ("agr-a", "agr-b", "agr-c")] == [0, 2, 1]
    assert people["agr-b"]["against_majority_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert people["agr-a"]["majority_items"] == 6
    assert "agr-d" not in people
    # Fleiss over the 6 items with 3 votes: P-bar = (1 + 1/3 + 1/3 + 1 + 1 + 1/3) / 6 = 2/3,
    # p(D) = 8/18, p(N) = 10/18, Pe = 41/81: (2/3 - 41/81) / (1 - 41/81) = 13/40.
    assert result["fleiss"] == {"k": 3, "items": 6, "kappa": pytest.approx(0.325, abs=1e-4)}
    table, _cats = aggregate_raters(list(zip(*VOTES.values(), strict=True)))
    assert result["fleiss"]["kappa"] == pytest.approx(fleiss_kappa(table), abs=1e-4)
    # Disagreements: images 2, 3 and 6, newest first, with every vote by name.
    images = world["images"]
    assert result["disagreement_count"] == 3
    rows = result["disagreements"]
    assert [row["image"] for row in rows] == [images[5].pk, images[2].pk, images[1].pk]
    assert rows[-1]["votes"] == {"agr-a": D, "agr-b": D, "agr-c": N}
    assert rows[-1]["current"] == D
    assert rows[-1]["review_item"] is None


def test_the_page_lists_the_pairs_that_agree_least_and_the_newest_disagreements(world, client):
    """The quality page caps both tables (PAIRS_ON_PAGE, DISAGREEMENTS_ON_PAGE) and says so;
    here with caps of one: the pair kept is b-c (kappa 0, the lowest), the disagreement kept
    the newest (image 6), while the counts still cover everything."""
    result = agreement(project=world["project"], pairs_limit=1, disagreements_limit=1)
    assert result["pair_count"] == 3
    assert [(p["annotator_a"], p["annotator_b"]) for p in result["pairs"]] == [("agr-b", "agr-c")]
    assert result["disagreement_count"] == 3
    assert [row["image"] for row in result["disagreements"]] == [world["images"][5].pk]
    # Uncapped (the API), every pair and disagreement.
    assert len(agreement(project=world["project"])["pairs"]) == 3

    from labeling.selectors import agreement as module

    client.force_login(world["lead"])
    url = reverse("project-quality-agreement", args=[world["project"].slug]) + "?part=section"
    assert 'id="agreement-pairs-shown"' not in client.get(url).content.decode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("labeling.views.quality.PAIRS_ON_PAGE", 1)
        patch.setattr("labeling.views.quality.DISAGREEMENTS_ON_PAGE", 1)
        html = client.get(url).content.decode()
    assert module.PAIRS_ON_PAGE == 50
    assert 'id="agreement-pairs-shown"' in html and 'id="disagreements-shown"' in html
    assert 'data-pair="agr-b|agr-c"' in html and 'data-pair="agr-a|agr-b"' not in html


def test_undefined_kappa_and_no_majority():
    assert cohen_kappa([D, D, D], [D, D, D]) is None  # pe = 1: 0 / 0
    assert cohen_kappa([], []) is None
    assert cohen_kappa([D, N], [N, D]) == pytest.approx(-1.0)
    assert fleiss([[D, D], [D, D]]) is None
    assert majority([D, N]) is None
    assert majority([D, N, D]) == D


def test_overlap_one_uses_the_commonest_vote_count(world):
    project = world["project"]
    project.labels_per_item = 1
    project.save(update_fields=["labels_per_item"])
    assert agreement(project=project)["fleiss"]["k"] == 3


def test_disagreements_go_to_the_review_queue_once(world):
    project, lead = world["project"], world["lead"]
    assert disagreements_queue(project=project, lead=lead) == {
        "disagreements": 3,
        "added": 3,
        "already_queued": 0,
    }
    items = QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.REVIEW)
    assert sorted(items.values_list("image_id", flat=True)) == sorted(
        world["images"][i].pk for i in (1, 2, 5)
    )
    item = items.get(image=world["images"][1])
    assert item.details == {"reason": "disagreement", "votes": {"agr-a": D, "agr-b": D, "agr-c": N}}
    assert disagreements_queue(project=project, lead=lead)["already_queued"] == 3
    rows = {row["image"]: row for row in agreement(project=project)["disagreements"]}
    assert rows[world["images"][1].pk]["review_item"] == item.pk


def test_quality_page_shows_the_tables_and_links_to_review(client, world):
    project = world["project"]
    client.login(username=world["lead"].username, password=PASSWORD)
    page = client.get(reverse("project-quality", kwargs={"slug": project.slug}))
    assert page.status_code == 200
    # The page answers first; its agreement section comes from its own URL, which the page names
    # (static/labeling/quality_agreement.js fetches it), and stands as a page on its own too.
    section = reverse("project-quality-agreement", kwargs={"slug": project.slug})
    assert f'data-url="{section}?part=section"' in page.content.decode()
    html = client.get(section + "?part=section").content.decode()
    assert html.lstrip().startswith('<section id="agreement"')
    assert 'id="agreement-pairs"' in html and 'data-pair="agr-a|agr-b"' in html
    assert "0.325" in html and "0.333" in html
    assert 'id="disagreements"' in html
    alone = client.get(section).content.decode()
    assert "<html" in alone and 'id="agreement-pairs"' in alone
    response = client.post(reverse("project-disagreements-queue", kwargs={"slug": project.slug}))
    assert response.status_code == 302
    html = client.get(section + "?part=section").content.decode()
    item = QueueItem.objects.get(queue__kind=Queue.Kind.REVIEW, image=world["images"][1])
    link = reverse("project-review", kwargs={"slug": project.slug}) + f"?item={item.pk}"
    assert f'href="{link}"' in html
    review = client.get(link)
    assert review.status_code == 200
    resolve = reverse("project-review-resolve", kwargs={"slug": project.slug, "pk": item.pk})
    assert resolve in review.content.decode()


def test_api_for_leads_not_annotators(client, world):
    project = world["project"]
    url = reverse("api-quality-agreement", kwargs={"slug": project.slug})
    queue_url = reverse("api-quality-disagreements-queue", kwargs={"slug": project.slug})
    annotator = Token.objects.create(user=world["people"]["a"])
    auth = {"HTTP_AUTHORIZATION": f"Token {annotator.key}"}
    assert client.get(url, **auth).status_code == 403
    assert client.post(queue_url, **auth).status_code == 403
    client.login(username=world["people"]["a"].username, password=PASSWORD)
    page = client.get(reverse("project-quality", kwargs={"slug": project.slug}))
    assert page.status_code == 403
    client.logout()
    lead = Token.objects.create(user=world["lead"])
    auth = {"HTTP_AUTHORIZATION": f"Token {lead.key}"}
    data = client.get(url, **auth).json()
    assert data["fleiss"]["kappa"] == pytest.approx(0.325, abs=1e-4)
    assert data["shared_items"] == 6 and data["disagreement_count"] == 3
    assert {p["annotator_a"] + p["annotator_b"]: p["kappa"] for p in data["pairs"]}[
        "agr-bagr-c"
    ] == pytest.approx(0.0)
    assert client.post(queue_url, **auth).json() == {
        "disagreements": 3,
        "added": 3,
        "already_queued": 0,
    }
