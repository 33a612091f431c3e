"""Every access rule in one place (ARCHITECTURE.md, "Roles").

- annotator: label items leased to them, undo their own last labels, see their own throughput.
- lead: everything an annotator can, plus the re-review queue, label history, model scores,
  Grad-CAM and annotator quality, in projects they are members of.
- engineer: everything in the projects they are members of: import, configure, jobs, models,
  export, the audit log of those projects.
- site-wide engineer (or superuser): everything, in every project, plus people: accounts, roles,
  project membership, everyone's API tokens, the whole audit log.

Pages use the decorators; the REST API uses the DRF permission classes; list endpoints scope
their querysets with `projects_visible_to` (DRF checks object permissions on single objects only).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from .models import Project, Queue
from .roles import Role, has_role, user_role


def is_site_wide(user) -> bool:
    """A site-wide engineer (or superuser): every project, and people's accounts and roles."""
    return has_role(user, Role.SITE_ENGINEER)


def projects_visible_to(user) -> QuerySet[Project]:
    """Site-wide engineers see every project; everyone else, engineers included, only the
    projects they are members of."""
    if user_role(user) is None:
        return Project.objects.none()
    if is_site_wide(user):
        return Project.objects.all()
    return Project.objects.filter(members=user)


@contextmanager
def project_access_known(user, project_id: int, is_member: bool):
    """Within the block, `can_view_project(user, <that project>)` answers `is_member` without a
    query. A view uses it with the membership it read in the same query that loaded the object
    acted on (see labeling.api.queue_views), so the view's own check and the service's re-check
    cost nothing more. The record lives on this user object for the block only and is removed
    on the way out, so it can never outlive the request that read it."""
    access = user.__dict__.setdefault("_project_access", {})
    access[project_id] = bool(is_member)
    try:
        yield
    finally:
        access.pop(project_id, None)


def can_view_project(user, project: Project) -> bool:
    if user_role(user) is None:
        return False
    if is_site_wide(user):
        return True
    known = user.__dict__.get("_project_access", {}).get(project.pk)
    if known is not None:
        return known
    return projects_visible_to(user).filter(pk=project.pk).exists()


def can_label(user, project: Project) -> bool:
    return has_role(user, Role.ANNOTATOR) and can_view_project(user, project)


def can_review(user, project: Project) -> bool:
    """Re-review queues, label history of other people, model scores, Grad-CAM."""
    return has_role(user, Role.LEAD) and can_view_project(user, project)


def can_see_scores(user, project: Project) -> bool:
    return can_review(user, project)


def can_see_queue_details(user, project: Project) -> bool:
    """Why each queue item is there (strategy, rank, similarity, score band): leads and
    engineers judge what each job produced; annotators never see it (they would label what the
    model thinks)."""
    return can_review(user, project)


def queue_kinds_closed_to(user, project: Project) -> list[str]:
    """Kinds of queue in `project` this user may not open: re-review queues are for leads.
    The one statement of that rule; lists filter with it, single queues go through
    `queue_access_check`. The gold queue is closed to everyone: its items are only served
    mixed into other queues (labeling.services.gold), so nobody can tell them apart."""
    if can_review(user, project):
        return [Queue.Kind.GOLD]
    return [Queue.Kind.REVIEW, Queue.Kind.GOLD]


def queue_access_check(user, queue: Queue) -> None:
    """PermissionDenied unless `user` may take items of `queue`: a labeling member of its
    project, and a lead for a re-review queue."""
    if not can_label(user, queue.project):
        raise PermissionDenied(_("Your role does not allow labeling in this project."))
    if queue.kind in queue_kinds_closed_to(user, queue.project):
        if queue.kind == Queue.Kind.GOLD:
            raise PermissionDenied(_("This queue is not opened directly."))
        raise PermissionDenied(_("Re-review queues are for leads."))


def can_see_estimates(user, project: Project) -> bool:
    """The pool estimates (prevalence, precision, recall with intervals) and their forecast:
    leads and engineers of the project; never annotators (an audit must look like any other
    work to them)."""
    return can_review(user, project)


def can_manage(user, project: Project) -> bool:
    """Import, configure, jobs, model versions, export, audit log of `project`: an engineer who
    is a member of it, or a site-wide engineer."""
    return has_role(user, Role.ENGINEER) and can_view_project(user, project)


def can_manage_people(user) -> bool:
    """Accounts, roles and project membership, everyone's API tokens: site-wide engineers only
    (an engineer of one project could otherwise join any project or make themselves site-wide)."""
    return is_site_wide(user)


def can_see_audit_log(user) -> bool:
    """The audit log's page, API and export: engineers, each seeing the events of the projects
    they may manage (labeling.selectors.audit_log); site-wide engineers see every event."""
    return has_role(user, Role.ENGINEER)


def can_manage_token_of(user, owner) -> bool:
    """See and revoke `owner`'s API token: the owner themselves, or a site-wide engineer."""
    return user.is_authenticated and (user.pk == owner.pk or can_manage_people(user))


# --- Page decorators --------------------------------------------------------------------------
def role_required(minimum: Role):
    """Anonymous users go to the login page; logged-in users below `minimum` get 403."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, minimum):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


# --- DRF permission classes -------------------------------------------------------------------
class _RoleAtLeast(BasePermission):
    minimum: Role = Role.ANNOTATOR
    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        return has_role(request.user, self.minimum)


class IsAnnotator(_RoleAtLeast):
    minimum = Role.ANNOTATOR


class IsLead(_RoleAtLeast):
    minimum = Role.LEAD


class IsEngineer(_RoleAtLeast):
    """An engineer of some project; views then scope with `project_visible_or_404`."""

    minimum = Role.ENGINEER


class IsSiteEngineer(_RoleAtLeast):
    """People's accounts, roles and membership (`can_manage_people`)."""

    minimum = Role.SITE_ENGINEER


def project_visible_or_404(user, slug: str) -> Project:
    """The project with this slug if the user may see it; 404 otherwise (never revealing that a
    project the user may not see exists)."""
    return get_object_or_404(projects_visible_to(user), slug=slug)


def project_reviewable_or_403(user, slug: str) -> Project:
    """The project with this slug for a page of its leads (review, quality): 404 when the user
    may not see it, 403 when they see it but may not review it."""
    project = project_visible_or_404(user, slug)
    if not can_review(user, project):
        raise PermissionDenied
    return project
