"""Re-review (leads): the next flagged item, resolving it, annotator quality."""

from django.urls import path

from . import review_views as v

urlpatterns = [
    path("projects/<slug:slug>/review/next/", v.ReviewNextApi.as_view(), name="api-review-next"),
    path(
        "review/items/<int:pk>/resolve/",
        v.ReviewResolveApi.as_view(),
        name="api-review-resolve",
    ),
    path("projects/<slug:slug>/quality/", v.QualityApi.as_view(), name="api-quality"),
]
