"""Job parameters are declared once (labeling.services.params): for every job kind, the web
form people fill in, the API's OpenAPI schema and the validation behind both must accept and
refuse the same parameters, with the same bounds, choices and defaults.

The form and the schema are read as a browser and an API client see them (the rendered HTML,
the generated schema), not from the builders, so a field written into a template by hand, a
parameter a `clean` wrapper adds, or a serializer field added in one place only makes these
tests fail.
"""

from __future__ import annotations

import math
from html.parser import HTMLParser

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

from labeling.api.job_serializers import job_params_serializer
from labeling.models import Job, ModelVersion
from labeling.services.jobs import JOB_KINDS, job_create, job_spec
from labeling.services.params import (
    JobSpec,
    ParamKind,
    PerChoice,
    all_or_none,
    choice,
    format_number,
    integer,
    not_above,
    optional_number,
    shown_value,
)
from tests.factories import make_image, make_project, make_user

KINDS = [str(kind) for kind in JOB_KINDS]
JOBS_PAGE_KINDS = ["score_pool", "select", "train_cascade", "detect_noise"]
# Parameters that are valid at a bound only together with another one (a cross-field check):
# kind -> parameter -> the companions to send with it.
COMPANIONS: dict[str, dict[str, dict]] = {
    "select": {"band_low": {"band_high": 1.0}, "band_high": {"band_low": 0.0}},
    "train_cascade": {
        "hard_b": {"batch_a": 1024},
        "batch_a": {"hard_b": 1},
        "auto_promote_precision": {"auto_promote_recall": 0.5},
        "auto_promote_recall": {"auto_promote_precision": 0.5},
    },
}


# --- A world where every kind can be started ----------------------------------------------
@pytest.fixture
def world():
    project = make_project()
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    version.checkpoint.name = "models/fake.safetensors"  # never read: nothing runs here
    version.save()
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    seeds = [make_image(project).pk for _ in range(2)]
    return project, version, seeds


def _required(kind: str, seeds: list[int]) -> dict:
    """The parameters a kind cannot do without (the seeds of a cold start)."""
    return {"seed_image_ids": seeds} if kind == "cold_start" else {}


