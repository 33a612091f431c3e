"""Queue contents explained, the validation split's progress and refill, selection preview."""

from django.urls import path

from . import loop_views as v

urlpatterns = [
    path("queues/<int:pk>/items/", v.QueueItemsApi.as_view(), name="api-queue-items"),
    path(
        "projects/<slug:slug>/validation/",
        v.ValidationProgressApi.as_view(),
        name="api-validation-progress",
    ),
    path(
        "projects/<slug:slug>/validation/fill/",
        v.ValidationFillApi.as_view(),
        name="api-validation-fill",
    ),
    path(
        "projects/<slug:slug>/select/preview/",
        v.SelectionPreviewApi.as_view(),
        name="api-selection-preview",
    ),
]
