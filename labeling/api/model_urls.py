"""Model versions (detail, promote, rollback) and the prediction endpoint."""

from django.urls import path

from . import model_compare_views
from . import model_views as v

urlpatterns = [
    path(
        "projects/<slug:slug>/model-versions/compare/",
        model_compare_views.ModelComparisonApi.as_view(),
        name="api-model-version-compare",
    ),
    path(
        "projects/<slug:slug>/model-versions/<int:pk>/",
        v.ModelVersionDetailApi.as_view(),
        name="api-model-version-detail",
    ),
    path(
        "projects/<slug:slug>/model-versions/<int:pk>/promote/",
        v.ModelVersionPromoteApi.as_view(),
        name="api-model-version-promote",
    ),
    path(
        "projects/<slug:slug>/model-versions/rollback/",
        v.ModelVersionRollbackApi.as_view(),
        name="api-model-version-rollback",
    ),
    path("projects/<slug:slug>/predict/", v.PredictApi.as_view(), name="api-predict"),
]
