"""Request-level guards: the request size cap (issue 8, item 6), and a clear 503 while the
database is unreachable (item 2)."""

from __future__ import annotations

import logging
from dataclasses import asdict

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed
from django.db import InterfaceError, OperationalError, connections
from django.dispatch import receiver
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


# What a view or decorator of django-csp may set on a response to change or drop its policy.
_CSP_RESPONSE_OVERRIDES = tuple(
    f"_csp_{name}{suffix}"
    for name in ("config", "update", "replace", "exempt")
    for suffix in ("", "_ro")
)


# The headers ContentSecurityPolicyMiddleware reuses, built from the settings; emptied when a
# test overrides them.
_csp_headers: dict[str, tuple[str, str] | None] = {}


@receiver(setting_changed)
def _csp_settings_changed(*, setting, **kwargs):
    if setting.startswith("CONTENT_SECURITY_POLICY") or setting == "DEBUG":
        _csp_headers.clear()


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with the headers built once per process for the common response.

    django-csp builds both headers (the policy and the report-only one) from the settings on
    every response (31-39 us of CPU per JSON response, 8-17 us with the cache; two responses
    per label on the hot path, docs/platform-benchmarks.md), for a text that only changes with
    the settings. When a response asks for nothing of
    its own (no nonce used, no csp_* decorator, no header already set, no excluded prefixes,
    not DEBUG) the headers are the settings' policy, built once and reused; every other
    response goes through django-csp unchanged."""

    def _policy_headers(self, request, response) -> tuple[str, str] | None:
        if "policy" not in _csp_headers:
            policies = (
                getattr(settings, "CONTENT_SECURITY_POLICY", None) or {},
                getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None) or {},
            )
            if any(policy.get("EXCLUDE_URL_PREFIXES") for policy in policies):
                _csp_headers["policy"] = None  # depends on the path: never reused
            else:
                _csp_headers["policy"] = tuple(
                    build_policy(
                        **asdict(self.get_policy_parts(request, response, report_only)),
                        report_only=report_only,
                    )
                    for report_only in (False, True)
                )
        return _csp_headers["policy"]

    def process_response(self, request, response):
        own = getattr(request, "_csp_nonce", None) is not None or any(
            getattr(response, name, None) is not None for name in _CSP_RESPONSE_OVERRIDES
        )
        if (
            own
            or settings.DEBUG
            or HEADER in response
            or HEADER_REPORT_ONLY in response
            or not (headers := self._policy_headers(request, response))
        ):
            return super().process_response(request, response)
        for header, value in zip((HEADER, HEADER_REPORT_ONLY), headers, strict=True):
            if value:
                response[header] = value
        # As django-csp does: a nonce asked for after the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response
