"""Engineers' page for users: each person's role and the projects they belong to.

The page only parses the form, calls one service (labeling.services.users) and redirects back
with a message; a refused change (your own engineer role, an unknown role) is shown as an error
and changes nothing.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from labeling.models import Project
from labeling.permissions import role_required
from labeling.roles import ROLE_ORDER, Role, user_role
from labeling.services.users import user_create, user_projects_set, user_role_set


def _error_text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


@require_GET
@role_required(Role.ENGINEER)
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
        {"people": people, "roles": [r.value for r in ROLE_ORDER], "projects": projects},
    )


@require_POST
@role_required(Role.ENGINEER)
def user_role_update(request, pk: int):
    person = get_object_or_404(User, pk=pk)
    role = request.POST.get("role", "")
    try:
        user_role_set(user=person, role=role or None, by=request.user)
    except ValidationError as exc:
        messages.error(request, f"{person.username}: {_error_text(exc)}")
    else:
        messages.success(request, f"{person.username} is now {role or 'without a role'}.")
    return redirect("users")


@require_POST
@role_required(Role.ENGINEER)
def user_projects_update(request, pk: int):
    person = get_object_or_404(User, pk=pk)
    wanted = request.POST.getlist("projects")
    chosen = list(Project.objects.filter(pk__in=[p for p in wanted if p.isdigit()]))
    if len(chosen) != len(set(wanted)):
        messages.error(request, f"{person.username}: unknown project in the form; nothing changed.")
        return redirect("users")
    user_projects_set(user=person, projects=chosen, by=request.user)
    names = ", ".join(p.name for p in chosen) or "no project"
    messages.success(request, f"{person.username} is a member of {names}.")
    return redirect("users")


@require_POST
@role_required(Role.ENGINEER)
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
        messages.error(request, f"Could not create {username or 'the user'}: {_error_text(exc)}")
    else:
        messages.success(request, f"Created {username}.")
    return redirect("users")
