"""Labels out of and into a project, as CSV or JSON Lines.

Export: one row per image that has at least one label: image_id, content_hash, source, split,
current_label, subcategory, n_labels (every label row in the image's history, all kinds, but
answers to gold items, which measure annotators and never label the image), and
with `include_history` the history itself (a JSON list; in CSV a JSON string in one column).
Rows stream from the database in chunks, so a big project never sits in memory as text.

Filters (`ExportFilters`, the same for every format, declared once in `EXPORT_FILTERS` with
their choices per project, which the API and the export page both use): the image's current
label, its split, a selection strategy (images with an active label given through an item of
that strategy) and an annotator (images with an active label by that person).

Three formats: CSV, JSON Lines, and a zip of the images themselves in one folder per current
label (`<class>/<image id>.<ext>`, the layout torchvision's ImageFolder and Keras's
image_dataset_from_directory read). The zip is written while it is sent: each image is copied
from storage a megabyte at a time into a zip stream that is never seeked, so neither the
archive nor a whole image batch sits in memory; images are stored, not deflated (JPEG and PNG
are compressed already). In
CSV, a text cell that a spreadsheet would run as a formula (it begins with =, +, -, @, a tab or a
carriage return; OWASP's CSV injection) is written with a leading apostrophe: a file name such as
`=HYPERLINK(...)` shows as text in Excel or LibreOffice instead of acting. JSON Lines is left as
is (no spreadsheet opens it); import strips the apostrophe again, so an export imports back.

Import: rows matched by `image_id` or `content_hash` (both given: they must name the same
image), a `label` (or `current_label`, so an export file imports back as is) that is one of the
schema's classes, and an optional `subcategory` (only for the positive class). Other columns
are ignored. Each valid row becomes a new Label(kind=imported) by the importing engineer; no
existing label is touched (labels are append-only). An imported label supersedes nothing: it
is one more vote in the shared current-label rule (labeling.selectors.labels), so it decides
an unlabeled image, and a lead's correction still outranks it.

Two modes, chosen by the caller:
- atomic (default): every row is validated first; one bad row and nothing is written.
- per_row: valid rows are written (in one transaction), bad rows are reported and skipped.
Either way the report names each bad row (1-based data row number) and why.

The file is read as a stream and its images are looked up a chunk of rows at a time (a bounded
number of query parameters: SQLite allows 999 or 32,766, PostgreSQL 65,535), so a file of
hundreds of thousands of unknown ids is a report, not a crash. Memory holds one small tuple per
valid row; rows past IMAGECLEAN_MAX_LABEL_IMPORT_ROWS stop the import with a clear error.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from labeling.models import Image, Label, Project, Strategy, schema_entry_name
from labeling.selectors.labels import current_labels, labels_active

EXPORT_COLUMNS = [
    "image_id",
    "content_hash",
    "source",
    "split",
    "current_label",
    "subcategory",
    "n_labels",
]
HISTORY_FIELDS = ["id", "kind", "value", "subcategory", "annotator", "supersedes", "created_at"]
MAX_REPORTED_ERRORS = 1000
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
# A cell beginning with one of these is a formula to a spreadsheet (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Rows looked up per query, under every database's parameter limit (SQLite: 999 by default).
LOOKUP_CHUNK = 900
EXPORT_FORMATS = ("csv", "jsonl", "zip")
# Bytes read from an image file at a time while the zip streams.
ZIP_READ_CHUNK = 1 << 20
# File name extension per Pillow format in the zip (others: the format's name, lower case).
ZIP_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: a leading apostrophe before a formula start."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_cell_read(value):
    """The inverse of `csv_cell` for a cell read back from one of our exports."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def format_from_name(name: str) -> str | None:
    lower = (name or "").lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return None


# --- Export filters ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportFilters:
    """Which labeled images an export holds; an empty value does not filter."""

    label: str = ""
    split: str = ""
    strategy: str = ""
    annotator: str = ""  # a username

    def given(self) -> dict[str, str]:
        return {name: value for name, value in asdict(self).items() if value}


# The filters as people see them (the export page's labels), in the order they are shown.
EXPORT_FILTERS = {
    "label": gettext_lazy("Current label"),
    "split": gettext_lazy("Split"),
    "strategy": gettext_lazy("Strategy"),
    "annotator": gettext_lazy("Annotator"),
}


