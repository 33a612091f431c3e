"""Re-review API (leads of the project): the next flagged item with its history, every model
version's scores and the active version's (`active_score`), the Grad-CAM link (the noise job's
stored heat map when `gradcam_stored`, else rendered on request; `gradcam_focused` False: a
flat map, "no focus"), and resolving it (confirm or correct) through `review_resolve`;
annotator quality. The item carries every annotator's active answer (`answers`, several with
overlap k > 1) and the leads' steps on it (`decisions`, with comments). Each step of the stream
(labeling.services.review) has its endpoint: resolve (confirm / correct), skip, send back, and
undo of the lead's latest step; annotators read the labels sent back to them (review/returned/).

One view per operation: parse, call one service or selector, serialize. Annotators get 403;
another project's items are 404.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import Label, Project, Queue, QueueItem, ReviewDecision
from labeling.permissions import IsLead, can_review, project_visible_or_404, projects_visible_to
from labeling.selectors.labels import annotator_quality, label_history
from labeling.selectors.review import (
    image_scores,
    returned_for_annotator,
    review_answers,
    review_decisions,
    review_gradcam_stored,
    review_item_for_lead,
)
from labeling.services.review import MAX_COMMENT, review_decide, review_undo_last


class ReviewLabelOutput(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")
    # A plain string, not an enum: the schema already has other fields named "kind".
    kind = serializers.CharField()

    class Meta:
        model = Label
        fields = ["id", "kind", "value", "subcategory", "annotator", "created_at", "supersedes"]


class ReviewScoreOutput(serializers.Serializer):
    model_version = serializers.CharField(source="model_version.name")
    model_version_id = serializers.IntegerField()
    stage1 = serializers.FloatField()
    stage2 = serializers.FloatField(allow_null=True)
    score = serializers.FloatField()
    decision = serializers.BooleanField()
    predicted_loss = serializers.FloatField(allow_null=True)


class ReviewAnswerOutput(serializers.Serializer):
    """One annotator's active answer on the image (several when overlap k > 1)."""

    annotator = serializers.CharField(source="annotator.username")
    value = serializers.CharField()
    subcategory = serializers.CharField()
    kind = serializers.CharField()
    queue = serializers.CharField(source="queue.name", allow_null=True, default=None)
    strategy = serializers.CharField()
    created_at = serializers.DateTimeField()


class ReviewDecisionOutput(serializers.ModelSerializer):
    """One step of a lead's review stream: confirm, correct, send back, or skip."""

    lead = serializers.CharField(source="lead.username")
    action = serializers.CharField()
    returned_to = serializers.CharField(
        source="returned_to.username", allow_null=True, default=None
    )

    class Meta:
        model = ReviewDecision
        fields = [
            "id",
            "item",
            "action",
            "comment",
            "lead",
            "label",
            "returned_to",
            "returned_item",
            "created_at",
            "undone_at",
        ]


class ReviewItemOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    strategy = serializers.CharField()
    details = serializers.JSONField()
    image_id = serializers.IntegerField()
    image_url = serializers.CharField()
    gradcam_url = serializers.CharField(allow_null=True)
    gradcam_stored = serializers.BooleanField()
    gradcam_focused = serializers.BooleanField(allow_null=True)
    history = ReviewLabelOutput(many=True)
    answers = ReviewAnswerOutput(many=True)
    decisions = ReviewDecisionOutput(many=True)
    scores = ReviewScoreOutput(many=True)
    active_score = ReviewScoreOutput(allow_null=True)


def _item_payload(item: QueueItem, project: Project) -> dict:
    image = item.image
    gradcam = None
    if project.active_model_version_id:
        gradcam = reverse("project-review-gradcam", kwargs={"slug": project.slug, "pk": image.pk})
    stored = review_gradcam_stored(item=item, model_version_id=project.active_model_version_id)
    scores = list(image_scores(image=image))
    return {
        "id": item.pk,
        "status": item.status,
        "strategy": item.strategy,
        "details": item.details or {},
        "image_id": image.pk,
        "image_url": reverse("image-file", kwargs={"pk": image.pk}),
        "gradcam_url": gradcam,
        "gradcam_stored": stored is not None,
        "gradcam_focused": stored["focused"] if stored is not None else None,
        "history": list(label_history(image=image)),
        "answers": review_answers(image=image),
        "decisions": list(review_decisions(item=item)),
        "scores": scores,
        "active_score": next(
            (s for s in scores if s.model_version_id == project.active_model_version_id), None
        ),
    }


class ReviewNextOutput(serializers.Serializer):
    """The envelope review/next answers: the item, or null when none is left."""

    item = ReviewItemOutput(allow_null=True)


class ReviewNextApi(APIView):
    """The next open flagged item of the project (most suspicious first), or {"item": null}."""

    permission_classes = [IsLead]

    @extend_schema(responses=ReviewNextOutput)
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_review(request.user, project):
            raise PermissionDenied(_("Reviewing is for the project's leads."))
        item = review_item_for_lead(project=project, lead=request.user)
        if item is None:
            return Response({"item": None})
        return Response({"item": ReviewItemOutput(_item_payload(item, project)).data})


