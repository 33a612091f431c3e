"""Labels out of and into a project, as CSV or JSON Lines.

Export: one row per image that has at least one label: image_id, content_hash, source, split,
current_label, subcategory, n_labels (every label row in the image's history, all kinds), and
with `include_history` the history itself (a JSON list; in CSV a JSON string in one column).
Rows stream from the database in chunks, so a big project never sits in memory as text.

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
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count

from labeling.models import Image, Label, Project
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
MAX_IMPORT_ROWS = 1_000_000
MAX_REPORTED_ERRORS = 1000
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def format_from_name(name: str) -> str | None:
    lower = (name or "").lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return None


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
    *, project: Project, include_history: bool = False, chunk_size: int = 2000
) -> Iterator[dict]:
    current = current_labels(project=project)
    subcategories = _current_subcategories(project, current)
    images = (
        Image.objects.filter(project=project)
        .annotate(n_labels=Count("labels"))
        .filter(n_labels__gt=0)
        .order_by("id")
        .values("id", "content_hash", "source", "split", "n_labels")
    )
    batch: list[dict] = []
    for image in images.iterator(chunk_size=chunk_size):
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


def labels_export(*, project: Project, fmt: str, include_history: bool = False) -> Iterator[str]:
    """Lines of the export file (CSV with a header, or one JSON object per line)."""
    rows = labels_export_rows(project=project, include_history=include_history)
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, ensure_ascii=False) + "\n"
        return
    if fmt != "csv":
        raise ValidationError(f"Unknown export format {fmt!r}; use csv or jsonl.")
    columns = EXPORT_COLUMNS + (["history"] if include_history else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        if include_history:
            row["history"] = json.dumps(row["history"], ensure_ascii=False)
        if row["current_label"] is None:
            row["current_label"] = ""
        writer.writerow(row)
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


def _read_text(stream) -> str:
    limit = settings.IMAGECLEAN_MAX_UPLOAD_BYTES
    data = stream.read(limit + 1)
    if isinstance(data, str):
        data = data.encode()
    if len(data) > limit:
        raise ValidationError(f"The file is larger than {limit} bytes.")
    try:
        return codecs.decode(data, "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"The file is not UTF-8 text (byte {exc.start} cannot be decoded)."
        ) from exc


def _parse_rows(text: str, fmt: str) -> Iterator[tuple[int, dict | str]]:
    """(row number, dict) per data row, or (row number, error message) for an unreadable one."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        if not {"image_id", "content_hash"} & set(header):
            raise ValidationError("The CSV header needs an image_id or a content_hash column.")
        if not {"label", "current_label"} & set(header):
            raise ValidationError("The CSV header needs a label (or current_label) column.")
        try:
            for number, row in enumerate(reader, start=1):
                if None in row:
                    yield number, "More fields than the header has."
                else:
                    yield number, row
        except csv.Error as exc:
            raise ValidationError(f"The CSV cannot be read: {exc}") from exc
        return
    if fmt != "jsonl":
        raise ValidationError(f"Unknown import format {fmt!r}; use csv or jsonl.")
    number = 0
    for line in text.splitlines():
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


class _Resolver:
    """Finds the project's images by id or content hash, a chunk of rows at a time."""

    def __init__(self, project: Project, rows: list[dict]):
        ids, hashes = set(), set()
        for row in rows:
            if row.get("image_id"):
                ids.add(row["image_id"])
            if row.get("content_hash"):
                hashes.add(row["content_hash"])
        found = (
            Image.objects.filter(project=project)
            .filter(pk__in=ids)
            .values_list("pk", "content_hash")
        )
        self.by_id = dict(found)
        self.by_hash = dict(
            Image.objects.filter(project=project, content_hash__in=hashes).values_list(
                "content_hash", "pk"
            )
        )


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
    text = _read_text(stream)
    parsed: list[tuple[int, dict]] = []
    for number, row in _parse_rows(text, fmt):
        report.rows = number
        if number > MAX_IMPORT_ROWS:
            raise ValidationError(f"More than {MAX_IMPORT_ROWS} rows; split the file.")
        if isinstance(row, str):
            report.add_error(number, row)
            continue
        try:
            parsed.append((number, _validate_row(project, row)))
        except ValueError as exc:
            report.add_error(number, str(exc))
    if report.rows == 0:
        raise ValidationError("The file has no data rows.")

    resolver = _Resolver(project, [row for _, row in parsed])
    seen: set[int] = set()
    to_create: list[Label] = []
    for number, row in parsed:
        image_id = row["image_id"]
        if image_id is not None:
            if image_id not in resolver.by_id:
                report.add_error(number, f"No image {image_id} in this project.")
                continue
            if row["content_hash"] and resolver.by_id[image_id] != row["content_hash"]:
                report.add_error(number, "image_id and content_hash name different images.")
                continue
        else:
            image_id = resolver.by_hash.get(row["content_hash"])
            if image_id is None:
                report.add_error(number, "No image with that content_hash in this project.")
                continue
        if image_id in seen:
            # Two imported labels for one image in one file is almost surely a mistake, and
            # the order between them would decide the result silently.
            report.add_error(number, f"Image {image_id} appears more than once in the file.")
            continue
        seen.add(image_id)
        to_create.append(
            Label(
                project=project,
                image_id=image_id,
                annotator=by,
                kind=Label.Kind.IMPORTED,
                value=row["value"],
                subcategory=row["subcategory"],
            )
        )
    report.errors.sort(key=lambda e: e["row"])
    if atomic and (report.errors or report.errors_truncated):
        return report  # written=False: nothing stored
    with transaction.atomic():
        # bulk_create inserts only (Label.save's append-only guard is about updates).
        Label.objects.bulk_create(to_create, batch_size=2000)
    report.created = len(to_create)
    report.written = True
    return report


def labels_import_rows(*, project: Project, rows: Iterable[dict], by: User, atomic: bool = True):
    """Import already-parsed rows (JSON objects), e.g. from a script or a test."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    return labels_import(
        project=project, stream=io.BytesIO(text.encode()), fmt="jsonl", by=by, atomic=atomic
    )
