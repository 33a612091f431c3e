"""Project setup without the shell (issue 9, item 10): create a project, edit its label schema
and settings, choose its members and their roles; and the export page (item 12).

Who may do what comes from labeling.permissions: engineers create projects and set up the ones
they manage (`can_manage`); members and roles are people's accounts, so only site-wide engineers
change them (`can_manage_people`), as on the users' page. The pages parse forms
(labeling.views.setup_forms) and call the services (labeling.services.projects, users,
exports); the rules live there.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from labeling.models import Project
from labeling.permissions import (
    can_manage,
    can_manage_people,
    project_visible_or_404,
    role_required,
)
from labeling.roles import ROLE_NAMES, ROLE_ORDER, Role, user_role
from labeling.services.exports import EXPORT_FILTERS, export_filter_choices
from labeling.services.projects import project_create, project_members_set, project_update
from labeling.services.users import user_role_set
from labeling.views import setup_forms as sf


def _managed_project(user, slug: str) -> Project:
    project = project_visible_or_404(user, slug)
    if not can_manage(user, project):
        raise PermissionDenied
    return project


def _error_lines(error: ValidationError) -> list[str]:
    # The schema's rule runs as the field's validator and in Project.clean: one line each.
    return list(dict.fromkeys(error.messages))


def _render(request, project: Project | None, forms_: dict, errors=(), status=200):
    context = {
        "project": project,
        "errors": list(errors),
        "other_languages": sf.OTHER_LANGUAGES,
        **forms_,
    }
    if project is not None:
        context.update(_members_context(request.user, project))
    return render(request, "labeling/project_setup.html", context, status=status)


def _forms(project: Project | None, data=None) -> dict:
    classes, subcategories = sf.schema_formsets(project, data)
    identity = None
    if project is None:
        identity = sf.ProjectIdentityForm(data=data, auto_id="project-%s")
    schema = project.label_schema if project is not None else {}
    return {
        "identity": identity,
        "classes": classes,
        "subcategories": subcategories,
        "settings_form": sf.settings_form(project, data),
        "positive_index": _index_of(schema, "positive", data),
        "default_index": _index_of(schema, "default", data),
    }


def _index_of(schema: dict, name: str, data) -> str:
    """Which class row's radio is checked: the posted one, or the schema's."""
    if data is not None:
        return data.get(name, "")
    keys = [c["key"] for c in schema.get("classes") or []]
    if not keys:  # a new project: the form's first rows are normal, positive
        return {"positive": "1", "default": "0"}[name]
    key = schema.get(name, keys[0] if name == "default" else None)
    return str(keys.index(key)) if key in keys else ""


@role_required(Role.ENGINEER)
def project_create_page(request):
    if request.method != "POST":
        return _render(request, None, _forms(None))
    forms_ = _forms(None, request.POST)
    identity = forms_["identity"]
    if not identity.is_valid():
        return _render(request, None, forms_, status=400)
    try:
        schema = sf.schema_from_post(forms_["classes"], forms_["subcategories"], request.POST, None)
        project = project_create(
            created_by=request.user,
            label_schema=schema,
            **identity.cleaned_data,
            **sf.settings_from_post(request.POST),
        )
    except ValidationError as error:
        return _render(request, None, forms_, _error_lines(error), status=400)
    messages.success(request, _("Project %(name)s created.") % {"name": project.name})
    return redirect("project-setup", slug=project.slug)


@role_required(Role.ENGINEER)
def project_setup(request, slug: str):
    project = _managed_project(request.user, slug)
    if request.method != "POST":
        return _render(request, project, _forms(project))
    forms_ = _forms(project, request.POST)
    try:
        schema = sf.schema_from_post(
            forms_["classes"], forms_["subcategories"], request.POST, project.label_schema
        )
        project_update(
            project=project,
            label_schema=schema,
            **sf.settings_from_post(request.POST),
        )
    except ValidationError as error:
        return _render(request, project, forms_, _error_lines(error), status=400)
    messages.success(request, _("Setup of %(name)s saved.") % {"name": project.name})
    return redirect("project-setup", slug=project.slug)


def _members_context(user, project: Project) -> dict:
    editable = can_manage_people(user)
    member_ids = set(project.members.values_list("pk", flat=True))
    people = User.objects.filter(is_active=True).order_by("username")
    if not editable:
        people = people.filter(pk__in=member_ids)
    rows = []
    for person in people.prefetch_related("groups"):
        role = user_role(person)
        rows.append(
            {
                "user": person,
                "member": person.pk in member_ids,
                "role": role.value if role else "",
                "role_name": ROLE_NAMES[role] if role else _("no role"),
            }
        )
    return {
        "members_editable": editable,
        "people": rows,
        "role_choices": [(r.value, ROLE_NAMES[r]) for r in ROLE_ORDER],
    }


@require_POST
@role_required(Role.ENGINEER)
def project_members_update(request, slug: str):
    """Members of the project and each person's role (site-wide engineers: a role is the
    person's in every project they belong to)."""
    project = _managed_project(request.user, slug)
    if not can_manage_people(request.user):
        raise PermissionDenied
    wanted = {p for p in request.POST.getlist("members") if p.isdigit()}
    members = list(User.objects.filter(pk__in=wanted, is_active=True))
    if len(members) != len(wanted):
        messages.error(request, _("Unknown person in the form; nothing changed."))
        return redirect(reverse("project-setup", kwargs={"slug": slug}) + "#members")
    project_members_set(project=project, members=members, by=request.user)
    failed = []
    for person in User.objects.filter(is_active=True):
        posted = request.POST.get(f"role_{person.pk}")
        current = user_role(person)
        if posted is None or posted == (current.value if current else ""):
            continue
        try:
            user_role_set(user=person, role=posted or None, by=request.user)
        except ValidationError as error:
            failed.append(f"{person.username}: {' '.join(error.messages)}")
    for line in failed:
        messages.error(request, line)
    messages.success(request, _("Members of %(name)s saved.") % {"name": project.name})
    return redirect(reverse("project-setup", kwargs={"slug": slug}) + "#members")


@require_GET
@role_required(Role.ENGINEER)
def project_export(request, slug: str):
    """The export form. It sends a GET to the export API, which streams the file and records
    the export in the audit log; the page only offers each filter's choices."""
    project = _managed_project(request.user, slug)
    choices = export_filter_choices(project=project, language=get_language())
    filters = [
        {"name": name, "label": label, "choices": choices[name]}
        for name, label in EXPORT_FILTERS.items()
    ]
    api = reverse("api-labels-export", kwargs={"slug": project.slug})
    return render(
        request,
        "labeling/project_export.html",
        {
            "project": project,
            "filters": filters,
            "export_url": api,
            "example_url": api + "?" + urlencode({"as": "zip"}),
            "image_count": project.images.count(),
        },
    )
