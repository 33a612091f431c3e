"""Users, their role and the projects they belong to (engineers manage these).

A role is a Django group (labeling.roles); a person holds exactly one of the role groups, or
none (then they can do nothing). Project membership is what scopes annotators, leads and
engineers to their projects; site-wide engineers see every project whatever their membership,
and only they manage people (labeling.permissions.can_manage_people).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from labeling.models import Project
from labeling.permissions import can_manage_people
from labeling.roles import ROLE_ORDER, Role, user_role
from labeling.services.audit_log import Action, audit_record, describe


def _require_engineer(by: User) -> None:
    # Views check this too; the service refuses on its own so a new caller cannot skip it.
    if not can_manage_people(by):
        raise PermissionDenied(
            _("Only site-wide engineers manage users' roles and project membership.")
        )


def _parse_role(role: Role | str | None) -> Role | None:
    if role in (None, ""):
        return None
    try:
        return Role(role)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in ROLE_ORDER)
        raise ValidationError(
            _("Unknown role %(role)r; use one of: %(allowed)s, or none.")
            % {"role": role, "allowed": allowed}
        ) from exc


@transaction.atomic
def user_role_set(*, user: User, role: Role | str | None, by: User) -> User:
    """Make `role` the user's only role group (None removes every role)."""
    _require_engineer(by)
    new_role = _parse_role(role)
    if user.is_superuser and new_role != Role.SITE_ENGINEER:
        raise ValidationError(
            _("A superuser is always a site-wide engineer; change that in the admin.")
        )
    if user.pk == by.pk and new_role != Role.SITE_ENGINEER:
        # Otherwise the last site-wide engineer could lock everyone out of the users' page.
        raise ValidationError(_("You cannot remove your own site-wide engineer role."))
    before = user_role(user)
    role_groups = Group.objects.filter(name__in=[r.value for r in ROLE_ORDER])
    user.groups.remove(*role_groups)
    if new_role is not None:
        user.groups.add(Group.objects.get(name=new_role.value))
    user.__dict__.pop("_cached_role_names", None)
    if before != new_role:
        audit_record(
            actor=by,
            action=Action.ROLE_CHANGED,
            target=user,
            details={
                "from": before.value if before else None,
                "to": new_role.value if new_role else None,
            },
        )
    return user


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    role: Role | str | None,
    by: User,
    email: str = "",
    projects: Iterable[Project] = (),
) -> User:
    """A new active user with a role and project memberships; the password is validated."""
    _require_engineer(by)
    new_role = _parse_role(role)
    user = User(username=username, email=email)
    user.set_password(password)
    # full_clean checks the username (characters, uniqueness) and the e-mail.
    user.full_clean(exclude=["password"])
    from django.contrib.auth.password_validation import validate_password

    validate_password(password, user)
    user.save()
    if new_role is not None:
        user.groups.add(Group.objects.get(name=new_role.value))
    projects = list(projects)
    user.projects.set(projects)
    audit_record(
        actor=by,
        action=Action.USER_CREATED,
        target=user,
        details={
            "role": new_role.value if new_role else None,
            "projects": sorted(p.slug for p in projects),
        },
    )
    return user


@transaction.atomic
def user_projects_set(*, user: User, projects: Iterable[Project], by: User) -> User:
    """Replace the set of projects the user is a member of."""
    _require_engineer(by)
    projects = list(projects)
    before = {p.pk: p for p in user.projects.all()}
    after = {p.pk: p for p in projects}
    user.projects.set(projects)
    # One event per project whose membership changed, so each project's engineers see theirs.
    for pk in sorted(set(before) ^ set(after)):
        project = after.get(pk) or before[pk]
        audit_record(
            actor=by,
            action=Action.MEMBERSHIP_CHANGED,
            project=project,
            target=describe(user),
            details={"change": "added" if pk in after else "removed"},
        )
    return user
