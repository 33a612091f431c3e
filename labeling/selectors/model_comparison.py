"""Model versions side by side (issue 9, item 11): per stage their validation precision, recall
and AP with 95% intervals, the differences from a baseline version, warnings where the counts
behind a figure are too few to trust, the data each version was trained on, its pool-level
estimates where an audit exists (issue 10), and their PR curves on the same labeled validation
images, with each version's operating point. docs/models.md explains the rules.

A read: nothing here writes. The page (labeling.views.model_compare), the promote and rollback
confirmations and the API (labeling.api.model_compare_views) all read from `compare_versions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from django.utils.translation import gettext as _

from labeling.models import Image, Job, ModelVersion, Project, Score
from labeling.selectors.labels import current_labels

STAGES = ("stage1", "stage2", "cascade")
COMPARED = ("precision", "recall", "ap")
# At most this many versions side by side: the columns stay readable at 1280 px.
MAX_COMPARED = 4
# A rate measured on fewer cases than this gets a warning: its 95% interval is then wider than
# about 0.3 for any value (Wilson at n = 10, p = 0.5 spans 0.24-0.76; at 1 of 1 it spans
# 0.21-1.00), too wide to choose between versions.
MIN_TRUSTED = 10
# A version is "worse" than the one it would replace when one of its cascade figures is lower
# by more than this (rounding noise in stored metrics is not a regression).
WORSE_BY = 1e-6


def _metric_label(name: str) -> str:
    return {"precision": _("precision"), "recall": _("recall"), "ap": "AP"}[name]


def _bridge():
    # Imported on first use: mlcore.evaluation imports torch (through mlcore.cascade) and
    # scipy, which a web worker must not load at start-up (tests/test_web_imports.py).
    from labeling.ml import comparison

    return comparison


def _stage_figures(metrics: dict, stage: str) -> dict:
    found = metrics.get(stage) or {}
    tp, fp, fn = found.get("tp"), found.get("fp"), found.get("fn")
    figures = {
        "precision": found.get("precision"),
        "recall": found.get("recall"),
        "ap": found.get("ap"),
        "threshold": found.get("threshold"),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision_ci": found.get("precision_ci"),
        "recall_ci": found.get("recall_ci"),
    }
    # Versions stored before the intervals were kept still have their counts: the interval is
    # recomputed from them (the same Wilson interval mlcore.evaluation computes at training).
    if tp is not None and fp is not None and figures["precision_ci"] is None:
        figures["precision_ci"] = _bridge().interval(tp, tp + fp)
    if tp is not None and fn is not None and figures["recall_ci"] is None:
        figures["recall_ci"] = _bridge().interval(tp, tp + fn)
    figures["predicted_positive"] = tp + fp if tp is not None and fp is not None else None
    figures["positives"] = tp + fn if tp is not None and fn is not None else None
    return figures


def _warnings(version: ModelVersion, stages: dict) -> list[str]:
    """Plain sentences on the figures that rest on too few cases."""
    found = []
    snapshot = version.data_snapshot or {}
    positives = snapshot.get("validation_positive")
    if positives is not None and positives < MIN_TRUSTED:
        found.append(
            _(
                "The validation split had only %(positives)s positive images when %(version)s "
                "was measured: every figure below rests on them. Label more validation "
                "positives before trusting a difference."
            )
            % {"positives": positives, "version": version.name}
        )
    cascade = stages["cascade"]
    if cascade["precision"] is not None and (cascade["predicted_positive"] or 0) < MIN_TRUSTED:
        found.append(
            _(
                "Cascade precision %(precision).3f rests on %(tp)s true positive(s) of "
                "%(predicted)s predicted positive(s) (%(positives)s positives in validation): "
                "its 95%% interval is %(low).2f–%(high).2f."
            )
            % {
                "precision": cascade["precision"],
                "tp": cascade["tp"],
                "predicted": cascade["predicted_positive"],
                "positives": cascade["positives"],
                "low": (cascade["precision_ci"] or [0, 1])[0],
                "high": (cascade["precision_ci"] or [0, 1])[1],
            }
        )
    if cascade["recall"] is not None and (cascade["positives"] or 0) < MIN_TRUSTED:
        found.append(
            _(
                "Cascade recall %(recall).3f rests on %(tp)s of %(positives)s validation "
                "positives: its 95%% interval is %(low).2f–%(high).2f."
            )
            % {
                "recall": cascade["recall"],
                "tp": cascade["tp"],
                "positives": cascade["positives"],
                "low": (cascade["recall_ci"] or [0, 1])[0],
                "high": (cascade["recall_ci"] or [0, 1])[1],
            }
        )
    return found


def _training(version: ModelVersion, jobs: dict[int, Job]) -> list[dict]:
    """The parameters of the job that trained the version, labeled as the jobs page labels
    them (labeling.services.training.TRAIN_CASCADE, the one declaration)."""
    from labeling.services.training import TRAIN_CASCADE

    job = jobs.get((version.data_snapshot or {}).get("job_id"))
    if job is None:
        return []
    params = job.params or {}
    return [
        {"name": spec.name, "label": str(spec.label), "value": params[spec.name]}
        for spec in TRAIN_CASCADE.params
        if spec.name in params
    ]


def _training_job(version: ModelVersion, jobs: dict[int, Job]) -> dict | None:
    """The job that trained the version and when it gathered its labels (its start): labels
    given later are not in the version."""
    job = jobs.get((version.data_snapshot or {}).get("job_id"))
    if job is None:
        return None
    return {"id": job.pk, "labels_as_of": job.started_at or job.created_at}


def _pool(project: Project, version: ModelVersion) -> dict | None:
    """The cascade's pool-level estimates from the version's audit (issue 10), or None."""
    from labeling.services.audit import pool_estimates_get

    figures = pool_estimates_get(project=project, model_version_id=version.pk)
    if not figures or not figures.get("estimates"):
        return None
    estimates = figures["estimates"]
    cascade = (estimates.get("decisions") or {}).get("cascade") or {}
    return {
        "labeled": figures["labeled"],
        "audit_id": figures["audit_id"],
        "prevalence": estimates.get("prevalence"),
        "precision": cascade.get("precision"),
        "recall": cascade.get("recall"),
    }


def _delta(row: dict, base: dict) -> dict:
    out = {}
    for stage in STAGES:
        out[stage] = {}
        for name in COMPARED:
            new, old = row["stages"][stage][name], base["stages"][stage][name]
            out[stage][name] = round(new - old, 6) if new is not None and old is not None else None
    return out


def worse_figures(*, candidate: ModelVersion, current: ModelVersion | None) -> list[dict]:
    """The cascade figures on which `candidate` is lower than `current` (empty when it is not
    worse, or nothing to compare): [{name, candidate, current}]. Promote and rollback pages ask
    for a confirmation naming them."""
    if current is None:
        return []
    new = _stage_figures(candidate.metrics or {}, "cascade")
    old = _stage_figures(current.metrics or {}, "cascade")
    return [
        {"name": name, "label": _metric_label(name), "candidate": new[name], "current": old[name]}
        for name in COMPARED
        if new[name] is not None and old[name] is not None and new[name] < old[name] - WORSE_BY
    ]


def _curves(project: Project, versions: Sequence[ModelVersion]) -> dict:
    """PR curves of the versions on the labeled validation images that every one of them has
    scored (so the curves are drawn on the same images), with their operating points. Scores
    come from scoring jobs (labeling.services.scoring scores validation images too)."""
    labels = current_labels(project=project, split=Image.Split.VALIDATION)
    truth = {image_id: value == project.positive_class for image_id, value in labels.items()}
    scored: dict[int, dict[int, tuple[float, bool]]] = {}
    for version in versions:
        rows = Score.objects.filter(model_version=version, image_id__in=list(truth)).values_list(
            "image_id", "score", "decision"
        )
        scored[version.pk] = {image_id: (score, decision) for image_id, score, decision in rows}
    common = sorted(set(truth).intersection(*(set(found) for found in scored.values())))
    y = np.array([truth[i] for i in common], dtype=bool)
    result = {
        "labeled": len(truth),
        "images": len(common),
        "positives": int(y.sum()),
        "by_version": {},
        "missing": [v.name for v in versions if not scored[v.pk]],
    }
    if not common or not y.any() or y.all():
        return result
    for version in versions:
        found = scored[version.pk]
        scores = np.array([found[i][0] for i in common], dtype=np.float64)
        decisions = np.array([found[i][1] for i in common], dtype=bool)
        result["by_version"][version.pk] = _bridge().validation_curve(scores, decisions, y)
    return result


def default_selection(*, project: Project) -> list[ModelVersion]:
    """What the comparison shows when nobody chose: the active version and the newest other."""
    active = project.active_model_version
    newest = ModelVersion.objects.filter(project=project).order_by("-created_at", "-pk")
    if active is not None:
        newest = newest.exclude(pk=active.pk)
    chosen = ([active] if active else []) + list(newest[: 2 if active is None else 1])
    return chosen


def compare_versions(*, project: Project, versions: Sequence[ModelVersion]) -> dict:
    """The comparison of `versions` (the first is the baseline every delta is measured from)."""
    versions = list(versions)[:MAX_COMPARED]
    job_ids = [(v.data_snapshot or {}).get("job_id") for v in versions]
    jobs = Job.objects.in_bulk([i for i in job_ids if isinstance(i, int)])
    rows = []
    for version in versions:
        metrics = version.metrics or {}
        stages = {stage: _stage_figures(metrics, stage) for stage in STAGES}
        rows.append(
            {
                "version": version,
                "id": version.pk,
                "name": version.name,
                "status": version.status,
                "is_active": version.pk == project.active_model_version_id,
                "created_at": version.created_at,
                "promoted_at": version.promoted_at,
                "training_seconds": version.training_seconds,
                "stages": stages,
                "target": metrics.get("target"),
                "thresholds_rule": (metrics.get("thresholds") or {}).get("rule"),
                "warnings": _warnings(version, stages),
                "data": version.data_snapshot or {},
                "training": _training(version, jobs),
                "training_job": _training_job(version, jobs),
                "pool": _pool(project, version),
            }
        )
    for row in rows:
        row["delta"] = _delta(row, rows[0]) if row is not rows[0] else None
    curves = _curves(project, versions) if versions else {"by_version": {}}
    for row in rows:
        row["curve"] = curves["by_version"].get(row["id"])
    curves.pop("by_version", None)
    return {
        "baseline": rows[0]["name"] if rows else None,
        "versions": rows,
        "curves": curves,
        "min_trusted": MIN_TRUSTED,
        "interval": _bridge().INTERVAL_METHOD,
    }
