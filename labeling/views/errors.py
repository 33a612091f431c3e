"""The error pages: the app's look for people, JSON for the API, never internals.

Django calls these for errors raised outside DRF's own handling (config/urls.py names them as
handler400/403/404/500; CSRF_FAILURE_VIEW points at `csrf_failure`). A path under the API
prefix gets `{"detail": ...}` like every other API error; any other path gets the styled page
(templates/errors/error.html). The page shows a fixed message for its status: exception text,
URL patterns and tracebacks stay in the server log, whatever DEBUG says.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import requires_csrf_token

API_PREFIX = "/api/"

# status: (title, message); one place for every error page's words.
MESSAGES = {
    400: (_("Bad request"), _("The request could not be understood.")),
    403: (_("Not allowed"), _("Your role does not allow this page.")),
    404: (_("Not found"), _("There is no such page, or it is not visible to you.")),
    413: (_("Too large"), _("The request is larger than this server accepts.")),
    429: (_("Too many attempts"), _("Too many attempts. Wait a few minutes and try again.")),
    500: (_("Something went wrong"), _("The server could not finish this request. It is logged.")),
    503: (_("Unavailable"), _("The service is unavailable for a moment. Try again shortly.")),
}


def is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def error_response(
    request: HttpRequest, status: int, *, message=None, use_context: bool = True
) -> HttpResponse:
    """The response for `status` on this path: JSON under /api/, the styled page elsewhere.
    `use_context=False` renders without context processors (the 500 page must not need the
    database that may be what failed)."""
    title, default = MESSAGES.get(status, MESSAGES[500])
    text = message or default
    if is_api_path(request):
        return JsonResponse({"detail": str(text)}, status=status)
    template = loader.get_template("errors/error.html")
    context = {"status": status, "title": title, "message": text}
    body = template.render(context, request if use_context else None)
    return HttpResponse(body, status=status)


@requires_csrf_token
def bad_request(request, exception=None):
    return error_response(request, 400)


@requires_csrf_token
def permission_denied(request, exception=None):
    return error_response(request, 403)


@requires_csrf_token
def page_not_found(request, exception=None):
    return error_response(request, 404)


@requires_csrf_token
def server_error(request):
    return error_response(request, 500, use_context=False)


def csrf_failure(request, reason=""):
    return error_response(
        request,
        403,
        message=_("The form expired or came from another site. Reload the page and try again."),
    )
