"""Small input and output serializers of the core API (projects, images, labels, users)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.urls import reverse
from rest_framework import serializers

from labeling.api.job_serializers import _field as param_field
from labeling.models import Image, Label, ModelVersion, Project, Score
from labeling.project_settings import PROJECT_SETTINGS
from labeling.roles import ROLE_ORDER, user_role


# --- Projects ---------------------------------------------------------------------------------
class ProjectOutput(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = [
            "id",
            "slug",
            "name",
            "description",
            "label_schema",
            *(name for group in PROJECT_SETTINGS for name in group.names),
            "active_model_version",
            "created_at",
        ]
        read_only_fields = fields


# The project's settings (overlap k, lease, gold, exposure, ...): one field per declaration
# (labeling.project_settings.PROJECT_SETTINGS), with its bounds, default and help text, as the
# jobs' parameters get theirs.
ProjectSettingsInput = type(
    "ProjectSettingsInput",
    (serializers.Serializer,),
    {param.name: param_field(param) for group in PROJECT_SETTINGS for param in group.params},
)


class ProjectCreateInput(ProjectSettingsInput):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80)
    description = serializers.CharField(required=False, allow_blank=True)
    # Validated by the model (validate_label_schema) inside the service.
    label_schema = serializers.JSONField(required=False)


class ProjectUpdateInput(ProjectCreateInput):
    """PATCH: every field optional; the slug is the project's address and never changes."""

    name = serializers.CharField(max_length=200, required=False)
    slug = None


# --- Images -----------------------------------------------------------------------------------
def _url(name: str, image: Image) -> str:
    return reverse(name, kwargs={"pk": image.pk})


class ImageOutput(serializers.ModelSerializer):
    """What an annotator's labeling needs, and no more: the image to show and its size. Never
    the source path or file name (a folder such as `insects/` names the class), the split (the
    hidden validation split stays hidden), the content hash, labels or scores (issue 8, item 7).
    """

    file_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = ["id", "project", "width", "height", "format", "file_url", "thumbnail_url"]
        read_only_fields = fields

    def get_file_url(self, image: Image) -> str:
        return _url("image-file", image)

    def get_thumbnail_url(self, image: Image) -> str:
        return _url("image-thumb", image)


# What leads and engineers also see of an image (where it came from, its split, its size).
IMAGE_REVIEW_FIELDS = ["content_hash", "source", "split", "byte_size", "created_at"]


class ImageReviewOutput(ImageOutput):
    """Leads and engineers also see the image's origin and split, its current label and, with a
    model version, its score."""

    current_label = serializers.SerializerMethodField()
    score = serializers.SerializerMethodField()

    class Meta(ImageOutput.Meta):
        fields = [*ImageOutput.Meta.fields, *IMAGE_REVIEW_FIELDS, "current_label", "score"]
        read_only_fields = fields

    def get_current_label(self, image: Image) -> str | None:
        return self.context["current_labels"].get(image.pk)

    def get_score(self, image: Image) -> float | None:
        return getattr(image, "score", None)


class LabelHistoryOutput(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")

    class Meta:
        model = Label
        fields = [
            "id",
            "kind",
            "value",
            "subcategory",
            "annotator",
            "supersedes",
            "queue",
            "strategy",
            "duration_ms",
            "created_at",
        ]
        read_only_fields = fields


class ScoreOutput(serializers.ModelSerializer):
    model_version_name = serializers.CharField(source="model_version.name")

    class Meta:
        model = Score
        fields = [
            "model_version",
            "model_version_name",
            "score",
            "stage1",
            "stage2",
            "decision",
            "predicted_loss",
        ]
        read_only_fields = fields


class ImageDetailOutput(ImageOutput):
    current_label = serializers.CharField(allow_null=True)
    current_subcategory = serializers.CharField(allow_blank=True)
    history = LabelHistoryOutput(many=True)
    scores = ScoreOutput(many=True, source="score_rows")

    class Meta(ImageOutput.Meta):
        fields = [
            *ImageOutput.Meta.fields,
            *IMAGE_REVIEW_FIELDS,
            "metadata",
            "current_label",
            "current_subcategory",
            "history",
            "scores",
        ]
        read_only_fields = fields


# --- Model versions ---------------------------------------------------------------------------
class ModelVersionOutput(serializers.ModelSerializer):
    is_active = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "status",
            "class_keys",
            "config",
            "metrics",
            "training_seconds",
            "created_at",
            "promoted_at",
            "is_active",
        ]
        read_only_fields = fields

    def get_is_active(self, version: ModelVersion) -> bool:
        return version.project.active_model_version_id == version.pk


# --- Labels import ----------------------------------------------------------------------------
class LabelsImportInput(serializers.Serializer):
    file = serializers.FileField()
    mode = serializers.ChoiceField(choices=["atomic", "per_row"], default="atomic")

    def get_fields(self):
        fields = super().get_fields()
        # `as` (a Python keyword): csv or jsonl; without it the file name's extension
        # (.csv / .jsonl / .ndjson) decides.
        fields["as"] = serializers.ChoiceField(choices=["csv", "jsonl"], required=False)
        return fields


class LabelsImportRowError(serializers.Serializer):
    row = serializers.IntegerField(help_text="1-based data row (the CSV header is row 0).")
    error = serializers.CharField()


class LabelsImportReportOutput(serializers.Serializer):
    mode = serializers.CharField()
    rows = serializers.IntegerField()
    created = serializers.IntegerField()
    written = serializers.BooleanField(help_text="False when an atomic import wrote nothing.")
    errors = LabelsImportRowError(many=True)


# --- Users ------------------------------------------------------------------------------------
ROLE_CHOICES = [r.value for r in ROLE_ORDER]


class UserOutput(serializers.ModelSerializer):
    # Plain text: an account may have no e-mail (""), which is not an "email" format value.
    email = serializers.CharField(read_only=True)
    role = serializers.SerializerMethodField()
    projects = serializers.SlugRelatedField(many=True, read_only=True, slug_field="slug")

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "is_active",
            "is_superuser",
            "role",
            "projects",
            "last_login",
        ]
        read_only_fields = fields

    def get_role(self, user: User) -> str | None:
        role = user_role(user)
        return role.value if role else None


class UserRoleInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLE_CHOICES, allow_null=True)


class UserProjectsInput(serializers.Serializer):
    projects = serializers.SlugRelatedField(
        many=True, slug_field="slug", queryset=Project.objects.all(), allow_empty=True
    )


class UserCreateInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, write_only=True)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=ROLE_CHOICES, allow_null=True)
    projects = serializers.SlugRelatedField(
        many=True, slug_field="slug", queryset=Project.objects.all(), required=False
    )
