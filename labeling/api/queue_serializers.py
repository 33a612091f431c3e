"""Input and output serializers of the labeling (queue) API.

Annotators call these endpoints hundreds of times an hour, so the payloads are small and say
only what the labeling page needs: the lease, its item and the image to show. They never carry
model scores, the strategy that queued an item or its reasons (`QueueItem.details`), nor anybody
else's labels: a person who sees what the model thinks labels what the model thinks.
"""

from __future__ import annotations

from django.urls import get_script_prefix, reverse
from django.utils.translation import gettext as _
from rest_framework import serializers

from labeling.selectors.labels import RECENT_LABELS_MAX
from labeling.services.label_limits import (
    MAX_BATCH,
    MAX_CLAIM,
    MAX_CLIENT_ID_LENGTH,
    MAX_DURATION_MS,
    MAX_KEY_LENGTH,
    MAX_UNDO,
)
from labeling.services.labels import label_value_validate
from labeling.services.preferences import PROTECTIONS


# --- Inputs -----------------------------------------------------------------------------------
class ClaimInput(serializers.Serializer):
    count = serializers.IntegerField(min_value=1, max_value=MAX_CLAIM, default=1)
    # The queue's counts cost two queries over the whole queue; a client that does not show
    # them (a script, a benchmark) may leave them out.
    progress = serializers.BooleanField(default=True)


class UndoInput(serializers.Serializer):
    count = serializers.IntegerField(min_value=1, max_value=MAX_UNDO, default=1)
    # Exactly these labels (a reopened grid page, a change from the recent list) instead of
    # the last `count`.
    labels = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        min_length=1,
        max_length=MAX_UNDO,
        required=False,
    )


class RecentInput(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=RECENT_LABELS_MAX, default=30)


class PreferenceInput(serializers.Serializer):
    protection = serializers.ChoiceField(choices=PROTECTIONS, required=False)
    pixelated = serializers.BooleanField(required=False)
    intro_seen = serializers.BooleanField(required=False)


class _LabelFields(serializers.Serializer):
    """value/subcategory are checked against the project's label schema (context['project'])
    by the service's own rule (labeling.services.labels.label_value_validate), so the API and
    the service cannot disagree; DRF turns its ValidationError into this field's errors."""

    value = serializers.CharField(max_length=MAX_KEY_LENGTH)
    subcategory = serializers.CharField(
        max_length=MAX_KEY_LENGTH, required=False, allow_blank=True, default=""
    )
    duration_ms = serializers.IntegerField(
        min_value=0, max_value=MAX_DURATION_MS, required=False, allow_null=True, default=None
    )
    client_id = serializers.CharField(
        max_length=MAX_CLIENT_ID_LENGTH, required=False, allow_blank=True, default=""
    )

    def validate(self, attrs):
        label_value_validate(
            project=self.context["project"],
            value=attrs["value"],
            subcategory=attrs.get("subcategory") or "",
        )
        return attrs


class SubmitInput(_LabelFields):
    pass


class BatchEntryInput(_LabelFields):
    lease = serializers.IntegerField(min_value=1)


class SubmitNextInput(serializers.Serializer):
    """Submit-and-claim: the labels the page has ready (usually one; the outbox sends what it
    holds, in order), then a claim of `count` as `next` makes it (0: claim nothing)."""

    entries = BatchEntryInput(many=True, allow_empty=False, max_length=MAX_BATCH)
    count = serializers.IntegerField(min_value=0, max_value=MAX_CLAIM, default=1)
    progress = serializers.BooleanField(default=True)

    def validate_entries(self, entries):
        lease_ids = [entry["lease"] for entry in entries]
        if len(set(lease_ids)) != len(lease_ids):
            raise serializers.ValidationError(_("Each lease may appear once in a batch."))
        return entries


class BatchInput(serializers.Serializer):
    entries = BatchEntryInput(many=True, allow_empty=False, max_length=MAX_BATCH)

    def validate_entries(self, entries):
        lease_ids = [entry["lease"] for entry in entries]
        if len(set(lease_ids)) != len(lease_ids):
            raise serializers.ValidationError(_("Each lease may appear once in a batch."))
        return entries


