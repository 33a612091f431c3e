"""Model versions: promote one to active, roll back to the previous one, compare versions.

Promotion history lives in `ModelVersion.promoted_at`: promoting stamps the version; rolling back
clears the stamp of the active version and re-activates the most recently promoted version
before it. So rollback is a stack pop: clicking it twice goes two promotions back, and a
rolled-back version can be promoted again later (it is only un-stamped, never deleted).

Every version's metrics come from the same frozen validation split (ARCHITECTURE.md, Data
rules), so comparing them side by side is meaningful.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from labeling.models import ModelVersion, Project
from labeling.permissions import can_manage
from labeling.services import webhooks
from labeling.services.audit_log import Action, audit_record

COMPARED = ("precision", "recall", "ap")


def _lock_project(project: Project) -> Project:
    return Project.objects.select_for_update().get(pk=project.pk)


def model_version_promote(*, version: ModelVersion, by: User | None) -> ModelVersion:
    """Make `version` the project's active model (by an engineer, or by the system when `by` is
    None: automatic promotion after training met its targets)."""
    if by is not None and not can_manage(by, version.project):
        raise PermissionDenied(_("Only engineers promote model versions."))
    with transaction.atomic():
        project = _lock_project(version.project)
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if locked.status != ModelVersion.Status.READY or not locked.checkpoint:
            raise ValidationError(
                _("Model version %(name)r is not ready to be promoted.") % {"name": locked.name}
            )
        if project.active_model_version_id == locked.pk:
            raise ValidationError(
                _("Model version %(name)r is already the active one.") % {"name": locked.name}
            )
        locked.promoted_at = timezone.now()
        locked.save(update_fields=["promoted_at"])
        previous_id = project.active_model_version_id
        project.active_model_version = locked
        project.save(update_fields=["active_model_version"])
        audit_record(
            actor=by,
            action=Action.MODEL_PROMOTED,
            project=project,
            target=locked,
            details={"previous_version_id": previous_id},
        )
        webhooks.emit_promoted(locked, previous_id=previous_id, by=by)
    version.promoted_at = locked.promoted_at
    version.project.active_model_version = locked
    return locked


def model_version_rollback_target(*, project: Project) -> ModelVersion | None:
    """The version a rollback would make active (the one promoted most recently before the
    active one), or None; a read, so the rollback page can compare before anyone confirms."""
    active = project.active_model_version
    if active is None:
        return None
    previous = (
        ModelVersion.objects.filter(
            project=project, status=ModelVersion.Status.READY, promoted_at__isnull=False
        )
        .exclude(pk=active.pk)
        .exclude(checkpoint="")
    )
    if active.promoted_at is not None:
        previous = previous.filter(promoted_at__lt=active.promoted_at)
    return previous.order_by("-promoted_at", "-pk").first()


def model_version_rollback(*, project: Project, by: User | None) -> ModelVersion:
    """Back to the version promoted before the active one; returns the version now active."""
    if by is not None and not can_manage(by, project):
        raise PermissionDenied(_("Only engineers roll back model versions."))
    with transaction.atomic():
        locked_project = _lock_project(project)
        active = locked_project.active_model_version
        if active is None:
            raise ValidationError(_("This project has no active model version to roll back."))
        previous = model_version_rollback_target(project=locked_project)
        if previous is None:
            raise ValidationError(
                _("No version was promoted before %(name)r; nothing to roll back to.")
                % {"name": active.name}
            )
        ModelVersion.objects.filter(pk=active.pk).update(promoted_at=None)
        locked_project.active_model_version = previous
        locked_project.save(update_fields=["active_model_version"])
        audit_record(
            actor=by,
            action=Action.MODEL_ROLLED_BACK,
            project=locked_project,
            target=previous,
            details={"from_version_id": active.pk, "from_version": active.name},
        )
        webhooks.emit_rolled_back(project=locked_project, to=previous, from_=active, by=by)
    project.active_model_version = previous
    return previous


def _cascade_figures(version: ModelVersion | None) -> dict[str, float | None]:
    cascade = ((version.metrics or {}).get("cascade") or {}) if version else {}
    return {name: cascade.get(name) for name in COMPARED}


def model_versions_compare(*, new: ModelVersion, old: ModelVersion | None) -> dict:
    """The cascade's precision, recall and AP of `new` against `old` (None: nothing to compare
    with), with differences where both are known."""
    new_figures, old_figures = _cascade_figures(new), _cascade_figures(old)
    delta = {
        name: (
            round(new_figures[name] - old_figures[name], 6)
            if new_figures[name] is not None and old_figures[name] is not None
            else None
        )
        for name in COMPARED
    }
    return {
        "new": {"id": new.pk, "name": new.name, **new_figures},
        "old": {"id": old.pk, "name": old.name, **old_figures} if old else None,
        "delta": delta if old else None,
    }


def model_predict(*, project: Project, upload, by: User | None):
    """Score one uploaded image with the project's active version: per-stage scores and the
    cascade's decision (labeling.ml.predict.Prediction).

    The upload is validated exactly like an import (labeling.services.imports: the size cap
    read through a bounded reader, then `decode_image`: allowed formats judged by content, the
    pixel cap, truncation); a refused file is a ValidationError with the import's reason."""
    from django.conf import settings

    from labeling.services.imports import RejectedFile, _read_bounded, decode_image

    if by is not None and not can_manage(by, project):
        raise PermissionDenied(_("Only engineers and engineer service accounts call predict."))
    version = project.active_model_version
    if version is None or version.status != ModelVersion.Status.READY or not version.checkpoint:
        raise ValidationError(_("This project has no active model version to predict with."))
    if upload is None:
        raise ValidationError({"file": _("Send the image as the multipart field 'file'.")})
    try:
        content = _read_bounded(upload, settings.IMAGECLEAN_MAX_IMAGE_BYTES)
        if not content:
            raise RejectedFile("empty file (0 bytes).")
        decode_image(content)
    except RejectedFile as exc:
        raise ValidationError({"file": str(exc)}) from exc
    from labeling.ml.predict import predict_image

    return predict_image(
        model_version=version, content=content, positive_class=project.positive_class
    )
