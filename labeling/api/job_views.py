"""Jobs API: start, list, poll and cancel background jobs; each strategy's yield.

Engineers only (ARCHITECTURE.md, Roles: "trigger and cancel jobs"); the yield of the selection
strategies is also open to leads of the project (they see model scores). One view per operation:
parse, call one service or selector, serialize. The job page polls `api-job-detail`.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api.job_serializers import job_create_request
from labeling.models import Job
from labeling.permissions import (
    IsEngineer,
    IsLead,
    can_see_scores,
    project_visible_or_404,
    projects_visible_to,
)
from labeling.selectors.jobs import LOG_TAIL, job_shard_counts, jobs_list
from labeling.selectors.strategies import strategy_yield_recent
from labeling.services.jobs import job_cancel, job_create


class JobOutput(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model_version = serializers.CharField(source="model_version.name", default=None)
    created_by = serializers.CharField(source="created_by.username", default=None)
    log_tail = serializers.SerializerMethodField()
    shards = serializers.SerializerMethodField()
    is_finished = serializers.BooleanField(read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "project",
            "kind",
            "params",
            "status",
            "stage",
            "percent",
            "log_tail",
            "error",
            "result",
            "cancel_requested",
            "attempts",
            "model_version",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "shards",
            "is_finished",
        ]

    def get_log_tail(self, job: Job) -> list[str]:
        return list(job.log or [])[-LOG_TAIL:]

    def get_shards(self, job: Job) -> dict[str, int]:
        return job_shard_counts(job=job)


class JobListOutput(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.name", default=None)

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "stage", "percent", "model_version", "created_at"]


class JobCreateEnvelope(serializers.Serializer):
    """The request's shape before its parameters are checked: those are validated by the
    kind's JobSpec inside `job_create`, and documented by `job_create_request()`."""

    kind = serializers.ChoiceField(choices=Job.Kind.choices)
    params = serializers.DictField(required=False, default=dict)


class ProjectJobListApi(generics.ListAPIView):
    """A project's jobs, newest first."""

    permission_classes = [IsEngineer]
    serializer_class = JobListOutput

    def get_queryset(self):
        return jobs_list(project=project_visible_or_404(self.request.user, self.kwargs["slug"]))


class ProjectJobCreateApi(APIView):
    """Start a job: {"kind": "score_pool" | "select" | ..., "params": {...}}; each kind's
    parameters, with their ranges and defaults, are in the request schema."""

    permission_classes = [IsEngineer]

    @extend_schema(request=job_create_request(), responses={201: JobOutput})
    def post(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        data = JobCreateEnvelope(data=request.data)
        data.is_valid(raise_exception=True)
        job = job_create(
            project=project,
            kind=data.validated_data["kind"],
            params=data.validated_data["params"],
            created_by=request.user,
        )
        return Response(JobOutput(job).data, status=status.HTTP_201_CREATED)


def _job_for(user, pk: int) -> Job:
    return get_object_or_404(jobs_list().filter(project__in=projects_visible_to(user)), pk=pk)


class JobDetailApi(APIView):
    """One job's status, stage, percent, log tail and result (the job page polls this)."""

    permission_classes = [IsEngineer]

    @extend_schema(responses=JobOutput)
    def get(self, request, pk: int):
        return Response(JobOutput(_job_for(request.user, pk)).data)


class JobCancelApi(APIView):
    """Cancel a job: at once if it has not started, else at its next progress report."""

    permission_classes = [IsEngineer]

    @extend_schema(request=None, responses=JobOutput)
    def post(self, request, pk: int):
        job = job_cancel(job=_job_for(request.user, pk), by=request.user)
        return Response(JobOutput(job).data)


class StrategyYieldOutput(serializers.Serializer):
    strategy = serializers.CharField()
    name = serializers.CharField()
    queued = serializers.IntegerField()
    labeled = serializers.IntegerField()
    positive = serializers.IntegerField()
    flipped = serializers.IntegerField()
    with_decision = serializers.IntegerField()
    positive_rate = serializers.FloatField(allow_null=True)


class StrategyYieldApi(APIView):
    """Per selection strategy: items queued, labeled, positive, and decisions flipped."""

    permission_classes = [IsLead]

    @extend_schema(responses=StrategyYieldOutput(many=True))
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_see_scores(request.user, project):
            raise PermissionDenied(_("Selection yields are for the project's leads."))
        return Response(StrategyYieldOutput(strategy_yield_recent(project=project), many=True).data)
