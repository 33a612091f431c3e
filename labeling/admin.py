from django.contrib import admin

from . import models
from .views.auth import login_throttled

# The admin's sign-in obeys the failed sign-in throttle of /login/ and the token endpoint
# (labeling/throttles.py); its failures already count there (Django's user_login_failed).
admin.site.login = login_throttled(admin.site.login)


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "labels_per_item", "validation_fraction", "created_at")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("members",)


@admin.register(models.Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "source", "format", "width", "height", "split", "created_at")
    list_filter = ("project", "split", "format")
    search_fields = ("source", "content_hash")
    readonly_fields = ("content_hash", "byte_size", "width", "height", "format", "split")


@admin.register(models.Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "kind", "labels_per_item", "is_active")
    list_filter = ("project", "kind")


@admin.register(models.QueueItem)
class QueueItemAdmin(admin.ModelAdmin):
    list_display = ("id", "queue", "image", "strategy", "priority", "status", "labels_done")
    list_filter = ("queue", "strategy", "status")
    raw_id_fields = ("image",)


@admin.register(models.Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ("id", "item", "annotator", "slot", "state", "expires_at")
    list_filter = ("state",)
    raw_id_fields = ("item",)


@admin.register(models.Label)
class LabelAdmin(admin.ModelAdmin):
    """Read-only: labels are append-only and corrected only by new labels."""

    list_display = (
        "id",
        "project",
        "image",
        "annotator",
        "kind",
        "value",
        "strategy",
        "created_at",
    )
    list_filter = ("project", "kind", "strategy")
    raw_id_fields = ("image", "supersedes", "queue_item")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "status", "created_at", "promoted_at")
    list_filter = ("project", "status")


@admin.register(models.Score)
class ScoreAdmin(admin.ModelAdmin):
    list_display = ("image", "model_version", "stage1", "stage2", "score", "decision")
    list_filter = ("model_version",)
    raw_id_fields = ("image",)


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "kind", "status", "stage", "percent", "created_at")
    list_filter = ("project", "kind", "status")


@admin.register(models.AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only (labeling.services.audit_log writes it)."""

    list_display = ("at", "actor_name", "action", "project_slug", "target")
    list_filter = ("action", "project_slug")
    search_fields = ("actor_name", "target")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