# --- Reading the page as a browser does ----------------------------------------------------
class _FormFields(HTMLParser):
    """The named inputs and selects inside <form id=form_id>: name -> list of their attributes
    (a select's options under "options" as (value, selected) pairs)."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.select: dict | None = None
        self.fields: dict[str, list[dict]] = {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self.inside = attributes.get("id") == self.form_id
        if not self.inside:
            return
        if tag in ("input", "select") and attributes.get("type") not in ("hidden", "file"):
            entry = {"tag": tag, **attributes, "options": []}
            self.fields.setdefault(attributes["name"], []).append(entry)
            if tag == "select":
                self.select = entry
        if tag == "option" and self.select is not None:
            self.select["options"].append((attributes.get("value"), "selected" in attributes))

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        if tag == "select":
            self.select = None


def _page_fields(client: Client, project, kind: str) -> dict[str, list[dict]]:
    if kind == "cold_start":
        url, form_id = f"/projects/{project.slug}/cold-start/", "cold-start-form"
    elif kind == "audit":  # the pool estimates page starts and continues audits
        url, form_id = f"/projects/{project.slug}/estimates/", "start-audit"
    else:
        url, form_id = f"/projects/{project.slug}/jobs/", f"start-{kind.replace('_', '-')}"
    response = client.get(url)
    assert response.status_code == 200
    parser = _FormFields(form_id)
    parser.feed(response.content.decode())
    assert parser.fields, f"no form #{form_id} on {url}"
    return parser.fields


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_the_form_shows_exactly_the_declared_parameters(kind, world):
    project, version, _seeds = world
    spec = job_spec(kind)
    client = Client()
    client.force_login(make_user("site_engineer"))
    fields = _page_fields(client, project, kind)
    assert set(fields) == set(spec.names), kind
    for param in spec.params:
        rendered = fields[param.name]
        if param.kind == ParamKind.IMAGE_IDS:  # the cold-start page's seed thumbnails
            assert {f.get("type") for f in rendered} == {"checkbox"}
            continue
        assert len(rendered) == 1, param.name
        field = rendered[0]
        if param.is_numeric:
            assert field["tag"] == "input" and field["type"] == "number", param.name
            assert float(field["min"]) == param.low and float(field["max"]) == param.high
            # Integers step by 1 (the browser's default); any number in range is a number.
            assert field.get("step") == (None if param.kind == ParamKind.INTEGER else "any")
            if isinstance(param.default, PerChoice):
                assert field["placeholder"] == f"{param.default.field} default"
                assert field["data-default-from"] == param.default.field
            else:
                assert field["placeholder"] == param.default_text(), param.name
        elif param.kind == ParamKind.BOOLEAN:
            assert [value for value, _ in field["options"]] == ["", "true", "false"]
        elif param.kind == ParamKind.CHOICE:
            assert [value for value, _ in field["options"]] == list(param.choice_values)
            assert [value for value, chosen in field["options"] if chosen] == [param.default]
        elif param.kind == ParamKind.MODEL_VERSION:
            assert [value for value, _ in field["options"]] == ["", str(version.pk)]
        else:
            pytest.fail(f"{param.name}: a {param.kind} parameter with no form check")


@pytest.mark.django_db
@pytest.mark.parametrize("kind", JOBS_PAGE_KINDS)
def test_each_form_field_reaches_the_job(kind, world):
    """Post each field alone (with its companions) at a non-default valid value: the job
    starts with exactly that value."""
    project, version, _seeds = world
    spec = job_spec(kind)
    client = Client()
    client.force_login(make_user("site_engineer"))
    for param in spec.params:
        if param.kind == ParamKind.MODEL_VERSION:
            posted, expected = str(version.pk), version.pk
        elif param.kind == ParamKind.BOOLEAN:
            posted, expected = "false", False
        elif param.kind == ParamKind.CHOICE:
            posted = expected = param.choice_values[-1]
        else:
            posted, expected = format_number(param.high), param.parse(param.high)
        extra = {k: shown_value(v) for k, v in COMPANIONS.get(kind, {}).get(param.name, {}).items()}
        before = set(Job.objects.values_list("pk", flat=True))
        response = client.post(
            f"/projects/{project.slug}/jobs/start/", {"kind": kind, param.name: posted, **extra}
        )
        created = Job.objects.exclude(pk__in=before)
        assert response.status_code == 302 and created.count() == 1, (param.name, posted)
        assert created.get().params[param.name] == expected, param.name


# --- Reading the API schema as a client does ----------------------------------------------
@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _resolve(schema: dict, node: dict) -> dict:
    """A property's schema with `allOf: [$ref]` (how enums are referenced) merged in."""
    merged: dict = {}
    for part in node.get("allOf", []):
        merged.update(schema["components"]["schemas"][part["$ref"].rsplit("/", 1)[-1]])
    merged.update({key: value for key, value in node.items() if key != "allOf"})
    return merged


def test_the_request_schema_names_every_kind(schema):
    request = schema["components"]["schemas"]["JobCreateInput"]
    assert request["discriminator"]["propertyName"] == "kind"
    assert set(request["discriminator"]["mapping"]) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_documents_exactly_the_declared_parameters(kind, schema):
    spec = job_spec(kind)
    camel = "".join(part.title() for part in kind.split("_"))
    params = schema["components"]["schemas"][f"{camel}JobParams"]
    assert list(params["properties"]) == list(spec.names)
    assert set(params.get("required", [])) == {p.name for p in spec.params if p.required}
    types = {
        ParamKind.INTEGER: "integer",
        ParamKind.NUMBER: "number",
        ParamKind.OPTIONAL_NUMBER: "number",
        ParamKind.BOOLEAN: "boolean",
        ParamKind.MODEL_VERSION: "integer",
        ParamKind.IMAGE_IDS: "array",
        ParamKind.CHOICE: "string",
    }
    for param in spec.params:
        documented = _resolve(schema, params["properties"][param.name])
        assert documented["type"] == types[param.kind], param.name
        assert str(param.help_text) in documented["description"], param.name
        if param.is_numeric:
            assert (documented["minimum"], documented["maximum"]) == (param.low, param.high)
        if param.kind == ParamKind.CHOICE:
            assert documented["enum"] == list(param.choice_values), param.name
        if param.kind == ParamKind.IMAGE_IDS:
            assert documented["maxItems"] == param.max_items and documented["minItems"] == 1
        if isinstance(param.default, PerChoice):
            assert "default" not in documented, param.name
            assert param.default_text() in documented["description"], param.name
        elif param.kind in (ParamKind.MODEL_VERSION, ParamKind.IMAGE_IDS):
            assert "default" not in documented, param.name
        elif param.default is None:  # "off": the schema says nullable, null needs no default
            assert documented.get("default") is None, param.name
        else:
            assert documented["default"] == param.default, param.name
        if param.kind in (ParamKind.OPTIONAL_NUMBER, ParamKind.MODEL_VERSION):
            assert documented["nullable"] is True, param.name


