"""Validation of job parameters (they arrive as JSON from forms and the API)."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError


def number_param(
    params: dict, name: str, default, *, low: float, high: float, integer: bool = False
) -> int | float:
    """`params[name]` (or `default`) as a number in [low, high]; a clear error naming it."""
    value = params.get(name, default)
    if isinstance(value, bool) or value is None:
        raise ValidationError({name: f"{name} must be a number."})
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValidationError({name: f"{name} must be a number."}) from error
    if integer and not number.is_integer():
        raise ValidationError({name: f"{name} must be a whole number."})
    if not (math.isfinite(number) and low <= number <= high):
        raise ValidationError({name: f"{name} must be between {low:g} and {high:g}."})
    return int(number) if integer else number
