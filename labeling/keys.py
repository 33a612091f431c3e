"""The labeling pages' own keys, declared once.

Each page (single image, grid, lead review) reserves some keys for its own actions. The page
scripts read their page's map from the page config (static/labeling/keys.js), the help
dialogs list them from here, and the label schema's validator
(labeling.models.validate_label_schema) refuses a class or sub-category hotkey that any page
reserves, so a class key always does the same thing on every page.

Keys are `KeyboardEvent.key` values, lower-cased when they are one character.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

PAGE_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "single": {
        "skip": (" ", "s"),
        "undo": ("z", "u"),
        "help": ("?",),
        "protection": ("b",),
        "reveal": ("r",),
        "pixels": ("p",),
        "recent": ("l",),
    },
    "grid": {
        "flip": (" ", "Enter"),
        "undo": ("z", "u"),
        "help": ("?",),
        "protection": ("b",),
        "reveal": ("r",),
        "recent": ("l",),
    },
    "review": {
        "confirm": ("c",),
        "flip": ("f",),
        "skip": (" ", "s"),
        "undo": ("z", "u"),
        "comment": ("m",),
        "send_back": ("x",),
        "help": ("?",),
        "protection": ("b",),
        "reveal": ("r",),
    },
}

PAGE_NAMES = {
    "single": pgettext_lazy("page", "single-image labeling"),
    "grid": pgettext_lazy("page", "grid labeling"),
    "review": pgettext_lazy("page", "review"),
}

ACTION_NAMES = {
    "skip": _("skip"),
    "undo": _("undo"),
    "help": _("help"),
    "protection": _("image protection"),
    "reveal": _("reveal"),
    "pixels": _("sharp pixels"),
    "recent": _("recent labels"),
    "flip": _("flip"),
    "confirm": _("confirm"),
    "comment": _("comment"),
    "send_back": _("send back to the annotator"),
}


def page_keys(page: str) -> dict[str, list[str]]:
    """One page's action -> keys map, as the page script receives it."""
    return {action: list(keys) for action, keys in PAGE_KEYS[page].items()}


def reserved_keys() -> dict[str, list[tuple[str, str]]]:
    """Every single-character key some page reserves -> [(page, action), ...]."""
    reserved: dict[str, list[tuple[str, str]]] = {}
    for page, actions in PAGE_KEYS.items():
        for action, keys in actions.items():
            for key in keys:
                if len(key) == 1:
                    reserved.setdefault(key, []).append((page, action))
    return reserved


def key_label(key: str) -> str:
    """How a help table names a key."""
    if key == " ":
        return str(pgettext_lazy("key", "Space"))
    return key.upper() if len(key) == 1 else key


def key_hints(page: str) -> dict[str, list[str]]:
    """The page's own keys as its help table and buttons name them."""
    return {action: [key_label(k) for k in keys] for action, keys in PAGE_KEYS[page].items()}
