"""The audit log (issue 8, item 10): what the services record, that nobody can change or remove
an event (the model, the queryset, the admin, and PostgreSQL's trigger), who sees which events
(page and API), and the CSV export with its formula cells neutralised."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from rest_framework.test import APIClient

from labeling.models import AppendOnlyError, AuditEvent, Job, Label, ModelVersion, QueueItem
from labeling.services.audit_log import Action, audit_record
from labeling.services.exports import labels_export, labels_import_rows
from labeling.services.imports import images_import
from labeling.services.jobs import job_cancel, job_create
from labeling.services.labels import review_resolve
from labeling.services.models import model_version_promote, model_version_rollback
from labeling.services.projects import project_create
from labeling.services.users import user_create, user_projects_set, user_role_set
from tests.factories import make_image, make_project, make_queue, make_user, png_bytes

pytestmark = [pytest.mark.django_db]


def events(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(**filters).order_by("id"))


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_people_changes_are_recorded():
    site = make_user("site_engineer", username="root")
    own = make_project(slug="own")
    person = user_create(
        username="ann", password="long enough passphrase 42", role="annotator", by=site
    )
    user_role_set(user=person, role="lead", by=site)
    user_role_set(user=person, role="lead", by=site)  # no change, no event
    user_projects_set(user=person, projects=[own], by=site)
    user_projects_set(user=person, projects=[], by=site)
    created, role, added, removed = events()
    assert (created.action, created.actor_name, created.target) == (
        Action.USER_CREATED,
        "root",
        f"user {person.pk} (ann)",
    )
    assert created.details == {"role": "annotator", "projects": []}
    assert role.action == Action.ROLE_CHANGED and role.details == {
        "from": "annotator",
        "to": "lead",
    }
    assert role.project_id is None
    assert (added.action, added.project_slug, added.details) == (
        Action.MEMBERSHIP_CHANGED,
        "own",
        {"change": "added"},
    )
    assert removed.details == {"change": "removed"} and removed.project_id == own.pk


def test_projects_jobs_models_and_data_are_recorded():
    engineer = make_user("engineer", username="eng")
    project = project_create(name="P", slug="p", created_by=engineer)
    image = make_image(project)
    (created,) = events()
    assert (created.action, created.actor_name, created.project_id) == (
        Action.PROJECT_CREATED,
        "eng",
        project.pk,
    )

    v1 = ModelVersion.objects.create(project=project, name="v1", status="ready", checkpoint="a")
    v2 = ModelVersion.objects.create(project=project, name="v2", status="ready", checkpoint="b")
    model_version_promote(version=v1, by=None)  # the system, after training met its targets
    model_version_promote(version=v2, by=engineer)
    model_version_rollback(project=project, by=engineer)
    auto, promoted, rolled = events(action__in=[Action.MODEL_PROMOTED, Action.MODEL_ROLLED_BACK])
    assert auto.actor_id is None and auto.actor_name == ""
    assert promoted.details == {"previous_version_id": v1.pk}
    assert (
        rolled.action == Action.MODEL_ROLLED_BACK and rolled.target == f"modelversion {v1.pk} (v1)"
    )
    assert rolled.details["from_version"] == "v2"

    job = job_create(
        project=project, kind=Job.Kind.SCORE_POOL, params={}, created_by=engineer
    )  # scores with the active version
    job_cancel(job=job, by=engineer)
    started, cancelled = events(action__in=[Action.JOB_STARTED, Action.JOB_CANCELLED])
    assert (
        started.target == f"job {job.pk} (score_pool)" and started.details["kind"] == "score_pool"
    )
    assert cancelled.details["status"] == Job.Status.CANCELLED and cancelled.actor_name == "eng"

    imports = images_import(
        project=project,
        files=[
            ("a.png", png_bytes(900001)),
            ("b.png", png_bytes(900001)),
            ("c.png", b"not an image"),
        ],
        created_by=engineer,
    )
    assert (imports.imported, imports.duplicates, imports.rejected) == (1, 1, 1)
    (imported_images,) = events(action=Action.IMAGES_IMPORTED)
    assert imported_images.actor_name == "eng" and imported_images.details == {
        "imported": 1,
        "duplicates": 1,
        "rejected": 1,
        "skipped": 0,
        "archive_errors": 0,
    }

    report = labels_import_rows(
        project=project, rows=[{"image_id": image.pk, "label": "normal"}], by=engineer
    )
    assert report.written
    (imported,) = events(action=Action.LABELS_IMPORTED)
    assert imported.details == {"rows": 1, "created": 1, "mode": "atomic"}
    # A refused atomic import writes nothing and records nothing.
    labels_import_rows(project=project, rows=[{"image_id": 999999, "label": "normal"}], by=engineer)
    assert len(events(action=Action.LABELS_IMPORTED)) == 1

    lines = labels_export(project=project, fmt="csv", by=engineer)
    (exported,) = events(action=Action.LABELS_EXPORTED)  # recorded before a line is read
    assert exported.details == {"format": "csv", "history": False}
    assert "normal" in "".join(lines)


def test_a_leads_correction_is_recorded_and_a_confirmation_is_not():
    lead, annotator = make_user("lead", username="lea"), make_user("annotator")
    project = make_project(members=[lead, annotator])
    review = make_queue(project, kind="review")
    flipped, kept = make_image(project), make_image(project)
    for image in (flipped, kept):
        Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    review_resolve(
        item=QueueItem.objects.create(queue=review, image=flipped),
        lead=lead,
        confirm=False,
        value="disgusting",
        subcategory="animal",
    )
    review_resolve(item=QueueItem.objects.create(queue=review, image=kept), lead=lead, confirm=True)
    (event,) = events()
    assert (event.action, event.actor_name, event.target) == (
        Action.LABEL_CORRECTED,
        "lea",
        f"image {flipped.pk}",
    )
    assert event.details["from"] == "normal" and event.details["to"] == "disgusting"


def test_events_cannot_be_changed_or_removed():
    event = audit_record(actor=None, action=Action.JOB_STARTED, target="job 1")
    event.target = "something else"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(target="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(ValueError):
        audit_record(actor=None, action="made_up")
    if connection.vendor == "postgresql":
        # Below the app: the database refuses too.
        for sql in (
            "UPDATE labeling_auditevent SET target = 'x'",
            "DELETE FROM labeling_auditevent",
        ):
            with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql)
    assert AuditEvent.objects.get(pk=event.pk).target == "job 1"
    # The admin shows events read-only.
    superuser = make_user(None, is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(superuser)
    change = client.get(f"/admin/labeling/auditevent/{event.pk}/change/")
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode()
    assert (
        client.post(f"/admin/labeling/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.authz
def test_engineers_see_the_events_of_their_projects_only():
    engineer = make_user("engineer", username="eng")
    site = make_user("site_engineer", username="root")
    own, other = make_project(members=[engineer], slug="own"), make_project(slug="other")
    audit_record(actor=site, action=Action.JOB_STARTED, project=own, target="job own")
    audit_record(actor=site, action=Action.JOB_STARTED, project=other, target="job other")
    audit_record(actor=site, action=Action.ROLE_CHANGED, target="user 1 (x)")

    targets = lambda response: [e["target"] for e in response.json()["results"]]  # noqa: E731
    assert targets(api(engineer).get("/api/v1/audit/")) == ["job own"]
    assert targets(api(site).get("/api/v1/audit/")) == ["user 1 (x)", "job other", "job own"]
    assert targets(api(site).get("/api/v1/audit/?project=other")) == ["job other"]
    assert targets(api(site).get("/api/v1/audit/?action=role_changed&actor=root")) == ["user 1 (x)"]
    assert api(engineer).get("/api/v1/audit/?project=other").status_code == 404
    assert api(engineer).get("/api/v1/audit/export/?project=other").status_code == 404
    bad = api(site).get("/api/v1/audit/?action=dance")
    assert bad.status_code == 400 and "action" in bad.json()
    assert api(site).get("/api/v1/audit/?who=me").status_code == 400
    for role in ("lead", "annotator"):
        assert api(make_user(role)).get("/api/v1/audit/").status_code == 403
        assert api(make_user(role)).get("/api/v1/audit/export/").status_code == 403

    page = Client()
    page.force_login(engineer)
    body = page.get("/audit/").content.decode()
    assert "job own" in body and "job other" not in body and "user 1 (x)" not in body
    assert page.get("/audit/?project=other").status_code == 404
    assert page.get("/audit/?action=dance").status_code == 400
    page.force_login(site)
    body = page.get("/audit/?project=other").content.decode()
    assert "job other" in body and "job own" not in body


@pytest.mark.bad_input
def test_the_export_is_csv_with_formula_cells_neutralised_and_is_itself_recorded():
    site = make_user("site_engineer", username="root")
    attacker = make_user("engineer", username="@attacker")
    project = make_project(members=[attacker], slug="-p")
    audit_record(actor=attacker, action=Action.JOB_STARTED, project=project, target="=HYPERLINK(1)")
    response = api(site).get("/api/v1/audit/export/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    row, itself = rows  # oldest first; the export is recorded before it is read
    assert itself["action"] == "audit_exported"
    assert row["actor"] == "'@attacker" and row["project"] == "'-p"
    assert row["target"] == "'=HYPERLINK(1)" and row["action"] == "job_started"
    (export,) = events(action=Action.AUDIT_EXPORTED)
    assert export.actor_name == "root" and export.details == {"filters": {}}
    # The next export lists the first one.
    again = api(site).get("/api/v1/audit/export/?action=audit_exported")
    rows = list(csv.DictReader(io.StringIO(b"".join(again.streaming_content).decode())))
    assert [r["actor"] for r in rows] == ["root", "root"]
