"""Image import: the service on hostile input, zip archives, folders, the page and the command."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from PIL import Image as PILImage

from labeling.models import Image, Queue, QueueItem
from labeling.services.imports import (
    Status,
    images_import,
    images_import_folder,
    images_import_zip,
)
from labeling.services.projects import project_create
from tests.factories import PASSWORD, make_project, make_user, png_bytes

pytestmark = pytest.mark.django_db


def jpeg_bytes(seed: int, size=(40, 30), exif_orientation: int | None = None) -> bytes:
    img = PILImage.new("RGB", size, color=(seed % 256, 90, 200))
    img.putpixel((0, 0), (seed % 256, seed % 7, 1))
    buf = io.BytesIO()
    if exif_orientation:
        exif = PILImage.Exif()
        exif[0x0112] = exif_orientation
        img.save(buf, format="JPEG", quality=90, exif=exif)
    else:
        img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def noise_png(side: int, seed: int = 0) -> bytes:
    """An incompressible PNG, so its size in bytes is about 3 * side**2."""
    rng = __import__("random").Random(seed)
    img = PILImage.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose IHDR (with a valid CRC) claims `width` x `height` pixels."""
    data = bytearray(png_bytes(999))
    ihdr_at = data.index(b"IHDR")
    data[ihdr_at + 4 : ihdr_at + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr_at : ihdr_at + 17])) & 0xFFFFFFFF
    data[ihdr_at + 17 : ihdr_at + 21] = struct.pack(">I", crc)
    return bytes(data)


def real_large_png(side: int) -> bytes:
    """A real `side` x `side` image, tiny in bytes (one flat colour compresses to nothing)."""
    buf = io.BytesIO()
    PILImage.new("L", (side, side), 0).save(buf, format="PNG")
    return buf.getvalue()


def zip_of(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)  # keeps '../' and '/abs' as written, unlike write()
            info.compress_type = compression
            archive.writestr(info, content)
    return buf.getvalue()


def patch_declared_size(archive: bytes, member: str, declared: int) -> bytes:
    """Make the zip headers lie: claim `declared` uncompressed bytes for `member`."""
    data = bytearray(archive)
    name = member.encode()
    local = data.index(b"PK\x03\x04" + b"")  # first local header is the only member here
    assert data[local + 30 : local + 30 + len(name)] == name
    data[local + 22 : local + 26] = struct.pack("<I", declared)
    central = data.index(b"PK\x01\x02")
    assert data[central + 46 : central + 46 + len(name)] == name
    data[central + 24 : central + 28] = struct.pack("<I", declared)
    return bytes(data)


@pytest.fixture
def small_caps(settings):
    # Small caps keep the hostile files small and the test fast; the checks are the same.
    settings.IMAGECLEAN_MAX_IMAGE_BYTES = 300_000
    settings.IMAGECLEAN_MAX_IMAGE_PIXELS = 4_000_000
    return settings


