"""Least privilege for engineers (issue 8, item 7): an engineer who is not site-wide works only
in the projects they are members of, through every door (pages, API, services), cannot make
themselves site-wide or join another project, and the engineers that existed before the split
kept their access (migration 0006). The route-by-route outcomes are in test_authz.py."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import Job, ModelVersion, Project
from labeling.permissions import can_manage, projects_visible_to
from labeling.roles import Role, user_role
from labeling.services.jobs import job_cancel, job_create
from labeling.services.models import model_version_promote, model_version_rollback
from labeling.services.users import user_projects_set, user_role_set
from tests.factories import make_image, make_project, make_user

pytestmark = [pytest.mark.authz, pytest.mark.django_db]


@pytest.fixture
def world():
    engineer = make_user("engineer")
    own = make_project(members=[engineer], name="Own project")
    other = make_project(name="Other project")
    for project in (own, other):
        make_image(project)
        ModelVersion.objects.create(project=project, name="v1", status="ready", checkpoint="x")
        Job.objects.create(project=project, kind=Job.Kind.SCORE_POOL)
    return {"engineer": engineer, "own": own, "other": other}


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def web(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_engineer_sees_only_the_projects_they_belong_to(world):
    engineer, own, other = world["engineer"], world["own"], world["other"]
    assert user_role(engineer) == Role.ENGINEER
    assert list(projects_visible_to(engineer)) == [own]
    assert can_manage(engineer, own) and not can_manage(engineer, other)
    slugs = [p["slug"] for p in api(engineer).get("/api/v1/projects/").json()["results"]]
    assert slugs == [own.slug]
    # The lists of jobs and models name nothing of the other project.
    for url in ("/jobs/", "/models/", "/import/"):
        page = web(engineer).get(url).content.decode()
        assert "Own project" in page and "Other project" not in page, url
    # A site-wide engineer sees both.
    site = make_user("site_engineer")
    assert set(projects_visible_to(site)) == {own, other}


def test_another_projects_pages_api_jobs_exports_and_models_are_closed(world):
    engineer, other = world["engineer"], world["other"]
    job = Job.objects.get(project=other)
    version = ModelVersion.objects.get(project=other)
    slug = other.slug
    client = api(engineer)
    for url in (
        f"/api/v1/projects/{slug}/",
        f"/api/v1/projects/{slug}/images/",
        f"/api/v1/projects/{slug}/jobs/",
        f"/api/v1/jobs/{job.pk}/",
        f"/api/v1/projects/{slug}/labels/export/",
        f"/api/v1/projects/{slug}/model-versions/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 404
    promote = f"/api/v1/projects/{slug}/model-versions/{version.pk}/promote/"
    assert client.post(promote).status_code == 404
    assert client.post(f"/api/v1/projects/{slug}/jobs/create/", {}).status_code == 404
    assert client.post(f"/api/v1/projects/{slug}/model-versions/rollback/").status_code == 404
    pages = web(engineer)
    for url in (f"/projects/{slug}/import/", f"/projects/{slug}/jobs/", f"/jobs/{job.pk}/"):
        assert pages.get(url).status_code == 404, url
    # The services refuse on their own, whoever calls them.
    with pytest.raises(PermissionDenied):
        job_create(project=other, kind=Job.Kind.SCORE_POOL, params={}, created_by=engineer)
    with pytest.raises(PermissionDenied):
        job_cancel(job=job, by=engineer)
    with pytest.raises(PermissionDenied):
        model_version_promote(version=version, by=engineer)
    with pytest.raises(PermissionDenied):
        model_version_rollback(project=other, by=engineer)
    assert Project.objects.get(pk=other.pk).active_model_version_id is None
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED


def test_an_engineer_cannot_make_themselves_site_wide_or_join_a_project(world):
    engineer, other = world["engineer"], world["other"]
    client = api(engineer)
    response = client.post(
        f"/api/v1/users/{engineer.pk}/role/", {"role": "site_engineer"}, format="json"
    )
    assert response.status_code == 403
    response = client.put(
        f"/api/v1/users/{engineer.pk}/projects/",
        {"projects": [world["own"].slug, other.slug]},
        format="json",
    )
    assert response.status_code == 403
    assert (
        web(engineer).post(f"/users/{engineer.pk}/role/", {"role": "site_engineer"}).status_code
        == 403
    )
    with pytest.raises(PermissionDenied):
        user_role_set(user=engineer, role=Role.SITE_ENGINEER, by=engineer)
    with pytest.raises(PermissionDenied):
        user_projects_set(user=engineer, projects=[other], by=engineer)
    fresh = User.objects.get(pk=engineer.pk)
    assert user_role(fresh) == Role.ENGINEER
    assert list(fresh.projects.all()) == [world["own"]]


def test_a_site_wide_engineer_narrows_someone_down(world):
    site = make_user("site_engineer")
    person = make_user("site_engineer")
    user_role_set(user=person, role="engineer", by=site)
    person = User.objects.get(pk=person.pk)
    assert user_role(person) == Role.ENGINEER
    assert not projects_visible_to(person).exists()
    user_projects_set(user=person, projects=[world["other"]], by=site)
    assert list(projects_visible_to(person)) == [world["other"]]


def test_a_project_an_engineer_creates_is_theirs(world):
    engineer = world["engineer"]
    response = api(engineer).post(
        "/api/v1/projects/create/", {"name": "Mine", "slug": "mine"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert Project.objects.get(slug="mine").members.filter(pk=engineer.pk).exists()
    assert api(engineer).get("/api/v1/projects/mine/").status_code == 200
    # A site-wide engineer sees it anyway and is not added as a member.
    site = make_user("site_engineer")
    api(site).post("/api/v1/projects/create/", {"name": "Site", "slug": "site"}, format="json")
    assert not Project.objects.get(slug="site").members.exists()


def test_tokens_of_others_are_for_site_wide_engineers_only(world):
    engineer = world["engineer"]
    someone = make_user("annotator")
    project_member = make_user("annotator")
    world["own"].members.add(project_member)
    for user in (engineer, someone, project_member):
        Token.objects.create(user=user)
    listed = api(engineer).get("/api/v1/auth/tokens/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [row["username"] for row in rows] == [engineer.username]
    assert api(engineer).delete(f"/api/v1/auth/tokens/{project_member.pk}/").status_code == 404
    assert Token.objects.filter(user=project_member).exists()
    site = make_user("site_engineer")
    assert api(site).delete(f"/api/v1/auth/tokens/{project_member.pk}/").status_code == 204
    assert not Token.objects.filter(user=project_member).exists()


def test_the_migration_makes_existing_engineers_site_wide_and_back(world):
    migration = importlib.import_module("labeling.migrations.0006_site_engineer")
    veteran = make_user("engineer")
    assert not projects_visible_to(veteran).exists()
    migration.split_engineers(apps, None)
    veteran = User.objects.get(pk=veteran.pk)
    assert user_role(veteran) == Role.SITE_ENGINEER
    assert set(projects_visible_to(veteran)) == {world["own"], world["other"]}
    assert not veteran.groups.filter(name="engineer").exists()
    migration.merge_engineers(apps, None)
    veteran = User.objects.get(pk=veteran.pk)
    assert user_role(veteran) == Role.ENGINEER
