"""How the jobs pages show a job: its result as a few sentences instead of JSON (one small
formatter per job kind, reading the keys that kind's body returns, with a fallback line for
keys no formatter knows), how long it waited and ran, and whether it can still be cancelled.

Pure presentation: nothing here queries the database beyond the Job row given. The raw result
stays on the page behind a <details> for engineers (templates/labeling/jobs_detail.html).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from labeling.models import Job

# Keys of a result that are bookkeeping, shown only in the raw JSON.
QUIET_KEYS = frozenset(
    {
        "function",
        "pipeline_function",
        "queue_id",
        "model_version_id",
        "heatmaps_model_version_id",
        "errors",
        "heatmap_errors",
        "unreadable",
        "top",
        "ranking",
        "design",
        "drawn",
        "drawn_strata",
        "estimates_before",
        "data",
        "thresholds",
        "target",
        "comparison",
        "sizes",
        "band_thresholds",
        "by_rule",
        "summary",
        "notice",
        "archive_errors",
        "pending_image_ids",
    }
)


def duration_text(seconds: float | None) -> str:
    """A duration in words: "45 s", "3 min 05 s", "2 h 07 min", "3 d 4 h"."""
    if seconds is None:
        return "—"
    total = max(0, int(round(seconds)))
    if total < 60:
        return _("%(s)d s") % {"s": total}
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return _("%(m)d min %(s)02d s") % {"m": minutes, "s": secs}
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return _("%(h)d h %(m)02d min") % {"h": hours, "m": minutes}
    days, hours = divmod(hours, 24)
    return _("%(d)d d %(h)d h") % {"d": days, "h": hours}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


@dataclass(frozen=True)
class JobTimes:
    waited: str  # queued -> started (or -> now while queued, -> finished when never started)
    ran: str  # started -> finished (or -> now while running)


def job_times(job: Job, *, now: datetime | None = None) -> JobTimes:
    now = now or timezone.now()
    if job.started_at is None:
        end = job.finished_at or now
        return JobTimes(waited=duration_text(_seconds(job.created_at, end)), ran="—")
    return JobTimes(
        waited=duration_text(_seconds(job.created_at, job.started_at)),
        ran=duration_text(_seconds(job.started_at, job.finished_at or now)),
    )


def job_cancellable(job: Job) -> bool:
    """The cancel button shows only where cancelling means something."""
    return job.status in {Job.Status.QUEUED, Job.Status.RUNNING}


# --- One formatter per kind -------------------------------------------------------------------
def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def _score_pool(r: dict) -> list[str]:
    lines = []
    if "images" in r:
        lines.append(
            _("Scored %(scored)s of %(images)s images.")
            % {"scored": r.get("scored", 0), "images": r["images"]}
        )
    if r.get("shards"):
        lines.append(
            _("%(done)s of %(total)s shards done.")
            % {"done": r.get("shards_done", r["shards"]), "total": r["shards"]}
        )
    if r.get("error_count"):
        lines.append(
            ngettext(
                "%(n)d image could not be scored.",
                "%(n)d images could not be scored.",
                r["error_count"],
            )
            % {"n": r["error_count"]}
        )
    return lines


def _counts(mapping: Any) -> str:
    if not isinstance(mapping, dict) or not mapping:
        return "0"
    return ", ".join(f"{name} {count}" for name, count in mapping.items())


def _select(r: dict) -> list[str]:
    if not isinstance(r.get("added"), dict) or not isinstance(r.get("moved"), dict):
        return []  # an older result of another shape: the fallback and the raw JSON show it
    added, moved = sum(r["added"].values()), sum(r["moved"].values())
    lines = [
        _("Queued %(total)s images: %(added)s added (%(by)s), %(moved)s waiting ones moved up.")
        % {
            "total": r.get("total", added + moved),
            "added": added,
            "by": _counts(r.get("added")),
            "moved": moved,
        }
    ]
    sizes = r.get("sizes") or {}
    if "eligible" in sizes:
        lines.append(
            _("At most %(most)s of %(eligible)s eligible images (cap %(cap)s).")
            % {"most": sizes.get("most"), "eligible": sizes["eligible"], "cap": sizes.get("cap")}
        )
    return lines


def _train_cascade(r: dict) -> list[str]:
    lines = []
    if r.get("model_version"):
        lines.append(_("Trained model version %(name)s.") % {"name": r["model_version"]})
    cascade = r.get("cascade") or {}
    if isinstance(cascade, dict) and cascade.get("precision") is not None:
        lines.append(
            _("On validation: precision %(p)s, recall %(r)s.")
            % {"p": _num(cascade["precision"]), "r": _num(cascade.get("recall"))}
        )
    if r.get("training_seconds") is not None:
        lines.append(_("Training took %(t)s.") % {"t": duration_text(r["training_seconds"])})
    if "promoted" in r:
        lines.append(
            _("Promoted to the active version.")
            if r["promoted"]
            else _("Not promoted: an engineer decides on the model versions page.")
        )
    return lines


def _detect_noise(r: dict) -> list[str]:
    lines = []
    if "suspects" in r:
        lines.append(
            _("%(suspects)s suspect labels among %(samples)s; %(queued)s sent to re-review.")
            % {
                "suspects": r["suspects"],
                "samples": r.get("samples", "?"),
                "queued": r.get("queued", 0),
            }
        )
    if r.get("heatmaps") is not None:
        lines.append(_("%(n)s heat maps stored.") % {"n": r["heatmaps"]})
    if r.get("unreadable_count"):
        lines.append(_("%(n)s images unreadable.") % {"n": r["unreadable_count"]})
    return lines


def _cold_start(r: dict) -> list[str]:
    lines = []
    if "recalled" in r:
        lines.append(
            _("%(recalled)s images recalled from %(pool)s with %(seeds)s seeds.")
            % {"recalled": r["recalled"], "pool": r.get("pool", "?"), "seeds": r.get("seeds", 0)}
        )
    if "queued" in r:
        lines.append(
            _("%(added)s added to the queue, %(moved)s waiting items moved up.")
            % {"added": r.get("added", 0), "moved": r.get("moved", 0)}
        )
    return lines


def _audit(r: dict) -> list[str]:
    drawn = r.get("drawn")
    if not isinstance(drawn, list):
        return []
    return [
        _("%(drawn)s images drawn for the audit; %(queued)s queued, %(labeled)s already labeled.")
        % {
            "drawn": len(drawn),
            "queued": r.get("queued", 0),
            "labeled": r.get("already_labeled", 0),
        }
    ]


def _import(r: dict) -> list[str]:
    if "done" not in r:
        return []  # not an import job's progress (an older shape): the fallback line reads it
    lines = [
        _(
            "%(done)s files read: %(imported)s imported, %(duplicates)s duplicates, "
            "%(rejected)s rejected, %(skipped)s skipped."
        )
        % {
            "done": r.get("done", 0),
            "imported": r.get("imported", 0),
            "duplicates": r.get("duplicates", 0),
            "rejected": r.get("rejected", 0),
            "skipped": r.get("skipped", 0),
        }
    ]
    lines += [str(error) for error in r.get("archive_errors") or []]
    # Each file that was not imported, with its reason (the first MAX_RECORDED_PROBLEMS).
    status = {"duplicate": _("duplicate"), "rejected": _("rejected"), "skipped": _("skipped")}
    lines += [
        _("%(name)s: %(status)s, %(reason)s")
        % {"name": p["name"], "status": status.get(p["status"], p["status"]), "reason": p["reason"]}
        for p in r.get("problems") or []
    ]
    return lines


FORMATTERS: dict[str, Callable[[dict], list[str]]] = {
    Job.Kind.SCORE_POOL: _score_pool,
    Job.Kind.SELECT: _select,
    Job.Kind.TRAIN_CASCADE: _train_cascade,
    Job.Kind.DETECT_NOISE: _detect_noise,
    Job.Kind.COLD_START: _cold_start,
    Job.Kind.AUDIT: _audit,
    Job.Kind.IMPORT: _import,
}
# The keys each formatter reads (the fallback shows the others).
KNOWN_KEYS: dict[str, frozenset[str]] = {
    Job.Kind.SCORE_POOL: frozenset({"images", "scored", "shards", "shards_done", "error_count"}),
    Job.Kind.SELECT: frozenset({"added", "moved", "total"}),
    Job.Kind.TRAIN_CASCADE: frozenset({"model_version", "cascade", "training_seconds", "promoted"}),
    Job.Kind.DETECT_NOISE: frozenset(
        {"suspects", "samples", "queued", "heatmaps", "unreadable_count"}
    ),
    Job.Kind.COLD_START: frozenset({"recalled", "pool", "seeds", "queued", "added", "moved"}),
    Job.Kind.AUDIT: frozenset({"drawn", "queued", "already_labeled"}),
    Job.Kind.IMPORT: frozenset(
        {"done", "files", "imported", "duplicates", "rejected", "skipped", "problems"}
    ),
}


def _fallback(result: dict, known: frozenset[str]) -> list[str]:
    """Scalar values under keys no formatter reads, as "key: value" (lists and mappings stay
    in the raw JSON)."""
    rest = [
        f"{key.replace('_', ' ')}: {_num(value)}"
        for key, value in result.items()
        if key not in known
        and key not in QUIET_KEYS
        and (isinstance(value, (int, float, str)) or value is None)
        and value not in (None, "")
    ]
    return [_("Also: %(rest)s.") % {"rest": "; ".join(rest)}] if rest else []


def job_result_summary(job: Job) -> list[str]:
    """The job's result in a few readable lines (empty when it has none yet)."""
    result = job.result if isinstance(job.result, dict) else {}
    if not result:
        return []
    formatter = FORMATTERS.get(job.kind)
    lines: list[str] = []
    if formatter is not None:
        try:
            lines = formatter(result)
        except (TypeError, ValueError, AttributeError, KeyError):
            lines = []  # an older result of another shape: the fallback and raw JSON show it
    return lines + _fallback(result, KNOWN_KEYS.get(job.kind, frozenset()))


def job_rows(jobs: list[Job]) -> list[Job]:
    """Each job with what the jobs table shows: times, summary, whether it can be cancelled,
    and its kind's and status's names. The names are translated once per call: the model's
    get_kind_display() hashes every lazy choice label (a translation each) on every call, a
    third of the time the table of 50 jobs took to render."""
    now = timezone.now()
    kinds = {value: str(label) for value, label in Job.Kind.choices}
    statuses = {value: str(label) for value, label in Job.Status.choices}
    for job in jobs:
        job.kind_name = kinds.get(job.kind, job.kind)
        job.status_name = statuses.get(job.status, job.status)
        job.times = job_times(job, now=now)
        job.summary_lines = job_result_summary(job)
        job.cancellable = job_cancellable(job)
    return jobs
