"""Hostile files and requests (issue 8, item 6): CSV injection in exports, label imports of
hundreds of thousands of unknown ids on PostgreSQL and SQLite, the row cap, the request byte
and file-count caps, and the cap on the decoded raster (pixels x bands)."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage
from rest_framework.test import APIClient

from labeling.models import Image, Label
from labeling.services.imports import Status, images_import
from tests.factories import make_image, make_project, make_user, png_bytes

pytestmark = [pytest.mark.bad_input, pytest.mark.django_db]

ROOT = Path(__file__).resolve().parent.parent.parent
FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]


def _engineer_api():
    client = APIClient()
    client.force_authenticate(make_user("site_engineer"))
    return client


def _export(client, project, fmt):
    response = client.get(f"/api/v1/projects/{project.slug}/labels/export/?as={fmt}")
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


def test_csv_export_neutralises_formula_cells_and_still_imports_back():
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    for text in FORMULAS:
        image = make_image(project)
        Image.objects.filter(pk=image.pk).update(source=text)
        Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    client = _engineer_api()
    rows = list(csv.DictReader(io.StringIO(_export(client, project, "csv"), newline="")))
    assert sorted(row["source"] for row in rows) == sorted("'" + text for text in FORMULAS)
    for row in rows:  # no cell of any column starts a formula
        assert not any(str(v).startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values())
    # JSON Lines is not for spreadsheets: the values stay as they are.
    lines = [json.loads(line) for line in _export(client, project, "jsonl").splitlines()]
    assert sorted(line["source"] for line in lines) == sorted(FORMULAS)
    # The export imports back (the apostrophe is read off again).
    exported = _export(client, project, "csv").encode()
    response = client.post(
        f"/api/v1/projects/{project.slug}/labels/import/",
        {"file": SimpleUploadedFile("back.csv", exported)},
        format="multipart",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["created"] == len(FORMULAS)


UNKNOWN_ROWS = 300_000


def _unknown_ids_csv(n: int) -> bytes:
    lines = ["image_id,label"] + [f"{1_000_000_000 + i},normal" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.slow
def test_300000_unknown_ids_are_a_report_not_a_crash_on_postgresql():
    project = make_project()
    known = make_image(project)
    data = _unknown_ids_csv(UNKNOWN_ROWS - 1) + f"{known.pk},normal\n".encode()
    client = _engineer_api()
    url = f"/api/v1/projects/{project.slug}/labels/import/"
    response = client.post(url, {"file": SimpleUploadedFile("big.csv", data)}, format="multipart")
    assert response.status_code == 400, response.content[:500]
    body = response.json()
    assert body["rows"] == UNKNOWN_ROWS
    assert body["written"] is False
    assert body["errors"][0] == {"row": 1, "error": "No image 1000000000 in this project."}
    assert Label.objects.count() == 0
    # Per row: the one known image is labeled, the unknown ids are reported.
    response = client.post(
        url,
        {"file": SimpleUploadedFile("big.csv", data), "mode": "per_row"},
        format="multipart",
    )
    assert response.status_code == 200
    assert response.json()["created"] == 1
    assert Label.objects.get().image_id == known.pk


SQLITE_IMPORT = """
import io
from django.contrib.auth.models import User
from labeling.services.exports import labels_import
from labeling.services.projects import project_create
from tests.factories import make_image
user = User.objects.create_user("eng", password="x-long-password-1")
project = project_create(
    name="S", slug="s",
    label_schema={"classes": [{"key": "a", "name": "A", "hotkey": "1"},
                              {"key": "b", "name": "B", "hotkey": "2"}],
                  "positive": "b", "default": "a", "subcategories": []},
)
known = make_image(project, seed=3)
lines = ["image_id,label"] + [f"{10**9 + i},a" for i in range(%(n)d)] + [f"{known.pk},a"]
data = io.BytesIO(("\\n".join(lines) + "\\n").encode())
report = labels_import(project=project, stream=data, fmt="csv", by=user, atomic=False)
print("ROWS", report.rows, "CREATED", report.created, "TRUNCATED", report.errors_truncated)
"""


@pytest.mark.slow
def test_300000_unknown_ids_are_a_report_not_a_crash_on_sqlite(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        IMAGECLEAN_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
    )

    def manage(*args):
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        return result.stdout

    manage("migrate", "--noinput", "-v0")
    out = manage("shell", "-c", SQLITE_IMPORT % {"n": UNKNOWN_ROWS - 1})
    assert f"ROWS {UNKNOWN_ROWS} CREATED 1 TRUNCATED True" in out


def test_label_import_over_the_row_cap_is_a_clear_error(settings):
    settings.IMAGECLEAN_MAX_LABEL_IMPORT_ROWS = 5
    project = make_project()
    response = _engineer_api().post(
        f"/api/v1/projects/{project.slug}/labels/import/",
        {"file": SimpleUploadedFile("six.csv", _unknown_ids_csv(6))},
        format="multipart",
    )
    assert response.status_code == 400
    assert "more than 5 rows" in json.dumps(response.json())
    assert Label.objects.count() == 0


def test_request_over_the_byte_cap_is_413_before_anything_is_read(settings, client):
    settings.IMAGECLEAN_MAX_REQUEST_BYTES = 2048
    project = make_project()
    engineer = make_user("site_engineer")
    client.force_login(engineer)
    files = [SimpleUploadedFile(f"{i}.png", png_bytes(i, size=(40, 40))) for i in range(20)]
    assert sum(f.size for f in files) > 2048
    response = client.post(reverse("project-import", args=[project.slug]), {"files": files})
    assert response.status_code == 413
    assert 'class="brand"' in response.content.decode()  # the app's page
    assert Image.objects.count() == 0
    # The API answers JSON.
    api = APIClient()
    api.force_authenticate(engineer)
    response = api.post(
        f"/api/v1/projects/{project.slug}/labels/import/",
        {"file": SimpleUploadedFile("big.csv", _unknown_ids_csv(1000))},
        format="multipart",
    )
    assert response.status_code == 413
    assert "detail" in response.json()
    # Under the cap, the same page works.
    settings.IMAGECLEAN_MAX_REQUEST_BYTES = 10 * 1024 * 1024
    files = [SimpleUploadedFile(f"{i}.png", png_bytes(i, size=(40, 40))) for i in range(3)]
    response = client.post(reverse("project-import", args=[project.slug]), {"files": files})
    assert response.status_code == 200
    assert Image.objects.count() == 3


def test_request_with_too_many_files_is_refused(settings, client):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    project = make_project()
    client.force_login(make_user("site_engineer"))
    files = [SimpleUploadedFile(f"{i}.png", png_bytes(i)) for i in range(4)]
    response = client.post(reverse("project-import", args=[project.slug]), {"files": files})
    assert response.status_code == 400
    assert Image.objects.count() == 0


def _png(mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    PILImage.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def _png_claiming(width: int, height: int, mode: str = "RGBA") -> bytes:
    """A small PNG whose IHDR (with a valid CRC) claims `width` x `height` pixels."""
    data = bytearray(_png(mode, (8, 8)))
    at = data.index(b"IHDR")
    data[at + 4 : at + 12] = struct.pack(">II", width, height)
    data[at + 17 : at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 17])))
    return bytes(data)


def test_decoding_is_bounded_by_pixels_times_bands(settings):
    project = make_project()
    # The default cap refuses the 6320 x 6320 RGBA PNG (160 MB decoded) from its header.
    big = _png_claiming(6320, 6320)
    assert len(big) < 1000
    report = images_import(project=project, files=[("bomb.png", big)])
    entry = report.by_name()["bomb.png"]
    assert entry.status == Status.REJECTED
    assert "too large to decode" in entry.reason

    settings.IMAGECLEAN_MAX_DECODED_BYTES = 200 * 200 * 3
    report = images_import(
        project=project,
        files=[
            ("rgb.png", _png("RGB", (200, 200))),  # 120,000 bytes: at the cap
            ("rgba.png", _png("RGBA", (200, 200))),  # 160,000: over
            ("palette.png", _png("P", (200, 200))),  # converted to RGBA: over
            ("grey.png", _png("L", (300, 300))),  # 90,000: under
        ],
    )
    status = {name: entry.status for name, entry in report.by_name().items()}
    assert status == {
        "rgb.png": Status.IMPORTED,
        "rgba.png": Status.REJECTED,
        "palette.png": Status.REJECTED,
        "grey.png": Status.IMPORTED,
    }


def test_decoding_waits_for_a_free_slot(settings):
    """Decoding runs in a bounded pool per process: with one slot taken, the next decode waits
    until it is free, then runs."""
    from labeling.services.imports import decode_image, decode_slot

    settings.IMAGECLEAN_DECODE_CONCURRENCY = 1
    data = _png("RGB", (64, 64))
    results = []
    worker = threading.Thread(target=lambda: results.append(decode_image(data)))
    with decode_slot():  # the only slot
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not results  # waiting for the slot
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert results[0][:3] == ("PNG", 64, 64)
    # Two slots: a decode runs while one is held.
    settings.IMAGECLEAN_DECODE_CONCURRENCY = 2
    with decode_slot():
        assert decode_image(data)[:3] == ("PNG", 64, 64)
