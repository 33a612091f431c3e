"""The audit log through the API (engineers): the events they may see, and a CSV export.

Events are written by the services only (labeling.services.audit_log); there is no write
endpoint. Scoping comes from labeling.selectors.audit_log: an engineer sees the events of the
projects they are members of, a site-wide engineer every event."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from labeling.models import AuditEvent
from labeling.permissions import IsEngineer, project_visible_or_404
from labeling.selectors.audit_log import audit_events_list
from labeling.services.audit_log import audit_export_csv

from . import filters as f
from .views import CSVRenderer


class AuditQueryInput(serializers.Serializer):
    project = serializers.SlugField(max_length=80, required=False)
    action = serializers.ChoiceField(choices=AuditEvent.Action.choices, required=False)
    actor = serializers.CharField(max_length=150, required=False)


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()
    project = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "at", "actor", "actor_id", "action", "project", "project_id", "target"]
        fields += ["details"]

    def get_actor(self, event) -> str | None:
        """The person's username when the event happened; null: the system itself."""
        return event.actor_name or None

    def get_project(self, event) -> str | None:
        """The project's slug when the event happened; null: no single project."""
        return event.project_slug or None


def _filtered(request):
    params = f.parse_query(request, AuditQueryInput)
    project_id = None
    if params.get("project"):
        project_id = project_visible_or_404(request.user, params["project"]).pk
    events = audit_events_list(
        user=request.user,
        project_id=project_id,
        action=params.get("action"),
        actor=params.get("actor"),
    )
    return events, {key: value for key, value in params.items() if value}


@extend_schema(parameters=[AuditQueryInput])
class AuditEventListApi(generics.ListAPIView):
    """Newest first; filters: `project` (slug), `action`, `actor` (username)."""

    permission_classes = [IsEngineer]
    serializer_class = AuditEventOutput

    def get_queryset(self):
        return _filtered(self.request)[0]


class AuditExportApi(APIView):
    """The same events as CSV, oldest first (cells that a spreadsheet would take for a formula
    are written as text). The export is itself recorded."""

    permission_classes = [IsEngineer]
    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(parameters=[AuditQueryInput], responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request):
        events, filters = _filtered(request)
        lines = audit_export_csv(events=events, by=request.user, filters=filters)
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
        return response

    def handle_exception(self, exc):
        # Errors are JSON whatever the client asked for.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