def export_filter_choices(*, project: Project, language: str | None = None) -> dict[str, list]:
    """Each filter's possible values in `project` as (value, label) pairs: the schema's
    classes, the splits, the selection strategies (gold answers are never exported) and the
    people who gave an active label in the project."""
    annotators = (
        labels_active(project=project)
        .order_by("annotator__username")
        .values_list("annotator__username", flat=True)
        .distinct()
    )
    return {
        "label": [
            (c["key"], schema_entry_name(c, language)) for c in project.label_schema["classes"]
        ],
        "split": list(Image.Split.choices),
        "strategy": [(v, label) for v, label in Strategy.choices if v != Strategy.GOLD],
        "annotator": [(name, name) for name in annotators],
    }


def export_filters_clean(*, project: Project, values: Mapping[str, str]) -> ExportFilters:
    """The filters given (empty ones dropped), each one of its choices in this project;
    ValidationError naming the filter otherwise."""
    given = {name: (values.get(name) or "").strip() for name in EXPORT_FILTERS}
    given = {name: value for name, value in given.items() if value}
    if given:
        choices = export_filter_choices(project=project)
        for name, value in given.items():
            allowed = [choice for choice, _label in choices[name]]
            if value not in allowed:
                raise ValidationError(
                    {
                        name: _("%(value)r is not one of this project's %(choices)s.")
                        % {"value": value, "choices": ", ".join(allowed) or "-"}
                    }
                )
    return ExportFilters(**given)


def _filtered_images(project: Project, filters: ExportFilters):
    images = Image.objects.filter(project=project)
    if filters.split:
        images = images.filter(split=filters.split)
    active = labels_active(project=project).filter(image_id=OuterRef("pk"))
    if filters.strategy:
        images = images.filter(Exists(active.filter(strategy=filters.strategy)))
    if filters.annotator:
        images = images.filter(Exists(active.filter(annotator__username=filters.annotator)))
    return images


# --- Export -----------------------------------------------------------------------------------
def _current_subcategories(project: Project, current: dict[int, str]) -> dict[int, str]:
    """Sub-category of each image's current label: the latest active label that carries the
    current value (labels refine the positive class only)."""
    result: dict[int, str] = {}
    rows = (
        labels_active(project=project)
        .exclude(subcategory="")
        .order_by("created_at", "id")
        .values_list("image_id", "value", "subcategory")
    )
    for image_id, value, subcategory in rows.iterator(chunk_size=5000):
        if current.get(image_id) == value:
            result[image_id] = subcategory
    return result


def labels_export_rows(
    *,
    project: Project,
    include_history: bool = False,
    chunk_size: int = 2000,
    filters: ExportFilters | None = None,
) -> Iterator[dict]:
    filters = filters or ExportFilters()
    current = current_labels(project=project, split=filters.split or None)
    if filters.label:
        current = {pk: value for pk, value in current.items() if value == filters.label}
    subcategories = _current_subcategories(project, current)
    images = (
        _filtered_images(project, filters)
        .annotate(n_labels=Count("labels", filter=~Q(labels__strategy=Strategy.GOLD)))
        .filter(n_labels__gt=0)
        .order_by("id")
        .values("id", "content_hash", "source", "split", "n_labels")
    )
    batch: list[dict] = []
    for image in images.iterator(chunk_size=chunk_size):
        if filters.label and image["id"] not in current:
            continue
        batch.append(image)
        if len(batch) >= chunk_size:
            yield from _rows(project, batch, current, subcategories, include_history)
            batch = []
    if batch:
        yield from _rows(project, batch, current, subcategories, include_history)


def _rows(project, batch, current, subcategories, include_history) -> Iterator[dict]:
    histories: dict[int, list[dict]] = {}
    if include_history:
        labels = (
            Label.objects.filter(project=project, image_id__in=[b["id"] for b in batch])
            # Answers to gold items measure annotators; they are no label of the image.
            .exclude(strategy=Strategy.GOLD)
            .select_related("annotator")
            .order_by("created_at", "id")
        )
        for label in labels:
            histories.setdefault(label.image_id, []).append(
                {
                    "id": label.pk,
                    "kind": label.kind,
                    "value": label.value,
                    "subcategory": label.subcategory,
                    "annotator": label.annotator.username,
                    "supersedes": label.supersedes_id,
                    "created_at": label.created_at.isoformat(),
                }
            )
    for image in batch:
        row = {
            "image_id": image["id"],
            "content_hash": image["content_hash"],
            "source": image["source"],
            "split": image["split"],
            "current_label": current.get(image["id"]),
            "subcategory": subcategories.get(image["id"], ""),
            "n_labels": image["n_labels"],
        }
        if include_history:
            row["history"] = histories.get(image["id"], [])
        yield row


