"""Pool estimates of a project (issue 10): prevalence, precision and recall with intervals."""

from django.urls import path

from . import estimate_views as v

urlpatterns = [
    path(
        "projects/<slug:slug>/estimates/",
        v.PoolEstimatesApi.as_view(),
        name="api-project-estimates",
    ),
    path("projects/<slug:slug>/triage/", v.TriageApi.as_view(), name="api-project-triage"),
    path(
        "projects/<slug:slug>/triage/stop/",
        v.TriageStopApi.as_view(),
        name="api-project-triage-stop",
    ),
    path(
        "projects/<slug:slug>/triage/<int:pk>/revert/",
        v.TriageRevertApi.as_view(),
        name="api-project-triage-revert",
    ),
]