# --- Outputs ----------------------------------------------------------------------------------
class LeaseImageOutput(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    thumb_url = serializers.SerializerMethodField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()

    def get_url(self, image) -> str:
        return reverse("image-file", args=[image.pk])

    def get_thumb_url(self, image) -> str:
        return reverse("image-thumb", args=[image.pk])


class LeaseOutput(serializers.Serializer):
    lease = serializers.IntegerField(source="pk")
    item = serializers.IntegerField(source="item_id")
    image = LeaseImageOutput(source="item.image")
    expires_at = serializers.DateTimeField()


# The labeling hot path writes its answers without running the serializers above (about 0.1 ms
# of CPU per field per object, for every label): `lease_payload` and `label_payload` build the
# same dicts, and tests/labeling/test_hot_path_queries.py checks they equal the serializers'
# output, which stay the declaration the OpenAPI schema is built from.
_DATETIME = serializers.DateTimeField()


def _image_urls(prefix: str) -> tuple[str, str, str, str]:
    # reverse() for every image would cost more than the rest of the payload: the URL pattern
    # is filled once per script prefix (a sentinel id, split around it).
    sentinel = "987654321"
    file_url = reverse("image-file", args=[int(sentinel)])
    thumb_url = reverse("image-thumb", args=[int(sentinel)])
    return (*file_url.split(sentinel, 1), *thumb_url.split(sentinel, 1))


_URLS: dict[str, tuple[str, str, str, str]] = {}


def lease_payload(lease) -> dict:
    """LeaseOutput(lease).data, built directly."""
    prefix = get_script_prefix()
    urls = _URLS.get(prefix)
    if urls is None:
        urls = _URLS[prefix] = _image_urls(prefix)
    image = lease.item.image
    pk = str(image.pk)
    return {
        "lease": lease.pk,
        "item": lease.item_id,
        "image": {
            "id": image.pk,
            "url": f"{urls[0]}{pk}{urls[1]}",
            "thumb_url": f"{urls[2]}{pk}{urls[3]}",
            "width": image.width,
            "height": image.height,
        },
        "expires_at": _DATETIME.to_representation(lease.expires_at),
    }


def label_payload(label) -> dict:
    """LabelOutput(label).data, built directly."""
    return {
        "id": label.pk,
        "image": label.image_id,
        "value": label.value,
        "subcategory": label.subcategory,
        "kind": label.kind,
        "client_id": label.client_id,
        "created_at": _DATETIME.to_representation(label.created_at),
    }


class LabelOutput(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    value = serializers.CharField()
    subcategory = serializers.CharField()
    kind = serializers.CharField()
    client_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class ProgressOutput(serializers.Serializer):
    open = serializers.IntegerField()
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    leased = serializers.IntegerField()


class StatsOutput(serializers.Serializer):
    total = serializers.IntegerField()
    last_window = serializers.IntegerField()
    per_minute = serializers.FloatField()


class UndoneOutput(serializers.Serializer):
    """The answer an undo took back, so the page can highlight it."""

    item = serializers.IntegerField(source="queue_item_id")
    label = serializers.IntegerField(source="id")
    value = serializers.CharField()
    subcategory = serializers.CharField()


class RecentLabelOutput(serializers.Serializer):
    id = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    thumb_url = serializers.SerializerMethodField()
    value = serializers.CharField()
    subcategory = serializers.CharField()
    created_at = serializers.DateTimeField()
    state = serializers.ChoiceField(choices=["current", "undone", "reviewed"])

    def get_thumb_url(self, row) -> str:
        return reverse("image-thumb", args=[row["image_id"]])


class PreferenceChoiceOutput(serializers.Serializer):
    value = serializers.CharField()
    label = serializers.CharField()


class PreferenceOutput(serializers.Serializer):
    protection = serializers.ChoiceField(choices=PROTECTIONS)
    pixelated = serializers.BooleanField()
    intro_seen = serializers.BooleanField()
    chosen = serializers.BooleanField()
    choices = PreferenceChoiceOutput(many=True)


# --- Response shapes, for the OpenAPI schema (the views build these dicts directly) ----------
class LeasesResponse(serializers.Serializer):
    leases = LeaseOutput(many=True)
    progress = ProgressOutput(required=False)
    undone = UndoneOutput(many=True, required=False)


class RecentResponse(serializers.Serializer):
    labels = RecentLabelOutput(many=True)


class LabelResponse(serializers.Serializer):
    label = LabelOutput()


class SkipResponse(serializers.Serializer):
    lease = serializers.IntegerField()
    skipped = serializers.BooleanField()


class BatchResponse(serializers.Serializer):
    labels = LabelOutput(many=True)
    progress = ProgressOutput()


class SubmitNextResponse(serializers.Serializer):
    labels = LabelOutput(many=True)
    leases = LeaseOutput(many=True)
    progress = ProgressOutput(required=False, allow_null=True)
    # Why no item was claimed although the labels were stored (a paused queue, today's cap):
    # the page stops as it would on `next`'s refusal; null otherwise.
    stopped = serializers.CharField(allow_null=True)


class StatsResponse(serializers.Serializer):
    stats = StatsOutput()
    progress = ProgressOutput()