def labels_export(
    *,
    project: Project,
    fmt: str,
    include_history: bool = False,
    by: User | None = None,
    filters: ExportFilters | None = None,
) -> Iterator[str] | Iterator[bytes]:
    """The export file as it streams: text lines for CSV (with a header) and JSON Lines, bytes
    for the zip of images. The export is recorded in the audit log at once, with its filters,
    before the first line is read."""
    if fmt not in EXPORT_FORMATS:
        raise ValidationError(
            _("Unknown export format %(fmt)r; use csv, jsonl or zip.") % {"fmt": fmt}
        )
    if fmt == "zip" and include_history:
        raise ValidationError(
            {"history": _("The zip of images has no label history; export CSV or JSON Lines.")}
        )
    filters = filters or ExportFilters()
    from labeling.services.audit_log import Action, audit_record

    details: dict = {"format": fmt, "history": include_history}
    if filters.given():
        details["filters"] = filters.given()  # no key: the whole project was exported
    audit_record(actor=by, action=Action.LABELS_EXPORTED, project=project, details=details)
    if fmt == "zip":
        return _export_zip(project=project, filters=filters)
    return _export_lines(project=project, fmt=fmt, include_history=include_history, filters=filters)


class _ZipSink(io.RawIOBase):
    """Where zipfile writes: bytes collected until the response takes them. It cannot seek, so
    zipfile writes each entry's sizes after its data (a data descriptor) instead of going back
    to its header, and the archive streams."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _export_zip(*, project: Project, filters: ExportFilters) -> Iterator[bytes]:
    sink = _ZipSink()
    missing: list[str] = []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for rows in _batches(labels_export_rows(project=project, filters=filters), 500):
            # A tie between annotators has no current label: no class folder to put it in.
            labeled = [row for row in rows if row["current_label"] is not None]
            files = Image.objects.only("file", "format", "byte_size", "created_at").in_bulk(
                [row["image_id"] for row in labeled]
            )
            for row in labeled:
                image = files[row["image_id"]]
                extension = ZIP_EXTENSIONS.get(image.format.upper(), image.format.lower() or "bin")
                info = zipfile.ZipInfo(
                    f"{row['current_label']}/{image.pk}.{extension}",
                    date_time=image.created_at.timetuple()[:6],
                )
                info.compress_type = zipfile.ZIP_STORED
                info.file_size = image.byte_size  # lets zipfile choose ZIP64 before writing
                try:
                    source = image.file.open("rb")
                except OSError:
                    missing.append(f"{image.pk}\t{image.file.name}")
                    continue
                with source, archive.open(info, "w") as target:
                    for chunk in iter(partial(source.read, ZIP_READ_CHUNK), b""):
                        target.write(chunk)
                        yield sink.take()
        if missing:
            # The response has begun, so a missing file cannot be an error status any more:
            # the archive says which images it lacks.
            archive.writestr("missing-files.txt", "\n".join(missing) + "\n")
    yield sink.take()


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _export_lines(
    *, project: Project, fmt: str, include_history: bool, filters: ExportFilters
) -> Iterator[str]:
    rows = labels_export_rows(project=project, include_history=include_history, filters=filters)
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, ensure_ascii=False) + "\n"
        return
    if fmt != "csv":
        raise ValidationError(_("Unknown export format %(fmt)r; use csv or jsonl.") % {"fmt": fmt})
    columns = EXPORT_COLUMNS + (["history"] if include_history else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        if include_history:
            row["history"] = json.dumps(row["history"], ensure_ascii=False)
        if row["current_label"] is None:
            row["current_label"] = ""
        writer.writerow({key: csv_cell(value) for key, value in row.items()})
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


# --- Import -----------------------------------------------------------------------------------
@dataclass
class LabelsImportReport:
    mode: str
    rows: int = 0
    created: int = 0
    written: bool = False
    errors: list[dict] = field(default_factory=list)
    errors_truncated: bool = False

    def add_error(self, row: int, message: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"row": row, "error": message})
        else:
            self.errors_truncated = True


class _BoundedBytes(io.RawIOBase):
    """The upload's bytes, refused past `limit` (a stream whose size we could not see)."""

    def __init__(self, stream, limit: int):
        self.stream, self.limit, self.seen = stream, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        if isinstance(data, str):
            data = data.encode()
        self.seen += len(data)
        if self.seen > self.limit:
            raise ValidationError(
                _("The file is larger than %(limit)d bytes.") % {"limit": self.limit}
            )
        buffer[: len(data)] = data
        return len(data)


