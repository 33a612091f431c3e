"""Display names in the reader's language for names the system itself gives.

`{% load labeling_i18n %}`, then:
- `{{ queue|queue_name }}`: the default queues a project is created with ("Labeling",
  "Re-review", "Validation") are named by the code, not by a person, so they are translated like
  any UI string; a name an engineer typed is shown as typed.
- `{{ value|class_name:project }}`: a label value (a schema class or sub-category key) by its
  display name in the reader's language (the schema's "names", else "name"; see
  labeling.models.schema_entry_name).
"""

from __future__ import annotations

from django import template
from django.utils.translation import get_language, pgettext_lazy

from labeling.models import schema_entry_name

register = template.Library()

SYSTEM_QUEUE_NAMES = {
    "Labeling": pgettext_lazy("queue name", "Labeling"),
    "Re-review": pgettext_lazy("queue name", "Re-review"),
    "Validation": pgettext_lazy("queue name", "Validation"),
}


@register.filter
def queue_name(queue) -> str:
    name = getattr(queue, "name", queue) or ""
    return str(SYSTEM_QUEUE_NAMES.get(name, name))


@register.filter
def class_name(value, project) -> str:
    if not value or project is None:
        return value or ""
    schema = getattr(project, "label_schema", None) or {}
    for entry in list(schema.get("classes") or []) + list(schema.get("subcategories") or []):
        if entry.get("key") == value:
            return schema_entry_name(entry, get_language())
    return value
