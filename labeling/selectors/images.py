"""Reads of a project's images: filtered by current label, split, queue and model score.

Filters are explicit keyword arguments (no free ORM lookups reach the database from a query
string). Permission rules (who may filter by label or score) are the caller's business; see
labeling.permissions and labeling.api.filters.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, QuerySet, Subquery
from django.utils.translation import gettext as _

from labeling.models import (
    CurrentLabel,
    Image,
    Label,
    ModelVersion,
    Project,
    Queue,
    QueueItem,
    Score,
    Strategy,
)


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
    strategy: str | None = None,
    annotator_id: int | None = None,
) -> QuerySet[Image]:
    """Images of `project`, ordered by id; with `model_version`, each row carries `score`.

    label: the image's current label is this class key. labeled: True/False keeps images with /
    without a current label. min_score / max_score need a model version (inclusive bounds).
    strategy: the image has a queue item queued by that strategy. annotator_id: that person
    gave the image a label.

    Every filter is an EXISTS on an indexed table (current labels: labeling.models.CurrentLabel,
    kept by a trigger; scores: score_unique and (model_version, score); queue items:
    queueitem_strategy; labels: label_annotator_image), so a page of the list costs the same
    with a thousand images or a million (tests/labeling/test_page_queries.py checks the plans).
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
    if label is not None and label not in project.class_keys:
        raise ValidationError(
            {
                "label": _("Unknown class %(label)r; the schema has %(keys)s.")
                % {"label": label, "keys": project.class_keys}
            }
        )
    current = CurrentLabel.objects.filter(project=project, image=OuterRef("pk"))
    if label is not None:
        # A join on the image's one current-label row, not an EXISTS: PostgreSQL may then
        # walk currentlabel_value (or currentlabel_split, with the split: the label table
        # carries it) in image order and fetch only the page's images, instead of walking
        # every image in id order and probing each, which reads the whole pool when the
        # combination is rare or absent.
        qs = qs.filter(current_row__project=project, current_row__value=label)
        if split is not None:
            qs = qs.filter(current_row__split=split)
    if labeled is True:
        qs = qs.filter(Exists(current))
    elif labeled is False:
        qs = qs.exclude(Exists(current))
    if strategy is not None:
        if strategy not in Strategy.values:
            raise ValidationError(
                {"strategy": _("Unknown strategy %(strategy)r.") % {"strategy": strategy}}
            )
        qs = qs.filter(Exists(QueueItem.objects.filter(strategy=strategy, image=OuterRef("pk"))))
    if annotator_id is not None:
        qs = qs.filter(
            Exists(
                Label.objects.filter(
                    project=project, annotator_id=annotator_id, image=OuterRef("pk")
                )
            )
        )
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
        if min_score is not None or max_score is not None:
            band = scores
            if min_score is not None:
                band = band.filter(score__gte=min_score)
            if max_score is not None:
                band = band.filter(score__lte=max_score)
            qs = qs.filter(Exists(band))
    return qs


def images_current_labels(*, project: Project, image_ids: list[int]) -> dict[int, str]:
    """{image id: current value} of these images (one page of a list), from CurrentLabel."""
    return dict(
        CurrentLabel.objects.filter(project=project, image_id__in=image_ids).values_list(
            "image_id", "value"
        )
    )


def image_get_visible(*, pk: int, projects: QuerySet[Project]) -> Image | None:
    """One image if it belongs to one of `projects` (the caller's visible projects)."""
    return Image.objects.select_related("project").filter(pk=pk, project__in=projects).first()
