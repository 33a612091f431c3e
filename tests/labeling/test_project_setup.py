"""Project setup from the app (issue 9, item 10): an engineer creates a project with its schema
and settings, edits them, and cannot remove a class that labels use; the same schema rules as
the API (reserved hotkeys among them); settings parsed by their declarations; members and roles
by site-wide engineers only; the project page links to each area by role."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling.models import AuditEvent, Label, Project
from labeling.project_settings import PROJECT_SETTINGS
from labeling.roles import Role, user_role
from tests.factories import make_image, make_project, make_user

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _rows(prefix: str, rows: list[dict], extra_blank: int = 1) -> dict:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows) + extra_blank),
        f"{prefix}-INITIAL_FORMS": "0",
    }
    for index, row in enumerate(rows):
        for name, value in row.items():
            data[f"{prefix}-{index}-{name}"] = value
    return data


def _post_data(classes, subcategories=(), positive=1, default=0, **settings) -> dict:
    data = {
        **_rows("classes", list(classes)),
        **_rows("subcategories", list(subcategories)),
        "positive": str(positive),
        "default": str(default),
    }
    data.update({k: str(v) for k, v in settings.items()})
    return data


CLASSES = [
    {"key": "ok", "name": "OK", "name_zh_hans": "正常", "hotkey": "1"},
    {"key": "gross", "name": "Gross", "hotkey": "2"},
    {"key": "unsure", "name": "Unsure", "hotkey": "3"},
]


def test_engineer_creates_a_project_with_schema_and_settings():
    engineer = make_user("engineer")  # not site-wide: becomes a member of what they make
    client = _client(engineer)
    page = client.get("/projects/create/")
    assert page.status_code == 200
    # Every declared setting has its field on the page.
    for group in PROJECT_SETTINGS:
        for param in group.params:
            assert f'name="{param.name}"' in page.content.decode()
    data = _post_data(
        CLASSES,
        [{"key": "animal", "name": "Animal", "hotkey": "a"}],
        positive=1,
        default=0,
        labels_per_item=3,
        lease_seconds=120,
        gold_rate=0.05,
        exposure_daily_cap=200,
        blur_images="false",
    )
    data.update(name="Shoes", slug="shoes", description="Product shots")
    response = client.post("/projects/create/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == "/projects/shoes/setup/"
    project = Project.objects.get(slug="shoes")
    assert project.label_schema == {
        "classes": [
            {"key": "ok", "name": "OK", "names": {"zh-hans": "正常"}, "hotkey": "1"},
            {"key": "gross", "name": "Gross", "hotkey": "2"},
            {"key": "unsure", "name": "Unsure", "hotkey": "3"},
        ],
        "positive": "gross",
        "default": "ok",
        "subcategories": [{"key": "animal", "name": "Animal", "hotkey": "a"}],
    }
    assert (project.labels_per_item, project.lease_seconds) == (3, 120)
    assert (project.gold_rate, project.exposure_daily_cap, project.blur_images) == (
        0.05,
        200,
        False,
    )
    assert list(project.members.all()) == [engineer]
    assert project.queues.count() == 2  # labeling and re-review, as the API makes them
    # The page shows it back as it was saved.
    page = client.get("/projects/shoes/setup/").content.decode()
    assert 'value="正常"' in page and 'value="120"' in page


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes-1-hotkey": "s"}, "reserved by the labeling pages"),
        ({"classes-2-hotkey": "1"}, "Hotkeys must be unique"),
        ({"classes-1-key": "bad key!"}, "Invalid key"),
        ({"positive": ""}, "must name one of the classes"),
        ({"lease_seconds": "5"}, "lease_seconds must be a whole number from 30"),
        ({"gold_rate": "2"}, "gold_rate must be a number from 0 to 1"),
        ({"slug": "create"}, "reserved"),
    ],
)
def test_create_refuses_what_the_api_refuses(change, message):
    client = _client(make_user("site_engineer"))
    data = _post_data(CLASSES)
    data.update(name="X", slug="x")
    data.update(change)
    response = client.post("/projects/create/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Project.objects.filter(name="X").exists()


def test_removing_a_class_in_use_is_refused_with_its_count():
    engineer = make_user("site_engineer")
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    image = make_image(project)
    for _ in range(2):
        Label.objects.create(project=project, image=image, annotator=annotator, value="disgusting")
    client = _client(engineer)
    page = client.get(f"/projects/{project.slug}/setup/")
    assert page.status_code == 200
    before = dict(project.label_schema)
    # Mark the positive class's row for removal and make "normal" positive.
    data = _post_data(
        [
            {"key": "normal", "name": "Normal", "hotkey": "1"},
            {"key": "disgusting", "name": "Disgusting", "hotkey": "2", "DELETE": "on"},
            {"key": "other", "name": "Other", "hotkey": "3"},
        ],
        [{"key": "animal", "name": "Animal", "hotkey": "a"}],
        positive=0,
        default=2,
    )
    response = client.post(f"/projects/{project.slug}/setup/", data)
    assert response.status_code == 400
    text = response.content.decode()
    assert "Cannot remove disgusting (2 labels)" in text
    project.refresh_from_db()
    assert project.label_schema == before
    # Renaming the class in use and adding one is fine; its other names are kept.
    data = _post_data(
        [
            {"key": "normal", "name": "Normal", "hotkey": "1"},
            {"key": "disgusting", "name": "Gross", "hotkey": "g"},
            {"key": "other", "name": "Other", "hotkey": "3"},
        ],
        [{"key": "animal", "name": "Animal", "hotkey": "a"}],
        positive=1,
        default=0,
        lease_seconds=900,
    )
    response = client.post(f"/projects/{project.slug}/setup/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    project.refresh_from_db()
    assert [c["name"] for c in project.label_schema["classes"]] == ["Normal", "Gross", "Other"]
    assert project.label_schema["classes"][1]["hotkey"] == "g"
    assert project.lease_seconds == 900


def test_members_and_roles_by_site_wide_engineers_only():
    site = make_user("site_engineer")
    project_engineer = make_user("engineer")
    person = make_user("annotator")
    project = make_project(members=[project_engineer])
    url = f"/projects/{project.slug}/setup/members/"
    data = {"members": [str(project_engineer.pk), str(person.pk)], f"role_{person.pk}": "lead"}
    # An engineer of the project sees the members but cannot change them.
    page = _client(project_engineer).get(f"/projects/{project.slug}/setup/").content.decode()
    assert project_engineer.username in page and 'id="members-form"' not in page
    assert _client(project_engineer).post(url, data).status_code == 403
    assert list(project.members.all()) == [project_engineer]
    response = _client(site).post(url, data)
    assert response.status_code == 302
    assert set(project.members.all()) == {project_engineer, person}
    person.refresh_from_db()
    assert user_role(person) == Role.LEAD
    added = AuditEvent.objects.filter(
        action=AuditEvent.Action.MEMBERSHIP_CHANGED, project_id=project.pk
    )
    assert [e.details["change"] for e in added] == ["added"]


def test_annotators_and_leads_cannot_set_up():
    annotator, lead = make_user("annotator"), make_user("lead")
    project = make_project(members=[annotator, lead])
    for person in (annotator, lead):
        client = _client(person)
        assert client.get("/projects/create/").status_code == 403
        assert client.get(f"/projects/{project.slug}/setup/").status_code == 403
        assert client.post(f"/projects/{project.slug}/setup/", {}).status_code == 403
        assert client.get(f"/projects/{project.slug}/export/").status_code == 403


def test_project_page_links_by_role():
    annotator, lead, engineer = make_user("annotator"), make_user("lead"), make_user("engineer")
    project = make_project(members=[annotator, lead, engineer])
    slug = project.slug
    engineer_only = ["setup", "import", "cold-start", "jobs", "export"]
    lead_too = ["review", "quality", "models", "estimates"]
    pages = {
        p: _client(p).get(f"/projects/{slug}/").content.decode()
        for p in (annotator, lead, engineer)
    }
    for area in engineer_only + lead_too:
        href = f'href="/projects/{slug}/{area}/"'
        assert href in pages[engineer], area
        assert href not in pages[annotator], area
        assert (href in pages[lead]) == (area in lead_too), area


def test_home_offers_new_project_to_engineers_only():
    create = 'href="/projects/create/"'
    assert create in _client(make_user("engineer")).get("/").content.decode()
    for role in ("annotator", "lead"):
        assert create not in _client(make_user(role)).get("/").content.decode()
