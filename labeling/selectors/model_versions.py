"""Reads of a project's model versions."""

from __future__ import annotations

from django.db.models import QuerySet

from labeling.models import ModelVersion, Project


def model_versions_ready(*, project: Project) -> QuerySet[ModelVersion]:
    """The project's READY versions (they can score and select), newest first."""
    return ModelVersion.objects.filter(project=project, status=ModelVersion.Status.READY).order_by(
        "-created_at", "-pk"
    )
