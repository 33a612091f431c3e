"""Helpers every API module shares."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers


def call_service(service, **kwargs):
    """Run a service; its Django ValidationError becomes a 400 with the same messages (the
    service wrote nothing: it validates before it writes, inside its transaction)."""
    try:
        return service(**kwargs)
    except DjangoValidationError as exc:
        if hasattr(exc, "error_dict"):
            raise serializers.ValidationError(exc.message_dict) from exc
        raise serializers.ValidationError({"detail": exc.messages}) from exc
