"""Export filters and the folder-per-class zip (issue 9, item 12), through the API and the
export page: filters by label, split, strategy and annotator; the zip unpacks into one folder
per current label with the images' own bytes; it streams (memory bounded by one read chunk,
not by the archive); CSV keeps its formula neutralisation under filters."""

from __future__ import annotations

import csv
import io
import tracemalloc
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from rest_framework.test import APIClient

from labeling.models import AuditEvent, Image, Label, Strategy
from labeling.services.exports import ExportFilters, labels_export
from tests.factories import make_image, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    engineer = make_user("site_engineer")
    ann, other = make_user("annotator"), make_user("annotator")
    project = make_project(members=[ann, other])
    images = [make_image(project) for _ in range(6)]
    images[5].split = Image.Split.VALIDATION
    images[5].source = "=HYPERLINK(1)"
    images[5].save()
    plan = [
        (0, ann, "disgusting", Strategy.COLD_START),
        (1, ann, "disgusting", Strategy.MANUAL),
        (2, ann, "normal", Strategy.MANUAL),
        (3, other, "normal", Strategy.RANDOM_AUDIT),
        (4, other, "normal", Strategy.MANUAL),
        (5, other, "disgusting", Strategy.VALIDATION),
    ]
    for index, person, value, strategy in plan:
        Label.objects.create(
            project=project, image=images[index], annotator=person, value=value, strategy=strategy
        )
    # A gold answer is no label of the image: it never makes an image exportable.
    gold_only = make_image(project)
    Label.objects.create(
        project=project, image=gold_only, annotator=ann, value="normal", strategy=Strategy.GOLD
    )
    client = APIClient()
    client.force_login(engineer)
    return {"project": project, "images": images, "ann": ann, "other": other, "client": client}


def _get(world, query: str):
    response = world["client"].get(
        f"/api/v1/projects/{world['project'].slug}/labels/export/{query}"
    )
    return response


def _csv_ids(response) -> list[int]:
    text = b"".join(response.streaming_content).decode()
    return [int(row["image_id"]) for row in csv.DictReader(io.StringIO(text))]


def _ids(world, *indexes) -> list[int]:
    return sorted(world["images"][i].pk for i in indexes)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", (0, 1, 2, 3, 4, 5)),
        ("?label=disgusting", (0, 1, 5)),
        ("?label=normal&split=pool", (2, 3, 4)),
        ("?split=validation", (5,)),
        ("?strategy=random_audit", (3,)),
        ("?annotator=ANN", (0, 1, 2)),
        ("?annotator=ANN&label=normal", (2,)),
        ("?strategy=cold_start&label=normal", ()),
    ],
)
def test_csv_filters(world, query, expected):
    query = query.replace("ANN", world["ann"].username)
    response = _get(world, query)
    assert response.status_code == 200
    assert sorted(_csv_ids(response)) == _ids(world, *expected)


def test_unknown_filter_values_are_refused_by_name(world):
    for query, field in [
        ("?label=cat", "label"),
        ("?split=train", "split"),
        ("?strategy=gold", "strategy"),
        ("?annotator=nobody", "annotator"),
        ("?as=zip&history=true", "history"),
    ]:
        response = _get(world, query)
        assert response.status_code == 400, query
        assert field in response.json(), (query, response.json())


def test_csv_neutralises_formulas_under_filters(world):
    response = _get(world, "?split=validation")
    text = b"".join(response.streaming_content).decode()
    assert "'=HYPERLINK(1)" in text
    assert ",=HYPERLINK" not in text


def test_zip_is_one_folder_per_class_with_the_images_bytes(world):
    response = _get(world, "?as=zip")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].endswith('-images.zip"')
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.testzip() is None
    names = sorted(archive.namelist())
    images = world["images"]
    assert names == sorted(
        [f"disgusting/{images[i].pk}.png" for i in (0, 1, 5)]
        + [f"normal/{images[i].pk}.png" for i in (2, 3, 4)]
    )
    for i in (0, 3):
        folder = "disgusting" if i == 0 else "normal"
        with images[i].file.open("rb") as source:
            assert archive.read(f"{folder}/{images[i].pk}.png") == source.read()
    event = AuditEvent.objects.filter(action=AuditEvent.Action.LABELS_EXPORTED).latest("id")
    assert event.details["format"] == "zip"


def test_zip_filtered_by_annotator_and_split(world):
    query = f"?as=zip&annotator={world['other'].username}&split=pool"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(_get(world, query).streaming_content)))
    assert sorted(archive.namelist()) == sorted(
        f"normal/{world['images'][i].pk}.png" for i in (3, 4)
    )
    event = AuditEvent.objects.filter(action=AuditEvent.Action.LABELS_EXPORTED).latest("id")
    assert event.details["filters"] == {"annotator": world["other"].username, "split": "pool"}


def test_zip_streams_with_memory_bounded_by_a_chunk(world):
    """40 images of 2 MB each (80 MB): the archive comes out in many parts, and Python's peak
    allocation while it is read stays a few chunks, far under the archive's size."""
    project = world["project"]
    annotator = world["ann"]
    for n in range(40):
        image = make_image(project)
        payload = bytes([n % 251]) * (2 * 1024 * 1024)
        image.file.save(f"big-{n}.png", ContentFile(payload), save=False)
        image.byte_size = len(payload)
        image.save()
        Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    body = labels_export(project=project, fmt="zip", filters=ExportFilters(label="normal"))
    tracemalloc.start()
    total = parts = 0
    try:
        for part in body:
            total += len(part)
            parts += 1
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 80 * 1024 * 1024
    assert parts >= 80  # at least one part per megabyte read
    assert peak < 12 * 1024 * 1024, peak


def test_export_page_offers_each_filters_choices_and_points_at_the_api(world):
    client = Client()
    client.force_login(make_user("site_engineer"))
    slug = world["project"].slug
    page = client.get(f"/projects/{slug}/export/").content.decode()
    assert f'action="/api/v1/projects/{slug}/labels/export/"' in page
    for value in ("disgusting", "normal", "validation", "random_audit", world["ann"].username):
        assert f'value="{value}"' in page
    assert 'value="gold"' not in page
    assert 'value="zip"' in page
