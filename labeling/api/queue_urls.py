# Labeling: next item, submit, submit-and-claim, skip and unskip, undo, batch (grid) submit, own
# throughput, own recent labels, own view preferences.
from django.urls import path

from . import queue_views as v

urlpatterns = [
    path("queues/<int:pk>/next/", v.QueueNextApi.as_view(), name="api-queue-next"),
    path(
        "queues/<int:pk>/submit-next/",
        v.QueueSubmitNextApi.as_view(),
        name="api-queue-submit-next",
    ),
    path("queues/<int:pk>/undo/", v.QueueUndoApi.as_view(), name="api-queue-undo"),
    path(
        "queues/<int:pk>/submit-batch/",
        v.QueueSubmitBatchApi.as_view(),
        name="api-queue-submit-batch",
    ),
    path("queues/<int:pk>/stats/", v.QueueStatsApi.as_view(), name="api-queue-stats"),
    path("leases/<int:pk>/submit/", v.LeaseSubmitApi.as_view(), name="api-lease-submit"),
    path("leases/<int:pk>/skip/", v.LeaseSkipApi.as_view(), name="api-lease-skip"),
    path("leases/<int:pk>/unskip/", v.LeaseUnskipApi.as_view(), name="api-lease-unskip"),
    path(
        "queues/<int:pk>/my-labels/",
        v.QueueRecentLabelsApi.as_view(),
        name="api-queue-recent-labels",
    ),
    path(
        "projects/<slug:slug>/preferences/",
        v.ProjectPreferencesApi.as_view(),
        name="api-project-preferences",
    ),
]
