"""The annotators' pages through Django's test client: login/logout, home, project page, the
single-image and grid shells, and who may open which."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from tests.factories import PASSWORD, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    annotator = make_user("annotator")
    lead = make_user("lead")
    engineer = make_user("site_engineer")
    project = make_project(members=[annotator, lead], name="Gross products")
    other_project = make_project(name="Somebody else's")
    queue = make_queue(project, name="Main labeling")
    review = make_queue(project, kind="review", name="Noise re-review")
    return {
        "annotator": annotator,
        "lead": lead,
        "engineer": engineer,
        "project": project,
        "other_project": other_project,
        "queue": queue,
        "review": review,
        "other_queue": make_queue(other_project),
    }


def page_config(response) -> dict:
    match = re.search(
        r'<script id="labeling-config" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match, "the page carries its configuration"
    return json.loads(match.group(1))


def test_login_page_signs_in_and_logout_says_so(client, world):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="username"' in page.content and b"csrfmiddlewaretoken" in page.content
    wrong = client.post(
        reverse("login"), {"username": world["annotator"].username, "password": "nope"}
    )
    assert wrong.status_code == 200
    assert b"errorlist" in wrong.content
    response = client.post(
        reverse("login"), {"username": world["annotator"].username, "password": PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == reverse("home")
    out = client.post(reverse("logout"))
    assert out.status_code == 302
    assert out["Location"] == reverse("login") + "?signed_out=1"
    landing = client.get(out["Location"])
    assert b"You are signed out" in landing.content
    assert client.get(reverse("home")).status_code == 302  # really signed out


def test_anonymous_visitors_go_to_the_login_page(client, world):
    for url in (
        reverse("home"),
        reverse("project-detail", args=[world["project"].slug]),
        reverse("queue-annotate", args=[world["project"].slug, world["queue"].pk]),
        reverse("queue-grid", args=[world["project"].slug, world["queue"].pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_home_lists_only_the_annotators_projects_and_labeling_queues(client, world):
    client.force_login(world["annotator"])
    html = client.get(reverse("home")).content.decode()
    assert "Gross products" in html
    assert "Somebody else" not in html
    assert "Main labeling" in html
    assert "Noise re-review" not in html
    # Annotators' navigation has no lead or engineer areas.
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', html, re.S).group(1)
    assert "Projects" in nav
    assert "Users" not in nav and "API docs" not in nav


def test_leads_see_review_queues_and_engineers_see_every_project(client, world):
    client.force_login(world["lead"])
    html = client.get(reverse("home")).content.decode()
    assert "Noise re-review" in html
    client.force_login(world["engineer"])
    html = client.get(reverse("home")).content.decode()
    assert "Gross products" in html and "Somebody else" in html
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', html, re.S).group(1)
    assert reverse("users") in nav
    assert reverse("api-docs") in nav


def test_project_page_shows_queues_keys_and_own_throughput(client, world):
    client.force_login(world["annotator"])
    response = client.get(reverse("project-detail", args=[world["project"].slug]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Main labeling" in html and "Noise re-review" not in html
    assert "labels by you" in html
    assert "<kbd>a</kbd>" in html  # the sub-category hotkeys are listed
    other = client.get(reverse("project-detail", args=[world["other_project"].slug]))
    assert other.status_code == 404


def test_single_image_page_configures_the_labeling_script(client, world):
    client.force_login(world["annotator"])
    url = reverse("queue-annotate", args=[world["project"].slug, world["queue"].pk])
    response = client.get(url)
    assert response.status_code == 200
    config = page_config(response)
    assert config["queueId"] == world["queue"].pk
    assert config["urls"]["next"] == reverse("api-queue-next", args=[world["queue"].pk])
    assert config["urls"]["submit"] == reverse("api-lease-submit", args=[0])
    assert config["schema"]["positive"] == "disgusting"
    assert [s["hotkey"] for s in config["schema"]["subcategories"]] == ["a", "h", "o"]
    assert config["blurDefault"] is True
    html = response.content.decode()
    assert 'data-hotkey="a"' in html and 'id="help"' in html and 'id="save-state"' in html
    assert "labeling/annotate.js" in html


def test_grid_page_configures_the_page_size_and_default_class(client, world):
    client.force_login(world["annotator"])
    url = reverse("queue-grid", args=[world["project"].slug, world["queue"].pk])
    response = client.get(url)
    assert response.status_code == 200
    config = page_config(response)
    assert config["pageSize"] == 24
    assert config["schema"]["default"] == "normal"
    assert config["urls"]["batch"] == reverse("api-queue-submit-batch", args=[world["queue"].pk])
    assert "labeling/grid.js" in response.content.decode()


@pytest.mark.authz
@pytest.mark.parametrize("name", ["queue-annotate", "queue-grid"])
def test_labeling_pages_refuse_review_queues_and_other_projects(client, world, name):
    slug = world["project"].slug
    client.force_login(world["annotator"])
    assert client.get(reverse(name, args=[slug, world["review"].pk])).status_code == 403
    other = world["other_project"]
    assert client.get(reverse(name, args=[other.slug, world["other_queue"].pk])).status_code == 404
    # A queue id of another project under this project's slug is not found either.
    assert client.get(reverse(name, args=[slug, world["other_queue"].pk])).status_code == 404
    client.force_login(world["lead"])
    assert client.get(reverse(name, args=[slug, world["review"].pk])).status_code == 200


@pytest.mark.authz
def test_a_user_without_a_role_sees_no_projects(client, world):
    nobody = make_user(None)
    world["project"].members.add(nobody)
    client.force_login(nobody)
    html = client.get(reverse("home")).content.decode()
    assert "no role yet" in html
    assert "Gross products" not in html
    url = reverse("queue-annotate", args=[world["project"].slug, world["queue"].pk])
    assert client.get(url).status_code == 404