@pytest.mark.bad_input
def test_one_batch_of_good_and_hostile_files(small_caps):
    project = project_create(name="Import", slug="import", label_schema=make_project().label_schema)
    good_png, good_jpg = png_bytes(1), jpeg_bytes(2)
    truncated_jpg = jpeg_bytes(3, size=(200, 200))
    truncated_jpg = truncated_jpg[: len(truncated_jpg) // 2]
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(1)</script></svg>"
    )
    html = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
    oversize = noise_png(400)  # a valid image of ~480 kB, over the 300 kB cap
    assert len(oversize) > small_caps.IMAGECLEAN_MAX_IMAGE_BYTES

    report = images_import(
        project=project,
        files=[
            ("good.png", good_png),
            ("good.jpg", io.BytesIO(good_jpg)),
            ("copy-of-good.png", good_png),
            ("truncated.jpg", truncated_jpg),
            ("empty.png", b""),
            ("drawing.svg", svg),
            ("page.jpg", html),
            ("bomb-header.png", png_claiming(100_000, 100_000)),
            ("bomb-real.png", real_large_png(2_500)),  # 6.25 M pixels > 4 M, ~8 kB
            ("oversize.png", io.BytesIO(oversize)),
        ],
    )
    got = {e.name: (e.status, e.reason) for e in report.entries}
    assert len(report.entries) == 10
    assert got["good.png"] == (Status.IMPORTED, "")
    assert got["good.jpg"] == (Status.IMPORTED, "")
    assert got["copy-of-good.png"][0] == Status.DUPLICATE
    assert "good.png" in got["copy-of-good.png"][1]
    assert got["truncated.jpg"][0] == Status.REJECTED
    assert "truncated" in got["truncated.jpg"][1]
    assert got["empty.png"] == (Status.REJECTED, "empty file (0 bytes).")
    for name in ("drawing.svg", "page.jpg"):
        assert got[name][0] == Status.REJECTED
        assert "not an image" in got[name][1]
    for name in ("bomb-header.png", "bomb-real.png"):
        assert got[name][0] == Status.REJECTED
        assert "decompression bomb" in got[name][1]
    assert got["oversize.png"][0] == Status.REJECTED
    assert "too large" in got["oversize.png"][1]
    assert (report.imported, report.duplicates, report.rejected) == (2, 1, 7)

    # A zip with traversal, an absolute path, a bomb, a lying-free nested good image, junk.
    archive = zip_of(
        {
            "../evil.png": png_bytes(10),
            "/etc/abs.png": png_bytes(11),
            "bomb.png": b"\0" * 5_000_000,
            "photos/2024/nested.png": png_bytes(12),
            "__MACOSX/photos/._nested.png": b"resource fork",
            "photos/.DS_Store": b"finder",
            "photos/again.png": good_png,
        }
    )
    zip_report = images_import_zip(
        project=project, zip_file=io.BytesIO(archive), archive_name="batch.zip"
    )
    got = {e.name: (e.status, e.reason) for e in zip_report.entries}
    assert zip_report.archive_errors == []
    assert got["batch.zip/../evil.png"][0] == Status.REJECTED
    assert "path traversal" in got["batch.zip/../evil.png"][1]
    assert got["batch.zip//etc/abs.png"][0] == Status.REJECTED
    assert "absolute path" in got["batch.zip//etc/abs.png"][1]
    assert got["batch.zip/bomb.png"][0] == Status.REJECTED
    assert "zip bomb" in got["batch.zip/bomb.png"][1]
    assert got["batch.zip/photos/2024/nested.png"] == (Status.IMPORTED, "")
    assert got["batch.zip/__MACOSX/photos/._nested.png"][0] == Status.SKIPPED
    assert got["batch.zip/photos/.DS_Store"][0] == Status.SKIPPED
    assert got["batch.zip/photos/again.png"][0] == Status.DUPLICATE
    assert "already in the project" in got["batch.zip/photos/again.png"][1]

    # The database holds exactly the three good images, each with its file, thumbnail and queue
    # item; nothing from a rejected file was stored.
    images = Image.objects.filter(project=project)
    assert sorted(images.values_list("source", flat=True)) == [
        "batch.zip/photos/2024/nested.png",
        "good.jpg",
        "good.png",
    ]
    jpg = images.get(source="good.jpg")
    assert (jpg.format, jpg.width, jpg.height, jpg.byte_size) == ("JPEG", 40, 30, len(good_jpg))
    assert jpg.file.read() == good_jpg
    with PILImage.open(jpg.thumbnail) as thumb:
        assert thumb.format == "JPEG"
    for image in images:
        assert image.split == project.split_for_hash(image.content_hash)
    assert_queued_by_split(project, images)
    stored = []
    for folder, _dirs, files in os.walk(small_caps.MEDIA_ROOT):
        stored += [os.path.join(folder, f) for f in files]
    assert len(stored) == 6  # 3 originals + 3 thumbnails


