"""Job parameters, declared once per job kind.

Each job kind declares one `JobSpec` beside the service that runs it (e.g.
`labeling.services.training.TRAIN_CASCADE`); `labeling.services.jobs.JOB_KINDS` points at it.
Everything else is built from that declaration, so a parameter is written in one place:

- validation: `JobSpec.clean(project=..., params=...)`, called by `job_create` for the web form,
  the API and internal callers alike (unknown names refused, defaults filled in, cross-field
  checks, project-dependent lookups such as "the active model version");
- the jobs pages' form fields: `labeling.views.job_forms`;
- the API's request serializers and their OpenAPI schema: `labeling.api.serializers`.

tests/labeling/test_job_specs.py walks every kind and checks that the rendered forms, the
OpenAPI schema and `clean` agree on names, bounds, choices and defaults. docs/jobs.md says how
to declare a new parameter.

Values arrive as JSON from the API and as strings from HTML forms, so parsing accepts both:
"5" is the integer 5, "true"/"off" are booleans.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

# Words a boolean parameter accepts (HTML forms send strings).
TRUE_WORDS = frozenset({"true", "1", "on", "yes"})
FALSE_WORDS = frozenset({"false", "0", "off", "no"})
MAX_SEED = 2**31 - 1
# Shared wording of the declaration helpers below.
BLANK_OFF = _("off")
BLANK_ACTIVE_VERSION = _("the active version")
MODEL_VERSION_LABEL = _("Model version")
MODEL_VERSION_HELP = _("The model version to use; the project's active version if empty.")
SEED_HELP = _("Seed of the random choices, for a repeatable run.")


class ParamKind(enum.StrEnum):
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    # A number or nothing (None): "off" unless given.
    OPTIONAL_NUMBER = "optional_number"
    # The id of one of the project's model versions; None (the default) means the active one.
    MODEL_VERSION = "model_version"
    # A non-empty list of ids of the project's images.
    IMAGE_IDS = "image_ids"
    # An http(s) address, or "" for none (a project's webhook URL); `check` adds its own rule.
    URL = "url"


@dataclass(frozen=True)
class PerChoice:
    """A default that depends on the cleaned value of an earlier CHOICE parameter: `values`
    maps each of its choices to this parameter's default (e.g. input size per preset)."""

    field: str
    values: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", dict(self.values))


