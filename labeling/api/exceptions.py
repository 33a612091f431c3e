"""The API's one exception handler (settings REST_FRAMEWORK["EXCEPTION_HANDLER"]).

Services raise Django's exceptions (they know nothing of DRF): `ValidationError` when the
input breaks a rule (nothing was written: services validate before they write), and
`PermissionDenied` when the caller may not act. This handler maps them once for every view:

- django `ValidationError` -> 400, `{"field": [messages]}`, or `{"detail": "message"}` when it
  names no field;
- django `PermissionDenied` / DRF's -> 403 with `{"detail": ...}` (never a bare 403);
- `Http404` -> 404 `{"detail": ...}`;
- everything DRF already knows (parse errors, 401 with WWW-Authenticate, 429 with
  Retry-After) as DRF answers it.

Anything else is a bug: it propagates to Django's handler500 (labeling/views/errors.py), which
answers `{"detail": ...}` under /api/ with no traceback.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler


def as_api_exception(exc: Exception) -> Exception:
    """The DRF exception a service's Django exception stands for (others unchanged)."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            return exceptions.ValidationError(exc.message_dict)
        # A message not tied to a field: one string, like every other `detail`.
        return exceptions.ValidationError({"detail": " ".join(exc.messages)})
    if isinstance(exc, DjangoPermissionDenied):
        message = str(exc) if exc.args and exc.args[0] else _("Your role does not allow this.")
        return exceptions.PermissionDenied(message)
    return exc


def exception_handler(exc, context):
    return drf_exception_handler(as_api_exception(exc), context)