def _text_lines(stream) -> io.TextIOWrapper:
    """The upload as text, decoded while it is read (UTF-8, a BOM allowed), never whole."""
    limit = settings.IMAGECLEAN_MAX_UPLOAD_BYTES
    size = getattr(stream, "size", None)
    if size is not None and size > limit:
        raise ValidationError(_("The file is larger than %(limit)d bytes.") % {"limit": limit})
    binary = io.BufferedReader(_BoundedBytes(stream, limit), buffer_size=256 * 1024)
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")


def _parse_rows(text: io.TextIOWrapper, fmt: str) -> Iterator[tuple[int, dict | str]]:
    """(row number, dict) per data row, or (row number, error message) for an unreadable one."""
    try:
        yield from _parse_rows_of(text, fmt)
    except UnicodeDecodeError as exc:
        raise ValidationError(
            _("The file is not UTF-8 text (a byte cannot be decoded: %(reason)s).")
            % {"reason": exc.reason}
        ) from exc


def _parse_rows_of(text, fmt: str) -> Iterator[tuple[int, dict | str]]:
    if fmt == "csv":
        reader = csv.DictReader(text)
        try:
            header = reader.fieldnames or []
        except csv.Error as exc:
            raise ValidationError(_("The CSV cannot be read: %(error)s") % {"error": exc}) from exc
        if not {"image_id", "content_hash"} & set(header):
            raise ValidationError(_("The CSV header needs an image_id or a content_hash column."))
        if not {"label", "current_label"} & set(header):
            raise ValidationError(_("The CSV header needs a label (or current_label) column."))
        try:
            for number, row in enumerate(reader, start=1):
                if None in row:
                    yield number, "More fields than the header has."
                else:
                    yield number, {key: _csv_cell_read(value) for key, value in row.items()}
        except csv.Error as exc:
            raise ValidationError(_("The CSV cannot be read: %(error)s") % {"error": exc}) from exc
        return
    if fmt != "jsonl":
        raise ValidationError(_("Unknown import format %(fmt)r; use csv or jsonl.") % {"fmt": fmt})
    number = 0
    for line in text:
        if not line.strip():
            continue
        number += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"Not valid JSON: {exc.msg}."
            continue
        if not isinstance(obj, dict):
            yield number, "Each line must be a JSON object."
            continue
        yield number, obj


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | dict | list):
        raise ValueError
    return str(value).strip()


def _resolve(project: Project, rows: list[tuple[int, dict]]) -> tuple[dict, dict]:
    """({image id: content hash}, {content hash: image id}) of the project's images named by
    these rows; at most LOOKUP_CHUNK rows, so each query stays under the parameter limit."""
    ids = {row["image_id"] for _, row in rows if row["image_id"] is not None}
    hashes = {row["content_hash"] for _, row in rows if row["content_hash"]}
    images = Image.objects.filter(project=project)
    by_id = dict(images.filter(pk__in=ids).values_list("pk", "content_hash")) if ids else {}
    by_hash = (
        dict(images.filter(content_hash__in=hashes).values_list("content_hash", "pk"))
        if hashes
        else {}
    )
    return by_id, by_hash


def _validate_row(project: Project, raw: dict) -> dict:
    """Normalized row {image_id?, content_hash?, value, subcategory} or ValueError(message)."""
    try:
        image_id_text = _text(raw.get("image_id"))
        content_hash = _text(raw.get("content_hash")).lower()
        value = _text(
            raw.get("label") if raw.get("label") is not None else raw.get("current_label")
        )
        subcategory = _text(raw.get("subcategory"))
    except ValueError:
        raise ValueError(
            "image_id, content_hash, label and subcategory must be plain values."
        ) from None
    image_id = None
    if image_id_text:
        if not image_id_text.isdigit() or len(image_id_text) > 18:
            raise ValueError(f"image_id {image_id_text!r} is not a positive integer.")
        image_id = int(image_id_text)
    if content_hash and not _HASH_RE.match(content_hash):
        raise ValueError("content_hash must be 64 hexadecimal characters (SHA-256).")
    if image_id is None and not content_hash:
        raise ValueError("Give image_id or content_hash.")
    if not value:
        raise ValueError("The label is empty.")
    if value not in project.class_keys:
        raise ValueError(f"Unknown label {value!r}; the schema's classes are {project.class_keys}.")
    if subcategory:
        if subcategory not in project.subcategory_keys:
            raise ValueError(
                f"Unknown subcategory {subcategory!r}; the schema has {project.subcategory_keys}."
            )
        if value != project.positive_class:
            raise ValueError(
                f"A subcategory refines the positive class {project.positive_class!r} only."
            )
    return {
        "image_id": image_id,
        "content_hash": content_hash,
        "value": value,
        "subcategory": subcategory,
    }