@pytest.mark.bad_input
def test_broken_archives_are_clear_errors():
    project = make_project()
    not_zip = images_import_zip(
        project=project, zip_file=io.BytesIO(b"this is not a zip"), archive_name="x.zip"
    )
    assert not_zip.entries == []
    assert "x.zip: not a readable zip archive" in not_zip.archive_errors[0]

    whole = zip_of({"a.png": png_bytes(1), "b.png": png_bytes(2)})
    truncated = images_import_zip(
        project=project, zip_file=io.BytesIO(whole[: len(whole) - 30]), archive_name="cut.zip"
    )
    assert "cut.zip: not a readable zip archive" in truncated.archive_errors[0]
    assert not Image.objects.filter(project=project).exists()


@pytest.mark.bad_input
def test_zip_caps_lying_headers_and_member_count(settings):
    project = make_project()
    # Headers that understate a member's size: the bounded reader stops at the declared size and
    # the CRC check rejects it, instead of inflating 5 MB.
    lying = patch_declared_size(zip_of({"liar.png": b"\0" * 5_000_000}), "liar.png", 1000)
    report = images_import_zip(project=project, zip_file=io.BytesIO(lying), archive_name="l.zip")
    (entry,) = report.entries
    assert entry.status == Status.REJECTED
    assert "unreadable archive member" in entry.reason

    # The total uncompressed budget: members beyond it are rejected, the ones before it import.
    settings.IMAGECLEAN_MAX_ZIP_UNCOMPRESSED_BYTES = 250_000
    members = {f"n{i}.png": noise_png(150, seed=i) for i in range(3)}  # ~68 kB each
    members["n3.png"] = noise_png(200, seed=3)  # ~120 kB: over what is left
    report = images_import_zip(
        project=project, zip_file=io.BytesIO(zip_of(members)), archive_name="big.zip"
    )
    statuses = [e.status for e in report.entries]
    assert statuses == [Status.IMPORTED] * 3 + [Status.REJECTED]
    assert "total uncompressed size" in report.entries[-1].reason

    settings.IMAGECLEAN_MAX_ZIP_MEMBERS = 2
    report = images_import_zip(
        project=project,
        zip_file=io.BytesIO(zip_of({f"m{i}.png": png_bytes(100 + i) for i in range(3)})),
        archive_name="many.zip",
    )
    assert report.entries == []
    assert "3 entries, over the limit of 2" in report.archive_errors[0]


def test_thumbnail_flattens_transparency_and_follows_exif():
    project = make_project()
    transparent = PILImage.new("RGBA", (20, 10), (255, 0, 0, 0))
    buf = io.BytesIO()
    transparent.save(buf, format="PNG")
    rotated = jpeg_bytes(5, size=(40, 30), exif_orientation=6)  # shown rotated by 90 degrees
    report = images_import(project=project, files=[("t.png", buf.getvalue()), ("r.jpg", rotated)])
    assert report.imported == 2
    png = Image.objects.get(project=project, source="t.png")
    with PILImage.open(png.thumbnail) as thumb:
        assert thumb.mode == "RGB"
        r, g, b = thumb.getpixel((5, 5))
        assert min(r, g, b) > 240  # transparent red became white, not black or red
    jpg = Image.objects.get(project=project, source="r.jpg")
    assert (jpg.width, jpg.height) == (30, 40)
    with PILImage.open(jpg.thumbnail) as thumb:
        assert thumb.size == (30, 40)


def labeling_items(project) -> int:
    return QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.LABELING).count()


def assert_validation_queued(project) -> None:
    """Every validation-split image waits in the validation queue, whatever the import was told
    about the pool (issue 12)."""
    validation = Image.objects.filter(project=project, split=Image.Split.VALIDATION)
    queued = QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.VALIDATION)
    assert set(queued.values_list("image_id", flat=True)) == set(
        validation.values_list("pk", flat=True)
    )


def assert_queued_by_split(project, images) -> None:
    """Imported with "add to queue": pool images in the labeling queue, validation images in the
    validation queue, none in both."""
    labeling = QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.LABELING)
    assert set(labeling.values_list("image_id", flat=True)) == set(
        images.filter(split=Image.Split.POOL).values_list("pk", flat=True)
    )
    assert_validation_queued(project)


