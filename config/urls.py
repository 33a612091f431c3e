from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("labeling.urls")),
]

# The app's error pages (styled HTML; JSON under /api/), never Django's technical ones.
handler400 = "labeling.views.errors.bad_request"
handler403 = "labeling.views.errors.permission_denied"
handler404 = "labeling.views.errors.page_not_found"
handler500 = "labeling.views.errors.server_error"