# --- Validation: clean and the serializer agree, value by value ---------------------------
def _candidates(param) -> tuple[list, list]:
    """(values that must be accepted, values that must be refused) for one parameter."""
    if param.kind in (ParamKind.INTEGER, ParamKind.NUMBER, ParamKind.OPTIONAL_NUMBER):
        integral = param.kind == ParamKind.INTEGER
        low, high = (int(param.low), int(param.high)) if integral else (param.low, param.high)
        below = low - 1 if integral else math.nextafter(low, -math.inf)
        above = high + 1 if integral else math.nextafter(high, math.inf)
        refused = [below, above, "many", True]
        if integral and high > low:
            refused.append(low + 0.5)
        accepted = [low, high] + ([None] if param.kind == ParamKind.OPTIONAL_NUMBER else [])
        return accepted, refused
    if param.kind == ParamKind.BOOLEAN:
        return [True, False, "true", "off"], ["maybe", 2, None]
    if param.kind == ParamKind.CHOICE:
        return list(param.choice_values), ["no-such-choice", 1, None]
    if param.kind == ParamKind.MODEL_VERSION:
        return [None], ["x", True]
    if param.kind == ParamKind.IMAGE_IDS:
        return [], [[], "1", ["x"]]
    raise AssertionError(param.kind)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_a_job_stores_every_declared_default_and_nothing_else(kind, world):
    project, version, seeds = world
    spec = job_spec(kind)
    choices = [p for p in spec.params if p.kind == ParamKind.CHOICE]
    # Every value of every choice, so defaults that depend on one are all seen.
    settings = [{}] + [{p.name: value} for p in choices for value in p.choice_values]
    for chosen in settings:
        job = job_create(project=project, kind=kind, params={**_required(kind, seeds), **chosen})
        job.refresh_from_db()  # as the task reads them: through JSON
        cleaned = job.params
        assert set(cleaned) == set(spec.names), kind  # jsonb keeps no key order
        for param in spec.params:
            if param.name in chosen:
                continue
            if param.kind == ParamKind.MODEL_VERSION:
                assert cleaned[param.name] == version.pk
            elif param.kind == ParamKind.IMAGE_IDS:
                assert cleaned[param.name] == seeds
            elif isinstance(param.default, PerChoice):
                field = param.default.field
                assert cleaned[param.name] == param.default.values[cleaned[field]], param.name
            else:
                assert cleaned[param.name] == param.default, param.name
        # What clean returns is valid input again (the API stores it; a retry re-reads it).
        assert spec.clean(project=project, params=cleaned) == cleaned


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_clean_and_the_serializer_accept_and_refuse_the_same_values(kind, world):
    project, _version, seeds = world
    spec = job_spec(kind)
    serializer = job_params_serializer(kind)
    base = _required(kind, seeds)
    for param in spec.params:
        accepted, refused = _candidates(param)
        companions = COMPANIONS.get(kind, {}).get(param.name, {})
        for value in accepted:
            # An optional number left out (None) needs no companion (all or none of them).
            params = {**base, **(companions if value is not None else {}), param.name: value}
            spec.clean(project=project, params=params)  # raises if refused
            checker = serializer(data=params)
            assert checker.is_valid(), (param.name, value, checker.errors)
        for value in refused:
            params = {**base, **companions, param.name: value}
            with pytest.raises(ValidationError) as refusal:
                spec.clean(project=project, params=params)
            assert param.name in refusal.value.message_dict, (param.name, value)
            assert not serializer(data=params).is_valid(), (param.name, value)
    unknown = {**base, "no_such_parameter": 1}
    with pytest.raises(ValidationError) as refusal:
        spec.clean(project=project, params=unknown)
    assert "no_such_parameter" in refusal.value.message_dict["params"][0]
    assert not serializer(data=unknown).is_valid()


