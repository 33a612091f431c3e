"""Gold items, annotator checks and pauses (leads): labeling/api/quality_views.py."""

from django.urls import path

from . import annotator_items_views
from . import quality_views as v

urlpatterns = [
    path(
        "projects/<slug:slug>/quality/annotators/<int:pk>/items/",
        annotator_items_views.AnnotatorItemsApi.as_view(),
        name="api-quality-annotator-items",
    ),
    path("projects/<slug:slug>/gold/", v.GoldApi.as_view(), name="api-gold"),
    path(
        "projects/<slug:slug>/gold/<int:image_id>/unmark/",
        v.GoldUnmarkApi.as_view(),
        name="api-gold-unmark",
    ),
    path(
        "projects/<slug:slug>/quality/checks/",
        v.QualityChecksApi.as_view(),
        name="api-quality-checks",
    ),
    path(
        "projects/<slug:slug>/quality/agreement/",
        v.AgreementApi.as_view(),
        name="api-quality-agreement",
    ),
    path(
        "projects/<slug:slug>/quality/disagreements/queue/",
        v.DisagreementsQueueApi.as_view(),
        name="api-quality-disagreements-queue",
    ),
    path(
        "projects/<slug:slug>/pauses/<int:pk>/lift/",
        v.PauseLiftApi.as_view(),
        name="api-pause-lift",
    ),
]
