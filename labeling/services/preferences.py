"""A person's view preferences per project: how images are protected (off, blur until
revealed, reveal kept for the session, grayscale), sharp pixels, and whether they have seen the
explanation of the protection modes. Read by the labeling and review pages (embedded in their
config), written by static/labeling/prefs.js through the preferences API."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from labeling.models import Preference, Project

PROTECTIONS = tuple(Preference.Protection.values)


def default_protection(project: Project) -> str:
    """Before a person chooses: the project's setting (blur when its content is disturbing)."""
    return Preference.Protection.BLUR if project.blur_images else Preference.Protection.OFF


def preference_read(*, user: User, project: Project) -> dict:
    """The person's preferences in the project, with the project's defaults where unset."""
    pref = Preference.objects.filter(user=user, project=project).first()
    return {
        "protection": pref.protection if pref else default_protection(project),
        "pixelated": pref.pixelated if pref else False,
        "intro_seen": bool(pref and pref.intro_seen_at),
        "chosen": pref is not None,
        "choices": [
            {"value": value, "label": str(label)} for value, label in Preference.Protection.choices
        ],
    }


def preference_update(
    *,
    user: User,
    project: Project,
    protection: str | None = None,
    pixelated: bool | None = None,
    intro_seen: bool | None = None,
) -> dict:
    """Change some of the person's preferences in the project (the others keep their value)."""
    if protection is not None and protection not in PROTECTIONS:
        raise ValidationError(
            {
                "protection": _("Unknown protection %(value)r; choose one of %(choices)s.")
                % {"value": protection, "choices": ", ".join(PROTECTIONS)}
            }
        )
    if pixelated is not None and not isinstance(pixelated, bool):
        raise ValidationError({"pixelated": _("Must be true or false.")})
    if intro_seen is not None and not isinstance(intro_seen, bool):
        raise ValidationError({"intro_seen": _("Must be true or false.")})
    defaults = {"protection": default_protection(project)}
    for _attempt in range(2):
        try:
            with transaction.atomic():
                pref, _created = Preference.objects.select_for_update().get_or_create(
                    user=user, project=project, defaults=defaults
                )
                break
        except IntegrityError:  # two first writes at once: the other one created the row
            continue
    if protection is not None:
        pref.protection = protection
    if pixelated is not None:
        pref.pixelated = pixelated
    if intro_seen and pref.intro_seen_at is None:
        pref.intro_seen_at = timezone.now()
    pref.save()
    return preference_read(user=user, project=project)
