"""The core REST API: projects, images, label history, labels export/import, model versions,
users' roles. One view per operation (HackSoft styleguide): each parses its input, calls one
selector or service and serializes the result.

Scoping: every object is looked up inside `projects_visible_to(user)`, so another project's
project, image or model version is a 404 and ids leak nothing. Role rules come from
labeling.permissions only.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import ModelVersion
from labeling.permissions import (
    IsAnnotator,
    IsEngineer,
    IsLead,
    IsSiteEngineer,
    can_review,
    project_visible_or_404,
    projects_visible_to,
)
from labeling.selectors.images import image_get_visible
from labeling.selectors.labels import image_current_label, label_history
from labeling.services import exports, projects, users

from . import filters as f
from . import serializers as s


# --- Projects ---------------------------------------------------------------------------------
class ProjectListApi(generics.ListAPIView):
    """Projects the caller may see (site-wide engineers: all; others: those they are members
    of)."""

    permission_classes = [IsAnnotator]
    serializer_class = s.ProjectOutput

    def get_queryset(self):
        f.parse_query(self.request, f.EmptyQuery)
        return projects_visible_to(self.request.user).order_by("name", "id")


class ProjectDetailApi(APIView):
    permission_classes = [IsAnnotator]

    @extend_schema(responses=s.ProjectOutput)
    def get(self, request, slug: str):
        return Response(s.ProjectOutput(project_visible_or_404(request.user, slug)).data)


class ProjectCreateApi(APIView):
    """Engineers create a project (an engineer who is not site-wide becomes its member); the
    label schema is validated (models.validate_label_schema)."""

    permission_classes = [IsEngineer]

    @extend_schema(request=s.ProjectCreateInput, responses={201: s.ProjectOutput})
    def post(self, request):
        data = s.ProjectCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        project = projects.project_create(created_by=request.user, **data.validated_data)
        return Response(s.ProjectOutput(project).data, status=status.HTTP_201_CREATED)


class ProjectUpdateApi(APIView):
    permission_classes = [IsEngineer]

    @extend_schema(request=s.ProjectUpdateInput, responses=s.ProjectOutput)
    def patch(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        data = s.ProjectUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = projects.project_update(project=project, **data.validated_data)
        return Response(s.ProjectOutput(project).data)


# --- Images -----------------------------------------------------------------------------------
# The image list: labeling/api/image_views.py (keyset pages).


class ImageDetailApi(APIView):
    """One image with its whole label history and its scores (leads and engineers)."""

    permission_classes = [IsLead]

    @extend_schema(responses=s.ImageDetailOutput)
    def get(self, request, pk: int):
        image = image_get_visible(pk=pk, projects=projects_visible_to(request.user))
        if image is None or not can_review(request.user, image.project):
            return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
        deciding = image_current_label(image=image)
        image.current_label = deciding.value if deciding else None
        image.current_subcategory = deciding.subcategory if deciding else ""
        image.history = label_history(image=image)
        image.score_rows = image.scores.select_related("model_version").order_by("-created_at")
        return Response(s.ImageDetailOutput(image).data)


# --- Model versions ---------------------------------------------------------------------------
class ModelVersionListApi(generics.ListAPIView):
    """Read-only list of a project's model versions (leads and engineers)."""

    permission_classes = [IsLead]
    serializer_class = s.ModelVersionOutput

    def get_queryset(self):
        f.parse_query(self.request, f.EmptyQuery)
        project = project_visible_or_404(self.request.user, self.kwargs["slug"])
        return ModelVersion.objects.filter(project=project).select_related("project")


# --- Labels export / import -------------------------------------------------------------------
class _PassthroughRenderer(BaseRenderer):
    """Lets content negotiation accept `Accept: text/csv` / `application/x-ndjson`; the view
    streams the body itself."""

    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class CSVRenderer(_PassthroughRenderer):
    media_type = "text/csv"
    format = "csv"


class JSONLinesRenderer(_PassthroughRenderer):
    media_type = "application/x-ndjson"
    format = "jsonl"


class ZipRenderer(_PassthroughRenderer):
    media_type = "application/zip"
    format = "zip"
    charset = None


EXPORT_CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "zip": "application/zip",
}


