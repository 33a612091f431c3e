"""The image list (GET /api/v1/projects/<slug>/images/), paged by keyset so a page costs the
same with a thousand images or a million (issue 11, item 3).

Pages are cursors over the image id (DRF's CursorPagination): `next` and `previous` are links
with an opaque `cursor`; there is no total count, since counting a million filtered rows on
every page is what made the list grow with the pool. Each row's current label comes from
labeling.models.CurrentLabel for the page's images only.

Annotators see what labeling needs (no source, split, hash, labels or scores;
serializers.ImageOutput) and may filter by labeling queue only; leads and engineers also see
where each image came from and may filter by split, current label, labeled or not, score band
of a model version (the active one unless `model_version` is given), the strategy that queued
it and the person who labeled it.
"""

from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination

from labeling.models import Queue, Strategy
from labeling.permissions import (
    IsAnnotator,
    can_see_scores,
    project_visible_or_404,
    queue_access_check,
)
from labeling.selectors.images import image_score_version, images_current_labels, images_list

from . import filters as f
from . import serializers as s

IMAGE_PAGE_SIZE = 50


class ImageListInput(f.ImageFilterInput):
    strategy = serializers.ChoiceField(choices=Strategy.values, required=False)
    annotator = serializers.IntegerField(min_value=1, required=False)
    # The keyset pagination's position (opaque; read by ImageCursorPagination).
    cursor = serializers.CharField(max_length=200, required=False)

    REVIEWER_ONLY = (*f.ImageFilterInput.REVIEWER_ONLY, "strategy", "annotator")


class ImageCursorPagination(CursorPagination):
    page_size = IMAGE_PAGE_SIZE
    ordering = "id"


@extend_schema(parameters=[ImageListInput])
class ImageListApi(generics.ListAPIView):
    """Images of a project, 50 a page by keyset (module docstring)."""

    permission_classes = [IsAnnotator]
    pagination_class = ImageCursorPagination

    def get_serializer_class(self):
        if getattr(self, "reviewer", False):
            return s.ImageReviewOutput
        return s.ImageOutput

    def get_queryset(self):
        project = project_visible_or_404(self.request.user, self.kwargs["slug"])
        params = f.parse_query(self.request, ImageListInput)
        self.reviewer = can_see_scores(self.request.user, project)
        asked = [name for name in ImageListInput.REVIEWER_ONLY if name in params]
        if asked and not self.reviewer:
            raise PermissionDenied(
                _("Filters %(filters)s are for leads and engineers.") % {"filters": asked}
            )
        queue = None
        if "queue" in params:
            queue = Queue.objects.filter(pk=params["queue"], project=project).first()
            if queue is None:
                raise serializers.ValidationError({"queue": _("No such queue in this project.")})
            queue_access_check(self.request.user, queue)
        model_version = None
        if self.reviewer:
            model_version = image_score_version(
                project=project, model_version_id=params.get("model_version")
            )
        self.project = project
        return images_list(
            project=project,
            split=params.get("split"),
            queue=queue,
            label=params.get("label"),
            labeled=params.get("labeled"),
            model_version=model_version,
            min_score=params.get("min_score"),
            max_score=params.get("max_score"),
            strategy=params.get("strategy"),
            annotator_id=params.get("annotator"),
        )

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        if getattr(self, "reviewer", False) and page is not None:
            self.page_labels = images_current_labels(
                project=self.project, image_ids=[image.pk for image in page]
            )
        return page

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if getattr(self, "reviewer", False):
            context["current_labels"] = getattr(self, "page_labels", {})
        return context
