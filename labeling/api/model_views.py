"""Model versions API: one version's full record, promote, rollback; and prediction.

Leads (of the project) and engineers read versions; only engineers promote and roll back
(ARCHITECTURE.md, Roles). The list is `api-model-version-list` in the core API. Prediction is
for other services: an engineer, or a service account with the engineer role authenticated by
its token (`Authorization: Token ...`), POSTs one image as multipart field `file`.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import ModelVersion
from labeling.permissions import (
    IsEngineer,
    IsLead,
    can_see_scores,
    project_visible_or_404,
)
from labeling.services.models import model_predict, model_version_promote, model_version_rollback

from .serializers import ModelVersionOutput


def _version_for(user, slug: str, pk: int) -> ModelVersion:
    project = project_visible_or_404(user, slug)
    if not can_see_scores(user, project):
        raise PermissionDenied(_("Model versions are for leads and engineers."))
    return get_object_or_404(
        ModelVersion.objects.select_related("project", "created_by"), project=project, pk=pk
    )


class ModelVersionDetailOutput(ModelVersionOutput):
    data_snapshot = serializers.JSONField(read_only=True)
    pr_curve_url = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta(ModelVersionOutput.Meta):
        fields = [
            *ModelVersionOutput.Meta.fields,
            "data_snapshot",
            "pr_curve_url",
            "created_by",
        ]
        read_only_fields = fields

    def get_pr_curve_url(self, version: ModelVersion) -> str | None:
        if not version.pr_curve:
            return None
        return reverse(
            "project-model-pr-curve", kwargs={"slug": version.project.slug, "pk": version.pk}
        )


class ModelVersionDetailApi(APIView):
    """One version: config, metrics per stage and cascade, data snapshot, PR curve link."""

    permission_classes = [IsLead]

    @extend_schema(responses=ModelVersionDetailOutput)
    def get(self, request, slug: str, pk: int):
        version = _version_for(request.user, slug, pk)
        return Response(ModelVersionDetailOutput(version).data)


class ModelVersionPromoteApi(APIView):
    """Make this version the project's active model."""

    permission_classes = [IsEngineer]

    @extend_schema(request=None, responses=ModelVersionDetailOutput)
    def post(self, request, slug: str, pk: int):
        version = _version_for(request.user, slug, pk)
        promoted = model_version_promote(version=version, by=request.user)
        promoted.project.refresh_from_db()
        return Response(ModelVersionDetailOutput(promoted).data)


class ModelVersionRollbackApi(APIView):
    """Back to the version promoted before the active one."""

    permission_classes = [IsEngineer]

    @extend_schema(request=None, responses=ModelVersionDetailOutput)
    def post(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        active = model_version_rollback(project=project, by=request.user)
        active.project.refresh_from_db()
        return Response(ModelVersionDetailOutput(active).data)


class PredictInput(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="The image (validated like imports).")


class PredictOutput(serializers.Serializer):
    model_version_id = serializers.IntegerField()
    model_version = serializers.CharField()
    positive_class = serializers.CharField()
    stage1 = serializers.FloatField(help_text="Stage-1 probability of the positive class.")
    stage2 = serializers.FloatField(help_text="Stage-2 probability of the positive class.")
    score = serializers.FloatField(help_text="min(stage1, stage2), the ranking score.")
    thresholds = serializers.ListField(child=serializers.FloatField())
    decision = serializers.BooleanField(help_text="stage1 >= t1 AND stage2 >= t2.")


class PredictApi(APIView):
    """Score one image with the project's active model version."""

    permission_classes = [IsEngineer]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": PredictInput}, responses=PredictOutput)
    def post(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        prediction = model_predict(
            project=project, upload=request.FILES.get("file"), by=request.user
        )
        return Response(
            PredictOutput(
                {
                    "model_version_id": prediction.model_version_id,
                    "model_version": project.active_model_version.name,
                    "positive_class": prediction.positive_class,
                    "stage1": prediction.stage1,
                    "stage2": prediction.stage2,
                    "score": prediction.score,
                    "thresholds": list(prediction.thresholds),
                    "decision": prediction.decision,
                }
            ).data
        )
