"""Request-level guards: the request size cap (issue 8, item 6), and a clear 503 while the
database is unreachable (item 2)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.utils.translation import gettext_lazy as _

from labeling.views.errors import error_response


class RequestSizeLimitMiddleware:
    """Refuse a request whose declared body is over IMAGECLEAN_MAX_REQUEST_BYTES with 413, before
    any of it is read (an import of many files is capped as a whole, not only file by file).
    A body without Content-Length is read by Django as empty, so it cannot slip past."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.IMAGECLEAN_MAX_REQUEST_BYTES
        if length > limit:
            message = _(
                "The request is %(size)d MB, over this server's limit of %(limit)d MB. Send "
                "fewer files at once, or import a folder with manage.py import_images."
            ) % {"size": length // (1024 * 1024), "limit": limit // (1024 * 1024)}
            response = error_response(request, 413, message=message, use_context=False)
            response["Connection"] = "close"  # the unread body must not be taken for a request
            return response
        return self.get_response(request)


logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    """A view that cannot reach the database (restarted, down, out of connections) answers 503
    with the app's page (JSON under /api/) and Retry-After, not a 500 with a traceback. The
    broken connections are closed, so the first request after the database is back opens a new
    one and the app recovers by itself."""

    RETRY_AFTER_SECONDS = 10

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning("database unavailable for %s: %s", request.path, exception)
        for connection in connections.all(initialized_only=True):
            connection.close_if_unusable_or_obsolete()
        response = error_response(request, 503, use_context=False)
        response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
        return response
