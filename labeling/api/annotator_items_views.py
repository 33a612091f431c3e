"""One annotator's flagged, overturned and gold-failed items (issue 9, item 9): what the quality
page's drill-down shows, for scripts. Leads and engineers of the project; annotators get 403
(gold must stay invisible to them); a person outside the project is a 404."""

from __future__ import annotations

from django.http import Http404
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.permissions import IsLead, can_review, project_visible_or_404
from labeling.selectors.annotator_items import annotator_items, project_person


class DrillItemOutput(serializers.Serializer):
    label_id = serializers.IntegerField()
    image_id = serializers.IntegerField()
    image_url = serializers.SerializerMethodField()
    answer = serializers.CharField(help_text="Their answer (a class key).")
    answered_at = serializers.DateTimeField()
    correct = serializers.CharField(
        allow_null=True, help_text="The correct answer; null while a re-review is undecided."
    )
    decided_at = serializers.DateTimeField(required=False, allow_null=True)
    decided_by = serializers.CharField(required=False, allow_null=True)
    review_item_id = serializers.IntegerField(required=False, allow_null=True)
    o2u_rank = serializers.IntegerField(required=False, allow_null=True)

    def get_image_url(self, row: dict) -> str:
        return reverse("image-file", kwargs={"pk": row["image_id"]})


class DrillListOutput(serializers.Serializer):
    total = serializers.IntegerField(help_text="All of them; `items` holds the newest 100.")
    items = DrillItemOutput(many=True)


class AnnotatorItemsOutput(serializers.Serializer):
    annotator_id = serializers.IntegerField()
    username = serializers.CharField()
    flagged = DrillListOutput()
    overturned = DrillListOutput()
    gold_failed = DrillListOutput()


class AnnotatorItemsApi(APIView):
    """The items behind one annotator's flagged, overturned and gold-accuracy figures."""

    permission_classes = [IsLead]

    @extend_schema(responses=AnnotatorItemsOutput)
    def get(self, request, slug: str, pk: int):
        project = project_visible_or_404(request.user, slug)
        if not can_review(request.user, project):
            raise PermissionDenied(_("Annotator quality is for the project's leads."))
        person = project_person(project=project, pk=pk)
        if person is None:
            raise Http404
        lists = annotator_items(project=project, annotator=person)
        return Response(
            AnnotatorItemsOutput(
                {"annotator_id": person.pk, "username": person.username, **lists}
            ).data
        )
