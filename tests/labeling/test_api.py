"""The core REST API against the real database: scoping, role rules, filters, users' roles."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from labeling.models import Label, ModelVersion, Project, QueueItem, Score
from labeling.roles import Role, user_role
from tests.factories import PASSWORD, make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def world():
    annotator = make_user("annotator")
    lead = make_user("lead")
    engineer = make_user("site_engineer")
    own = make_project(members=[annotator, lead])
    other = make_project()
    return {
        "annotator": annotator,
        "lead": lead,
        "engineer": engineer,
        "own": own,
        "other": other,
    }


def label(image, user, value, **extra):
    return Label.objects.create(
        project=image.project, image=image, annotator=user, value=value, **extra
    )


# --- Projects ---------------------------------------------------------------------------------
def test_project_list_is_scoped_to_membership(world):
    slugs = lambda user: [  # noqa: E731
        p["slug"] for p in client_for(user).get("/api/v1/projects/").json()["results"]
    ]
    assert slugs(world["annotator"]) == [world["own"].slug]
    assert slugs(world["lead"]) == [world["own"].slug]
    assert set(slugs(world["engineer"])) == {world["own"].slug, world["other"].slug}
    assert client_for().get("/api/v1/projects/").status_code in (401, 403)


def test_other_projects_detail_is_404_for_members_of_another(world):
    url = f"/api/v1/projects/{world['other'].slug}/"
    assert client_for(world["annotator"]).get(url).status_code == 404
    assert client_for(world["engineer"]).get(url).status_code == 200


def test_engineer_creates_project_and_bad_schema_is_a_clear_400(world):
    client = client_for(world["engineer"])
    schema = {
        "classes": [{"key": "ok", "name": "OK"}, {"key": "bug", "name": "Bug"}],
        "positive": "bug",
    }
    response = client.post(
        "/api/v1/projects/create/",
        {"name": "Bugs", "slug": "bugs", "label_schema": schema},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Project.objects.get(slug="bugs").label_schema["positive"] == "bug"

    bad = {"classes": [{"key": "only"}], "positive": "only"}
    response = client.post(
        "/api/v1/projects/create/",
        {"name": "Bad", "slug": "bad", "label_schema": bad},
        format="json",
    )
    assert response.status_code == 400
    assert "at least two classes" in str(response.json())
    assert not Project.objects.filter(slug="bad").exists()

    response = client.post("/api/v1/projects/create/", {"name": "X", "slug": "create"})
    assert response.status_code == 400 and "reserved" in str(response.json())


def test_lead_cannot_create_or_update_projects(world):
    client = client_for(world["lead"])
    assert client.post("/api/v1/projects/create/", {"name": "A", "slug": "a"}).status_code == 403
    url = f"/api/v1/projects/{world['own'].slug}/update/"
    assert client.patch(url, {"name": "renamed"}, format="json").status_code == 403
    world["own"].refresh_from_db()
    assert world["own"].name != "renamed"


def test_update_refuses_dropping_a_class_that_labels_use(world):
    project = world["own"]
    image = make_image(project)
    label(image, world["annotator"], "disgusting")
    schema = {
        "classes": [{"key": "normal", "name": "N"}, {"key": "fine", "name": "F"}],
        "positive": "fine",
    }
    url = f"/api/v1/projects/{project.slug}/update/"
    response = client_for(world["engineer"]).patch(url, {"label_schema": schema}, format="json")
    assert response.status_code == 400
    assert "disgusting" in str(response.json())
    project.refresh_from_db()
    assert "disgusting" in project.class_keys

    response = client_for(world["engineer"]).patch(
        url, {"name": "Renamed", "labels_per_item": 3}, format="json"
    )
    assert response.status_code == 200
    project.refresh_from_db()
    assert (project.name, project.labels_per_item) == ("Renamed", 3)


# --- Images -----------------------------------------------------------------------------------
@pytest.fixture
def scored(world):
    project = world["own"]
    images = [make_image(project) for _ in range(4)]
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    for image, value in zip(images, [0.1, 0.4, 0.7, 0.95]):
        Score.objects.create(image=image, model_version=version, stage1=value, score=value)
    project.active_model_version = version
    project.save()
    label(images[2], world["annotator"], "disgusting")
    label(images[3], world["annotator"], "normal")
    return {"images": images, "version": version}


def test_annotator_sees_no_scores_or_labels_and_cannot_filter_by_them(world, scored):
    client = client_for(world["annotator"])
    url = f"/api/v1/projects/{world['own'].slug}/images/"
    rows = client.get(url).json()["results"]
    assert len(rows) == 4
    assert all("score" not in row and "current_label" not in row for row in rows)
    for query in ("min_score=0.5", "label=normal", "labeled=true", "model_version=1"):
        response = client.get(f"{url}?{query}")
        assert response.status_code == 403, query


def test_lead_filters_by_score_range_and_label(world, scored):
    client = client_for(world["lead"])
    url = f"/api/v1/projects/{world['own'].slug}/images/"
    ids = lambda q: [r["id"] for r in client.get(f"{url}?{q}").json()["results"]]  # noqa: E731
    images = scored["images"]
    assert ids("min_score=0.3&max_score=0.8") == [images[1].pk, images[2].pk]
    assert ids("label=disgusting") == [images[2].pk]
    assert ids("labeled=false") == [images[0].pk, images[1].pk]
    row = client.get(f"{url}?label=normal").json()["results"][0]
    assert row["score"] == pytest.approx(0.95) and row["current_label"] == "normal"


def test_image_filters_reject_unknown_repeated_and_invalid_parameters(world, scored):
    client = client_for(world["engineer"])
    url = f"/api/v1/projects/{world['own'].slug}/images/"
    for query, name in [
        ("splt=pool", "splt"),
        ("label__annotator__username=x", "label__annotator__username"),
        ("split=pool&split=validation", "split"),
        ("min_score=nan", "min_score"),
        ("min_score=0.9&max_score=0.1", "min_score"),
        ("label=cat", "label"),
        ("split=train", "split"),
        ("queue=999999", "queue"),
    ]:
        response = client.get(f"{url}?{query}")
        assert response.status_code == 400, query
        assert name in response.json(), (query, response.json())


def test_score_filter_without_any_model_version_is_400(world):
    make_image(world["own"])
    url = f"/api/v1/projects/{world['own'].slug}/images/?min_score=0.5"
    response = client_for(world["lead"]).get(url)
    assert response.status_code == 400 and "model_version" in response.json()


def test_queue_filter_and_review_queue_is_for_leads(world):
    project = world["own"]
    in_queue, _ = make_image(project), make_image(project)
    labeling = make_queue(project)
    review = make_queue(project, kind="review")
    QueueItem.objects.create(queue=labeling, image=in_queue)
    url = f"/api/v1/projects/{project.slug}/images/"
    rows = client_for(world["annotator"]).get(f"{url}?queue={labeling.pk}").json()["results"]
    assert [r["id"] for r in rows] == [in_queue.pk]
    assert client_for(world["annotator"]).get(f"{url}?queue={review.pk}").status_code == 403
    assert client_for(world["lead"]).get(f"{url}?queue={review.pk}").status_code == 200
    other_queue = make_queue(world["other"])
    assert client_for(world["engineer"]).get(f"{url}?queue={other_queue.pk}").status_code == 400


def test_image_detail_has_history_for_leads_only(world, scored):
    image = scored["images"][2]
    first = Label.objects.get(image=image)
    label(image, world["lead"], "normal", kind=Label.Kind.CORRECTION, supersedes=first)
    url = f"/api/v1/images/{image.pk}/"
    body = client_for(world["lead"]).get(url).json()
    assert [h["value"] for h in body["history"]] == ["disgusting", "normal"]
    assert body["history"][1]["supersedes"] == first.pk
    assert body["current_label"] == "normal"
    assert body["scores"][0]["score"] == pytest.approx(0.7)
    assert client_for(world["annotator"]).get(url).status_code == 403

    foreign = make_image(world["other"])
    assert client_for(world["lead"]).get(f"/api/v1/images/{foreign.pk}/").status_code == 404
    assert client_for(world["engineer"]).get(f"/api/v1/images/{foreign.pk}/").status_code == 200


def test_model_versions_for_leads(world, scored):
    url = f"/api/v1/projects/{world['own'].slug}/model-versions/"
    rows = client_for(world["lead"]).get(url).json()["results"]
    assert [(r["name"], r["is_active"]) for r in rows] == [("v1", True)]
    assert client_for(world["annotator"]).get(url).status_code == 403


# --- Auth, schema, docs -----------------------------------------------------------------------
def test_token_obtain_and_use(world):
    anonymous = APIClient()
    response = anonymous.post(
        "/api/v1/auth/token/", {"username": world["annotator"].username, "password": PASSWORD}
    )
    assert response.status_code == 200
    token = response.json()["token"]
    wrong = anonymous.post(
        "/api/v1/auth/token/", {"username": world["annotator"].username, "password": "nope"}
    )
    assert wrong.status_code == 400
    with_token = APIClient()
    with_token.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert with_token.get("/api/v1/projects/").json()["count"] == 1


def test_schema_and_offline_docs_page(world):
    client = client_for(world["annotator"])
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for expected in (
        "/api/v1/projects/",
        "/api/v1/projects/{slug}/images/",
        "/api/v1/projects/{slug}/labels/export/",
        "/api/v1/users/{id}/role/",
    ):
        assert expected in paths
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    # The Swagger UI assets come from the local sidecar package, not from a CDN.
    assert "drf_spectacular_sidecar/swagger-ui-dist" in html
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html


# --- Users' roles -----------------------------------------------------------------------------
def test_engineer_sets_roles_and_membership(world):
    client = client_for(world["engineer"])
    person = world["annotator"]
    response = client.post(f"/api/v1/users/{person.pk}/role/", {"role": "lead"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "lead"
    assert user_role(User.objects.get(pk=person.pk)) == Role.LEAD

    response = client.put(
        f"/api/v1/users/{person.pk}/projects/",
        {"projects": [world["other"].slug]},
        format="json",
    )
    assert response.status_code == 200 and response.json()["projects"] == [world["other"].slug]
    assert list(person.projects.all()) == [world["other"]]

    response = client.put(
        f"/api/v1/users/{person.pk}/projects/", {"projects": ["no-such"]}, format="json"
    )
    assert response.status_code == 400
    assert list(person.projects.all()) == [world["other"]]

    response = client.post(f"/api/v1/users/{person.pk}/role/", {"role": "boss"}, format="json")
    assert response.status_code == 400


def test_engineer_cannot_demote_themselves_and_leads_cannot_set_roles(world):
    engineer = world["engineer"]
    response = client_for(engineer).post(
        f"/api/v1/users/{engineer.pk}/role/", {"role": "annotator"}, format="json"
    )
    assert response.status_code == 400 and "own site-wide engineer role" in str(response.json())
    assert user_role(User.objects.get(pk=engineer.pk)) == Role.SITE_ENGINEER
    response = client_for(world["lead"]).post(
        f"/api/v1/users/{world['annotator'].pk}/role/", {"role": "engineer"}, format="json"
    )
    assert response.status_code == 403
    assert user_role(User.objects.get(pk=world["annotator"].pk)) == Role.ANNOTATOR


def test_engineer_creates_user_with_validated_password(world):
    client = client_for(world["engineer"])
    response = client.post(
        "/api/v1/users/create/",
        {"username": "newbie", "password": "123", "role": "annotator"},
        format="json",
    )
    assert response.status_code == 400 and not User.objects.filter(username="newbie").exists()
    response = client.post(
        "/api/v1/users/create/",
        {
            "username": "newbie",
            "password": "long enough passphrase 42",
            "role": "annotator",
            "projects": [world["own"].slug],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["role"] == "annotator"
    assert response.json()["projects"] == [world["own"].slug]
    names = [u["username"] for u in client.get("/api/v1/users/").json()["results"]]
    assert "newbie" in names


# --- The users' page --------------------------------------------------------------------------
def test_users_page_changes_role_and_membership(world, client):
    person = world["annotator"]
    client.force_login(world["engineer"])
    page = client.get("/users/")
    assert page.status_code == 200 and person.username in page.content.decode()
    response = client.post(f"/users/{person.pk}/role/", {"role": "lead"})
    assert response.status_code == 302
    assert user_role(User.objects.get(pk=person.pk)) == Role.LEAD
    client.post(f"/users/{person.pk}/projects/", {"projects": [world["other"].pk]})
    assert list(person.projects.all()) == [world["other"]]
    # A refused change is reported and changes nothing.
    page = client.post(f"/users/{world['engineer'].pk}/role/", {"role": "annotator"}, follow=True)
    assert "cannot remove your own site-wide engineer role" in page.content.decode()
    assert user_role(User.objects.get(pk=world["engineer"].pk)) == Role.SITE_ENGINEER

    client.force_login(world["lead"])
    assert client.get("/users/").status_code == 403
    assert client.post(f"/users/{person.pk}/role/", {"role": "engineer"}).status_code == 403
    assert user_role(User.objects.get(pk=person.pk)) == Role.LEAD
