"""The job-creation request, one serializer per job kind, built from the kind's `JobSpec`
(labeling.services.params): every parameter with its type, range, default and help text, so
the OpenAPI schema (/api/v1/docs/) documents exactly what `job_create` accepts.

Validation itself is the spec's `clean`, run by `job_create` for the API, the web forms and
internal callers alike; these serializers describe it (tests/labeling/test_job_specs.py checks
that they accept and refuse the same values).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.utils.translation import gettext
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from labeling.models import Job
from labeling.services.jobs import JOB_KINDS, job_spec
from labeling.services.params import JobSpec, ParamKind, ParamSpec, PerChoice


def _camel(kind: str) -> str:
    return "".join(part.title() for part in kind.split("_"))


def _help(param: ParamSpec) -> str:
    text = str(param.help_text)
    if isinstance(param.default, PerChoice):
        return gettext("%(help)s Default per %(field)s: %(defaults)s.") % {
            "help": text,
            "field": param.default.field,
            "defaults": param.default_text(),
        }
    if param.kind in (ParamKind.OPTIONAL_NUMBER, ParamKind.MODEL_VERSION):
        return gettext("%(help)s Empty or null: %(blank)s.") % {"help": text, "blank": param.blank}
    return text


def _field(param: ParamSpec) -> serializers.Field:
    options: dict[str, Any] = {"help_text": _help(param)}
    if param.required:
        options["required"] = True
    elif isinstance(param.default, PerChoice) or param.kind == ParamKind.MODEL_VERSION:
        options["required"] = False  # the default is resolved by `clean`
    else:
        options["default"] = param.default
    if param.kind == ParamKind.INTEGER:
        return serializers.IntegerField(
            min_value=int(param.low), max_value=int(param.high), **options
        )
    if param.kind == ParamKind.NUMBER:
        return StrictFloatField(min_value=param.low, max_value=param.high, **options)
    if param.kind == ParamKind.OPTIONAL_NUMBER:
        return StrictFloatField(
            min_value=param.low, max_value=param.high, allow_null=True, **options
        )
    if param.kind == ParamKind.BOOLEAN:
        return serializers.BooleanField(**options)
    if param.kind == ParamKind.CHOICE:
        return serializers.ChoiceField(choices=param.choices, **options)
    if param.kind == ParamKind.MODEL_VERSION:
        return serializers.IntegerField(min_value=1, allow_null=True, **options)
    if param.kind == ParamKind.URL:
        # The spec's own parse (its check: the webhook URL's rule) runs where the value is saved.
        return serializers.CharField(allow_blank=True, max_length=param.max_length, **options)
    if param.kind == ParamKind.IMAGE_IDS:
        return serializers.ListField(
            child=serializers.IntegerField(), min_length=1, max_length=param.max_items, **options
        )
    raise ValueError(f"{param.name}: no serializer field for a {param.kind} parameter")


class StrictFloatField(serializers.FloatField):
    """A number that is not a boolean: JSON true is refused, as `clean` refuses it (DRF's
    FloatField would read it as 1.0)."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class JobParamsBase(serializers.Serializer):
    """Refuses names the kind does not declare, as `clean` does (DRF would drop them)."""

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {
                    "params": gettext("Unknown parameters: %(names)s.")
                    % {"names": ", ".join(unknown)}
                }
            )
        return attrs


def spec_params_serializer(spec: JobSpec, name: str) -> type[serializers.Serializer]:
    """A serializer of any `JobSpec`'s parameters (triage's, say), named `name` in the schema;
    unknown names are refused, as `clean` refuses them."""
    fields: dict[str, Any] = {param.name: _field(param) for param in spec.params}
    fields["__doc__"] = f"The parameters of {spec.kind}; unknown names are refused."
    return type(name, (JobParamsBase,), fields)


@cache
def job_params_serializer(kind: str) -> type[serializers.Serializer]:
    """The serializer of job kind `kind`'s parameters (one class per kind, named for the
    schema's components: `TrainCascadeJobParams`)."""
    spec: JobSpec = job_spec(kind)
    fields: dict[str, Any] = {param.name: _field(param) for param in spec.params}
    fields["__doc__"] = f"The parameters of a {kind} job; unknown names are refused."
    return type(f"{_camel(kind)}JobParams", (JobParamsBase,), fields)


def _kind_field(kind: str) -> serializers.Field:
    # One fixed value per request shape; documented as a one-value enum rather than a
    # ChoiceField, whose generated enum names would collide across the kinds.
    @extend_schema_field({"type": "string", "enum": [kind]})
    class KindField(serializers.CharField):
        pass

    return KindField(help_text=str(Job.Kind(kind).label))


@cache
def job_create_serializer(kind: str) -> type[serializers.Serializer]:
    """{"kind": kind, "params": {...}}: the request that starts a `kind` job."""
    fields = {
        "__doc__": f"Start a {kind} job.",
        "kind": _kind_field(kind),
        "params": job_params_serializer(kind)(required=False),
    }
    return type(f"{_camel(kind)}JobCreateInput", (serializers.Serializer,), fields)


def job_create_request() -> PolymorphicProxySerializer:
    """The schema of the job-creation request: one shape per kind, told apart by `kind`."""
    return PolymorphicProxySerializer(
        component_name="JobCreateInput",
        serializers={str(kind): job_create_serializer(str(kind)) for kind in JOB_KINDS},
        resource_type_field_name="kind",
    )
