"""The jobs pages' parameter fields, built from each job kind's `JobSpec`
(labeling.services.params): one label and field per row, with the spec's help text, bounds,
choices and default.

The form only renders. What the browser posts goes back through `params_from_post` to
`job_create`, where the same spec validates it, so the page, the API and internal callers share
one set of rules. Empty fields are left out and take the spec's default, which the placeholder
shows; a default that depends on another field (input size per preset) says so, and
static/labeling/job_forms.js shows the value for the preset picked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from django import forms
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from labeling.models import ModelVersion
from labeling.services.params import (
    JobSpec,
    ParamKind,
    ParamSpec,
    PerChoice,
    shown_value,
)

BOOLEAN_CHOICES = (("true", _("on")), ("false", _("off")))


def _placeholder(param: ParamSpec) -> str:
    if isinstance(param.default, PerChoice):
        return gettext("%(field)s default") % {"field": param.default.field}
    if param.default is None:
        return str(param.blank)
    return shown_value(param.default)


def _dependent_attrs(param: ParamSpec) -> dict[str, str]:
    """Lets job_forms.js show the default of the choice picked (data-* attributes)."""
    if not isinstance(param.default, PerChoice):
        return {}
    return {
        "data-default-from": param.default.field,
        "data-defaults": json.dumps(
            {key: shown_value(value) for key, value in param.default.values.items()}
        ),
    }


def _help(param: ParamSpec) -> str:
    if isinstance(param.default, PerChoice):
        return gettext("%(help)s Default per %(field)s: %(defaults)s.") % {
            "help": param.help_text,
            "field": param.default.field,
            "defaults": param.default_text(),
        }
    return str(param.help_text)


def _field(param: ParamSpec, versions: Iterable[ModelVersion]) -> forms.Field:
    common = {"required": False, "label": param.label, "help_text": _help(param)}
    attrs = {"placeholder": _placeholder(param), **_dependent_attrs(param)}
    if param.kind == ParamKind.INTEGER:
        return forms.IntegerField(
            min_value=int(param.low),
            max_value=int(param.high),
            widget=forms.NumberInput(attrs=attrs),
            **common,
        )
    if param.kind in (ParamKind.NUMBER, ParamKind.OPTIONAL_NUMBER):
        # step "any" (FloatField's default): a step would make the browser refuse values the
        # server accepts (with min 0.001 and step 0.01, 0.05 is "invalid").
        return forms.FloatField(
            min_value=param.low,
            max_value=param.high,
            widget=forms.NumberInput(attrs=attrs),
            **common,
        )
    if param.kind == ParamKind.BOOLEAN:
        blank = (
            _placeholder(param)
            if isinstance(param.default, PerChoice)
            else gettext("default: %(value)s") % {"value": shown_value(param.default)}
        )
        return forms.ChoiceField(
            choices=[("", blank), *BOOLEAN_CHOICES],
            widget=forms.Select(attrs=_dependent_attrs(param)),
            **common,
        )
    if param.kind == ParamKind.CHOICE:
        return forms.ChoiceField(choices=param.choices, initial=param.default, **common)
    if param.kind == ParamKind.MODEL_VERSION:
        return forms.ChoiceField(
            choices=[("", param.blank), *((str(v.pk), v.name) for v in versions)], **common
        )
    if param.kind == ParamKind.URL:
        return forms.CharField(
            max_length=param.max_length, widget=forms.URLInput(attrs={"inputmode": "url"}), **common
        )
    raise ValueError(f"{param.name}: no form field for a {param.kind} parameter")


def job_form(
    spec: JobSpec, *, versions: Iterable[ModelVersion] = (), exclude: Iterable[str] = ()
) -> forms.Form:
    """An unbound form of `spec`'s parameters, in declaration order; `versions` fill a model
    version picker. A list of image ids (IMAGE_IDS) has no generic field: the page renders its
    own picker with that name (the cold-start page's seed thumbnails)."""
    skipped = set(exclude)
    versions = list(versions)
    fields = {
        param.name: _field(param, versions)
        for param in spec.params
        if param.kind != ParamKind.IMAGE_IDS and param.name not in skipped
    }
    form_class = type(f"{spec.kind.title().replace('_', '')}JobForm", (forms.Form,), fields)
    # Ids unique per kind: several kinds' forms share a page and have fields of the same name.
    return form_class(auto_id=f"{spec.kind}-%s")


def params_from_post(spec: JobSpec, data) -> dict:
    """The parameters a posted form filled in, as the strings it sent (the spec's `clean`
    parses them); empty fields are left out so they take the spec's defaults."""
    params: dict = {}
    for param in spec.params:
        if param.kind == ParamKind.IMAGE_IDS:
            values = [value for value in data.getlist(param.name) if value.strip()]
            if values:
                params[param.name] = values
            continue
        raw = (data.get(param.name) or "").strip()
        if raw:
            params[param.name] = raw
    return params