def labels_import(
    *, project: Project, stream, fmt: str, by: User, atomic: bool = True
) -> LabelsImportReport:
    """Read, validate and store imported labels; see the module docstring for the modes."""
    report = LabelsImportReport(mode="atomic" if atomic else "per_row")
    max_rows = settings.IMAGECLEAN_MAX_LABEL_IMPORT_ROWS
    seen: set[int] = set()
    accepted: list[tuple[int, str, str]] = []  # (image id, value, subcategory) per valid row
    chunk: list[tuple[int, dict]] = []

    def flush() -> None:
        by_id, by_hash = _resolve(project, chunk)
        for number, row in chunk:
            image_id = _image_of(row, by_id, by_hash, number, report)
            if image_id is None:
                continue
            if image_id in seen:
                # Two imported labels for one image in one file is almost surely a mistake, and
                # the order between them would decide the result silently.
                report.add_error(number, f"Image {image_id} appears more than once in the file.")
                continue
            seen.add(image_id)
            accepted.append((image_id, row["value"], row["subcategory"]))
        chunk.clear()

    for number, row in _parse_rows(_text_lines(stream), fmt):
        if number > max_rows:
            raise ValidationError(
                _("The file has more than %(max)d rows; split it into smaller files.")
                % {"max": max_rows}
            )
        report.rows = number
        if isinstance(row, str):
            report.add_error(number, row)
            continue
        try:
            chunk.append((number, _validate_row(project, row)))
        except ValueError as exc:
            report.add_error(number, str(exc))
            continue
        if len(chunk) >= LOOKUP_CHUNK:
            flush()
    flush()
    if report.rows == 0:
        raise ValidationError(_("The file has no data rows."))

    report.errors.sort(key=lambda e: e["row"])
    if atomic and (report.errors or report.errors_truncated):
        return report  # written=False: nothing stored
    with transaction.atomic():
        # bulk_create inserts only (Label.save's append-only guard is about updates); Label
        # objects are built a batch at a time.
        for start in range(0, len(accepted), 2000):
            Label.objects.bulk_create(
                [
                    Label(
                        project=project,
                        image_id=image_id,
                        annotator=by,
                        kind=Label.Kind.IMPORTED,
                        value=value,
                        subcategory=subcategory,
                    )
                    for image_id, value, subcategory in accepted[start : start + 2000]
                ]
            )
        from labeling.services.audit_log import Action, audit_record

        audit_record(
            actor=by,
            action=Action.LABELS_IMPORTED,
            project=project,
            details={"rows": report.rows, "created": len(accepted), "mode": report.mode},
        )
    report.created = len(accepted)
    report.written = True
    return report


def _image_of(row: dict, by_id: dict, by_hash: dict, number: int, report) -> int | None:
    """The image a valid row names, or None after reporting why it names none."""
    image_id = row["image_id"]
    if image_id is not None:
        if image_id not in by_id:
            report.add_error(number, f"No image {image_id} in this project.")
            return None
        if row["content_hash"] and by_id[image_id] != row["content_hash"]:
            report.add_error(number, "image_id and content_hash name different images.")
            return None
        return image_id
    image_id = by_hash.get(row["content_hash"])
    if image_id is None:
        report.add_error(number, "No image with that content_hash in this project.")
    return image_id


def labels_import_rows(*, project: Project, rows: Iterable[dict], by: User, atomic: bool = True):
    """Import already-parsed rows (JSON objects), e.g. from a script or a test."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    return labels_import(
        project=project, stream=io.BytesIO(text.encode()), fmt="jsonl", by=by, atomic=atomic
    )
