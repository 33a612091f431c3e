"""A project with two model versions to compare (issue 9, item 11), shared by the comparison
tests: a labeled validation split of 7 positives and 13 negatives that both versions scored, and
stored metrics in the shape training writes (mlcore.pipeline: per stage precision, recall, AP,
counts and 95% Wilson intervals). v1 was promoted first; v2's cascade precision 1.000 rests on
one true positive of seven, the case the issue names; v2 is active after the tests promote it.

The checkpoints are placeholder files: promote and rollback check that one exists, nothing here
loads it.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.files.base import ContentFile
from django.utils import timezone

from labeling.models import Job, Label, ModelVersion, Score, Strategy
from tests.factories import make_image, make_project, make_user

D, N = "disgusting", "normal"
TRUTH = [True] * 7 + [False] * 13
# v1 ranks most positives high; v2 ranks one positive high and is otherwise unsure.
SCORES = {
    "v1": [0.95, 0.9, 0.85, 0.8, 0.4, 0.3, 0.2] + [0.7, 0.35, 0.3] + [0.1] * 10,
    "v2": [0.99, 0.45, 0.4, 0.3, 0.3, 0.2, 0.1] + [0.5, 0.45, 0.35] + [0.05] * 10,
}
# The deployed decision: score at or over 0.6 (v1: 4 of 7 found, 1 false alarm) and 0.9 (v2).
CUT = {"v1": 0.6, "v2": 0.9}


def _rates(tp: int, fp: int, fn: int, ap: float, ci_p, ci_r) -> dict:
    return {
        "precision": round(tp / (tp + fp), 6),
        "recall": round(tp / (tp + fn), 6),
        "ap": ap,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "predicted_positive": tp + fp,
        "positives": tp + fn,
        "precision_ci": ci_p,
        "recall_ci": ci_r,
    }


# Counts as the cut gives them on the scores above, intervals from scipy's Wilson interval.
METRICS = {
    "v1": {
        "cascade": _rates(4, 1, 3, 0.81, [0.3755, 0.9638], [0.2505, 0.8418]),
        "stage1": _rates(5, 2, 2, 0.78, [0.3589, 0.9178], [0.3589, 0.9178]),
        "stage2": _rates(4, 1, 3, 0.8, [0.3755, 0.9638], [0.2505, 0.8418]),
    },
    "v2": {
        "cascade": _rates(1, 0, 6, 0.55, [0.2065, 1.0], [0.0257, 0.5131]),
        "stage1": _rates(2, 1, 5, 0.5, [0.2077, 0.9385], [0.0822, 0.6411]),
        "stage2": _rates(1, 0, 6, 0.52, [0.2065, 1.0], [0.0257, 0.5131]),
    },
}


def make_version(project, name: str, *, promoted_minutes_ago: int | None) -> ModelVersion:
    # The training job the version names in its snapshot, as labeling.services.training does.
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.TRAIN_CASCADE,
        status=Job.Status.SUCCEEDED,
        params={"preset": "cpu_tiny", "epochs": 3 if name == "v1" else 5},
        started_at=timezone.now() - timedelta(hours=2),
    )
    version = ModelVersion(
        project=project,
        name=name,
        status=ModelVersion.Status.READY,
        metrics=METRICS[name],
        data_snapshot={
            "labeled_positive": 30 if name == "v1" else 41,
            "labeled_negative": 300 if name == "v1" else 420,
            "unlabeled": 1000,
            "excluded_suspects": 2 if name == "v1" else 5,
            "machine_accepted": 0,
            "validation_size": 20,
            "validation_positive": 7,
            "validation_negative": 13,
            "job_id": job.pk,
        },
        promoted_at=(
            timezone.now() - timedelta(minutes=promoted_minutes_ago)
            if promoted_minutes_ago is not None
            else None
        ),
    )
    version.checkpoint.save(f"{name}.safetensors", ContentFile(b"placeholder"), save=False)
    version.save()
    return version


def compare_world() -> dict:
    lead = make_user("lead")
    annotator = make_user("annotator")
    engineer = make_user("site_engineer")
    project = make_project(members=[lead, annotator])
    v1 = make_version(project, "v1", promoted_minutes_ago=60)
    v2 = make_version(project, "v2", promoted_minutes_ago=None)
    project.active_model_version = v1
    project.save(update_fields=["active_model_version"])
    images = []
    for index, positive in enumerate(TRUTH):
        image = make_image(project, split="validation")
        images.append(image)
        Label.objects.create(
            project=project,
            image=image,
            annotator=annotator,
            value=D if positive else N,
            strategy=Strategy.VALIDATION,
        )
        for version in (v1, v2):
            score = SCORES[version.name][index]
            Score.objects.create(
                image=image,
                model_version=version,
                stage1=score,
                stage2=score,
                score=score,
                decision=score >= CUT[version.name],
            )
    return {
        "project": project,
        "lead": lead,
        "annotator": annotator,
        "engineer": engineer,
        "v1": v1,
        "v2": v2,
        "images": images,
    }
