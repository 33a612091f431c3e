"""Pool estimates API: the latest audit's estimates with intervals, and the forecasts.

Leads (of the project) and engineers read them; annotators never (an audit must look like any
other work to them). Audits are started as jobs (`kind` "audit", the jobs API).

Triage of the live pool (labeling.services.triage): leads and engineers read its figures;
engineers start a run (parameters from `TRIAGE`, the same declaration as the page's form),
stop it and revert it.
"""

from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.job_serializers import spec_params_serializer
from labeling.permissions import IsEngineer, IsLead, can_see_estimates, project_visible_or_404
from labeling.services.audit import DEFAULT_WIDTH, pool_estimates_get
from labeling.services.triage import (
    TRIAGE,
    triage_figures,
    triage_revert,
    triage_start,
    triage_stop,
)

TriageParams = spec_params_serializer(TRIAGE, "TriageParams")


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


class TriageApi(APIView):
    """GET (leads, engineers): the latest triage run's figures (routes, the audit of the
    accepted images with the miss rate's 95% interval, the pause rule), or `{"triage": null}`.
    POST (engineers): start a run with the given parameters (a live run is stopped first)."""

    def get_permissions(self):
        return [IsEngineer()] if self.request.method == "POST" else [IsLead()]

    @extend_schema(responses={200: dict})
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_see_estimates(request.user, project):
            raise PermissionDenied(_("Triage figures are for leads and engineers."))
        return Response({"triage": triage_figures(project=project)})

    @extend_schema(request=TriageParams, responses={201: dict})
    def post(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        given = TriageParams(data=request.data)
        given.is_valid(raise_exception=True)
        params = {name: value for name, value in request.data.items() if name in TRIAGE.names}
        triage_start(project=project, params=params, by=request.user)
        return Response({"triage": triage_figures(project=project)}, status=201)


class TriageStopApi(APIView):
    """POST (engineers): stop the running or paused run."""

    permission_classes = [IsEngineer]

    @extend_schema(request=None, responses={200: dict})
    def post(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        triage_stop(project=project, by=request.user)
        return Response({"triage": triage_figures(project=project)})


class TriageRevertApi(APIView):
    """POST (engineers): undo every decision of run `pk` (stopping it when live)."""

    permission_classes = [IsEngineer]

    @extend_schema(request=None, responses={200: dict})
    def post(self, request, slug: str, pk: int):
        project = project_visible_or_404(request.user, slug)
        count = triage_revert(project=project, run_id=pk, by=request.user)
        return Response({"reverted": count, "triage": triage_figures(project=project)})
