"""Gold items, annotator checks and pauses (leads and engineers of the project; issue 9).

- `projects/<slug>/gold/`: GET the active gold items; POST {"images": [ids], "value": optional}
  marks them (their current label is the answer unless `value` is given).
- `projects/<slug>/gold/<image id>/unmark/`: POST stops serving that image as gold.
- `projects/<slug>/quality/checks/`: GET per annotator: gold accuracy with its count and 95%
  interval (overall, per class, per day), rubber-stamped grid pages, exposure to the positive
  class, and any active pause.
- `projects/<slug>/pauses/<pk>/lift/`: POST lifts an annotator's pause.
- `projects/<slug>/quality/agreement/`: GET agreement on items with more than one annotator:
  Cohen's kappa per pair, per annotator the mean kappa and the share against the majority,
  Fleiss' kappa, and the disagreements (labeling.selectors.agreement).
- `projects/<slug>/quality/disagreements/queue/`: POST sends the disagreements to the
  re-review queue (labeling.services.agreement).

Annotators get 403 (gold items and accuracy must stay invisible to them); another project is a
404. Views parse, call one service or selector, and serialize.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import AnnotatorPause, Project
from labeling.permissions import IsLead, can_review, project_visible_or_404
from labeling.project_settings import QUALITY_FIELDS
from labeling.selectors.agreement import agreement
from labeling.selectors.quality import annotator_checks, gold_items
from labeling.services.agreement import disagreements_queue
from labeling.services.gold import MAX_GOLD_MARK, gold_mark, gold_unmark, pause_lift


def _project_for_lead(user, slug: str) -> Project:
    project = project_visible_or_404(user, slug)
    if not can_review(user, project):
        raise PermissionDenied(_("Gold items and annotator checks are for the project's leads."))
    return project


class GoldMarkInput(serializers.Serializer):
    images = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=MAX_GOLD_MARK
    )
    value = serializers.CharField(max_length=64, required=False, allow_null=True, default=None)


class GoldItemOutput(serializers.Serializer):
    image = serializers.IntegerField(source="image_id")
    value = serializers.CharField()
    subcategory = serializers.CharField()
    active = serializers.BooleanField()
    answers = serializers.IntegerField(required=False)
    created_at = serializers.DateTimeField()


class RateOutput(serializers.Serializer):
    answers = serializers.IntegerField()
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)


class DayRateOutput(RateOutput):
    day = serializers.DateField()


class GoldAccuracyOutput(RateOutput):
    per_class = serializers.DictField(child=RateOutput())
    days = DayRateOutput(many=True)


class GridOutput(serializers.Serializer):
    tiles = serializers.IntegerField()
    fast_tiles = serializers.IntegerField()
    pages = serializers.IntegerField()
    fast_pages = serializers.IntegerField()
    fast_share = serializers.FloatField(allow_null=True)
    median_ms_per_tile = serializers.IntegerField(allow_null=True)


class ExposureOutput(serializers.Serializer):
    positives_today = serializers.IntegerField()
    positives_7_days = serializers.IntegerField()
    streak = serializers.IntegerField()


class PauseOutput(serializers.Serializer):
    id = serializers.IntegerField()
    since = serializers.DateTimeField()
    accuracy = serializers.FloatField()
    answers = serializers.IntegerField()
    threshold = serializers.FloatField()


class AnnotatorCheckOutput(serializers.Serializer):
    annotator_id = serializers.IntegerField()
    username = serializers.CharField()
    gold = GoldAccuracyOutput()
    grid = GridOutput(allow_null=True)
    exposure = ExposureOutput()
    pause = PauseOutput(allow_null=True)


class ChecksOutput(serializers.Serializer):
    settings = serializers.DictField()
    annotators = AnnotatorCheckOutput(many=True)


class GoldApi(APIView):
    """The project's active gold items (GET) and marking images as gold (POST)."""

    permission_classes = [IsLead]

    @extend_schema(responses=GoldItemOutput(many=True))
    def get(self, request, slug: str):
        project = _project_for_lead(request.user, slug)
        return Response(GoldItemOutput(gold_items(project=project), many=True).data)

    @extend_schema(request=GoldMarkInput, responses={201: GoldItemOutput(many=True)})
    def post(self, request, slug: str):
        project = _project_for_lead(request.user, slug)
        data = GoldMarkInput(data=request.data)
        data.is_valid(raise_exception=True)
        marked = gold_mark(
            project=project,
            images=data.validated_data["images"],
            value=data.validated_data["value"],
            user=request.user,
        )
        return Response(GoldItemOutput(marked, many=True).data, status=status.HTTP_201_CREATED)


