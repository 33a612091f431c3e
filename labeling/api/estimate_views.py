"""Pool estimates API: the latest audit's estimates with intervals, and the forecasts.

Leads (of the project) and engineers read them; annotators never (an audit must look like any
other work to them). Audits are started as jobs (`kind` "audit", the jobs API).
"""

from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.permissions import IsLead, can_see_estimates, project_visible_or_404
from labeling.services.audit import DEFAULT_WIDTH, pool_estimates_get


class PoolEstimatesInput(serializers.Serializer):
    model_version_id = serializers.IntegerField(required=False, min_value=1)
    width = serializers.FloatField(
        required=False, min_value=0.001, max_value=1.0, default=DEFAULT_WIDTH
    )


class PoolEstimatesApi(APIView):
    """GET: the estimates of the audit of a model version (default: the active one), or
    `{"audit": null}` before any audit; `width`: the interval width the forecast aims at."""

    permission_classes = [IsLead]

    @extend_schema(
        parameters=[
            OpenApiParameter("model_version_id", int, required=False),
            OpenApiParameter("width", float, required=False),
        ],
        responses={200: dict},
    )
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_see_estimates(request.user, project):
            raise PermissionDenied(_("Pool estimates are for leads and engineers."))
        given = PoolEstimatesInput(data=request.query_params)
        given.is_valid(raise_exception=True)
        figures = pool_estimates_get(
            project=project,
            model_version_id=given.validated_data.get("model_version_id"),
            width=given.validated_data["width"],
        )
        return Response({"audit": figures})