def test_folder_import_and_command(tmp_path, capsys):
    project = project_create(name="Cmd", slug="cmd", label_schema=make_project().label_schema)
    folder = tmp_path / "pool"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes(1))
    (folder / "sub" / "b.jpg").write_bytes(jpeg_bytes(2))
    (folder / "sub" / "notes.txt").write_bytes(b"not an image")
    (folder / ".hidden.png").write_bytes(png_bytes(3))

    flat = images_import_folder(project=project, path=folder, recursive=False, add_to_queue=False)
    assert [(e.name, e.status) for e in flat.entries] == [("a.png", Status.IMPORTED)]
    assert labeling_items(project) == 0
    assert_validation_queued(project)

    call_command("import_images", "cmd", str(folder))
    out = capsys.readouterr().out
    assert "a.png\tduplicate" in out
    assert os.path.join("sub", "b.jpg") + "\timported" in out
    assert os.path.join("sub", "notes.txt") + "\trejected" in out
    assert "3 files: 1 imported, 1 duplicates, 1 rejected, 0 skipped" in out
    b_jpg = Image.objects.get(project=project, source__endswith="b.jpg")
    assert labeling_items(project) == int(b_jpg.split == Image.Split.POOL)
    assert_validation_queued(project)

    archive = tmp_path / "more.zip"
    archive.write_bytes(zip_of({"x/c.png": png_bytes(4)}))
    call_command("import_images", "cmd", str(archive), "--zip", "--no-queue")
    out = capsys.readouterr().out
    assert "more.zip/x/c.png\timported" in out
    assert Image.objects.filter(project=project).count() == 3
    assert labeling_items(project) == int(b_jpg.split == Image.Split.POOL)
    assert_validation_queued(project)


# --- The page ---------------------------------------------------------------------------------
def test_engineer_uploads_files_and_a_zip_through_the_page(client):
    engineer = make_user("site_engineer")
    project = make_project()
    client.login(username=engineer.username, password=PASSWORD)
    url = reverse("project-import", args=[project.slug])
    page = client.get(url)
    assert page.status_code == 200
    assert b'type="file" name="files" multiple' in page.content

    response = client.post(
        url,
        {
            "files": [
                SimpleUploadedFile("one.png", png_bytes(1), content_type="image/png"),
                SimpleUploadedFile("two.jpg", jpeg_bytes(2), content_type="image/jpeg"),
                SimpleUploadedFile("fake.jpg", b"<html>hi</html>", content_type="image/jpeg"),
                SimpleUploadedFile(
                    "set.zip", zip_of({"d/three.png": png_bytes(3)}), content_type="application/zip"
                ),
                SimpleUploadedFile("broken.zip", b"PK nope", content_type="application/zip"),
            ],
            "add_to_queue": "on",
        },
    )
    assert response.status_code == 200
    report = response.context["report"]
    assert [(e.name, e.status) for e in report.entries] == [
        ("one.png", Status.IMPORTED),
        ("two.jpg", Status.IMPORTED),
        ("fake.jpg", Status.REJECTED),
        ("set.zip/d/three.png", Status.IMPORTED),
    ]
    assert "broken.zip: not a readable zip archive" in report.archive_errors[0]
    html = response.content.decode()
    assert "<b>3</b> imported" in html
    assert "<b>1</b> rejected" in html
    assert "fake.jpg" in html and "not an image" in html
    assert "broken.zip: not a readable zip archive" in html
    assert Image.objects.filter(project=project).count() == 3
    assert_queued_by_split(project, Image.objects.filter(project=project))

    empty = client.post(url, {})
    assert empty.status_code == 400
    assert b"Choose at least one image" in empty.content


@pytest.mark.parametrize("role", ["annotator", "lead"])
def test_import_page_forbidden_below_engineer(client, role):
    user = make_user(role)
    project = make_project(members=[user])
    client.login(username=user.username, password=PASSWORD)
    url = reverse("project-import", args=[project.slug])
    assert client.get(url).status_code == 403
    upload = SimpleUploadedFile("one.png", png_bytes(1), content_type="image/png")
    assert client.post(url, {"files": [upload]}).status_code == 403
    assert not Image.objects.filter(project=project).exists()


