"""The loop as engineers and leads watch it: why each queue item is there, the validation
split's progress and its refill, and what a selection round would take before it starts.

None of these is reachable by annotators (labeling.permissions): the strategy, rank and scores
of an item would tell them what the model thinks.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.common import call_service
from labeling.models import Queue, QueueItem, Strategy
from labeling.permissions import (
    IsEngineer,
    IsLead,
    can_manage,
    can_see_queue_details,
    project_visible_or_404,
    projects_visible_to,
)
from labeling.selectors.queue_items import MAX_ITEMS, queue_items_explained
from labeling.selectors.validation import validation_progress
from labeling.services.selection import SELECT, selection_preview
from labeling.services.validation import validation_queue_fill

from . import filters as f


class QueueItemsQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=QueueItem.Status.values, required=False)
    strategy = serializers.ChoiceField(choices=Strategy.values, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=MAX_ITEMS, default=100)
    offset = serializers.IntegerField(min_value=0, default=0)


class QueueItemExplainedOutput(serializers.Serializer):
    id = serializers.IntegerField()
    image_id = serializers.IntegerField()
    status = serializers.CharField()
    strategy = serializers.CharField()
    strategy_name = serializers.CharField()
    priority = serializers.FloatField()
    rank = serializers.IntegerField(allow_null=True)
    similarity = serializers.FloatField(allow_null=True)
    probability = serializers.FloatField(allow_null=True)
    seed_image_id = serializers.IntegerField(allow_null=True)
    score = serializers.FloatField(allow_null=True)
    rule = serializers.CharField(allow_null=True)
    band = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    high = serializers.FloatField(allow_null=True)
    model_version = serializers.CharField(allow_null=True)
    job_id = serializers.IntegerField(allow_null=True)
    moved_from = serializers.DictField(allow_null=True)
    labels_done = serializers.IntegerField()
    labels_needed = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class QueueItemsResponse(serializers.Serializer):
    queue = serializers.DictField()
    count = serializers.IntegerField()
    items = QueueItemExplainedOutput(many=True)


class QueueItemsApi(APIView):
    """A queue's items in serving order with why each is there: strategy, rank, similarity or
    probability (cold start), score and rule / band (selection), what it was moved from.
    Leads and engineers of the project only."""

    permission_classes = [IsLead]

    @extend_schema(parameters=[QueueItemsQuery], responses=QueueItemsResponse)
    def get(self, request, pk: int):
        queue = get_object_or_404(
            Queue.objects.select_related("project"),
            pk=pk,
            project__in=projects_visible_to(request.user),
        )
        if not can_see_queue_details(request.user, queue.project):
            raise PermissionDenied(_("Queue details are for leads and engineers."))
        params = f.parse_query(request, QueueItemsQuery)
        rows, count = queue_items_explained(
            queue=queue,
            status=params.get("status"),
            strategy=params.get("strategy"),
            limit=params["limit"],
            offset=params["offset"],
        )
        return Response(
            {
                "queue": {"id": queue.pk, "name": queue.name, "kind": queue.kind},
                "count": count,
                "items": QueueItemExplainedOutput(rows, many=True).data,
            }
        )


class ValidationProgressOutput(serializers.Serializer):
    images = serializers.IntegerField()
    labeled = serializers.IntegerField()
    positive = serializers.IntegerField()
    negative = serializers.IntegerField()
    percent = serializers.IntegerField()
    queue_id = serializers.IntegerField(allow_null=True)
    queue_name = serializers.CharField(allow_null=True)
    open = serializers.IntegerField()
    not_queued = serializers.IntegerField()
    not_queued_counted_at = serializers.DateTimeField()


class ValidationFillOutput(serializers.Serializer):
    queue_id = serializers.IntegerField()
    queue = serializers.CharField()
    added = serializers.IntegerField()
    moved = serializers.IntegerField()
    progress = ValidationProgressOutput()


class ValidationProgressApi(APIView):
    """How far the frozen validation split is labeled (leads and engineers of the project);
    `not_queued` is at most a minute old (`not_queued_counted_at`)."""

    permission_classes = [IsLead]

    @extend_schema(responses=ValidationProgressOutput)
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_see_queue_details(request.user, project):
            raise PermissionDenied
        f.parse_query(request, f.EmptyQuery)
        return Response(validation_progress(project=project, recent=True))


class ValidationFillApi(APIView):
    """Queue every unlabeled validation image that is not in the validation queue (engineers)."""

    permission_classes = [IsEngineer]

    @extend_schema(request=None, responses=ValidationFillOutput)
    def post(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_manage(request.user, project):
            raise PermissionDenied
        result = call_service(validation_queue_fill, project=project, created_by=request.user)
        return Response({**result, "progress": validation_progress(project=project)})


class SelectionPreviewOutput(serializers.Serializer):
    model_version_id = serializers.IntegerField()
    model_version = serializers.CharField()
    eligible = serializers.IntegerField()
    cap = serializers.IntegerField()
    max_share = serializers.FloatField()
    k_band = serializers.IntegerField()
    k_loss = serializers.IntegerField()
    ranked_max = serializers.IntegerField()
    audit = serializers.IntegerField()
    audit_share = serializers.FloatField()
    most = serializers.IntegerField()
    rule = serializers.CharField()
    summary = serializers.CharField()
    not_queued_counted_at = serializers.DateTimeField()
    counted = serializers.CharField()


class SelectionPreviewApi(APIView):
    """What a select job with these parameters (the query string, as the job takes them;
    defaults for the rest) would take now: eligible images, the cap, band / loss / audit
    sizes (engineers). The eligible count and the labeling rate are at most
    PREVIEW_CACHE_SECONDS old (`counted_at`, `counted`)."""

    permission_classes = [IsEngineer]

    @extend_schema(responses=SelectionPreviewOutput)
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_manage(request.user, project):
            raise PermissionDenied
        # The job's own declaration parses the names and values (labeling.services.params).
        params = {name: request.query_params.get(name) for name in request.query_params}
        unknown = sorted(set(params) - set(SELECT.names))
        if unknown:
            raise serializers.ValidationError(
                {name: [_("Unknown query parameter.")] for name in unknown}
            )
        return Response(call_service(selection_preview, project=project, params=params))
