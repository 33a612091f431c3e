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
    path("review/items/<int:pk>/skip/", v.ReviewSkipApi.as_view(), name="api-review-skip"),
    path(
        "review/items/<int:pk>/send-back/",
        v.ReviewSendBackApi.as_view(),
        name="api-review-send-back",
    ),
    path("projects/<slug:slug>/review/undo/", v.ReviewUndoApi.as_view(), name="api-review-undo"),
    path("review/returned/", v.ReturnedApi.as_view(), name="api-review-returned"),
    path("projects/<slug:slug>/quality/", v.QualityApi.as_view(), name="api-quality"),
]
