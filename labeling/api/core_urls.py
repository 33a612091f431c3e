"""Projects, images, label history, export/import, users' roles, tokens, password, schema, docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import auth_views, image_views, views

urlpatterns = [
    path("auth/token/", auth_views.TokenObtainApi.as_view(), name="api-auth-token"),
    path("auth/tokens/", auth_views.TokenListApi.as_view(), name="api-auth-token-list"),
    path(
        "auth/tokens/<int:pk>/",
        auth_views.TokenRevokeApi.as_view(),
        name="api-auth-token-revoke",
    ),
    path("auth/password/", auth_views.PasswordChangeApi.as_view(), name="api-auth-password"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("projects/", views.ProjectListApi.as_view(), name="api-project-list"),
    path("projects/create/", views.ProjectCreateApi.as_view(), name="api-project-create"),
    path("projects/<slug:slug>/", views.ProjectDetailApi.as_view(), name="api-project-detail"),
    path(
        "projects/<slug:slug>/update/",
        views.ProjectUpdateApi.as_view(),
        name="api-project-update",
    ),
    path("projects/<slug:slug>/images/", image_views.ImageListApi.as_view(), name="api-image-list"),
    path("images/<int:pk>/", views.ImageDetailApi.as_view(), name="api-image-detail"),
    path(
        "projects/<slug:slug>/model-versions/",
        views.ModelVersionListApi.as_view(),
        name="api-model-version-list",
    ),
    path(
        "projects/<slug:slug>/labels/export/",
        views.LabelsExportApi.as_view(),
        name="api-labels-export",
    ),
    path(
        "projects/<slug:slug>/labels/import/",
        views.LabelsImportApi.as_view(),
        name="api-labels-import",
    ),
    path("users/", views.UserListApi.as_view(), name="api-user-list"),
    path("users/create/", views.UserCreateApi.as_view(), name="api-user-create"),
    path("users/<int:pk>/role/", views.UserRoleSetApi.as_view(), name="api-user-role-set"),
    path(
        "users/<int:pk>/projects/",
        views.UserProjectsSetApi.as_view(),
        name="api-user-projects-set",
    ),
]
