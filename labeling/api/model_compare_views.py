"""Model versions compared (issue 9, item 11): the figures the comparison page shows, for
scripts. Leads and engineers of the project; annotators never see model figures."""

from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import ModelVersion
from labeling.permissions import IsLead, can_see_scores, project_visible_or_404
from labeling.selectors.model_comparison import (
    MAX_COMPARED,
    compare_versions,
    default_selection,
    worse_figures,
)


class ComparedVersionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    promoted_at = serializers.DateTimeField(allow_null=True)
    training_seconds = serializers.FloatField(allow_null=True)
    stages = serializers.JSONField(
        help_text="stage1, stage2, cascade: precision, recall, ap, threshold, tp, fp, fn, "
        "predicted_positive, positives, precision_ci and recall_ci (95% Wilson, [low, high])."
    )
    delta = serializers.JSONField(
        allow_null=True, help_text="Per stage, precision/recall/ap minus the baseline's."
    )
    warnings = serializers.ListField(
        child=serializers.CharField(), help_text="Figures resting on too few cases."
    )
    worse_than_active = serializers.ListField(
        child=serializers.JSONField(),
        help_text="Cascade figures lower than the active version's: {name, candidate, current}.",
    )
    data = serializers.JSONField(help_text="The data snapshot stored at training.")
    training = serializers.ListField(
        child=serializers.JSONField(),
        help_text="Training job parameters: {name, label, value}.",
    )
    training_job = serializers.JSONField(
        allow_null=True,
        help_text="The training job: {id, labels_as_of} (labels given later are not in it).",
    )
    pool = serializers.JSONField(
        allow_null=True, help_text="Pool-level estimates of the version's audit (issue 10)."
    )
    curve = serializers.JSONField(
        allow_null=True,
        help_text="PR curve on the common labeled validation images: points [[recall, "
        "precision]], ap, operating (counts and intervals at the deployed thresholds).",
    )


class ModelComparisonOutput(serializers.Serializer):
    baseline = serializers.CharField(allow_null=True)
    versions = ComparedVersionOutput(many=True)
    curves = serializers.JSONField(
        help_text="labeled, images (common to every version), positives, missing (not scored)."
    )
    min_trusted = serializers.IntegerField(help_text="Fewer cases than this: a warning.")
    interval = serializers.CharField()


class ModelComparisonApi(APIView):
    """Versions side by side; the first is the baseline of the deltas."""

    permission_classes = [IsLead]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "v",
                OpenApiTypes.INT,
                many=True,
                description=f"Version ids, at most {MAX_COMPARED}; none: the active and the "
                f"newest other.",
            )
        ],
        responses=ModelComparisonOutput,
    )
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_see_scores(request.user, project):
            raise PermissionDenied(_("Model versions are for leads and engineers."))
        raw = request.query_params.getlist("v")
        if any(not value.isdigit() for value in raw):
            raise ApiValidationError({"v": _("Choose versions by their ids.")})
        if raw:
            ids = list(dict.fromkeys(int(value) for value in raw))[:MAX_COMPARED]
            found = ModelVersion.objects.filter(project=project, pk__in=ids).in_bulk()
            versions = [found[i] for i in ids if i in found]
        else:
            versions = default_selection(project=project)
        result = compare_versions(project=project, versions=versions)
        active = project.active_model_version
        for row in result["versions"]:
            row["worse_than_active"] = worse_figures(candidate=row["version"], current=active)
        return Response(ModelComparisonOutput(result).data)
