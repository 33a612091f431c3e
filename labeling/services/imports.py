"""Importing images into a project: loose files, zip archives and server-side folders.

Every file gets one line in the report (imported, duplicate, rejected or skipped, with a reason a
person can act on) and a bad file never stops the rest of the batch: each image is written in its
own transaction.

What decides whether a file is an image is its content, as Pillow reads it, never its name: an
SVG or an HTML page renamed `.jpg` is not identified by Pillow and is rejected. Accepted formats
are the ones every browser displays in an <img> tag, so annotators can see what they label:
JPEG (and MPO, the multi-picture JPEG some phone cameras write, stored as JPEG), PNG, WEBP, GIF
and BMP. TIFF is refused on purpose: browsers do not display it, and Pillow's TIFF reader
(libtiff, many compression codecs) is the largest decoder attack surface we would expose to
uploads. Convert TIFF to PNG before import.

Limits (config/settings/base.py): IMAGECLEAN_MAX_IMAGE_BYTES per file, IMAGECLEAN_MAX_IMAGE_PIXELS
per image (Pillow's decompression-bomb guard, turned from a warning into a rejection),
IMAGECLEAN_MAX_DECODED_BYTES for the decoded raster (pixels x bands x bytes per band, read from the
header before decoding: a 170 KB PNG can declare 6320 x 6320 RGBA, 160 MB), and for zip
archives IMAGECLEAN_MAX_ZIP_MEMBERS and IMAGECLEAN_MAX_ZIP_UNCOMPRESSED_BYTES plus a per-member
compression-ratio cap. Members are read through a bounded reader, so an archive whose headers lie
about sizes still cannot make us hold more than one image's cap in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from PIL import ExifTags, ImageOps, UnidentifiedImageError
from PIL import Image as PILImage

from labeling.models import Image, Project, Queue, QueueItem, Strategy
from labeling.services.projects import (
    project_default_queues_ensure,
    project_validation_queue_ensure,
)

# Pillow format name -> the format we store (and serve the Content-Type of).
ALLOWED_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WEBP",
    "GIF": "GIF",
    "BMP": "BMP",
}
FORMAT_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
# Real images are already compressed (PNG, JPEG, WEBP, GIF): zip shrinks them barely. A member
# that inflates more than this is either a bomb or a near-blank bitmap; both are refused.
DEFAULT_MAX_ZIP_RATIO = 100
THUMBNAIL_QUALITY = 85


class _DecodeSlots:
    """A bounded pool of decoding slots per process: IMAGECLEAN_DECODE_CONCURRENCY images are
    decoded at once, the others wait. With the cap on one decoded raster
    (IMAGECLEAN_MAX_DECODED_BYTES) this bounds what decoding may hold in one web worker, however
    many uploads its threads are handling (four 160 MB rasters at once took one to 1.3 GB)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._size = 0
        self._semaphore = threading.BoundedSemaphore(1)

    def semaphore(self) -> threading.BoundedSemaphore:
        size = max(1, settings.IMAGECLEAN_DECODE_CONCURRENCY)
        with self._lock:
            if size != self._size:  # the setting is read when it changes (tests, a reload)
                self._semaphore, self._size = threading.BoundedSemaphore(size), size
            return self._semaphore


_DECODE_SLOTS = _DecodeSlots()


@contextmanager
def decode_slot() -> Iterator[None]:
    """Hold one decoding slot of this process for the block (waits while all are taken)."""
    with _DECODE_SLOTS.semaphore():
        yield


class Status:
    IMPORTED = "imported"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    SKIPPED = "skipped"


@dataclass
class ImportEntry:
    name: str
    status: str
    reason: str = ""
    image_id: int | None = None


@dataclass
class ImportReport:
    entries: list[ImportEntry] = field(default_factory=list)
    archive_errors: list[str] = field(default_factory=list)

    def add(self, name: str, status: str, reason: str = "", image_id: int | None = None) -> None:
        self.entries.append(ImportEntry(name, status, reason, image_id))

    def extend(self, other: ImportReport) -> None:
        self.entries.extend(other.entries)
        self.archive_errors.extend(other.archive_errors)

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    @property
    def imported(self) -> int:
        return self.count(Status.IMPORTED)

    @property
    def duplicates(self) -> int:
        return self.count(Status.DUPLICATE)

    @property
    def rejected(self) -> int:
        return self.count(Status.REJECTED)

    @property
    def skipped(self) -> int:
        return self.count(Status.SKIPPED)

    def summary(self) -> str:
        text = (
            f"{len(self.entries)} files: {self.imported} imported, {self.duplicates} duplicates, "
            f"{self.rejected} rejected, {self.skipped} skipped"
        )
        if self.archive_errors:
            text += f"; {len(self.archive_errors)} archive error(s)"
        return text

    def by_name(self) -> dict[str, ImportEntry]:
        return {e.name: e for e in self.entries}


