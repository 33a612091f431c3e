"""Jobs: start, list, poll, cancel; the selection strategies' yield."""

from django.urls import path

from . import job_views as v

urlpatterns = [
    path("projects/<slug:slug>/jobs/", v.ProjectJobListApi.as_view(), name="api-project-jobs"),
    path(
        "projects/<slug:slug>/jobs/create/",
        v.ProjectJobCreateApi.as_view(),
        name="api-project-job-create",
    ),
    path("jobs/<int:pk>/", v.JobDetailApi.as_view(), name="api-job-detail"),
    path("jobs/<int:pk>/cancel/", v.JobCancelApi.as_view(), name="api-job-cancel"),
    path(
        "projects/<slug:slug>/strategy-yield/",
        v.StrategyYieldApi.as_view(),
        name="api-strategy-yield",
    ),
]
