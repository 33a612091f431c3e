"""REST API root (/api/v1/). Each area keeps its routes in its own module."""

from django.urls import include, path

urlpatterns = [
    path("", include("labeling.api.core_urls")),
    path("", include("labeling.api.queue_urls")),
    path("", include("labeling.api.job_urls")),
    path("", include("labeling.api.model_urls")),
    path("", include("labeling.api.review_urls")),
    path("", include("labeling.api.estimate_urls")),
    path("", include("labeling.api.loop_urls")),
    path("", include("labeling.api.audit_urls")),
    path("", include("labeling.api.quality_urls")),
    path("", include("labeling.api.webhook_urls")),
]
