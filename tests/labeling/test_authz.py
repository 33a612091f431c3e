"""The authorization matrix: every URL pattern of the project, every role, own and other project.

`MATRIX` holds one entry per route (its name, or its pattern when it has none): the method to
call and the expected outcome for anonymous, annotator, lead, engineer (site-wide) and superuser,
on objects of the user's own project and, where objects are involved, of another project.

A sixth person, `project_engineer`, is an engineer limited to the projects they are members of
(labeling.roles.Role.ENGINEER), a member of the own project only. Unless a row says otherwise
(`project_engineer=`), they get what the site-wide engineer gets on the own project and a 404 on
the other project's objects: a project they may not see must not reveal that it exists.

The first test walks `get_resolver()` recursively (admin and API docs included) and fails naming
every route that has no entry, so a new route cannot ship without a decision about who may use
it.

Outcomes: OK (allowed: 2xx, a 400 for an empty form, or a redirect that is not to a login page),
LOGIN (redirect to a login page), DENIED (403, or 401), NOT_FOUND (404: another project's
objects do not reveal that they exist). Requests run against the real database, each from a
fresh client, with an empty form body for writes (so an allowed write is a 400 or a harmless
no-op, never a crash).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from labeling.models import (
    AnnotatorPause,
    Job,
    Label,
    Lease,
    ModelVersion,
    QueueItem,
    Score,
    TriageRun,
)
from labeling.services.audit_log import audit_record
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = [pytest.mark.authz, pytest.mark.django_db]

OK, LOGIN, DENIED, NOT_FOUND = "ok", "login", "denied", "not_found"
ROLES = ("anonymous", "annotator", "lead", "project_engineer", "engineer", "superuser")


def row(anonymous, annotator, lead, engineer, superuser, *, project_engineer=None) -> dict:
    found = {
        "anonymous": anonymous,
        "annotator": annotator,
        "lead": lead,
        "engineer": engineer,
        "superuser": superuser,
    }
    if project_engineer is not None:
        found["project_engineer"] = project_engineer
    return found


def expected_outcome(route_row: dict[str, str], side: str, role: str) -> str:
    if role in route_row:
        return route_row[role]
    # The project-limited engineer (see the module's docstring).
    return route_row["engineer"] if side == "own" else NOT_FOUND


@dataclass(frozen=True)
class Route:
    own: dict[str, str]
    other: dict[str, str] | None = None  # None: the route's objects do not belong to projects
    method: str = "GET"
    obj: str | None = None  # which fixture object a `pk` / `object_id` / `id` kwarg names


# Rows used many times.
PAGE_ALL = row(LOGIN, OK, OK, OK, OK)
PAGE_ENGINEER = row(LOGIN, DENIED, DENIED, OK, OK)
API_ALL = row(DENIED, OK, OK, OK, OK)
API_ENGINEER = row(DENIED, DENIED, DENIED, OK, OK)
MEMBERS_OTHER = row(LOGIN, NOT_FOUND, NOT_FOUND, OK, OK)
API_MEMBERS_OTHER = row(DENIED, NOT_FOUND, NOT_FOUND, OK, OK)
ADMIN = row(LOGIN, LOGIN, LOGIN, LOGIN, OK, project_engineer=LOGIN)  # staff only (superusers)
EVERYONE = row(OK, OK, OK, OK, OK, project_engineer=OK)
# People's accounts, roles and membership: site-wide engineers only, whatever the project.
PAGE_SITE = row(LOGIN, DENIED, DENIED, OK, OK, project_engineer=DENIED)
API_SITE = row(DENIED, DENIED, DENIED, OK, OK, project_engineer=DENIED)
ADMIN_DENIED = row(LOGIN, LOGIN, LOGIN, LOGIN, DENIED, project_engineer=LOGIN)
ADMIN_NOT_FOUND = row(LOGIN, LOGIN, LOGIN, LOGIN, NOT_FOUND, project_engineer=LOGIN)

MATRIX: dict[str, Route] = {
    # --- Pages ---------------------------------------------------------------------------------
    "home": Route(PAGE_ALL),
    "login": Route(EVERYONE),  # logged-in people are redirected home
    "logout": Route(EVERYONE, method="POST"),
    "health": Route(EVERYONE),  # database and broker up? for load balancers, no secrets
    # Languages (docs/i18n.md): the switcher's POST sets a cookie and redirects back; the page
    # scripts' translation catalog. Both serve the sign-in page too, so everyone.
    "set_language": Route(EVERYONE, method="POST"),
    "javascript-catalog": Route(EVERYONE),
    "project-detail": Route(PAGE_ALL, MEMBERS_OTHER),
    "queue-annotate": Route(PAGE_ALL, MEMBERS_OTHER, obj="queue"),
    "queue-grid": Route(PAGE_ALL, MEMBERS_OTHER, obj="queue"),
    "import": Route(PAGE_ENGINEER),
    "project-import": Route(PAGE_ENGINEER, PAGE_ENGINEER),
    # Project setup and export (issue 9, items 10 and 12): engineers who manage the project;
    # members and roles are people's accounts, so site-wide engineers only.
    "project-create": Route(PAGE_ENGINEER),
    "project-setup": Route(PAGE_ENGINEER, PAGE_ENGINEER),
    "project-members-update": Route(
        row(LOGIN, DENIED, DENIED, OK, OK, project_engineer=DENIED), PAGE_ENGINEER, method="POST"
    ),
    "project-export": Route(PAGE_ENGINEER, PAGE_ENGINEER),
    "image-file": Route(PAGE_ALL, MEMBERS_OTHER, obj="image"),
    "image-thumb": Route(PAGE_ALL, MEMBERS_OTHER, obj="image"),
    "users": Route(PAGE_SITE),
    "user-create": Route(PAGE_SITE, method="POST"),
    "user-role-update": Route(PAGE_SITE, PAGE_SITE, method="POST", obj="user"),
    "user-projects-update": Route(PAGE_SITE, PAGE_SITE, method="POST", obj="user"),
    "password-change": Route(PAGE_ALL),  # one's own password, whatever the role
    "password-change-done": Route(PAGE_ALL),
    # --- Core API ------------------------------------------------------------------------------
    "api-auth-token": Route(EVERYONE, method="POST"),  # empty form: 400 for everyone
    "api-auth-token-list": Route(API_ALL),  # one's own token; site-wide engineers see all
    # Another person's token: only site-wide engineers may revoke it (204 also when none).
    "api-auth-token-revoke": Route(
        row(DENIED, NOT_FOUND, NOT_FOUND, OK, OK, project_engineer=NOT_FOUND),
        method="DELETE",
        obj="user",
    ),
    "api-auth-password": Route(API_ALL, method="POST"),  # empty body: 400 for the signed-in
    "api-schema": Route(API_ALL),
    "api-docs": Route(API_ALL),
    "api-project-list": Route(API_ALL),
    "api-project-create": Route(API_ENGINEER, method="POST"),
    "api-project-detail": Route(API_ALL, API_MEMBERS_OTHER),
    "api-project-update": Route(API_ENGINEER, API_ENGINEER, method="PATCH"),
    "api-image-list": Route(API_ALL, API_MEMBERS_OTHER),
    "api-image-detail": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK), obj="image"
    ),
    "api-model-version-list": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    "api-labels-export": Route(API_ENGINEER, API_ENGINEER),
    "api-labels-import": Route(API_ENGINEER, API_ENGINEER, method="POST"),
    "api-user-list": Route(API_SITE),
    "api-user-create": Route(API_SITE, method="POST"),
    "api-user-role-set": Route(API_SITE, API_SITE, method="POST", obj="user"),
    "api-user-projects-set": Route(API_SITE, API_SITE, method="PUT", obj="user"),
    # --- Queue API (labeling queue of the project; the lease is the annotator's own) ----------
    "api-queue-next": Route(API_ALL, API_MEMBERS_OTHER, method="POST", obj="queue"),
    "api-queue-undo": Route(API_ALL, API_MEMBERS_OTHER, method="POST", obj="queue"),
    "api-queue-submit-batch": Route(API_ALL, API_MEMBERS_OTHER, method="POST", obj="queue"),
    # Submit-and-claim (issue 11, item 1): the same people as submit-batch and next.
    "api-queue-submit-next": Route(API_ALL, API_MEMBERS_OTHER, method="POST", obj="queue"),
    "api-queue-stats": Route(API_ALL, API_MEMBERS_OTHER, obj="queue"),
    "api-queue-recent-labels": Route(API_ALL, API_MEMBERS_OTHER, obj="queue"),  # one's own
    "api-project-preferences": Route(API_ALL, API_MEMBERS_OTHER),  # one's own preferences
    # Somebody else's lease is a 404 whatever the role: only its holder may submit or skip it.
    "api-lease-submit": Route(
        row(DENIED, OK, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        row(DENIED, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        method="POST",
        obj="lease",
    ),
    "api-lease-skip": Route(
        row(DENIED, OK, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        row(DENIED, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        method="POST",
        obj="lease",
    ),
    "api-lease-unskip": Route(
        row(DENIED, OK, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        row(DENIED, NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        method="POST",
        obj="lease",
    ),
    # --- Jobs (engineers only; the strategies' yield also for leads of the project) ---------
    "jobs": Route(PAGE_ENGINEER),
    "job-detail": Route(PAGE_ENGINEER, PAGE_ENGINEER, obj="admin:labeling.job"),
    "job-cancel": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST", obj="admin:labeling.job"),
    "project-jobs": Route(PAGE_ENGINEER, PAGE_ENGINEER),
    "project-job-start": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    "api-project-jobs": Route(API_ENGINEER, API_ENGINEER),
    "api-project-job-create": Route(API_ENGINEER, API_ENGINEER, method="POST"),
    "api-job-detail": Route(API_ENGINEER, API_ENGINEER, obj="admin:labeling.job"),
    "api-job-cancel": Route(API_ENGINEER, API_ENGINEER, method="POST", obj="admin:labeling.job"),
    "api-strategy-yield": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    # --- The loop as engineers and leads watch it (issue 12): why each item is queued (leads,
    # engineers; never annotators), the validation split's progress and refill, the selection
    # preview (engineers).
    "project-queue-items": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK), obj="queue"
    ),
    "project-validation-fill": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    "api-queue-items": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK), obj="queue"
    ),
    "api-validation-progress": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    "api-validation-fill": Route(API_ENGINEER, API_ENGINEER, method="POST"),
    "api-selection-preview": Route(API_ENGINEER, API_ENGINEER),
    # --- Model versions (leads of the project read; engineers promote, roll back, predict) ---
    "models": Route(row(LOGIN, DENIED, OK, OK, OK)),
    "project-models": Route(row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK)),
    # Versions side by side (issue 9, item 11): read like the versions page.
    "project-models-compare": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK)
    ),
    "api-model-version-compare": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    "project-model-promote": Route(
        PAGE_ENGINEER, PAGE_ENGINEER, method="POST", obj="model_version"
    ),
    "project-model-rollback": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    # The world's versions have no PR curve file: 404 for those allowed to look
    # (tests/labeling/test_models_api.py serves a real one).
    "project-model-pr-curve": Route(
        row(LOGIN, DENIED, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        row(LOGIN, DENIED, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        obj="model_version",
    ),
    "api-model-version-detail": Route(
        row(DENIED, DENIED, OK, OK, OK),
        row(DENIED, DENIED, NOT_FOUND, OK, OK),
        obj="model_version",
    ),
    "api-model-version-promote": Route(
        API_ENGINEER, API_ENGINEER, method="POST", obj="model_version"
    ),
    "api-model-version-rollback": Route(API_ENGINEER, API_ENGINEER, method="POST"),
    "api-predict": Route(API_ENGINEER, API_ENGINEER, method="POST"),
    # --- Noise review and annotator quality (leads of the project), cold start (engineers) ----
    "review": Route(row(LOGIN, DENIED, OK, OK, OK)),
    "project-review": Route(row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK)),
    "project-review-resolve": Route(
        row(LOGIN, DENIED, OK, OK, OK),  # an empty form: 400 for those allowed
        row(LOGIN, DENIED, NOT_FOUND, OK, OK),
        method="POST",
        obj="review_item",
    ),
    # Undo of the lead's last review step: with nothing to undo, a redirect with a message.
    "project-review-undo": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK), method="POST"
    ),
    # No active model version in the world: 404 for those allowed to look
    # (tests/labeling/test_review_pages.py renders a real Grad-CAM).
    "project-review-gradcam": Route(
        row(LOGIN, DENIED, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        row(LOGIN, DENIED, NOT_FOUND, NOT_FOUND, NOT_FOUND),
        obj="image",
    ),
    "project-quality": Route(row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK)),
    "project-quality-agreement": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK)
    ),
    # One annotator's flagged, overturned and gold-failed items (issue 9, item 9): leads of the
    # project; the other project's person is not found through it.
    "project-quality-annotator": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK), obj="user"
    ),
    "api-quality-annotator-items": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK), obj="user"
    ),
    "project-cold-start": Route(PAGE_ENGINEER, PAGE_ENGINEER),
    "api-review-next": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    "api-review-resolve": Route(
        row(DENIED, DENIED, OK, OK, OK),  # an empty body: 400 for those allowed
        row(DENIED, DENIED, NOT_FOUND, OK, OK),
        method="POST",
        obj="review_item",
    ),
    # The review stream's steps (issue 9, item 7): an empty body is a skip without a comment
    # (201), a send-back without its required comment (400), an undo with nothing to undo (400).
    "api-review-skip": Route(
        row(DENIED, DENIED, OK, OK, OK),
        row(DENIED, DENIED, NOT_FOUND, OK, OK),
        method="POST",
        obj="review_item",
    ),
    "api-review-send-back": Route(
        row(DENIED, DENIED, OK, OK, OK),
        row(DENIED, DENIED, NOT_FOUND, OK, OK),
        method="POST",
        obj="review_item",
    ),
    "api-review-undo": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK), method="POST"
    ),
    # One's own labels that leads sent back, with their comments: anyone logged in.
    "api-review-returned": Route(API_ALL),
    "api-quality": Route(row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)),
    # --- Gold items, pauses and quality settings (issue 9, items 3 and 4): leads of the project
    # mark gold and lift pauses (empty forms: a message, back to the page); engineers set the
    # settings; never annotators (gold must stay invisible to them).
    "project-gold-mark": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK), method="POST"
    ),
    "project-gold-unmark": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK), method="POST"
    ),
    "project-pause-lift": Route(
        row(LOGIN, DENIED, OK, OK, OK),
        row(LOGIN, DENIED, NOT_FOUND, OK, OK),
        method="POST",
        obj="pause",
    ),
    "project-quality-settings": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    # Webhooks (issue 9, item 15): engineers of the project only (the page shows the secret).
    "project-webhooks": Route(PAGE_ENGINEER, PAGE_ENGINEER),
    "project-webhooks-save": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    "project-webhooks-ping": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    "project-webhooks-rotate": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    "api-webhook-deliveries": Route(API_ENGINEER, API_ENGINEER),
    "api-webhook-ping": Route(API_ENGINEER, API_ENGINEER, method="POST"),
    "project-disagreements-queue": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK), method="POST"
    ),
    "api-quality-agreement": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    "api-quality-disagreements-queue": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK), method="POST"
    ),
    "api-gold": Route(row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)),
    "api-gold-unmark": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK), method="POST"
    ),
    "api-quality-checks": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    "api-pause-lift": Route(
        row(DENIED, DENIED, OK, OK, OK),
        row(DENIED, DENIED, NOT_FOUND, OK, OK),
        method="POST",
        obj="pause",
    ),
    # --- Pool estimates (issue 10): leads and engineers of the project, never annotators ----
    "project-estimates": Route(
        row(LOGIN, DENIED, OK, OK, OK), row(LOGIN, DENIED, NOT_FOUND, OK, OK)
    ),
    "api-project-estimates": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    # Triage of the live pool (issue 10, item 4): engineers start, stop and revert (an empty
    # form: "no active model" or "not running", back to the page); leads and engineers read.
    "project-triage-start": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    "project-triage-stop": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST"),
    "project-triage-revert": Route(PAGE_ENGINEER, PAGE_ENGINEER, method="POST", obj="triage_run"),
    "api-project-triage": Route(
        row(DENIED, DENIED, OK, OK, OK), row(DENIED, DENIED, NOT_FOUND, OK, OK)
    ),
    "api-project-triage-stop": Route(API_ENGINEER, API_ENGINEER, method="POST"),
    "api-project-triage-revert": Route(API_ENGINEER, API_ENGINEER, method="POST", obj="triage_run"),
    # --- The audit log (issue 8, item 10): engineers, each seeing the events of the projects they
    # may manage (tests/labeling/test_audit_log.py checks what each sees); read only.
    "audit": Route(PAGE_ENGINEER),
    "api-audit-list": Route(API_ENGINEER),
    "api-audit-export": Route(API_ENGINEER),
    # --- Django admin --------------------------------------------------------------------------
    "admin:index": Route(ADMIN),
    "admin:login": Route(EVERYONE),  # the form, or "not authorized"; superusers go to index
    "admin:logout": Route(EVERYONE, method="POST"),
    "admin:password_change": Route(ADMIN),
    "admin:password_change_done": Route(ADMIN),
    "admin:autocomplete": Route(ADMIN_DENIED),  # no params: 403
    "admin:jsi18n": Route(ADMIN),
    # Our models have no get_absolute_url, so "view on site" is a 404 even for superusers.
    "admin:view_on_site": Route(ADMIN_NOT_FOUND, obj="project"),
    "admin:app_list": Route(ADMIN),
    "admin:auth_user_password_change": Route(ADMIN, obj="admin:auth.user"),
    # The admin's catch-all answers 404 to staff only; everyone else goes to the login page.
    "pattern:admin/(?P<url>.*)$": Route(ADMIN_NOT_FOUND),
}

# Every registered admin model has the same five views and one bare redirect (object_id/ ->
# change/). Listing the models here (not reading them from admin.site) keeps the rule that a
# newly registered model fails the first test until someone adds it.
ADMIN_MODELS = [
    "auth.group",
    "auth.user",
    "authtoken.tokenproxy",
    "labeling.project",
    "labeling.image",
    "labeling.queue",
    "labeling.queueitem",
    "labeling.lease",
    "labeling.label",
    "labeling.modelversion",
    "labeling.score",
    "labeling.job",
    "labeling.auditevent",
]
for _model in ADMIN_MODELS:
    _app, _name = _model.split(".")
    _obj = f"admin:{_model}"
    MATRIX[f"admin:{_app}_{_name}_changelist"] = Route(ADMIN)
    MATRIX[f"admin:{_app}_{_name}_add"] = Route(ADMIN)
    for _view in ("history", "delete", "change"):
        MATRIX[f"admin:{_app}_{_name}_{_view}"] = Route(ADMIN, obj=_obj)
    # The bare object_id/ URL redirects to change/, inside the admin's guard.
    MATRIX[f"pattern:admin/{_app}/{_name}/<path:object_id>/"] = Route(ADMIN, obj=_obj)
# Labels are append-only: nobody deletes one, not even a superuser (labeling.admin.LabelAdmin).
MATRIX["admin:labeling_label_delete"] = Route(ADMIN_DENIED, obj="admin:labeling.label")
# The audit log is append-only: nobody adds, changes or deletes an event through the admin (the
# change page shows it read-only).
MATRIX["admin:labeling_auditevent_add"] = Route(ADMIN_DENIED)
MATRIX["admin:labeling_auditevent_delete"] = Route(ADMIN_DENIED, obj="admin:labeling.auditevent")


# --- Walking the URL tree -------------------------------------------------------------------------
def all_routes() -> dict[str, tuple[URLPattern, str]]:
    """{key: (pattern, full pattern text)} for every URL pattern, recursively."""
    found: dict[str, tuple[URLPattern, str]] = {}

    def walk(resolver: URLResolver, prefix: str, namespace: str | None) -> None:
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                ns = namespace
                if entry.namespace:
                    ns = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
                walk(entry, prefix + str(entry.pattern), ns)
                continue
            text = prefix + str(entry.pattern)
            if entry.name:
                key = f"{namespace}:{entry.name}" if namespace else entry.name
            else:
                key = f"pattern:{text}"
            found[key] = (entry, text)

    walk(get_resolver(), "", None)
    return found


def test_every_route_has_a_matrix_entry():
    routes = all_routes()
    missing = sorted(set(routes) - set(MATRIX))
    assert not missing, "Routes without an authorization-matrix entry:\n" + "\n".join(
        f"  {key}  ({routes[key][1]})" for key in missing
    )
    stale = sorted(set(MATRIX) - set(routes))
    assert not stale, f"Matrix entries for routes that no longer exist: {stale}"


# --- The world the requests run in ----------------------------------------------------------------
def _side(project, annotator, lead):
    image = make_image(project)
    queue = make_queue(project)
    item = QueueItem.objects.create(queue=queue, image=image)
    lease = Lease.objects.create(
        item=item, annotator=annotator, expires_at=timezone.now() + timedelta(hours=1)
    )
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    target = make_user("annotator")
    project.members.add(target)
    label = Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    return {
        "project": project,
        "image": image,
        "queue": queue,
        "lease": lease,
        "pause": AnnotatorPause.objects.create(
            project=project, annotator=annotator, accuracy=0.5, answers=10, threshold=0.8
        ),
        "user": target,
        "model_version": version,
        "review_item": QueueItem.objects.create(
            queue=make_queue(project, kind="review"), image=image, strategy="noise_review"
        ),
        "admin:auth.group": Group.objects.get(name="annotator"),
        "admin:auth.user": target,
        "admin:authtoken.tokenproxy": Token.objects.create(user=target),
        "admin:labeling.project": project,
        "admin:labeling.image": image,
        "admin:labeling.queue": queue,
        "admin:labeling.queueitem": item,
        "admin:labeling.lease": lease,
        "admin:labeling.label": label,
        "admin:labeling.modelversion": version,
        "admin:labeling.score": Score.objects.create(
            image=image, model_version=version, stage1=0.5, score=0.5
        ),
        "admin:labeling.job": Job.objects.create(project=project, kind=Job.Kind.SCORE_POOL),
        "admin:labeling.auditevent": audit_record(
            actor=annotator, action="labels_exported", project=project
        ),
        "triage_run": TriageRun.objects.create(
            project=project, model_version=version, params={"max_error": 0.02}, status="stopped"
        ),
    }


@pytest.fixture
def world():
    annotator = make_user("annotator")
    lead = make_user("lead")
    project_engineer = make_user("engineer")  # an engineer of the own project only
    users = {
        "anonymous": None,
        "annotator": annotator,
        "lead": lead,
        "project_engineer": project_engineer,
        "engineer": make_user("site_engineer"),
        "superuser": make_user(None, is_superuser=True, is_staff=True),
    }
    own = _side(make_project(members=[annotator, lead, project_engineer]), annotator, lead)
    # The other project has its own annotator and lead; ours are not members.
    other_annotator = make_user("annotator")
    other = _side(make_project(members=[other_annotator]), other_annotator, make_user("lead"))
    return {"users": users, "own": own, "other": other}


def url_for(key: str, pattern: URLPattern, route: Route, objects: dict) -> str:
    kwargs = {}
    for name in pattern.pattern.converters or {}:
        kwargs[name] = None
    if not kwargs:
        # re_path patterns keep their group names in the regex.
        kwargs = dict.fromkeys(pattern.pattern.regex.groupindex)
    obj = objects[route.obj] if route.obj else None
    for name in kwargs:
        if name == "slug":
            kwargs[name] = objects["project"].slug
        elif name in ("pk", "object_id", "id"):
            kwargs[name] = obj.pk
        elif name == "image_id":
            kwargs[name] = objects["image"].pk
        elif name == "content_type_id":
            from django.contrib.contenttypes.models import ContentType

            kwargs[name] = ContentType.objects.get_for_model(obj).pk
        elif name == "app_label":
            kwargs[name] = "labeling"
        elif name == "url":
            kwargs[name] = "no-such-page/"
        else:
            raise AssertionError(f"{key}: no fixture value for URL kwarg {name!r}")
    if key.startswith("pattern:"):
        # Unnamed patterns cannot be reversed: fill the pattern text in.
        text = key.removeprefix("pattern:").removesuffix("$")
        text = text.replace("(?P<url>.*)", kwargs.get("url") or "")
        return "/" + text.replace("<path:object_id>", str(kwargs.get("object_id", "")))
    return reverse(key, kwargs=kwargs)


LOGIN_PATHS = ("/login/", "/admin/login/")


def outcome(response) -> str:
    code = response.status_code
    if code in (301, 302, 303, 307, 308):
        location = urlsplit(response["Location"])
        if location.path in LOGIN_PATHS and "next=" in location.query:
            return LOGIN
        return OK
    if code in (401, 403):
        return DENIED
    if code == 404:
        return NOT_FOUND
    if 200 <= code < 300 or code == 400:
        return OK
    return f"HTTP {code}"


@pytest.mark.parametrize("key", sorted(MATRIX))
def test_route_access(key, world):
    routes = all_routes()
    if key not in routes:
        pytest.fail(f"{key} is in the matrix but not among the URL patterns")
    pattern, _ = routes[key]
    route = MATRIX[key]
    sides = [("own", route.own)] + ([("other", route.other)] if route.other else [])
    mismatches = []
    for side, expected in sides:
        url = url_for(key, pattern, route, world[side])
        for role in ROLES:
            client = Client()
            user = world["users"][role]
            if user is not None:
                client.force_login(user)
            response = client.generic(
                route.method, url, data="", content_type="application/x-www-form-urlencoded"
            )
            got = outcome(response)
            want = expected_outcome(expected, side, role)
            if got != want:
                mismatches.append(
                    f"{route.method} {url} as {role} ({side} project): expected "
                    f"{want}, got {got} (HTTP {response.status_code})"
                )
    assert not mismatches, "\n".join(mismatches)
