"""Pool estimates of a project (issue 10): prevalence, precision and recall with intervals."""

from django.urls import path

from . import estimate_views as v

urlpatterns = [
    path(
        "projects/<slug:slug>/estimates/",
        v.PoolEstimatesApi.as_view(),
        name="api-project-estimates",
    ),
]
