from django.contrib import admin
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.i18n import JavaScriptCatalog

urlpatterns = [
    path("admin/", admin.site.urls),
    # set_language (POST): the language switcher in base.html; remembered in a cookie.
    path("i18n/", include("django.conf.urls.i18n")),
    # The page scripts' gettext(): the djangojs catalog of the request's language. Pages link it
    # with their language and the catalogs' version in the query ({% javascript_catalog_url %}),
    # so the browser keeps it a week instead of asking on every page load.
    path(
        "jsi18n/",
        cache_control(max_age=7 * 24 * 3600, private=True)(JavaScriptCatalog.as_view()),
        name="javascript-catalog",
    ),
    path("", include("labeling.urls")),
]

# The app's error pages (styled HTML; JSON under /api/), never Django's technical ones.
handler400 = "labeling.views.errors.bad_request"
handler403 = "labeling.views.errors.permission_denied"
handler404 = "labeling.views.errors.page_not_found"
handler500 = "labeling.views.errors.server_error"
