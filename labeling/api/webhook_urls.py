"""The webhook delivery log and test event (engineers): labeling/api/webhook_views.py."""

from django.urls import path

from . import webhook_views as v

urlpatterns = [
    path(
        "projects/<slug:slug>/webhooks/deliveries/",
        v.WebhookDeliveriesApi.as_view(),
        name="api-webhook-deliveries",
    ),
    path(
        "projects/<slug:slug>/webhooks/ping/", v.WebhookPingApi.as_view(), name="api-webhook-ping"
    ),
]