# Resolves a parsed value against the project (it may look things up and raise
# ValidationError naming the parameter); returns the value to store.
Resolver = Callable[..., Any]


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One parameter of a job kind: its type, bounds, default and how people see it.

    `default` is a value, or a `PerChoice` for a default that depends on an earlier choice.
    `low`/`high` bound numbers (inclusive); `choices` are (value, label) pairs of a CHOICE.
    `resolve(project=..., value=...)` checks a MODEL_VERSION or IMAGE_IDS value against the
    project. `blank` says what leaving an OPTIONAL_NUMBER or MODEL_VERSION empty means.
    """

    name: str
    kind: ParamKind
    label: str | Promise
    help_text: str | Promise
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple[tuple[str, str | Promise], ...] = ()
    blank: str | Promise = ""
    required: bool = False
    max_items: int | None = None
    empty_message: str | Promise = ""
    resolve: Resolver | None = None
    # URL: the longest value accepted, and a further rule, `check(value)` raising
    # ValidationError (the webhook URL's SSRF rule).
    max_length: int | None = None
    check: Callable[[str], Any] | None = None

    @property
    def is_numeric(self) -> bool:
        return self.kind in (ParamKind.INTEGER, ParamKind.NUMBER, ParamKind.OPTIONAL_NUMBER)

    @property
    def choice_values(self) -> tuple[str, ...]:
        return tuple(value for value, _label in self.choices)

    def default_for(self, cleaned: Mapping[str, Any]) -> Any:
        """The default, given the parameters cleaned so far."""
        if isinstance(self.default, PerChoice):
            return self.default.values[cleaned[self.default.field]]
        return self.default

    def default_text(self) -> str:
        """The default as people read it, for forms, the API schema and docs: "0.05", "on",
        "off" (an optional number left empty), or "cpu_transfer: 112, cpu_small: 32, ..."."""
        if isinstance(self.default, PerChoice):
            return ", ".join(
                f"{choice}: {shown_value(value)}" for choice, value in self.default.values.items()
            )
        if self.default is None:
            return str(self.blank)
        return shown_value(self.default)

    def parse(self, value: Any) -> Any:
        """`value` (JSON or a form's string) as this parameter's type, within its bounds;
        ValidationError naming the parameter otherwise. Project lookups come after, in
        `resolve`."""
        parser = _PARSERS[self.kind]
        return parser(self, value)

    def _error(self, message: str) -> ValidationError:
        return ValidationError({self.name: message})


def format_number(value: float) -> str:
    """A bound or default as people write it: 2147483647, 0.05, 1e-06."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def shown_value(value: Any) -> str:
    """A parameter's value as forms show it: on/off, 0.05, cpu_small."""
    if isinstance(value, bool):
        return str(_("on") if value else _("off"))
    if isinstance(value, int | float):
        return format_number(value)
    return str(value)


def _out_of_range(spec: ParamSpec) -> ValidationError:
    assert spec.low is not None and spec.high is not None
    values = {"name": spec.name, "low": format_number(spec.low), "high": format_number(spec.high)}
    if spec.kind == ParamKind.INTEGER:
        message = gettext("%(name)s must be a whole number from %(low)s to %(high)s.")
    else:
        message = gettext("%(name)s must be a number from %(low)s to %(high)s.")
    return spec._error(message % values)


def _parse_float(spec: ParamSpec, value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise _out_of_range(spec)
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise _out_of_range(spec) from error
    assert spec.low is not None and spec.high is not None
    if not (math.isfinite(number) and spec.low <= number <= spec.high):
        raise _out_of_range(spec)
    return number


def _parse_integer(spec: ParamSpec, value: Any) -> int:
    number = _parse_float(spec, value)
    if not number.is_integer():
        raise _out_of_range(spec)
    return int(number)


def _parse_number(spec: ParamSpec, value: Any) -> float:
    return _parse_float(spec, value)


def _parse_optional_number(spec: ParamSpec, value: Any) -> float | None:
    if value is None or value == "":
        return None
    return _parse_number(spec, value)


def _parse_boolean(spec: ParamSpec, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, str | int) else None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise spec._error(gettext("%(name)s must be true or false.") % {"name": spec.name})


def _parse_choice(spec: ParamSpec, value: Any) -> str:
    if isinstance(value, str) and value in spec.choice_values:
        return value
    raise spec._error(
        gettext("%(name)s must be one of %(choices)s.")
        % {"name": spec.name, "choices": ", ".join(spec.choice_values)}
    )


def _parse_model_version(spec: ParamSpec, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise TypeError(value)
        number = int(value)
        if number < 1:
            raise ValueError(value)
    except (TypeError, ValueError) as error:
        message = gettext("%(name)s must be the id of a model version.") % {"name": spec.name}
        raise spec._error(message) from error
    return number


def _parse_image_ids(spec: ParamSpec, value: Any) -> list[int]:
    if not isinstance(value, list | tuple) or not value:
        raise spec._error(str(spec.empty_message))
    ids: list[int] = []
    for item in value:
        try:
            if isinstance(item, bool):
                raise TypeError(item)
            ids.append(int(item))
        except (TypeError, ValueError) as error:
            message = gettext("%(value)r is not an image id.") % {"value": item}
            raise spec._error(message) from error
    ids = list(dict.fromkeys(ids))  # a seed picked twice counts once
    if spec.max_items is not None and len(ids) > spec.max_items:
        raise spec._error(gettext("At most %(count)d images.") % {"count": spec.max_items})
    return ids


def _parse_url(spec: ParamSpec, value: Any) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise spec._error(gettext("%(name)s must be text.") % {"name": spec.name})
    value = value.strip()
    if spec.max_length is not None and len(value) > spec.max_length:
        raise spec._error(
            gettext("%(name)s must be at most %(high)d characters long.")
            % {"name": spec.name, "high": spec.max_length}
        )
    if value and spec.check is not None:
        spec.check(value)
    return value


_PARSERS: dict[ParamKind, Callable[[ParamSpec, Any], Any]] = {
    ParamKind.INTEGER: _parse_integer,
    ParamKind.NUMBER: _parse_number,
    ParamKind.OPTIONAL_NUMBER: _parse_optional_number,
    ParamKind.BOOLEAN: _parse_boolean,
    ParamKind.CHOICE: _parse_choice,
    ParamKind.MODEL_VERSION: _parse_model_version,
    ParamKind.IMAGE_IDS: _parse_image_ids,
    ParamKind.URL: _parse_url,
}


# --- Declaring parameters: one short call each -------------------------------------------------
def integer(
    name: str,
    *,
    default: int | PerChoice,
    low: int,
    high: int,
    label: str | Promise,
    help_text: str | Promise,
) -> ParamSpec:
    return ParamSpec(
        name=name,
        kind=ParamKind.INTEGER,
        default=default,
        low=low,
        high=high,
        label=label,
        help_text=help_text,
    )


def number(
    name: str,
    *,
    default: float | PerChoice,
    low: float,
    high: float,
    label: str | Promise,
    help_text: str | Promise,
) -> ParamSpec:
    return ParamSpec(
        name=name,
        kind=ParamKind.NUMBER,
        default=default,
        low=low,
        high=high,
        label=label,
        help_text=help_text,
    )


def optional_number(
    name: str,
    *,
    low: float,
    high: float,
    label: str | Promise,
    help_text: str | Promise,
    blank: str | Promise = BLANK_OFF,
) -> ParamSpec:
    return ParamSpec(
        name=name,
        kind=ParamKind.OPTIONAL_NUMBER,
        default=None,
        low=low,
        high=high,
        label=label,
        help_text=help_text,
        blank=blank,
    )


def boolean(
    name: str,
    *,
    default: bool | PerChoice,
    label: str | Promise,
    help_text: str | Promise,
) -> ParamSpec:
    return ParamSpec(
        name=name, kind=ParamKind.BOOLEAN, default=default, label=label, help_text=help_text
    )


def choice(
    name: str,
    *,
    default: str | PerChoice,
    choices: Iterable[tuple[str, str | Promise]],
    label: str | Promise,
    help_text: str | Promise,
) -> ParamSpec:
    return ParamSpec(
        name=name,
        kind=ParamKind.CHOICE,
        default=default,
        choices=tuple(choices),
        label=label,
        help_text=help_text,
    )


def model_version(
    name: str = "model_version_id",
    *,
    resolve: Resolver,
    label: str | Promise = MODEL_VERSION_LABEL,
    help_text: str | Promise = MODEL_VERSION_HELP,
    blank: str | Promise = BLANK_ACTIVE_VERSION,
) -> ParamSpec:
    """`resolve(project=..., value=id or None)` returns the version's id (raising
    ValidationError naming `name` when the project has no such usable version)."""
    return ParamSpec(
        name=name,
        kind=ParamKind.MODEL_VERSION,
        label=label,
        help_text=help_text,
        blank=blank,
        resolve=resolve,
    )


def project_version(*, no_active: str | Promise, ready_only: bool) -> Resolver:
    """The resolver most `model_version` parameters use: the named version of the project
    (only a READY one when `ready_only`), or the project's active version when the field is
    empty; a ValidationError naming the field otherwise. `no_active` says what is missing
    when the project has no active version (the job's own words: "to audit", "to select
    with")."""
    from labeling.models import ModelVersion

    def resolve(*, project, value: int | None) -> int:
        if value is None:
            if project.active_model_version_id is None:
                raise ValidationError({"model_version_id": str(no_active)})
            return project.active_model_version_id
        versions = ModelVersion.objects.filter(pk=value, project=project)
        if ready_only:
            versions = versions.filter(status=ModelVersion.Status.READY)
        if not versions.exists():
            message = (
                gettext("No ready model version %(id)s in this project.")
                if ready_only
                else gettext("No model version %(id)s in this project.")
            )
            raise ValidationError({"model_version_id": message % {"id": value}})
        return value

    return resolve


def image_ids(
    name: str,
    *,
    max_items: int,
    resolve: Resolver,
    label: str | Promise,
    help_text: str | Promise,
    empty_message: str | Promise,
) -> ParamSpec:
    """A required, non-empty list of at most `max_items` image ids (duplicates dropped);
    `resolve(project=..., value=ids)` checks they belong to the project."""
    return ParamSpec(
        name=name,
        kind=ParamKind.IMAGE_IDS,
        label=label,
        help_text=help_text,
        required=True,
        max_items=max_items,
        empty_message=empty_message,
        resolve=resolve,
    )


def url(
    name: str,
    *,
    label: str | Promise,
    help_text: str | Promise,
    check: Callable[[str], Any] | None = None,
    max_length: int = 500,
) -> ParamSpec:
    """An http(s) URL or "" (none); `check(value)` is the rule a non-empty one must pass."""
    return ParamSpec(
        name=name,
        kind=ParamKind.URL,
        default="",
        label=label,
        help_text=help_text,
        max_length=max_length,
        check=check,
    )


def seed_param(
    help_text: str | Promise = SEED_HELP,
) -> ParamSpec:
    return integer("seed", default=0, low=0, high=MAX_SEED, label=_("Seed"), help_text=help_text)


# --- Cross-field checks --------------------------------------------------------------------
Check = Callable[[dict[str, Any]], None]


def not_above(name: str, limit: str, *, message: str | Promise | None = None) -> Check:
    """`name` may not exceed `limit` (e.g. hard_b <= batch_a); `message` says so in the
    job's own words (default: "hard_b cannot exceed batch_a.")."""

    def check(cleaned: dict[str, Any]) -> None:
        if cleaned[name] > cleaned[limit]:
            text = message or gettext("%(name)s cannot exceed %(limit)s.")
            raise ValidationError({name: str(text) % {"name": name, "limit": limit}})

    check.__doc__ = f"{name} <= {limit}"
    return check


def all_or_none(*names: str) -> Check:
    """Either every one of `names` is given (not None) or none is."""

    def check(cleaned: dict[str, Any]) -> None:
        given = [name for name in names if cleaned[name] is not None]
        if given and len(given) < len(names):
            raise ValidationError(
                {given[0]: gettext("Give all of %(names)s, or none.") % {"names": ", ".join(names)}}
            )

    check.__doc__ = f"all or none of {', '.join(names)}"
    return check


# --- A job kind ------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobSpec:
    """The parameters of one job kind, in the order forms show them, and the checks that span
    several of them (each `check(cleaned)` raises ValidationError naming a field)."""

    kind: str
    params: tuple[ParamSpec, ...]
    checks: tuple[Check, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", str(self.kind))  # a plain string, not Job.Kind
        # A wrong declaration fails at import, not when someone submits the form.
        seen: dict[str, ParamSpec] = {}
        for spec in self.params:
            if spec.name in seen:
                raise ValueError(f"{self.kind}: parameter {spec.name!r} declared twice")
            if spec.is_numeric and (spec.low is None or spec.high is None):
                raise ValueError(f"{self.kind}.{spec.name}: a number needs low and high")
            defaults = [spec.default] if not isinstance(spec.default, PerChoice) else []
            if isinstance(spec.default, PerChoice):
                source = seen.get(spec.default.field)
                if source is None or source.kind != ParamKind.CHOICE:
                    raise ValueError(
                        f"{self.kind}.{spec.name}: its default depends on "
                        f"{spec.default.field!r}, which must be a choice declared before it"
                    )
                if set(spec.default.values) != set(source.choice_values):
                    raise ValueError(
                        f"{self.kind}.{spec.name}: give a default for every "
                        f"{source.name} ({', '.join(source.choice_values)})"
                    )
                defaults = list(spec.default.values.values())
            if spec.kind not in (ParamKind.MODEL_VERSION, ParamKind.IMAGE_IDS):
                for default in defaults:
                    try:
                        valid = spec.parse(default) == default
                    except ValidationError:
                        valid = False
                    if not valid:
                        raise ValueError(f"{self.kind}.{spec.name}: bad default {default!r}")
            seen[spec.name] = spec

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.params)

    def param(self, name: str) -> ParamSpec:
        for spec in self.params:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def clean(self, *, project, params: Mapping[str, Any]) -> dict[str, Any]:
        """`params` validated: every declared parameter, in order, parsed or defaulted (a
        default that depends on a choice follows the cleaned choice), checked against the
        project where it names its rows, then the cross-field checks. Unknown names and bad
        values raise ValidationError with a message naming the parameter."""
        if not isinstance(params, Mapping):
            raise ValidationError({"params": gettext("Parameters must be a JSON object.")})
        unknown = sorted(set(params) - set(self.names))
        if unknown:
            raise ValidationError(
                {
                    "params": gettext("Unknown parameters: %(names)s. Known: %(known)s.")
                    % {"names": ", ".join(unknown), "known": ", ".join(self.names)}
                }
            )
        cleaned: dict[str, Any] = {}
        for spec in self.params:
            if spec.name in params:
                value = spec.parse(params[spec.name])
            elif spec.required:
                value = spec.parse(None)  # raises the parameter's own "missing" message
            else:
                value = spec.default_for(cleaned)
            if spec.resolve is not None:
                value = spec.resolve(project=project, value=value)
            cleaned[spec.name] = value
        for check in self.checks:
            check(cleaned)
        return cleaned
