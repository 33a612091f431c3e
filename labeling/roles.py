"""The roles, as Django groups. Permissions follow the table in ARCHITECTURE.md.

A person's role is the highest group they belong to (superusers count as site-wide engineers).
Project access is separate: annotators, leads and engineers see only the projects they are
members of; a site-wide engineer sees every project and alone manages people, their roles and
project membership (least privilege: an engineer of one project cannot reach another's images,
labels, jobs, exports or models, nor make themselves site-wide). Migration 0005 made every
engineer that existed before this split a site-wide engineer, so nobody lost access.
"""

from enum import StrEnum

from django.utils.translation import gettext_lazy as _


class Role(StrEnum):
    ANNOTATOR = "annotator"
    LEAD = "lead"
    ENGINEER = "engineer"  # an engineer of the projects they are members of
    SITE_ENGINEER = "site_engineer"  # an engineer of every project, and manages people


ROLE_ORDER = [Role.ANNOTATOR, Role.LEAD, Role.ENGINEER, Role.SITE_ENGINEER]
# What people read; the group names (Role values) stay English identifiers.
ROLE_NAMES = {
    Role.ANNOTATOR: _("annotator"),
    Role.LEAD: _("lead"),
    Role.ENGINEER: _("engineer"),
    Role.SITE_ENGINEER: _("site-wide engineer"),
}


def user_role(user) -> Role | None:
    """Highest role of a user, or None for an anonymous user or one with no role."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if user.is_superuser:
        return Role.SITE_ENGINEER
    names = getattr(user, "_cached_role_names", None)
    if names is None:
        names = set(user.groups.values_list("name", flat=True))
        user._cached_role_names = names
    for role in reversed(ROLE_ORDER):
        if role.value in names:
            return role
    return None


def remember_role_names(user, names) -> None:
    """Record the user's group names fetched together with the user (one query for token
    authentication, see labeling.api.authentication), so `user_role` needs no query of its own.

    The names live on this user object only, which the API builds afresh for every request."""
    user._cached_role_names = set(names)


def has_role(user, minimum: Role) -> bool:
    """True when the user's role is at least `minimum`
    (site-wide engineer > engineer > lead > annotator)."""
    role = user_role(user)
    return role is not None and ROLE_ORDER.index(role) >= ROLE_ORDER.index(minimum)