class RejectedFile(Exception):
    """A file that is not imported; the message is the reason shown to the engineer."""


# --- Loose files ------------------------------------------------------------------------------
def images_import(
    *,
    project: Project,
    files: Iterable[tuple],
    created_by: User | None = None,
    source_prefix: str = "",
    add_to_queue: bool = True,
) -> ImportReport:
    """Import `files`, an iterable of (name, bytes or binary file-like) or
    (name, data, metadata dict) tuples. The metadata is stored on the new Image (the demo keeps
    the dataset's true class there). Returns the per-file report."""
    importer = _Importer(project=project, created_by=created_by, add_to_queue=add_to_queue)
    for item in files:
        name, data = item[0], item[1]
        metadata = item[2] if len(item) > 2 else None
        importer.import_one(f"{source_prefix}{name}", data, metadata=metadata)
    return importer.finish()


def images_import_zip(
    *,
    project: Project,
    zip_file: str | os.PathLike | IO[bytes],
    created_by: User | None = None,
    add_to_queue: bool = True,
    archive_name: str | None = None,
) -> ImportReport:
    """Import the images of a zip archive (nested folders are fine). A broken or non-zip
    archive, or one over the member-count cap, is reported as an archive error."""
    importer = _Importer(project=project, created_by=created_by, add_to_queue=add_to_queue)
    _import_zip_into(importer, zip_file, archive_name or _name_of(zip_file))
    return importer.finish()


