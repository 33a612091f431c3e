"""Site-wide engineers' page for users: each person's role and the projects they belong to.

The page only parses the form, calls one service (labeling.services.users) and redirects back
with a message; a refused change (your own engineer role, an unknown role) is shown as an error
and changes nothing.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from labeling.models import Project
from labeling.permissions import role_required
from labeling.roles import ROLE_NAMES, ROLE_ORDER, Role, user_role
from labeling.services.users import user_create, user_projects_set, user_role_set


def _error_text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


@require_GET
@role_required(Role.SITE_ENGINEER)
def users_page(request):
    projects = list(Project.objects.order_by("name"))
    people = []
    for person in User.objects.order_by("username").prefetch_related("projects"):
        role = user_role(person)
        member_of = {p.pk for p in person.projects.all()}
        people.append(
            {
                "user": person,
                "role": role.value if role else "",
                "projects": [(p, p.pk in member_of) for p in projects],
            }
        )
    return render(
        request,
        "labeling/users.html",
        {
            "people": people,
            "role_choices": [(r.value, ROLE_NAMES[r]) for r in ROLE_ORDER],
            "projects": projects,
        },
    )


@require_POST
@role_required(Role.SITE_ENGINEER)
def user_role_update(request, pk: int):
    person = get_object_or_404(User, pk=pk)
    role = request.POST.get("role", "")
    try:
        user_role_set(user=person, role=role or None, by=request.user)
    except ValidationError as exc:
        messages.error(
            request, _("%(user)s: %(why)s") % {"user": person.username, "why": _error_text(exc)}
        )
        return redirect("users")
    if role:
        text = _("%(user)s is now %(role)s.") % {
            "user": person.username,
            "role": ROLE_NAMES[Role(role)],
        }
    else:
        text = _("%(user)s is now without a role.") % {"user": person.username}
    messages.success(request, text)
    return redirect("users")


@require_POST
@role_required(Role.SITE_ENGINEER)
def user_projects_update(request, pk: int):
    person = get_object_or_404(User, pk=pk)
    wanted = request.POST.getlist("projects")
    chosen = list(Project.objects.filter(pk__in=[p for p in wanted if p.isdigit()]))
    if len(chosen) != len(set(wanted)):
        messages.error(
            request,
            _("%(user)s: unknown project in the form; nothing changed.")
            % {"user": person.username},
        )
        return redirect("users")
    user_projects_set(user=person, projects=chosen, by=request.user)
    if chosen:
        names = ", ".join(p.name for p in chosen)
        text = _("%(user)s is a member of %(projects)s.") % {
            "user": person.username,
            "projects": names,
        }
    else:
        text = _("%(user)s is a member of no project.") % {"user": person.username}
    messages.success(request, text)
    return redirect("users")


@require_POST
@role_required(Role.SITE_ENGINEER)
def user_add(request):
    username = request.POST.get("username", "").strip()
    try:
        user_create(
            username=username,
            password=request.POST.get("password", ""),
            email=request.POST.get("email", "").strip(),
            role=request.POST.get("role") or None,
            projects=Project.objects.filter(
                pk__in=[p for p in request.POST.getlist("projects") if p.isdigit()]
            ),
            by=request.user,
        )
    except ValidationError as exc:
        if username:
            text = _("Could not create %(user)s: %(why)s") % {
                "user": username,
                "why": _error_text(exc),
            }
        else:
            text = _("Could not create the user: %(why)s") % {"why": _error_text(exc)}
        messages.error(request, text)
    else:
        messages.success(request, _("Created %(user)s.") % {"user": username})
    return redirect("users")