class ResolveInput(serializers.Serializer):
    confirm = serializers.BooleanField()
    value = serializers.CharField(required=False, allow_blank=True, max_length=64)
    subcategory = serializers.CharField(required=False, allow_blank=True, max_length=64)
    comment = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_COMMENT, trim_whitespace=True
    )


class StepInput(serializers.Serializer):
    comment = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_COMMENT, trim_whitespace=True
    )


def _review_item(request, pk: int) -> QueueItem:
    return get_object_or_404(
        QueueItem.objects.select_related("queue__project", "image"),
        pk=pk,
        queue__project__in=projects_visible_to(request.user),
        queue__kind=Queue.Kind.REVIEW,
    )


class ReviewResolveApi(APIView):
    """Answer a flagged item: {"confirm": true} keeps the label (CONFIRMATION);
    {"confirm": false, "value": "<class>"} writes a superseding CORRECTION."""

    permission_classes = [IsLead]

    @extend_schema(request=ResolveInput, responses={201: ReviewLabelOutput})
    def post(self, request, pk: int):
        item = _review_item(request, pk)
        data = ResolveInput(data=request.data)
        data.is_valid(raise_exception=True)
        decision = review_decide(
            item=item,
            lead=request.user,
            action="confirm" if data.validated_data["confirm"] else "correct",
            value=data.validated_data.get("value") or None,
            subcategory=data.validated_data.get("subcategory", ""),
            comment=data.validated_data.get("comment", ""),
        )
        return Response(ReviewLabelOutput(decision.label).data, status=status.HTTP_201_CREATED)


class _ReviewStepApi(APIView):
    """A lead's step on a flagged item that labels nothing but is recorded with its comment
    (``action`` of ``review_decide``)."""

    permission_classes = [IsLead]
    action = ""

    @extend_schema(request=StepInput, responses={201: ReviewDecisionOutput})
    def post(self, request, pk: int):
        item = _review_item(request, pk)
        data = StepInput(data=request.data)
        data.is_valid(raise_exception=True)
        decision = review_decide(
            item=item,
            lead=request.user,
            action=self.action,
            comment=data.validated_data.get("comment"),
        )
        return Response(ReviewDecisionOutput(decision).data, status=status.HTTP_201_CREATED)


class ReviewSkipApi(_ReviewStepApi):
    """Defer a flagged item: the lead's next items come from the others first, and deferred
    ones come back after them, the longest-deferred first. Nothing is labeled."""

    action = "skip"


class ReviewSendBackApi(_ReviewStepApi):
    """Reject the image's current label and send it back to the annotator who gave it, with
    the comment (required): their label is retracted, their labeling item re-opens with a
    lease for them, and they read the comment (GET review/returned/)."""

    action = "send_back"


class ReviewUndoApi(APIView):
    """Undo the lead's latest step in the project (confirm, correct, send back or skip): its
    labels are retracted and the replaced value written back; the item is open again."""

    permission_classes = [IsLead]

    @extend_schema(request=None, responses={200: ReviewDecisionOutput})
    def post(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_review(request.user, project):
            raise PermissionDenied(_("Reviewing is for the project's leads."))
        decision = review_undo_last(project=project, lead=request.user)
        return Response(ReviewDecisionOutput(decision).data)


class ReturnedOutput(serializers.Serializer):
    """A label of yours a lead sent back, with the lead's comment."""

    id = serializers.IntegerField()
    comment = serializers.CharField()
    lead = serializers.CharField(source="lead.username")
    created_at = serializers.DateTimeField()
    image_id = serializers.IntegerField(source="returned_item.image_id", allow_null=True)
    queue_id = serializers.IntegerField(source="returned_item.queue_id", allow_null=True)
    queue = serializers.CharField(source="returned_item.queue.name", allow_null=True)
    value = serializers.CharField(source="label.supersedes.value", allow_null=True)


class ReturnedApi(APIView):
    """Your labels that leads sent back to you (newest first), each with its comment."""

    @extend_schema(responses=ReturnedOutput(many=True))
    def get(self, request):
        rows = returned_for_annotator(annotator=request.user)
        return Response(ReturnedOutput(rows, many=True).data)


class AnnotatorQualityOutput(serializers.Serializer):
    annotator_id = serializers.IntegerField()
    username = serializers.CharField()
    labels = serializers.IntegerField()
    flagged = serializers.IntegerField()
    overturned = serializers.IntegerField()


class QualityApi(APIView):
    """Per annotator: labels given, flagged by noise detection, overturned by a lead."""

    permission_classes = [IsLead]

    @extend_schema(responses=AnnotatorQualityOutput(many=True))
    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        if not can_review(request.user, project):
            raise PermissionDenied(_("Reviewing is for the project's leads."))
        return Response(AnnotatorQualityOutput(annotator_quality(project=project), many=True).data)
