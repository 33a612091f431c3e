"""Creating and configuring projects (engineers). The label schema is validated on every write.

A new project gets its two standing queues at once: the annotators' labeling queue and the
leads' re-review queue, so import, selection jobs and the review page always have a target.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from labeling.models import Label, Project, Queue
from labeling.permissions import is_site_wide
from labeling.project_settings import PROJECT_SETTINGS
from labeling.services.audit_log import Action, audit_record

RESERVED_SLUGS = frozenset({"create"})
EDITABLE_FIELDS = (
    "name",
    "description",
    "label_schema",
    # Overlap k, lease, validation share, blur, gold, exposure, ...: every setting declared in
    # labeling.project_settings.
    *(name for group in PROJECT_SETTINGS for name in group.names),
)
DEFAULT_LABELING_QUEUE = "Labeling"
DEFAULT_REVIEW_QUEUE = "Re-review"
DEFAULT_VALIDATION_QUEUE = "Validation"


@transaction.atomic
def project_create(
    *,
    name: str,
    slug: str,
    created_by: User | None = None,
    members: Iterable[User] = (),
    **fields,
) -> Project:
    """Create a project with its default labeling queue and its lead re-review queue.

    `fields` are the editable fields (label_schema, labels_per_item, validation_fraction,
    blur_images, ...); anything else is a programming error, not user input.
    """
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"project_create() got unknown fields {sorted(unknown)}")
    if slug in RESERVED_SLUGS:
        # /api/v1/projects/create/ would shadow the project's own address.
        raise ValidationError(
            {"slug": _("%(slug)r is reserved; choose another slug.") % {"slug": slug}}
        )
    project = Project(name=name, slug=slug, created_by=created_by, **fields)
    project.full_clean()  # schema, fraction, overlap k, slug uniqueness
    project.save()
    project_default_queues_ensure(project=project)
    members = list(members)
    if created_by is not None and not is_site_wide(created_by):
        # An engineer limited to their projects would otherwise lose sight of what they made.
        members.append(created_by)
    if members:
        project.members.add(*members)
    audit_record(
        actor=created_by,
        action=Action.PROJECT_CREATED,
        project=project,
        target=project,
        details={"members": sorted(m.get_username() for m in members)},
    )
    return project


def project_default_queues_ensure(*, project: Project) -> tuple[Queue, Queue]:
    """The labeling and re-review queues of a project, created if missing (idempotent)."""
    labeling = (
        Queue.objects.filter(project=project, kind=Queue.Kind.LABELING).order_by("id").first()
    )
    if labeling is None:
        labeling = Queue.objects.create(
            project=project, name=DEFAULT_LABELING_QUEUE, kind=Queue.Kind.LABELING
        )
    review = Queue.objects.filter(project=project, kind=Queue.Kind.REVIEW).order_by("id").first()
    if review is None:
        review = Queue.objects.create(
            project=project, name=DEFAULT_REVIEW_QUEUE, kind=Queue.Kind.REVIEW
        )
    return labeling, review


def project_validation_queue_ensure(*, project: Project) -> Queue:
    """The project's validation-split queue, created if missing (idempotent). Imports fill it
    with the images of the frozen validation split; annotators see it first in their list."""
    queue = Queue.objects.filter(project=project, kind=Queue.Kind.VALIDATION).order_by("id").first()
    if queue is None:
        name = DEFAULT_VALIDATION_QUEUE
        # A labeling queue someone already named "Validation" keeps its name.
        if Queue.objects.filter(project=project, name=name).exists():
            name = f"{DEFAULT_VALIDATION_QUEUE} split"
        queue, _created = Queue.objects.get_or_create(
            project=project, name=name, defaults={"kind": Queue.Kind.VALIDATION}
        )
    return queue


@transaction.atomic
def project_update(*, project: Project, **fields) -> Project:
    """Change editable fields. The validation fraction only affects images imported later:
    existing splits stay frozen (models.Image), so earlier model versions stay comparable."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"project_update() got unknown fields {sorted(unknown)}")
    project = Project.objects.select_for_update().get(pk=project.pk)
    if "label_schema" in fields and isinstance(fields["label_schema"], dict):
        _refuse_dropping_used_keys(project, fields["label_schema"])
    for name, value in fields.items():
        setattr(project, name, value)
    project.full_clean()
    project.save(update_fields=list(fields) or None)
    return project


@transaction.atomic
def project_members_set(
    *, project: Project, members: Iterable[User], by: User | None = None
) -> Project:
    """Replace the project's members. Membership scopes annotators, leads and engineers who are
    not site-wide to the project (labeling.permissions). With `by`, each person added or removed
    is recorded in the audit log, as the users' page records it."""
    members = list(members)
    before = {u.pk: u for u in project.members.all()}
    after = {u.pk: u for u in members}
    project.members.set(members)
    if by is not None:
        from labeling.services.audit_log import describe

        for pk in sorted(set(before) ^ set(after)):
            audit_record(
                actor=by,
                action=Action.MEMBERSHIP_CHANGED,
                project=project,
                target=describe(after.get(pk) or before[pk]),
                details={"change": "added" if pk in after else "removed"},
            )
    return project


def _refuse_dropping_used_keys(project: Project, new_schema: dict) -> None:
    """A class or sub-category that labels already use cannot disappear from the schema:
    those labels would no longer mean anything (labels are never rewritten)."""
    keep = {c.get("key") for c in (new_schema.get("classes") or []) if isinstance(c, dict)}
    keep_sub = {
        c.get("key") for c in (new_schema.get("subcategories") or []) if isinstance(c, dict)
    }
    labels = Label.objects.filter(project=project).order_by()
    # Every label row counts, gold answers and retracted ones included: none is ever rewritten.
    used = dict(
        labels.exclude(value="").values("value").annotate(n=Count("id")).values_list("value", "n")
    )
    used_sub = dict(
        labels.exclude(subcategory="")
        .values("subcategory")
        .annotate(n=Count("id"))
        .values_list("subcategory", "n")
    )
    missing = sorted(
        [(key, n) for key, n in used.items() if key not in keep]
        + [(key, n) for key, n in used_sub.items() if key not in keep_sub]
    )
    if missing:
        raise ValidationError(
            {
                "label_schema": _(
                    "Cannot remove %(keys)s: labels use them. Labels are never rewritten, so a "
                    "key in use stays in the schema; you may rename it (its display name) or "
                    "change its hotkey."
                )
                % {
                    "keys": ", ".join(
                        ngettext("%(key)s (%(count)d label)", "%(key)s (%(count)d labels)", n)
                        % {"key": key, "count": n}
                        for key, n in missing
                    )
                }
            }
        )