def test_import_page_sends_anonymous_to_login(client):
    project = make_project()
    url = reverse("project-import", args=[project.slug])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_import_entry_page_lists_projects_for_engineers_only(client):
    engineer = make_user("site_engineer")
    project = make_project(name="Shoes")
    client.login(username=engineer.username, password=PASSWORD)
    response = client.get(reverse("import"))
    assert response.status_code == 200
    assert reverse("project-import", args=[project.slug]) in response.content.decode()
    lead = make_user("lead")
    client.login(username=lead.username, password=PASSWORD)
    assert client.get(reverse("import")).status_code == 403


# --- Project creation (the target of every import) ----------------------------------------------
def test_project_create_makes_both_queues_and_validates():
    from django.core.exceptions import ValidationError

    from labeling.services.projects import project_members_set

    annotator, lead = make_user("annotator"), make_user("lead")
    schema = make_project().label_schema
    project = project_create(
        name="Shoes", slug="shoes", label_schema=schema, members=[annotator], labels_per_item=3
    )
    queues = {q.kind: q for q in Queue.objects.filter(project=project)}
    assert set(queues) == {Queue.Kind.LABELING, Queue.Kind.REVIEW}
    assert (queues["labeling"].name, queues["review"].name) == ("Labeling", "Re-review")
    assert list(project.members.all()) == [annotator]
    project_members_set(project=project, members=[lead])
    assert list(project.members.all()) == [lead]

    # Imported items ask for k = labels_per_item labels.
    images_import(project=project, files=[("a.png", png_bytes(1))])
    assert QueueItem.objects.get(queue__project=project, image__source="a.png").labels_needed == 3

    bad_schema = {**schema, "positive": "missing"}
    with pytest.raises(ValidationError):
        project_create(name="Bad", slug="bad", label_schema=bad_schema)
    with pytest.raises(ValidationError):
        project_create(name="Dup", slug="shoes", label_schema=schema)
    assert not Queue.objects.filter(project__slug="bad").exists()


def test_refilling_the_validation_queue_moves_what_older_imports_queued():
    """Images of the validation split imported before the validation queue existed (in the
    labeling queue, or in none) reach it through the jobs page's refill, once each; a labeled
    one stays out."""
    from django.test import Client
    from django.urls import reverse

    from labeling.models import Label
    from labeling.services.projects import project_default_queues_ensure
    from labeling.services.queues import queue_items_add
    from tests.factories import make_image

    engineer, annotator = make_user("site_engineer"), make_user("annotator")
    project = make_project(members=[annotator])
    labeling, _review = project_default_queues_ensure(project=project)
    images = [make_image(project, seed=77_000 + i, split=Image.Split.VALIDATION) for i in range(4)]
    queue_items_add(queue=labeling, images=[i.pk for i in images[:2]], strategy="manual")
    Label.objects.create(project=project, image=images[3], annotator=annotator, value="normal")
    client = Client()
    client.force_login(engineer)
    before = client.get(reverse("api-validation-progress", kwargs={"slug": project.slug})).json()
    assert (before["images"], before["labeled"], before["open"]) == (4, 1, 0)
    assert before["not_queued"] == 1  # images[2]: unlabeled, in no queue (the two others wait)
    response = client.post(reverse("project-validation-fill", kwargs={"slug": project.slug}))
    assert response.status_code == 302
    validation = Queue.objects.get(project=project, kind=Queue.Kind.VALIDATION)
    assert set(validation.items.values_list("image_id", flat=True)) == {i.pk for i in images[:3]}
    assert not labeling.items.filter(status=QueueItem.Status.OPEN).exists()  # moved, not doubled
    again = client.post(reverse("api-validation-fill", kwargs={"slug": project.slug})).json()
    assert again["added"] == again["moved"] == 0
    assert again["progress"]["open"] == 3 and again["progress"]["not_queued"] == 0
    page = client.get(reverse("project-jobs", kwargs={"slug": project.slug})).content.decode()
    assert 'id="validation-progress"' in page and 'id="validation-fill"' in page
