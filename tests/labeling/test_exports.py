"""Labels export (CSV / JSON Lines) and import (atomic or per row), through the API."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from labeling.models import Label
from tests.factories import make_image, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup():
    engineer = make_user("site_engineer")
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    images = [make_image(project) for _ in range(3)]
    first = Label.objects.create(
        project=project,
        image=images[0],
        annotator=annotator,
        value="disgusting",
        subcategory="animal",
    )
    Label.objects.create(project=project, image=images[1], annotator=annotator, value="normal")
    client = APIClient()
    client.force_login(engineer)
    return {
        "engineer": engineer,
        "annotator": annotator,
        "project": project,
        "images": images,
        "first": first,
        "client": client,
    }


def export(setup, query="", **headers):
    url = f"/api/v1/projects/{setup['project'].slug}/labels/export/{query}"
    return setup["client"].get(url, **headers)


def body(response) -> str:
    return b"".join(response.streaming_content).decode()


def upload(setup, content: bytes | str, name="labels.csv", **fields):
    if isinstance(content, str):
        content = content.encode()
    url = f"/api/v1/projects/{setup['project'].slug}/labels/import/"
    return setup["client"].post(
        url, {"file": SimpleUploadedFile(name, content), **fields}, format="multipart"
    )


def test_export_csv_has_current_labels_of_labeled_images(setup):
    response = export(setup)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body(response))))
    images = setup["images"]
    assert [int(r["image_id"]) for r in rows] == [images[0].pk, images[1].pk]
    assert rows[0]["current_label"] == "disgusting" and rows[0]["subcategory"] == "animal"
    assert rows[0]["content_hash"] == images[0].content_hash
    assert rows[0]["split"] == images[0].split and rows[0]["n_labels"] == "1"
    assert "history" not in rows[0]


def test_export_jsonl_with_history_by_param_and_by_accept_header(setup):
    correction = Label.objects.create(
        project=setup["project"],
        image=setup["images"][0],
        annotator=setup["engineer"],
        value="normal",
        kind=Label.Kind.CORRECTION,
        supersedes=setup["first"],
    )
    for response in (
        export(setup, "?as=jsonl&history=true"),
        export(setup, "?history=true", HTTP_ACCEPT="application/x-ndjson"),
    ):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/x-ndjson")
        rows = [json.loads(line) for line in body(response).splitlines()]
        assert rows[0]["current_label"] == "normal"
        assert rows[0]["n_labels"] == 2
        assert [h["id"] for h in rows[0]["history"]] == [setup["first"].pk, correction.pk]
        assert rows[0]["history"][1]["supersedes"] == setup["first"].pk


def test_export_rejects_format_param_and_non_engineers(setup):
    response = export(setup, "?format=csv")
    assert response.status_code in (400, 404)
    response = export(setup, "?as=xml")
    assert response.status_code == 400 and "as" in response.json()
    lead = make_user("lead")
    setup["project"].members.add(lead)
    setup["client"].force_login(lead)
    assert export(setup).status_code == 403


def test_import_csv_by_id_and_hash_writes_imported_labels(setup):
    images = setup["images"]
    text = (
        "image_id,content_hash,label,subcategory\n"
        f"{images[2].pk},,disgusting,human\n"
        f",{images[1].content_hash},disgusting,\n"
    )
    response = upload(setup, text)
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "mode": "atomic",
        "rows": 2,
        "created": 2,
        "written": True,
        "errors": [],
    }
    imported = Label.objects.filter(kind=Label.Kind.IMPORTED).order_by("image_id")
    assert [(lb.image_id, lb.value, lb.subcategory, lb.annotator_id) for lb in imported] == [
        (images[1].pk, "disgusting", "", setup["engineer"].pk),
        (images[2].pk, "disgusting", "human", setup["engineer"].pk),
    ]


BAD_ROWS = [
    ("{id},,cat,", "Unknown label"),
    ("{id},,normal,animal", "positive class"),
    ("{id},,disgusting,plant", "Unknown subcategory"),
    ("99999999,,normal,", "No image 99999999"),
    (",abc,normal,", "64 hexadecimal"),
    (",,normal,", "image_id or content_hash"),
    ("{id},{other_hash},normal,", "different images"),
    ("{foreign},,normal,", "No image"),
    ("x1,,normal,", "positive integer"),
]


def test_atomic_import_with_bad_rows_writes_nothing_and_reports_each(setup):
    images = setup["images"]
    foreign = make_image(make_project())
    lines = ["image_id,content_hash,label,subcategory", f"{images[2].pk},,normal,"]
    for template, _ in BAD_ROWS:
        lines.append(
            template.format(id=images[2].pk, other_hash=images[1].content_hash, foreign=foreign.pk)
        )
    before = Label.objects.count()
    response = upload(setup, "\n".join(lines) + "\n")
    assert response.status_code == 400
    report = response.json()
    assert report["written"] is False and report["created"] == 0
    assert [e["row"] for e in report["errors"]] == list(range(2, 2 + len(BAD_ROWS)))
    for error, (_, expected) in zip(report["errors"], BAD_ROWS):
        assert expected in error["error"], (error, expected)
    assert Label.objects.count() == before


def test_per_row_import_writes_the_valid_rows(setup):
    images = setup["images"]
    lines = [
        json.dumps({"image_id": images[2].pk, "label": "normal"}),
        "not json",
        json.dumps({"image_id": images[2].pk, "label": "disgusting"}),  # duplicate image
        json.dumps(["a", "list"]),
        "",
        json.dumps({"content_hash": images[0].content_hash, "label": "normal"}),
    ]
    response = upload(setup, "\n".join(lines), name="labels.jsonl", mode="per_row")
    assert response.status_code == 200
    report = response.json()
    assert (report["mode"], report["rows"], report["created"]) == ("per_row", 5, 2)
    assert [e["row"] for e in report["errors"]] == [2, 3, 4]
    assert "more than once" in report["errors"][1]["error"]
    values = Label.objects.filter(kind=Label.Kind.IMPORTED).order_by("image_id")
    assert [(lb.image_id, lb.value) for lb in values] == [
        (images[0].pk, "normal"),
        (images[2].pk, "normal"),
    ]


def test_import_rejects_unreadable_files_with_a_clear_error(setup):
    cases = [
        (b"\xff\xfe\x00b\x00a\x00d", "labels.csv", {}, "UTF-8"),
        (b"name,label\nx,normal\n", "labels.csv", {}, "image_id or a content_hash"),
        (b"image_id,label\n", "labels.csv", {}, "no data rows"),
        (b"image_id,label\n1,normal\n", "labels.txt", {}, "as=csv"),
    ]
    before = Label.objects.count()
    for content, name, fields, expected in cases:
        response = upload(setup, content, name=name, **fields)
        assert response.status_code == 400, expected
        assert expected in json.dumps(response.json()), (expected, response.json())
    assert Label.objects.count() == before


def test_export_then_import_round_trips(setup):
    exported = body(export(setup, "?as=csv")).encode()
    response = upload(setup, exported, name="back.csv")
    assert response.status_code == 200, response.json()
    assert response.json()["created"] == 2
    imported = Label.objects.filter(kind=Label.Kind.IMPORTED).order_by("image_id")
    assert [(lb.value, lb.subcategory) for lb in imported] == [
        ("disgusting", "animal"),
        ("normal", ""),
    ]
