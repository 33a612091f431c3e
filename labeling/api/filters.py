"""Strict query-string parsing for the API.

Only declared parameters are accepted: an unknown or repeated parameter is a 400 that names it,
so a typo (`?splt=pool`) never silently returns the unfiltered list, and no free ORM lookup
(`?label__annotator__password=...`) ever reaches a queryset.
"""

from __future__ import annotations

import math

from django.utils.translation import gettext as _
from rest_framework import serializers

# Parameters the pagination class reads; every list endpoint accepts them.
PAGINATION_PARAMS = frozenset({"page"})


def parse_query(request, serializer_class: type[serializers.Serializer], **context) -> dict:
    declared = set(serializer_class().fields)
    params = request.query_params
    unknown = sorted(set(params) - declared - PAGINATION_PARAMS)
    errors = {name: ["Unknown query parameter."] for name in unknown}
    errors.update(
        {name: ["Give this parameter once."] for name in params if len(params.getlist(name)) > 1}
    )
    if errors:
        allowed = ", ".join(sorted(declared | PAGINATION_PARAMS))
        errors["allowed"] = [allowed]
        raise serializers.ValidationError(errors)
    parsed = serializer_class(data={k: params.get(k) for k in params}, context=context)
    parsed.is_valid(raise_exception=True)
    return parsed.validated_data


class FiniteFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class ImageFilterInput(serializers.Serializer):
    """Filters of the image list. split/label/labeled/scores are for leads and engineers only
    (an annotator must not learn which images are in the hidden validation split)."""

    split = serializers.ChoiceField(choices=["pool", "validation"], required=False)
    queue = serializers.IntegerField(min_value=1, required=False)
    label = serializers.CharField(max_length=64, required=False)
    labeled = serializers.BooleanField(required=False)
    model_version = serializers.IntegerField(min_value=1, required=False)
    min_score = FiniteFloatField(required=False)
    max_score = FiniteFloatField(required=False)

    REVIEWER_ONLY = ("split", "label", "labeled", "model_version", "min_score", "max_score")

    def validate(self, attrs):
        low, high = attrs.get("min_score"), attrs.get("max_score")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError({"min_score": _("min_score is above max_score.")})
        return attrs


class ExportQueryInput(serializers.Serializer):
    # `as`, not `format`: DRF reserves ?format= for choosing a renderer. `as` is a Python
    # keyword, so the field is added in get_fields().
    history = serializers.BooleanField(required=False, default=False)
    # The filters (labeling.services.exports.EXPORT_FILTERS); their values are checked against
    # the project's choices by the service.
    label = serializers.CharField(max_length=64, required=False, allow_blank=True)
    split = serializers.CharField(max_length=12, required=False, allow_blank=True)
    strategy = serializers.CharField(max_length=20, required=False, allow_blank=True)
    annotator = serializers.CharField(max_length=150, required=False, allow_blank=True)

    def get_fields(self):
        fields = super().get_fields()
        fields["as"] = serializers.ChoiceField(choices=["csv", "jsonl", "zip"], required=False)
        return fields


class EmptyQuery(serializers.Serializer):
    """For endpoints that take no query parameters (pagination aside)."""