@pytest.mark.django_db
def test_cross_field_checks_name_the_field(world):
    project, _version, _seeds = world
    for kind, params, field in [
        ("train_cascade", {"batch_a": 8, "hard_b": 9}, "hard_b"),
        ("train_cascade", {"auto_promote_recall": 0.9}, "auto_promote_recall"),
        ("select", {"band_low": 0.7, "band_high": 0.2}, "band_low"),
    ]:
        with pytest.raises(ValidationError) as refusal:
            job_create(project=project, kind=kind, params=params)
        assert field in refusal.value.message_dict, (kind, params)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_preset_default_follows_the_preset_and_an_explicit_value_wins(world):
    project, _version, _seeds = world
    spec = job_spec("train_cascade")
    tiny = spec.clean(project=project, params={"preset": "cpu_tiny"})
    full = spec.clean(project=project, params={"preset": "full", "input_size": "64"})
    assert tiny["input_size"] == spec.param("input_size").default.values["cpu_tiny"]
    assert full["input_size"] == 64
    assert full["epochs"] == spec.param("epochs").default.values["full"]


# --- A declaration that cannot work fails when it is written ------------------------------
def test_a_bad_declaration_fails_at_import():
    preset = choice("preset", default="a", choices=(("a", "A"), ("b", "B")), label="", help_text="")

    def size(default) -> object:
        return integer("size", default=default, low=1, high=10, label="", help_text="")

    with pytest.raises(ValueError, match="declared twice"):
        JobSpec(kind="k", params=(size(1), size(2)))
    with pytest.raises(ValueError, match="bad default"):
        JobSpec(kind="k", params=(size(11),))
    with pytest.raises(ValueError, match="every preset"):
        JobSpec(kind="k", params=(preset, size(PerChoice("preset", {"a": 1}))))
    with pytest.raises(ValueError, match="declared before it"):
        JobSpec(kind="k", params=(size(PerChoice("preset", {"a": 1, "b": 2})), preset))
    with pytest.raises(ValueError, match="bad default"):
        JobSpec(kind="k", params=(preset, size(PerChoice("preset", {"a": 1, "b": 20}))))
    ok = JobSpec(
        kind="k",
        params=(
            preset,
            size(3),
            integer("top", default=5, low=1, high=10, label="", help_text=""),
            optional_number("p", low=0, high=1, label="", help_text=""),
            optional_number("r", low=0, high=1, label="", help_text=""),
        ),
        checks=(not_above("size", "top"), all_or_none("p", "r")),
    )
    assert ok.clean(project=None, params={"size": "4"})["size"] == 4


# --- In a real browser: the default of the preset picked ---------------------------------
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_form_shows_the_default_of_the_preset_picked(live_server):
    import os

    from playwright.sync_api import sync_playwright

    from tests.labeling.browser import ARGS, CHROMIUM, session_cookie

    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    project = make_project()
    engineer = make_user("site_engineer")
    spec = job_spec("train_cascade")
    sizes = spec.param("input_size").default.values
    teacher = spec.param("mean_teacher").default.values
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([session_cookie(engineer, live_server)])
            page = context.new_page()
            page.goto(f"{live_server.url}/projects/{project.slug}/jobs/")
            form = page.locator("#start-train-cascade")
            size = form.locator("input[name=input_size]")
            blank_teacher = form.locator("select[name=mean_teacher] option").first
            default = spec.param("preset").default
            assert size.get_attribute("placeholder") == f"preset default: {sizes[default]}"
            for preset in ("cpu_tiny", "full"):
                form.locator("select[name=preset]").select_option(preset)
                assert size.get_attribute("placeholder") == f"preset default: {sizes[preset]}"
                assert blank_teacher.text_content() == (
                    f"preset default: {shown_value(teacher[preset])}"
                )
        finally:
            browser.close()
