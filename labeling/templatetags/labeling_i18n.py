"""Display names in the reader's language for names the system itself gives.

`{% load labeling_i18n %}`, then:
- `{{ queue|queue_name }}`: the default queues a project is created with ("Labeling",
  "Re-review", "Validation", and triage's "Confirm") are named by the code, not by a person, so
  they are translated like any UI string; a name an engineer typed is shown as typed.
- `{{ value|class_name:project }}`: a label value (a schema class or sub-category key) by its
  display name in the reader's language (the schema's "names", else "name"; see
  labeling.models.schema_entry_name).
- `{% javascript_catalog_url %}`: the page scripts' catalog URL for the page's language and the
  compiled catalogs' version, so browsers may keep it (config/urls.py caches it a week): a
  language switch or new translations give a new URL.
"""

from __future__ import annotations

from pathlib import Path

from django import template
from django.conf import settings
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import get_language, pgettext_lazy

from labeling.models import schema_entry_name

register = template.Library()

SYSTEM_QUEUE_NAMES = {
    "Labeling": pgettext_lazy("queue name", "Labeling"),
    "Re-review": pgettext_lazy("queue name", "Re-review"),
    "Validation": pgettext_lazy("queue name", "Validation"),
    # Triage's confirm queue (labeling.services.triage.CONFIRM_QUEUE_NAME).
    "Confirm": pgettext_lazy("queue name", "Confirm"),
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


def _catalogs_version() -> str:
    """The newest modification time of the compiled page-script catalogs (a stat per file)."""
    newest = 0
    for folder in settings.LOCALE_PATHS:
        for mo in Path(folder).glob("*/LC_MESSAGES/djangojs.mo"):
            newest = max(newest, mo.stat().st_mtime_ns)
    return str(newest)


@register.simple_tag
def javascript_catalog_url() -> str:
    query = urlencode({"l": get_language() or "", "v": _catalogs_version()})
    return f"{reverse('javascript-catalog')}?{query}"
