"""Serving image files and thumbnails to logged-in people who may see the project.

Files are private to a project, so they are never served from a public /media/ URL. Someone who
cannot see the project gets 404, the same answer as for an image that does not exist, so ids do
not reveal which images exist. The Content-Type comes from the format Pillow identified at import
(Image.format), never from the file name; `nosniff` and a `default-src 'none'` CSP make sure a
browser treats the response as an image and nothing else. Files never change once imported (the
name is the content hash), so the browser may keep them for a day, privately.

The API hands these URLs to token clients too, so an `Authorization: Token ...` header is
accepted as well as the session (a bad or expired token is a 401, as in the API).
"""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe
from rest_framework.exceptions import AuthenticationFailed

from labeling.api.authentication import TokenWithRolesAuthentication
from labeling.models import Image
from labeling.permissions import can_view_project

CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}


def _refused(request) -> HttpResponse | None:
    """None when the request has a user (session, or a valid token); otherwise the answer."""
    if request.user.is_authenticated:
        return None
    if request.META.get("HTTP_AUTHORIZATION"):
        auth = TokenWithRolesAuthentication()
        try:
            found = auth.authenticate(request)
        except AuthenticationFailed as exc:
            response = HttpResponse(str(exc.detail), status=401, content_type="text/plain")
            response["WWW-Authenticate"] = auth.authenticate_header(request)
            return response
        if found is not None:
            request.user = found[0]
            return None
    return redirect_to_login(request.get_full_path())


def _visible_image(request, pk: int) -> Image:
    image = get_object_or_404(Image.objects.select_related("project"), pk=pk)
    if not can_view_project(request.user, image.project):
        raise Http404(_("No such image."))
    return image


def _serve(field_file, content_type: str) -> FileResponse:
    try:
        handle = field_file.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404(_("The image file is missing from storage.")) from None
    response = FileResponse(handle, content_type=content_type)
    response["Content-Disposition"] = "inline"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'"
    response["Cache-Control"] = "private, max-age=86400"
    return response


@require_safe
def image_file(request, pk: int):
    if (refused := _refused(request)) is not None:
        return refused
    image = _visible_image(request, pk)
    return _serve(image.file, CONTENT_TYPES.get(image.format, "application/octet-stream"))


@require_safe
def image_thumb(request, pk: int):
    """The JPEG thumbnail; images stored without one (made outside the import) fall back to
    the original file."""
    if (refused := _refused(request)) is not None:
        return refused
    image = _visible_image(request, pk)
    if image.thumbnail:
        return _serve(image.thumbnail, "image/jpeg")
    return _serve(image.file, CONTENT_TYPES.get(image.format, "application/octet-stream"))
