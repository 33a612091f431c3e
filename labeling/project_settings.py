"""A project's settings, declared once: its labeling settings (overlap k, lease time,
validation share, blur; issue 9, item 10) and its quality and well-being settings (items 3
and 4).

Each setting is a `ParamSpec` (labeling.services.params, the declaration the job parameters
use), so everything else is built from this one tuple:

- the model's fields take their defaults from it (labeling.models.Project) and
  `Project.clean` validates with it;
- the API's project create/update serializers get one field per setting with its bounds and
  help text (labeling.api.serializers);
- the quality page's settings form is the same spec rendered (labeling.views.job_forms);
- the project setup page (labeling.views.project_setup) renders every group of
  `PROJECT_SETTINGS` in order, so a setting declared in a group listed there appears on it
  with no change to the page.

tests/labeling/test_gold_exposure.py checks that the three agree.

A value of 0 turns a rule off: no gold served, no pause, no daily cap, no break reminder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext_lazy as _

from labeling.services.params import JobSpec, boolean, integer, number, url
from labeling.services.webhook_url import webhook_url_check

# How the labeling of a project works. Bounds here are the ones the API, the model's clean()
# and the setup page enforce.
PROJECT_LABELING = JobSpec(
    kind="project_labeling",
    params=(
        integer(
            "labels_per_item",
            default=1,
            low=1,
            high=20,
            label=_("Overlap k"),
            help_text=_(
                "How many different annotators label each item (1 = one label per image; "
                "3 measures agreement between annotators)."
            ),
        ),
        integer(
            "lease_seconds",
            default=600,
            low=30,
            high=7 * 24 * 3600,
            label=_("Lease time (seconds)"),
            help_text=_(
                "How long an item served to an annotator stays theirs; unanswered after that, "
                "it goes back to the queue for someone else."
            ),
        ),
        number(
            "validation_fraction",
            default=0.1,
            low=0.0,
            high=0.99,
            label=_("Validation share"),
            help_text=_(
                "Share of images frozen into the validation split when they are imported. "
                "Changing it affects later imports only: existing splits never move."
            ),
        ),
        boolean(
            "blur_images",
            default=True,
            label=_("Blur images by default"),
            help_text=_(
                "Whether images start blurred for a person who has not chosen their own image "
                "protection (disturbing content)."
            ),
        ),
    ),
)

PROJECT_QUALITY = JobSpec(
    kind="project_quality",
    params=(
        number(
            "gold_rate",
            default=0.0,
            low=0.0,
            high=1.0,
            label=_("Gold rate"),
            help_text=_(
                "Share of the items served to an annotator that are gold items (images with a "
                "known answer, mixed in unmarked). 0 serves none; 0.05 is about one in twenty; "
                "1 serves every gold item a person has not answered before anything else."
            ),
        ),
        number(
            "gold_pause_below",
            default=0.0,
            low=0.0,
            high=1.0,
            label=_("Pause below gold accuracy"),
            help_text=_(
                "Pause an annotator's labeling automatically when their accuracy on gold items "
                "falls below this share (0 = never). A lead lifts the pause on the quality page."
            ),
        ),
        integer(
            "gold_pause_min_answers",
            default=10,
            low=1,
            high=10_000,
            label=_("Gold answers before a pause"),
            help_text=_(
                "How many gold answers (since the last lifted pause) the accuracy must rest on "
                "before it can pause anyone."
            ),
        ),
        integer(
            "exposure_daily_cap",
            default=0,
            low=0,
            high=100_000,
            label=_("Disturbing images per day"),
            help_text=_(
                "Most positive-class images one annotator labels per day in this project; "
                "at the cap their labeling stops until tomorrow (0 = no cap)."
            ),
        ),
        integer(
            "exposure_break_after",
            default=0,
            low=0,
            high=10_000,
            label=_("Break reminder after"),
            help_text=_(
                "Remind an annotator to take a break after this many positive-class images in "
                "a row (0 = never)."
            ),
        ),
        integer(
            "grid_min_ms_per_tile",
            default=300,
            low=0,
            high=60_000,
            label=_("Fastest believable time per grid tile (ms)"),
            help_text=_(
                "A grid page submitted faster than this per tile is flagged as rubber-stamped on "
                "the quality page (0 = never flag)."
            ),
        ),
    ),
)

QUALITY_FIELDS = PROJECT_QUALITY.names

# Where the project's events go (issue 9, item 15; labeling.services.webhooks). The signing
# secret is not a setting: the service makes it, and engineers read it on the webhooks page.
PROJECT_WEBHOOK = JobSpec(
    kind="project_webhook",
    params=(
        url(
            "webhook_url",
            label=_("Webhook URL"),
            help_text=_(
                "Where this project's events are POSTed, signed (a model version trained, "
                "promoted or rolled back; a job failed; a queue became empty). http:// or "
                "https:// to a public address; empty = no webhooks."
            ),
            check=webhook_url_check,
        ),
    ),
)
LABELING_FIELDS = PROJECT_LABELING.names

# Every group of project settings, in the order the setup page shows them. A new group of
# settings (a `JobSpec` of `ParamSpec`s, each backed by a Project field of the same name) is
# listed here and appears on the setup page, in the API's project serializers and in
# Project.clean() without more code.
PROJECT_SETTINGS: tuple[JobSpec, ...] = (PROJECT_LABELING, PROJECT_QUALITY, PROJECT_WEBHOOK)


def settings_param(name: str):
    """The declaration of one project setting, whichever group holds it."""
    for group in PROJECT_SETTINGS:
        if name in group.names:
            return group.param(name)
    raise KeyError(name)


def quality_default(name: str) -> Any:
    return PROJECT_QUALITY.param(name).default


def quality_settings_clean(values: Mapping[str, Any]) -> dict[str, Any]:
    """The given settings parsed and bounded (ValidationError naming the setting); only the
    names given come back, so a partial update stays partial."""
    return {name: PROJECT_QUALITY.param(name).parse(value) for name, value in values.items()}
