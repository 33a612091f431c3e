"""Pages. Each area keeps its routes in its own module under labeling/views/."""

from django.urls import include, path

urlpatterns = [
    path("api/v1/", include("labeling.api.urls")),
    path("", include("labeling.views.annotate_urls")),
    path("", include("labeling.views.import_urls")),
    path("", include("labeling.views.admin_urls")),
    path("", include("labeling.views.engineer_urls")),
    path("", include("labeling.views.estimate_urls")),
]