def _import_zip_into(importer: _Importer, zip_file, archive_name: str) -> None:
    report = importer.report
    try:
        archive = zipfile.ZipFile(zip_file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        report.archive_errors.append(
            f"{archive_name}: not a readable zip archive ({exc}); nothing was imported from it."
        )
        return
    with archive:
        members = archive.infolist()
        max_members = settings.IMAGECLEAN_MAX_ZIP_MEMBERS
        if len(members) > max_members:
            report.archive_errors.append(
                f"{archive_name}: {len(members)} entries, over the limit of {max_members}; "
                "split the archive."
            )
            return
        budget = settings.IMAGECLEAN_MAX_ZIP_UNCOMPRESSED_BYTES
        for member in members:
            if member.is_dir():
                continue
            display = f"{archive_name}/{member.filename}"
            try:
                _check_member(member)
            except _SkipMember as skip:
                report.add(display, Status.SKIPPED, str(skip))
                continue
            except RejectedFile as exc:
                report.add(display, Status.REJECTED, str(exc))
                continue
            if member.file_size > budget:
                report.add(
                    display,
                    Status.REJECTED,
                    "the archive's total uncompressed size would exceed "
                    f"{_mb(settings.IMAGECLEAN_MAX_ZIP_UNCOMPRESSED_BYTES)}; split the archive.",
                )
                continue
            try:
                with archive.open(member) as stream:
                    data = _read_bounded(stream, min(settings.IMAGECLEAN_MAX_IMAGE_BYTES, budget))
            except RejectedFile as exc:
                report.add(display, Status.REJECTED, str(exc))
                continue
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as exc:
                # Bad CRC (headers lying about the content), unsupported compression, ...
                report.add(display, Status.REJECTED, f"unreadable archive member ({exc}).")
                continue
            budget -= len(data)
            importer.import_one(display, data)


def images_import_folder(
    *,
    project: Project,
    path: str | os.PathLike,
    recursive: bool = True,
    created_by: User | None = None,
    add_to_queue: bool = True,
) -> ImportReport:
    """Import every file under a server-side folder (hidden files and folders are skipped)."""
    root = Path(path)
    if not root.is_dir():
        report = ImportReport()
        report.archive_errors.append(f"{root}: not a folder.")
        return report
    importer = _Importer(project=project, created_by=created_by, add_to_queue=add_to_queue)
    for file_path in _walk(root, recursive=recursive):
        with open(file_path, "rb") as handle:
            importer.import_one(str(file_path.relative_to(root)), handle)
    return importer.finish()


def uploads_import(
    *,
    project: Project,
    uploads: Iterable[Any],
    created_by: User | None = None,
    add_to_queue: bool = True,
) -> ImportReport:
    """Import the files of one upload form: `.zip` files are opened as archives (and must be
    real zips), anything else is treated as one image. Django's uploaded files are streamed
    from memory or from a temporary file on disk, never read whole unless under the caps."""
    importer = _Importer(project=project, created_by=created_by, add_to_queue=add_to_queue)
    for upload in uploads:
        _import_upload(importer, os.path.basename(upload.name or "upload"), upload.size, upload)
    return importer.finish()


def _import_upload(importer: _Importer, name: str, size: int, source: IO[bytes]) -> None:
    """One file of an upload form, in the request or staged for a job: a `.zip` is opened as
    an archive (and must be a real zip, under the upload cap), anything else is one image."""
    if not name.lower().endswith(".zip"):
        importer.import_one(name, source)
    elif size > settings.IMAGECLEAN_MAX_UPLOAD_BYTES:
        importer.report.archive_errors.append(
            f"{name}: {_mb(size)}, over the upload limit of "
            f"{_mb(settings.IMAGECLEAN_MAX_UPLOAD_BYTES)}; use `manage.py import_images`."
        )
    else:
        _import_zip_into(importer, source, name)


# --- The per-file work --------------------------------------------------------------------------
class _Importer:
    def __init__(self, *, project: Project, created_by: User | None, add_to_queue: bool):
        self.project = project
        self.created_by = created_by
        self.report = ImportReport()
        self.seen: dict[str, str] = {}  # content hash -> first name in this batch
        self.queue: Queue | None = None
        if add_to_queue:
            self.queue, _review = project_default_queues_ensure(project=project)
        # The frozen validation split is queued whatever the engineer chose for the pool: every
        # model version is measured on it, so it must get labeled (issue 12), and its own queue
        # keeps a model's choices from ever reaching it.
        self.validation_queue: Queue | None = None

    def _queue_validation(self, image: Image) -> None:
        if self.validation_queue is None:
            self.validation_queue = project_validation_queue_ensure(project=self.project)
        QueueItem.objects.create(
            queue=self.validation_queue,
            image=image,
            strategy=Strategy.VALIDATION,
            labels_needed=self.validation_queue.effective_labels_per_item,
            created_by=self.created_by,
            details={"source": "import"},
        )

    def finish(self) -> ImportReport:
        """The report, recorded in the audit log; new pool images are triaged as they come
        when triage is running (its task scores and routes them, labeling.services.triage)."""
        report = self.report
        self._audit(
            {
                "imported": report.imported,
                "duplicates": report.duplicates,
                "rejected": report.rejected,
                "skipped": report.skipped,
                "archive_errors": len(report.archive_errors),
            }
        )
        self.after_new_images(
            [e.image_id for e in report.entries if e.status == Status.IMPORTED and e.image_id]
        )
        return self.report

    def _audit(self, counts: dict) -> None:
        from labeling.services.audit_log import Action, audit_record

        audit_record(
            actor=self.created_by,
            action=Action.IMAGES_IMPORTED,
            project=self.project,
            details=counts,
        )

    def after_new_images(self, image_ids: list[int]) -> None:
        """What follows new images, once their transaction commits; called once per request,
        and once per chunk by an import job (so a job that dies later loses none of it)."""
        if not image_ids:
            return
        from labeling.services.embeddings import enqueue_embedding_for
        from labeling.services.triage import triage_after_new_images

        triage_after_new_images(project=self.project)
        # Their vectors for cold-start recall, in the background once this commits.
        enqueue_embedding_for(project=self.project, image_ids=image_ids)

    def import_one(self, name: str, data: bytes | IO[bytes], *, metadata=None) -> None:
        try:
            content = (
                data
                if isinstance(data, bytes | bytearray)
                else _read_bounded(data, settings.IMAGECLEAN_MAX_IMAGE_BYTES)
            )
            self._import_bytes(name, bytes(content), metadata or {})
        except RejectedFile as exc:
            self.report.add(name, Status.REJECTED, str(exc))

    def _import_bytes(self, name: str, content: bytes, metadata: dict) -> None:
        if not content:
            raise RejectedFile("empty file (0 bytes).")
        if len(content) > settings.IMAGECLEAN_MAX_IMAGE_BYTES:
            raise RejectedFile(_too_large(len(content)))
        content_hash = hashlib.sha256(content).hexdigest()
        if content_hash in self.seen:
            self.report.add(
                name, Status.DUPLICATE, f"same content as {self.seen[content_hash]} in this batch."
            )
            return
        existing = Image.objects.filter(project=self.project, content_hash=content_hash).first()
        if existing is not None:
            self.seen[content_hash] = name
            self.report.add(
                name,
                Status.DUPLICATE,
                f"already in the project as image #{existing.pk} ({existing.source}).",
                existing.pk,
            )
            return
        decoded = decode_image(content)
        self.seen[content_hash] = name
        image = self._store(name, content, content_hash, decoded, metadata)
        if image is None:
            return
        self.report.add(name, Status.IMPORTED, "", image.pk)

    def _store(self, name, content, content_hash, decoded, metadata) -> Image | None:
        image_format, width, height, thumbnail = decoded
        image = Image(
            project=self.project,
            content_hash=content_hash,
            width=width,
            height=height,
            format=image_format,
            byte_size=len(content),
            source=name[:500],
            split=self.project.split_for_hash(content_hash),
            metadata=metadata,
        )
        ext = FORMAT_EXTENSIONS[image_format]
        image.file.save(f"{content_hash}.{ext}", ContentFile(content), save=False)
        image.thumbnail.save(f"{content_hash}.jpg", ContentFile(thumbnail), save=False)
        try:
            with transaction.atomic():
                image.save()
                if image.split == Image.Split.VALIDATION:
                    self._queue_validation(image)
                elif self.queue is not None:
                    QueueItem.objects.create(
                        queue=self.queue,
                        image=image,
                        strategy=Strategy.MANUAL,
                        labels_needed=self.queue.effective_labels_per_item,
                        created_by=self.created_by,
                        details={"source": "import"},
                    )
        except IntegrityError:
            # A concurrent import stored the same content first; our copies are new files
            # (storage never overwrites), so removing them loses nothing.
            image.file.delete(save=False)
            image.thumbnail.delete(save=False)
            winner = Image.objects.filter(project=self.project, content_hash=content_hash).first()
            self.report.add(
                name,
                Status.DUPLICATE,
                "imported concurrently by another batch.",
                winner.pk if winner else None,
            )
            return None
        except BaseException:
            image.file.delete(save=False)
            image.thumbnail.delete(save=False)
            raise
        return image


# --- Big batches: staged to disk, imported by a job ----------------------------------------------
# One request's uploads together above IMAGECLEAN_IMPORT_JOB_BYTES, or more files than
# IMAGECLEAN_IMPORT_JOB_FILES, are not imported in the request: they are copied to
# IMAGECLEAN_IMPORT_STAGING_DIR/<token>/ and an import Job (kind "import", task
# labeling.tasks.images_import_staged) imports them with progress and a report on its page.
# The same per-file code and caps run either way (docs/jobs.md, "Imports as a job").
STAGING_MANIFEST = "manifest.json"
# Progress is saved with every image (in the image's own transaction); the job's problems list
# keeps the first this many rejected, duplicate or skipped files by name.
MAX_RECORDED_PROBLEMS = 200
# New images' follow-up work (triage, embedding) is sent per chunk of this many images.
HOOK_CHUNK = 256


def import_runs_as_job(uploads: list[Any]) -> bool:
    """The one rule: does this request's batch go to a job rather than run in the request?"""
    total = sum(int(getattr(upload, "size", 0) or 0) for upload in uploads)
    return (
        total > settings.IMAGECLEAN_IMPORT_JOB_BYTES
        or len(uploads) > settings.IMAGECLEAN_IMPORT_JOB_FILES
    )


def _staging_dir(token: str) -> Path:
    if not isinstance(token, str) or not re.fullmatch(r"[0-9a-f]{32}", token):
        raise ValueError("not a staging token")  # only tokens this module made
    return Path(settings.IMAGECLEAN_IMPORT_STAGING_DIR) / token


def import_job_start(
    *, project: Project, uploads: list[Any], created_by: User, add_to_queue: bool = True
):
    """Copy the uploads to a staging folder and start an import job on it; returns the Job.
    Only engineers who manage the project import (the view checks it too)."""
    from labeling.models import Job
    from labeling.permissions import can_manage
    from labeling.services.jobs import job_create_internal

    if not can_manage(created_by, project):
        raise PermissionDenied
    token = uuid.uuid4().hex
    folder = _staging_dir(token)
    folder.mkdir(parents=True)
    try:
        manifest = []
        for index, upload in enumerate(uploads):
            stored = f"{index:06d}"
            with (folder / stored).open("wb") as out:
                for chunk in upload.chunks():
                    out.write(chunk)
            name = os.path.basename(upload.name or "upload")
            manifest.append({"file": stored, "name": name, "size": upload.size})
        (folder / STAGING_MANIFEST).write_text(json.dumps(manifest))
        return job_create_internal(
            project=project,
            kind=Job.Kind.IMPORT,
            params={
                "staging": token,
                "add_to_queue": bool(add_to_queue),
                "files": len(manifest),
                "bytes": sum(entry["size"] for entry in manifest),
            },
            created_by=created_by,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


class _ResumedReport(ImportReport):
    """A report that counts every entry (an image, a duplicate, a rejected or skipped file, in
    the order the batch is read, which is always the same) and drops the first `skip`: the ones
    an earlier attempt of the job already recorded."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip = skip
        self.position = 0

    @property
    def replaying(self) -> bool:
        return self.position < self.skip

    def add(self, name: str, status: str, reason: str = "", image_id: int | None = None) -> None:
        self.position += 1
        if self.position > self.skip:
            super().add(name, status, reason, image_id)


class _JobImporter(_Importer):
    """The importer of an import job: each image is stored in one transaction together with the
    job's progress (its position in the batch, the counts, the problems), so a job taken over
    after its worker died resumes at the next file and reports every file once."""

    def __init__(self, *, job):
        super().__init__(
            project=job.project,
            created_by=job.created_by,
            add_to_queue=bool(job.params.get("add_to_queue", True)),
        )
        self.job = job
        self.progress = {
            "files": int(job.params.get("files", 0)),
            "done": 0,
            "imported": 0,
            "duplicates": 0,
            "rejected": 0,
            "skipped": 0,
            "archive_errors": [],
            "problems": [],
            "pending_image_ids": [],
            **(job.result or {}),
        }
        self.report = _ResumedReport(skip=int(self.progress["done"]))
        self.saved_entries = 0  # entries of self.report already folded into self.progress
        self.file_index = 0

    def import_one(self, name: str, data: bytes | IO[bytes], *, metadata=None) -> None:
        from labeling.services.jobs import job_progress

        if self.report.replaying:
            self.report.add(name, Status.SKIPPED)  # counted, not recorded: done before
            return
        # Cancelled? (Raises JobCancelled, which stops the job.) Also beats the heartbeat.
        job_progress(job_id=self.job.pk)
        with transaction.atomic():
            super().import_one(name, data, metadata=metadata)
            self._save()

    def _save(self) -> None:
        from labeling.models import Job

        progress = self.progress
        for entry in self.report.entries[self.saved_entries :]:
            key = {
                Status.IMPORTED: "imported",
                Status.DUPLICATE: "duplicates",
                Status.REJECTED: "rejected",
                Status.SKIPPED: "skipped",
            }[entry.status]
            progress[key] += 1
            if entry.status == Status.IMPORTED and entry.image_id:
                progress["pending_image_ids"].append(entry.image_id)
            elif entry.status != Status.IMPORTED:
                problems = progress["problems"]
                if len(problems) < MAX_RECORDED_PROBLEMS:
                    problems.append(
                        {"name": entry.name[:300], "status": entry.status, "reason": entry.reason}
                    )
        self.saved_entries = len(self.report.entries)
        for error in self.report.archive_errors:
            if error not in progress["archive_errors"]:
                progress["archive_errors"].append(error)
        progress["done"] = self.report.position
        if len(progress["pending_image_ids"]) >= HOOK_CHUNK:
            self.after_new_images(progress["pending_image_ids"])
            progress["pending_image_ids"] = []
        files = max(1, progress["files"])
        Job.objects.filter(pk=self.job.pk).update(
            result=progress,
            percent=min(99.0, 100.0 * self.file_index / files),
            stage=f"file {min(self.file_index + 1, files)} of {files}",
        )

    def finish_job(self) -> dict:
        """Save what is left, send the last chunk's follow-up work, record the audit event and
        return the job's result."""
        with transaction.atomic():
            self._save()
            self.after_new_images(self.progress["pending_image_ids"])
            self.progress["pending_image_ids"] = []
            from labeling.models import Job

            Job.objects.filter(pk=self.job.pk).update(result=self.progress)
            self._audit(
                {
                    "imported": self.progress["imported"],
                    "duplicates": self.progress["duplicates"],
                    "rejected": self.progress["rejected"],
                    "skipped": self.progress["skipped"],
                    "archive_errors": len(self.progress["archive_errors"]),
                    "job_id": self.job.pk,
                }
            )
        result = dict(self.progress)
        del result["pending_image_ids"]
        return result


def staged_import_body(job) -> dict:
    """The import job's body (run under labeling.services.jobs.job_run): import the staged
    files in order, resuming after the last file an earlier attempt recorded."""
    from labeling.services.jobs import TRANSIENT_ERRORS

    folder = _staging_dir(job.params.get("staging", ""))
    try:
        manifest = json.loads((folder / STAGING_MANIFEST).read_text())
    except FileNotFoundError:
        raise RuntimeError(
            "the uploaded files are no longer on the server; upload them again."
        ) from None
    importer = _JobImporter(job=job)
    try:
        for index, entry in enumerate(manifest):
            importer.file_index = index
            with (folder / entry["file"]).open("rb") as handle:
                _import_upload(importer, entry["name"], int(entry["size"]), handle)
        result = importer.finish_job()
    except TRANSIENT_ERRORS:
        raise  # retried: the staged files stay for the next attempt
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    return result


def staged_import_run(*, job_id: int, retry: bool = False) -> None:
    from labeling.services.jobs import job_run

    job_run(job_id=job_id, body=staged_import_body, retry=retry)


def staging_sweep(*, min_age_seconds: float = 3600) -> list[str]:
    """Remove staged folders no queued or running import job needs: a job cancelled before it
    started never runs its body (which removes its folder), a job row may be deleted, a request
    may die between staging and creating its job. Folders younger than `min_age_seconds` are
    left alone (a request may be staging one now). Returns the tokens removed."""
    from labeling.models import Job

    root = Path(settings.IMAGECLEAN_IMPORT_STAGING_DIR)
    if not root.is_dir():
        return []
    active = {
        params.get("staging")
        for params in Job.objects.filter(
            kind=Job.Kind.IMPORT, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
        ).values_list("params", flat=True)
    }
    cutoff = time.time() - min_age_seconds
    removed = []
    for folder in root.iterdir():
        if folder.name in active or not re.fullmatch(r"[0-9a-f]{32}", folder.name):
            continue
        if folder.stat().st_mtime > cutoff:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def decode_image(content: bytes) -> tuple[str, int, int, bytes]:
    """Check that `content` is a complete image of an allowed format and size.

    Returns (stored format, width, height, JPEG thumbnail bytes); raises RejectedFile.
    Width and height are as displayed, after the EXIF orientation is applied.
    """
    max_pixels = settings.IMAGECLEAN_MAX_IMAGE_PIXELS
    # Pillow's own guard: a warning above MAX_IMAGE_PIXELS, an error above twice that. We make
    # both a rejection, and also compare the header's dimensions ourselves before decoding.
    PILImage.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        try:
            with PILImage.open(io.BytesIO(content)) as probe:
                pillow_format = probe.format
                if pillow_format not in ALLOWED_FORMATS:
                    raise RejectedFile(
                        f"{pillow_format} images are not accepted; use JPEG, PNG, WEBP, GIF or BMP."
                    )
                _check_pixels(probe.size, max_pixels)
                _check_decoded_bytes(probe)
                probe.verify()  # structure and checksums, without decoding pixels
            # verify() leaves the image unusable, and does not notice truncated pixel data:
            # decode it again from a fresh handle, in one of the process's decoding slots.
            with decode_slot(), PILImage.open(io.BytesIO(content)) as img:
                width, height = img.size
                # A JPEG is decoded at the smallest DCT scale still twice the thumbnail (what
                # Pillow's thumbnail() asks for itself): every byte of the entropy-coded data is
                # still read, so truncated or corrupt data fails as in a full decode, but the
                # raster is 1/4 to 1/64 of the full one (bench/memory.py's import peak).
                size = settings.IMAGECLEAN_THUMBNAIL_SIZE
                img.draft(None, (2 * size, 2 * size))
                img.load()
                orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
                if orientation in (5, 6, 7, 8):  # displayed turned by 90 degrees
                    width, height = height, width
                # In place: no copy of the raster for an image that needs no turning.
                ImageOps.exif_transpose(img, in_place=True)
                thumbnail = _thumbnail(img)
        except RejectedFile:
            raise
        except UnidentifiedImageError:
            raise RejectedFile(
                "not an image Pillow recognises (judged by content, not by the file name); "
                "SVG, HTML and other documents are not accepted."
            ) from None
        except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
            raise RejectedFile(
                f"decompression bomb: more than {max_pixels:,} pixels declared."
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
            raise RejectedFile(f"corrupt or truncated image ({exc}).") from None
    return ALLOWED_FORMATS[pillow_format], width, height, thumbnail


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise RejectedFile(f"invalid dimensions {width}x{height}.")
    if width * height > max_pixels:
        raise RejectedFile(
            f"decompression bomb: {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {max_pixels:,}."
        )


# Bytes per band of Pillow's modes wider than 8 bits; bands per pixel of the modes that are
# converted to RGBA for the thumbnail (a palette image decodes to 1 byte, then becomes 4).
_BAND_BYTES = {"I": 4, "F": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_CONVERTED_BANDS = {"P": 4, "PA": 4}


def _check_decoded_bytes(img: PILImage.Image) -> None:
    """Refuse an image whose decoded raster would be over IMAGECLEAN_MAX_DECODED_BYTES."""
    width, height = img.size
    bands = _CONVERTED_BANDS.get(img.mode, len(img.getbands()))
    decoded = width * height * bands * _BAND_BYTES.get(img.mode, 1)
    limit = settings.IMAGECLEAN_MAX_DECODED_BYTES
    if decoded > limit:
        raise RejectedFile(
            f"too large to decode: {width}x{height} {img.mode} is {_mb(decoded)} in memory, "
            f"over the limit of {_mb(limit)}."
        )


def _thumbnail(img: PILImage.Image) -> bytes:
    """A JPEG thumbnail; transparency is flattened onto white (JPEG has no alpha)."""
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = PILImage.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        img = canvas
    elif img.mode != "RGB":
        img = img.convert("RGB")  # convert() to the same mode would copy the raster
    size = settings.IMAGECLEAN_THUMBNAIL_SIZE
    img.thumbnail((size, size), PILImage.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return out.getvalue()


# --- Helpers ------------------------------------------------------------------------------------
class _SkipMember(Exception):
    pass


def _check_member(member: zipfile.ZipInfo) -> None:
    name = member.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise RejectedFile("absolute path inside the archive (refused: path traversal).")
    if ".." in parts:
        raise RejectedFile("'..' in the path inside the archive (refused: path traversal).")
    if parts and parts[0] == "__MACOSX":
        raise _SkipMember("macOS resource-fork folder.")
    if any(part.startswith(".") for part in parts):
        raise _SkipMember("hidden file.")
    if member.flag_bits & 0x1:
        raise RejectedFile("encrypted archive member.")
    if member.file_size == 0:
        raise RejectedFile("empty file (0 bytes).")
    ratio_cap = getattr(settings, "IMAGECLEAN_MAX_ZIP_RATIO", DEFAULT_MAX_ZIP_RATIO)
    ratio = member.file_size / max(member.compress_size, 1)
    if ratio > ratio_cap:
        raise RejectedFile(
            f"compression ratio {ratio:,.0f}:1 (over {ratio_cap}:1) looks like a zip bomb."
        )
    if member.file_size > settings.IMAGECLEAN_MAX_IMAGE_BYTES:
        raise RejectedFile(_too_large(member.file_size))


def _read_bounded(stream: IO[bytes], limit: int) -> bytes:
    """Read at most limit + 1 bytes: one byte over is enough to know the file is too large."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = stream.read(min(1024 * 1024, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise RejectedFile(_too_large(total, at_least=True))
    return b"".join(chunks)


def _walk(root: Path, *, recursive: bool) -> Iterator[Path]:
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if recursive:
                yield from _walk(entry, recursive=True)
        elif entry.is_file():
            yield entry


def _too_large(size: int, *, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (
        f"file too large ({more}{_mb(size)}; the limit is "
        f"{_mb(settings.IMAGECLEAN_MAX_IMAGE_BYTES)})."
    )


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _name_of(file: Any) -> str:
    if isinstance(file, str | os.PathLike):
        return os.path.basename(os.fspath(file))
    return os.path.basename(getattr(file, "name", "") or "archive.zip")