class GoldUnmarkApi(APIView):
    """Stop serving an image as gold; answers given so far keep counting."""

    permission_classes = [IsLead]

    @extend_schema(request=None, responses=GoldItemOutput)
    def post(self, request, slug: str, image_id: int):
        project = _project_for_lead(request.user, slug)
        gold = gold_unmark(project=project, image_id=image_id, user=request.user)
        return Response(GoldItemOutput(gold).data)


class QualityChecksApi(APIView):
    """Per annotator: gold accuracy (count, 95% Wilson interval, per class, per day), grid
    pages faster than the project's floor per tile, exposure to the positive class, pause."""

    permission_classes = [IsLead]

    @extend_schema(responses=ChecksOutput)
    def get(self, request, slug: str):
        project = _project_for_lead(request.user, slug)
        settings = {name: getattr(project, name) for name in QUALITY_FIELDS}
        return Response(
            ChecksOutput(
                {"settings": settings, "annotators": annotator_checks(project=project)}
            ).data
        )


class PauseLiftApi(APIView):
    """Lift an annotator's pause: they may label again; the accuracy that can pause them
    again counts only gold answers given after this."""

    permission_classes = [IsLead]

    @extend_schema(request=None, responses=PauseOutput)
    def post(self, request, slug: str, pk: int):
        project = _project_for_lead(request.user, slug)
        pause = get_object_or_404(AnnotatorPause, project=project, pk=pk)
        pause = pause_lift(pause=pause, lead=request.user)
        return Response(
            {
                "id": pause.pk,
                "since": pause.created_at,
                "accuracy": pause.accuracy,
                "answers": pause.answers,
                "threshold": pause.threshold,
                "lifted_at": pause.lifted_at,
            }
        )


class PairOutput(serializers.Serializer):
    annotator_a = serializers.CharField()
    annotator_b = serializers.CharField()
    items = serializers.IntegerField()
    agreed = serializers.IntegerField()
    observed = serializers.FloatField()
    kappa = serializers.FloatField(allow_null=True)


class AnnotatorAgreementOutput(serializers.Serializer):
    annotator_id = serializers.IntegerField()
    username = serializers.CharField()
    shared_items = serializers.IntegerField()
    mean_kappa = serializers.FloatField(allow_null=True)
    majority_items = serializers.IntegerField()
    against_majority = serializers.IntegerField()
    against_majority_share = serializers.FloatField(allow_null=True)


class FleissOutput(serializers.Serializer):
    k = serializers.IntegerField()
    items = serializers.IntegerField()
    kappa = serializers.FloatField(allow_null=True)


class DisagreementOutput(serializers.Serializer):
    image = serializers.IntegerField()
    votes = serializers.DictField(child=serializers.CharField())
    current = serializers.CharField(allow_null=True)
    review_item = serializers.IntegerField(allow_null=True)


class AgreementOutput(serializers.Serializer):
    overlap = serializers.IntegerField()
    # The figures describe the images of the project's latest `window_annotations`
    # annotations (`window_images` of them), not the whole project (selectors.agreement).
    window_annotations = serializers.IntegerField()
    window_images = serializers.IntegerField()
    shared_items = serializers.IntegerField()
    fleiss = FleissOutput()
    pairs = PairOutput(many=True)
    annotators = AnnotatorAgreementOutput(many=True)
    disagreement_count = serializers.IntegerField()
    disagreements = DisagreementOutput(many=True)


class DisagreementsQueuedOutput(serializers.Serializer):
    disagreements = serializers.IntegerField()
    added = serializers.IntegerField()
    already_queued = serializers.IntegerField()


class AgreementApi(APIView):
    """Agreement on items labeled by more than one annotator: Cohen's kappa per pair, per
    annotator the mean kappa and the share of items against the majority, Fleiss' kappa, and
    the newest disagreements with their votes and re-review item."""

    permission_classes = [IsLead]

    @extend_schema(responses=AgreementOutput)
    def get(self, request, slug: str):
        project = _project_for_lead(request.user, slug)
        return Response(AgreementOutput(agreement(project=project)).data)


class DisagreementsQueueApi(APIView):
    """Send the items annotators disagreed on to the project's re-review queue."""

    permission_classes = [IsLead]

    @extend_schema(request=None, responses=DisagreementsQueuedOutput)
    def post(self, request, slug: str):
        project = _project_for_lead(request.user, slug)
        result = disagreements_queue(project=project, lead=request.user)
        return Response(DisagreementsQueuedOutput(result).data)
