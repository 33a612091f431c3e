# The quality page's forms: gold items and pauses (leads), quality settings (engineers).
from django.urls import path

from . import quality, quality_drilldown

urlpatterns: list = [
    # The quality page's agreement section, which the page loads after itself.
    path(
        "projects/<slug:slug>/quality/agreement/",
        quality.quality_agreement_view,
        name="project-quality-agreement",
    ),
    # One annotator's flagged, overturned and gold-failed items (the quality row's drill-down).
    path(
        "projects/<slug:slug>/quality/annotators/<int:pk>/",
        quality_drilldown.project_quality_annotator,
        name="project-quality-annotator",
    ),
    path("projects/<slug:slug>/gold/mark/", quality.gold_mark_view, name="project-gold-mark"),
    path(
        "projects/<slug:slug>/gold/<int:image_id>/unmark/",
        quality.gold_unmark_view,
        name="project-gold-unmark",
    ),
    path(
        "projects/<slug:slug>/quality/pauses/<int:pk>/lift/",
        quality.pause_lift_view,
        name="project-pause-lift",
    ),
    path(
        "projects/<slug:slug>/quality/disagreements/queue/",
        quality.disagreements_queue_view,
        name="project-disagreements-queue",
    ),
    path(
        "projects/<slug:slug>/quality/settings/",
        quality.quality_settings_view,
        name="project-quality-settings",
    ),
]
