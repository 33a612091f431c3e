"""Creating and configuring projects (engineers). The label schema is validated on every write.

A new project gets its two standing queues at once: the annotators' labeling queue and the
leads' re-review queue, so import, selection jobs and the review page always have a target.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from labeling.models import Label, Project, Queue
from labeling.permissions import is_site_wide
from labeling.project_settings import QUALITY_FIELDS
from labeling.services.audit_log import Action, audit_record

RESERVED_SLUGS = frozenset({"create"})
EDITABLE_FIELDS = (
    "name",
    "description",
    "label_schema",
    "labels_per_item",
    "validation_fraction",
    "blur_images",
    "lease_seconds",
    # Gold items and exposure limits, declared in labeling.project_settings.
    *QUALITY_FIELDS,
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
def project_members_set(*, project: Project, members: Iterable[User]) -> Project:
    """Replace the project's members. Membership scopes annotators and leads to the project;
    engineers see every project regardless (labeling.permissions)."""
    project.members.set(list(members))
    return project


def _refuse_dropping_used_keys(project: Project, new_schema: dict) -> None:
    """A class or sub-category that labels already use cannot disappear from the schema:
    those labels would no longer mean anything (labels are never rewritten)."""
    keep = {c.get("key") for c in (new_schema.get("classes") or []) if isinstance(c, dict)}
    keep_sub = {
        c.get("key") for c in (new_schema.get("subcategories") or []) if isinstance(c, dict)
    }
    used = set(
        Label.objects.filter(project=project)
        .exclude(value="")
        .order_by()
        .values_list("value", flat=True)
        .distinct()
    )
    used_sub = set(
        Label.objects.filter(project=project)
        .exclude(subcategory="")
        .order_by()
        .values_list("subcategory", flat=True)
        .distinct()
    )
    missing = sorted((used - keep) | (used_sub - keep_sub))
    if missing:
        raise ValidationError(
            {
                "label_schema": _("Labels already use %(keys)s; keep those keys in the schema.")
                % {"keys": missing}
            }
        )
