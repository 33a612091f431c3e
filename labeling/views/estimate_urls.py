# The pool estimates page (leads and engineers; issue 10).
from django.urls import path

from . import estimates

urlpatterns: list = [
    path("projects/<slug:slug>/estimates/", estimates.project_estimates, name="project-estimates"),
    # Triage of the live pool (engineers): start, stop, revert a run.
    path(
        "projects/<slug:slug>/triage/start/",
        estimates.triage_start_view,
        name="project-triage-start",
    ),
    path(
        "projects/<slug:slug>/triage/stop/",
        estimates.triage_stop_view,
        name="project-triage-stop",
    ),
    path(
        "projects/<slug:slug>/triage/<int:pk>/revert/",
        estimates.triage_revert_view,
        name="project-triage-revert",
    ),
]
