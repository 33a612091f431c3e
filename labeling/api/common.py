"""Helpers every API module shares."""

from __future__ import annotations


def call_service(service, **kwargs):
    """Run a service. Kept for callers written before the exception handler: a service's
    Django ValidationError / PermissionDenied now becomes a 400 / 403 with a body in one place,
    labeling.api.exceptions (settings REST_FRAMEWORK["EXCEPTION_HANDLER"]); call the service
    directly in new code."""
    return service(**kwargs)