class LabelsExportApi(APIView):
    """Current labels of the labeled images, as CSV, JSON Lines, or a zip of the images in one
    folder per class (`?as=csv|jsonl|zip` or the Accept header; CSV by default), filtered by
    `label`, `split`, `strategy` and `annotator` (labeling.services.exports). `?history=true`
    adds each image's full label history (CSV and JSON Lines). The file streams."""

    permission_classes = [IsEngineer]
    renderer_classes = [JSONRenderer, CSVRenderer, JSONLinesRenderer, ZipRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("as", str, enum=list(exports.EXPORT_FORMATS)),
            OpenApiParameter("history", bool),
            *(OpenApiParameter(name, str) for name in exports.EXPORT_FILTERS),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "application/zip"): OpenApiTypes.BINARY,
        },
    )
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        params = f.parse_query(request, f.ExportQueryInput)
        fmt = params.get("as") or (
            request.accepted_renderer.format
            if request.accepted_renderer.format in exports.EXPORT_FORMATS
            else "csv"
        )
        filters = exports.export_filters_clean(project=project, values=params)
        body = exports.labels_export(
            project=project,
            fmt=fmt,
            include_history=params["history"],
            by=request.user,
            filters=filters,
        )
        response = StreamingHttpResponse(body, content_type=EXPORT_CONTENT_TYPES[fmt])
        name = "images" if fmt == "zip" else "labels"
        response["Content-Disposition"] = f'attachment; filename="{project.slug}-{name}.{fmt}"'
        return response

    def handle_exception(self, exc):
        # Errors are JSON whatever the client asked for.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class LabelsImportApi(APIView):
    """Import labels from CSV or JSON Lines, matched by image id or content hash, validated
    against the project's schema, stored as Label(kind=imported). `mode=atomic` (default)
    writes every row or none (400 with the per-row report); `mode=per_row` writes the valid
    rows and reports the others."""

    permission_classes = [IsEngineer]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": s.LabelsImportInput},
        responses={200: s.LabelsImportReportOutput, 400: s.LabelsImportReportOutput},
    )
    def post(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        data = s.LabelsImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        fmt = data.validated_data.get("as") or exports.format_from_name(upload.name)
        if fmt is None:
            raise serializers.ValidationError(
                {"as": _("Say `as=csv` or `as=jsonl` (the file name has no known extension).")}
            )
        report = exports.labels_import(
            project=project,
            stream=upload,
            fmt=fmt,
            by=request.user,
            atomic=data.validated_data["mode"] == "atomic",
        )
        body = s.LabelsImportReportOutput(report).data
        return Response(body, status=status.HTTP_200_OK if report.written else 400)


# --- Users' roles and project membership (site-wide engineers) ---------------------------------
class UserListApi(generics.ListAPIView):
    permission_classes = [IsSiteEngineer]
    serializer_class = s.UserOutput

    def get_queryset(self):
        f.parse_query(self.request, f.EmptyQuery)
        return User.objects.order_by("username").prefetch_related("projects")


class UserCreateApi(APIView):
    permission_classes = [IsSiteEngineer]

    @extend_schema(request=s.UserCreateInput, responses={201: s.UserOutput})
    def post(self, request):
        data = s.UserCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = users.user_create(by=request.user, **data.validated_data)
        return Response(s.UserOutput(user).data, status=status.HTTP_201_CREATED)


class UserRoleSetApi(APIView):
    permission_classes = [IsSiteEngineer]

    @extend_schema(request=s.UserRoleInput, responses=s.UserOutput)
    def post(self, request, pk: int):
        user = get_object_or_404(User, pk=pk)
        data = s.UserRoleInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = users.user_role_set(user=user, role=data.validated_data["role"], by=request.user)
        return Response(s.UserOutput(user).data)


class UserProjectsSetApi(APIView):
    """Replace the projects the user is a member of (a list of project slugs)."""

    permission_classes = [IsSiteEngineer]

    @extend_schema(request=s.UserProjectsInput, responses=s.UserOutput)
    def put(self, request, pk: int):
        user = get_object_or_404(User, pk=pk)
        data = s.UserProjectsInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = users.user_projects_set(
            user=user,
            projects=data.validated_data["projects"],
            by=request.user,
        )
        return Response(s.UserOutput(user).data)
