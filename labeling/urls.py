"""Pages. Each area keeps its routes in its own module under labeling/views/."""

from django.urls import include, path

from labeling.views import health

urlpatterns = [
    # Database and broker reachable? 200 or 503 (labeling/views/health.py); open to anyone.
    path("health/", health.health, name="health"),
    path("api/v1/", include("labeling.api.urls")),
    # Before annotate_urls: projects/create/ is not a project's page (setup_urls.py).
    path("", include("labeling.views.setup_urls")),
    path("", include("labeling.views.annotate_urls")),
    path("", include("labeling.views.import_urls")),
    path("", include("labeling.views.admin_urls")),
    path("", include("labeling.views.engineer_urls")),
    path("", include("labeling.views.audit_urls")),
    path("", include("labeling.views.estimate_urls")),
    path("", include("labeling.views.quality_urls")),
    path("", include("labeling.views.webhook_urls")),
]
