"""The project's webhook delivery log (engineers; issue 9, item 15).

- `projects/<slug>/webhooks/deliveries/`: GET the last deliveries, newest first: event, status
  (pending, delivered, failed), attempts, the receiver's last HTTP status and error.
- `projects/<slug>/webhooks/ping/`: POST queues a test event (400 without a webhook URL).

The URL itself is a project setting (PATCH /api/v1/projects/<slug>/ with webhook_url); the
signing secret is shown on the webhooks page only. Leads and annotators get 403, another
project 404.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import Project, WebhookDelivery
from labeling.permissions import IsEngineer, can_manage, project_visible_or_404
from labeling.services import webhooks


def _project_for_engineer(user, slug: str) -> Project:
    project = project_visible_or_404(user, slug)
    if not can_manage(user, project):
        raise PermissionDenied(_("Webhooks are for the project's engineers."))
    return project


class WebhookDeliveryOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "status",
            "attempts",
            "response_status",
            "error",
            "created_at",
            "last_attempt_at",
            "delivered_at",
        ]
        read_only_fields = fields


class WebhookDeliveriesApi(APIView):
    permission_classes = [IsEngineer]

    @extend_schema(responses=WebhookDeliveryOutput(many=True))
    def get(self, request, slug: str):
        project = _project_for_engineer(request.user, slug)
        deliveries = webhooks.webhook_deliveries(project=project)
        return Response(WebhookDeliveryOutput(deliveries, many=True).data)


class WebhookPingApi(APIView):
    permission_classes = [IsEngineer]

    @extend_schema(request=None, responses={202: WebhookDeliveryOutput})
    def post(self, request, slug: str):
        project = _project_for_engineer(request.user, slug)
        delivery = webhooks.webhook_ping(project=project)
        if delivery is None:
            raise ValidationError({"webhook_url": _("Set a webhook URL first.")})
        return Response(WebhookDeliveryOutput(delivery).data, status=status.HTTP_202_ACCEPTED)
