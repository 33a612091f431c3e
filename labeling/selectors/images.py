"""Reads of a project's images: filtered by current label, split, queue and model score.

Filters are explicit keyword arguments (no free ORM lookups reach the database from a query
string). Permission rules (who may filter by label or score) are the caller's business; see
labeling.permissions and labeling.api.filters.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.utils.translation import gettext as _

from labeling.models import Image, ModelVersion, Project, Queue, QueueItem, Score
from labeling.selectors.labels import current_labels


def image_score_version(*, project: Project, model_version_id: int | None) -> ModelVersion | None:
    """The model version whose scores are shown: the one asked for, else the active one."""
    if model_version_id is None:
        return project.active_model_version
    try:
        return ModelVersion.objects.get(pk=model_version_id, project=project)
    except ModelVersion.DoesNotExist as exc:
        raise ValidationError(
            {
                "model_version": _("No model version %(id)s in this project.")
                % {"id": model_version_id}
            }
        ) from exc


def images_list(
    *,
    project: Project,
    split: str | None = None,
    queue: Queue | None = None,
    label: str | None = None,
    labeled: bool | None = None,
    model_version: ModelVersion | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
) -> QuerySet[Image]:
    """Images of `project`, ordered by id; with `model_version`, each row carries `score`.

    label: the image's current label is this class key. labeled: True/False keeps images with /
    without a current label. min_score / max_score need a model version (inclusive bounds).
    """
    qs = Image.objects.filter(project=project).order_by("id")
    if split is not None:
        if split not in Image.Split.values:
            raise ValidationError({"split": _("Unknown split %(split)r.") % {"split": split}})
        qs = qs.filter(split=split)
    if queue is not None:
        if queue.project_id != project.pk:
            raise ValidationError({"queue": _("That queue belongs to another project.")})
        qs = qs.filter(Exists(QueueItem.objects.filter(queue=queue, image=OuterRef("pk"))))
    if label is not None or labeled is not None:
        if label is not None and label not in project.class_keys:
            raise ValidationError(
                {
                    "label": _("Unknown class %(label)r; the schema has %(keys)s.")
                    % {"label": label, "keys": project.class_keys}
                }
            )
        # Current labels are derived (append-only history), so they come from the labels
        # selector rather than a column; one dict per request keeps the rule in one place.
        current = current_labels(project=project, split=split)
        if label is not None:
            qs = qs.filter(pk__in=[pk for pk, value in current.items() if value == label])
        if labeled is True:
            qs = qs.filter(pk__in=list(current))
        elif labeled is False:
            qs = qs.exclude(pk__in=list(current))
    if (min_score is not None or max_score is not None) and model_version is None:
        raise ValidationError(
            {
                "model_version": _(
                    "Score filters need a model version (the project has no active one)."
                )
            }
        )
    if model_version is not None:
        if model_version.project_id != project.pk:
            raise ValidationError({"model_version": _("That model version is another project's.")})
        scores = Score.objects.filter(model_version=model_version, image=OuterRef("pk"))
        qs = qs.annotate(score=Subquery(scores.values("score")[:1]))
        if min_score is not None:
            qs = qs.filter(score__gte=min_score)
        if max_score is not None:
            qs = qs.filter(score__lte=max_score)
    return qs


def image_get_visible(*, pk: int, projects: QuerySet[Project]) -> Image | None:
    """One image if it belongs to one of `projects` (the caller's visible projects)."""
    return Image.objects.select_related("project").filter(pk=pk, project__in=projects).first()
