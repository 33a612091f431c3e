"""The project setup page's forms (issue 9, item 10).

Nothing here decides what a valid project is. The label schema rows become the schema dict that
`labeling.models.validate_label_schema` checks (keys, hotkeys unique and free of every page's
reserved keys from labeling.keys, positive and default among the classes), and the settings come
from their declarations in `labeling.project_settings.PROJECT_SETTINGS`: each rendered by the
jobs pages' field builder and parsed by its own `ParamSpec`. The services
(labeling.services.projects) then refuse removing a class or sub-category that labels use.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from labeling.models import Project
from labeling.project_settings import PROJECT_SETTINGS
from labeling.services.params import ParamKind
from labeling.views.job_forms import _field, params_from_post

# Blank rows offered under the schema's rows (more appear after each save).
EXTRA_CLASS_ROWS = 2
EXTRA_SUBCATEGORY_ROWS = 2
# Languages other than the default get a display-name column each ("names" in the schema);
# "name" is the default language's (LANGUAGE_CODE "en-us" is the switcher's "en").
OTHER_LANGUAGES = [
    (code, name)
    for code, name in settings.LANGUAGES
    if code.split("-")[0] != settings.LANGUAGE_CODE.split("-")[0]
]


def _names_field(code: str) -> str:
    return "name_" + code.replace("-", "_")


class ProjectIdentityForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    slug = forms.SlugField(
        label=_("Address (slug)"),
        max_length=80,
        help_text=_("Letters, digits, '-' and '_'; part of every address of the project."),
    )
    description = forms.CharField(
        label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


class SchemaRowForm(forms.Form):
    """One class or sub-category. Every field is optional here: a blank row is ignored, and the
    schema validator judges the rest."""

    key = forms.CharField(label=_("Key"), required=False, max_length=64)
    name = forms.CharField(label=_("Name"), required=False, max_length=200)
    hotkey = forms.CharField(label=_("Hotkey"), required=False, max_length=1, strip=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for code, language in OTHER_LANGUAGES:
            self.fields[_names_field(code)] = forms.CharField(
                label=_("Name (%(language)s)") % {"language": language},
                required=False,
                max_length=200,
            )
        self.order_fields(["key", "name", *(_names_field(c) for c, _n in OTHER_LANGUAGES)])


SchemaRowFormSet = forms.formset_factory(SchemaRowForm, extra=0, can_delete=True)


def schema_formsets(project: Project | None, data=None):
    """(classes, sub-categories) formsets: the schema's rows, then blank ones."""
    schema = project.label_schema if project is not None else None

    def initial(group: str) -> list[dict]:
        rows = []
        for entry in (schema or {}).get(group) or []:
            row = {
                "key": entry["key"],
                "name": entry.get("name", ""),
                "hotkey": entry.get("hotkey"),
            }
            for code, _language in OTHER_LANGUAGES:
                row[_names_field(code)] = (entry.get("names") or {}).get(code, "")
            rows.append(row)
        return rows

    classes_initial = initial("classes")
    if schema is None:
        classes_initial = [
            {"key": "normal", "name": "Normal", "hotkey": "1"},
            {"key": "positive", "name": "Positive", "hotkey": "2"},
        ]
    sub_initial = initial("subcategories")
    if data is not None:
        # A posted row is read as posted: compared with an initial value, a row left as it was
        # would count as "unchanged" and drop out of cleaned_data.
        classes_initial = sub_initial = None
    classes = forms.formset_factory(SchemaRowForm, extra=EXTRA_CLASS_ROWS, can_delete=True)(
        data=data, initial=classes_initial, prefix="classes"
    )
    subcategories = forms.formset_factory(
        SchemaRowForm, extra=EXTRA_SUBCATEGORY_ROWS, can_delete=True
    )(data=data, initial=sub_initial, prefix="subcategories")
    return classes, subcategories


def _row_entry(row: dict, old: dict | None) -> dict:
    # Whatever an existing entry carries that the form does not show (names in other
    # languages) is kept.
    entry = dict(old or {})
    entry["key"] = row["key"]
    entry["name"] = row.get("name") or row["key"]
    if row.get("hotkey") and row["hotkey"].strip():
        entry["hotkey"] = row["hotkey"].strip()
    else:
        entry.pop("hotkey", None)
    names = dict(entry.get("names") or {})
    for code, _language in OTHER_LANGUAGES:
        value = (row.get(_names_field(code)) or "").strip()
        if value:
            names[code] = value
        else:
            names.pop(code, None)
    if names:
        entry["names"] = names
    else:
        entry.pop("names", None)
    return entry


def schema_from_post(classes, subcategories, data, old_schema: dict | None) -> dict:
    """The label schema the posted rows describe. `positive` and `default` name a class row by
    its index in the form (radio buttons: the key may have been typed in the same form)."""
    if not (classes.is_valid() and subcategories.is_valid()):
        raise ValidationError(
            _(
                "The label schema's rows could not be read (a value too long, or a form cut "
                "short); reload the page and try again."
            )
        )
    old = {
        entry["key"]: entry
        for group in ("classes", "subcategories")
        for entry in (old_schema or {}).get(group) or []
    }

    def rows(formset) -> list[tuple[int, dict]]:
        kept = []
        for index, form in enumerate(formset.forms):
            row = form.cleaned_data
            if not row or row.get("DELETE") or not (row.get("key") or "").strip():
                continue
            kept.append((index, {**row, "key": row["key"].strip()}))
        return kept

    class_rows = rows(classes)
    by_index = {index: row["key"] for index, row in class_rows}

    def chosen(name: str) -> str | None:
        raw = data.get(name, "")
        return by_index.get(int(raw)) if raw.isdigit() else None

    schema = {
        "classes": [_row_entry(row, old.get(row["key"])) for _index, row in class_rows],
        "positive": chosen("positive"),
        "default": chosen("default"),
        "subcategories": [
            _row_entry(row, old.get(row["key"])) for _index, row in rows(subcategories)
        ],
    }
    if schema["default"] is None:
        del schema["default"]  # the validator's rule: the first class
    return schema


def settings_form(project: Project | None, data=None) -> forms.Form:
    """Every declared project setting (PROJECT_SETTINGS), in order, filled with the project's
    values (or the defaults for a new project)."""
    fields = {param.name: _field(param, ()) for group in PROJECT_SETTINGS for param in group.params}
    form_class = type("ProjectSettingsForm", (forms.Form,), fields)
    initial = {}
    for group in PROJECT_SETTINGS:
        for param in group.params:
            value = getattr(project, param.name) if project is not None else param.default
            if param.kind == ParamKind.BOOLEAN:
                value = "true" if value else "false"
            initial[param.name] = value
    return form_class(data=data, initial=initial, auto_id="setting-%s")


def settings_from_post(data) -> dict:
    """The posted settings, each parsed by its declaration (ValidationError naming it); an
    empty field takes the declared default, which its placeholder shows."""
    values = {}
    for group in PROJECT_SETTINGS:
        posted = params_from_post(group, data)
        for param in group.params:
            values[param.name] = (
                param.parse(posted[param.name]) if param.name in posted else param.default
            )
    return values
