"""The domain model.

Rules that the schema itself enforces (see ARCHITECTURE.md, "Data rules"):
- Labels are append-only. A correction, a lead's review or an annotator's undo is a *new* Label
  that points at the one it supersedes; a label can be superseded at most once. The current
  label of an image is derived (see `labeling.selectors.labels`).
- An image's split (pool / validation) is fixed at import from its content hash, so the
  validation split is frozen and every model version is measured on the same images.
- A queue item is leased to at most `labels_needed` people at once, to each person at most once,
  through partial unique constraints that PostgreSQL and SQLite both enforce.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from labeling.keys import ACTION_NAMES, PAGE_NAMES, key_label, reserved_keys
from labeling.project_settings import (
    PROJECT_QUALITY,
    PROJECT_WEBHOOK,
    QUALITY_FIELDS,
    quality_default,
)

User = settings.AUTH_USER_MODEL


def validate_label_schema(schema: dict) -> None:
    """A project's label schema.

    {
      "classes": [{"key": "normal", "name": "Normal", "hotkey": "1"},
                  {"key": "disgusting", "name": "Disgusting", "hotkey": "2"}],
      "positive": "disgusting",           # the rare class the models look for
      "default": "normal",                # what grid mode pre-selects (the common class)
      "subcategories": [{"key": "animal", "name": "Animal", "hotkey": "a"}, ...]   # optional,
                                          # refine the positive class only
    }

    Any class or sub-category may also carry "names": {"zh-hans": "恶心", ...}, its display name
    per language code (the labeling pages show the reader's language, else "name").
    """
    if not isinstance(schema, dict):
        raise ValidationError(_("The label schema must be a JSON object."))
    classes = schema.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise ValidationError(_("The label schema needs at least two classes."))
    keys: list[str] = []
    hotkeys: list[str] = []
    for entry in classes + list(schema.get("subcategories") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ValidationError(_("Each class and sub-category needs a string 'key'."))
        key = entry["key"]
        if not key or len(key) > 64 or not key.replace("_", "").replace("-", "").isalnum():
            raise ValidationError(
                _("Invalid key %(key)r: use letters, digits, '-' or '_'.") % {"key": key}
            )
        keys.append(key)
        hotkey = entry.get("hotkey")
        if hotkey is not None:
            if not isinstance(hotkey, str) or len(hotkey) != 1:
                raise ValidationError(
                    _("Hotkey of %(key)r must be a single character.") % {"key": key}
                )
            hotkeys.append(hotkey.lower())
        names = entry.get("names")
        if names is not None and not (
            isinstance(names, dict)
            and all(isinstance(k, str) and isinstance(v, str) and v for k, v in names.items())
        ):
            raise ValidationError(
                _("'names' of %(key)r must map language codes to non-empty display names.")
                % {"key": key}
            )
    if len(set(keys)) != len(keys):
        raise ValidationError(_("Class and sub-category keys must be unique."))
    if len(set(hotkeys)) != len(hotkeys):
        raise ValidationError(_("Hotkeys must be unique."))
    # The pages' own keys (labeling.keys, the one declaration the page scripts read too).
    taken = reserved_keys()
    clashes = [
        _("%(key)s (%(uses)s)")
        % {
            "key": key_label(key),
            "uses": ", ".join(
                f"{PAGE_NAMES[page]}: {ACTION_NAMES[action]}" for page, action in taken[key]
            ),
        }
        for key in sorted(set(hotkeys) & set(taken))
    ]
    if clashes:
        raise ValidationError(
            _("These hotkeys are reserved by the labeling pages: %(keys)s. Choose other keys.")
            % {"keys": "; ".join(clashes)}
        )
    class_keys = [c["key"] for c in classes]
    if schema.get("positive") not in class_keys:
        raise ValidationError(_("'positive' must name one of the classes."))
    if schema.get("default", class_keys[0]) not in class_keys:
        raise ValidationError(_("'default' must name one of the classes."))


def schema_entry_name(entry: dict, language: str | None) -> str:
    """The display name of a schema class or sub-category for a language code ("zh-hans"):
    its "names" for that language (or the language's generic code, "zh"), else "name", else
    its key. Names are the project's data, written by its engineers, not UI strings."""
    names = entry.get("names") or {}
    if language:
        language = language.lower()
        for code in (language, language.split("-")[0]):
            if names.get(code):
                return names[code]
    return entry.get("name") or entry["key"]


def default_label_schema() -> dict:
    return {
        "classes": [
            {"key": "normal", "name": "Normal", "hotkey": "1"},
            {"key": "positive", "name": "Positive", "hotkey": "2"},
        ],
        "positive": "positive",
        "default": "normal",
        "subcategories": [],
    }


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    label_schema = models.JSONField(
        default=default_label_schema, validators=[validate_label_schema]
    )
    labels_per_item = models.PositiveSmallIntegerField(
        default=1, help_text="Overlap k: how many different annotators label each item."
    )
    validation_fraction = models.FloatField(
        default=0.1, help_text="Share of images frozen into the validation split at import."
    )
    blur_images = models.BooleanField(
        default=True, help_text="Blur images until hovered or revealed (disturbing content)."
    )
    lease_seconds = models.PositiveIntegerField(default=600)
    # Gold items and exposure limits (issue 9): declared in labeling.project_settings, which
    # gives their defaults here and validates them in clean().
    gold_rate = models.FloatField(default=quality_default("gold_rate"))
    gold_pause_below = models.FloatField(default=quality_default("gold_pause_below"))
    gold_pause_min_answers = models.PositiveIntegerField(
        default=quality_default("gold_pause_min_answers")
    )
    exposure_daily_cap = models.PositiveIntegerField(default=quality_default("exposure_daily_cap"))
    exposure_break_after = models.PositiveIntegerField(
        default=quality_default("exposure_break_after")
    )
    grid_min_ms_per_tile = models.PositiveIntegerField(
        default=quality_default("grid_min_ms_per_tile")
    )
    # Webhooks (issue 9, item 15): declared in labeling.project_settings (PROJECT_WEBHOOK);
    # empty URL = no webhooks. The secret signs every delivery and is never shown back.
    webhook_url = models.CharField(max_length=500, blank=True, default="")
    webhook_secret = models.CharField(max_length=200, blank=True, default="")
    members = models.ManyToManyField(User, blank=True, related_name="projects")
    active_model_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        validate_label_schema(self.label_schema)
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValidationError({"validation_fraction": _("Must be in [0, 1).")})
        if self.labels_per_item < 1:
            raise ValidationError({"labels_per_item": _("At least one label per item.")})
        for name in QUALITY_FIELDS:
            PROJECT_QUALITY.param(name).parse(getattr(self, name))
        # http(s), and a public address (labeling.services.webhook_url): DNS is asked here.
        PROJECT_WEBHOOK.param("webhook_url").parse(self.webhook_url)

    # Schema helpers ---------------------------------------------------------------------------
    @property
    def class_keys(self) -> list[str]:
        return [c["key"] for c in self.label_schema["classes"]]

    @property
    def subcategory_keys(self) -> list[str]:
        return [c["key"] for c in self.label_schema.get("subcategories") or []]

    @property
    def positive_class(self) -> str:
        return self.label_schema["positive"]

    @property
    def default_class(self) -> str:
        return self.label_schema.get("default", self.class_keys[0])

    def split_for_hash(self, content_hash: str) -> str:
        """Deterministic split from the content hash: the same image always lands the same."""
        digest = hashlib.sha256(f"{self.pk}:{content_hash}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") / 2**64
        return Image.Split.VALIDATION if bucket < self.validation_fraction else Image.Split.POOL


def image_upload_path(instance: Image, filename: str) -> str:
    ext = (instance.format or "bin").lower()
    h = instance.content_hash
    return f"images/{instance.project_id}/{h[:2]}/{h}.{ext}"


def thumbnail_upload_path(instance: Image, filename: str) -> str:
    h = instance.content_hash
    return f"thumbs/{instance.project_id}/{h[:2]}/{h}.jpg"


class Image(models.Model):
    class Split(models.TextChoices):
        POOL = "pool", _("Pool")
        VALIDATION = "validation", _("Validation (frozen)")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the file's bytes.")
    file = models.FileField(upload_to=image_upload_path, max_length=300)
    thumbnail = models.FileField(upload_to=thumbnail_upload_path, max_length=300, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10, help_text="Pillow format name: JPEG, PNG, ...")
    byte_size = models.PositiveBigIntegerField()
    source = models.CharField(max_length=500, blank=True, help_text="Original name or path.")
    split = models.CharField(max_length=12, choices=Split.choices, default=Split.POOL)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="image_unique_hash")
        ]
        indexes = [models.Index(fields=["project", "split"])]

    def __str__(self) -> str:
        return f"{self.source or self.content_hash[:12]} ({self.project_id})"


class Queue(models.Model):
    class Kind(models.TextChoices):
        LABELING = "labeling", _("Labeling (annotators)")
        REVIEW = "review", _("Re-review (leads only)")
        # The frozen validation split's own queue: filled at import, listed first, so the
        # images every model version is measured on get labeled early (issue 12).
        VALIDATION = "validation", _("Validation split (annotators)")
        # Gold items (issue 9): never listed, never opened; its items are mixed into the
        # claims of the project's other annotator queues (labeling.services.gold).
        GOLD = "gold", _("Gold items (hidden)")
        # Triage's fast confirm queue (labeling.services.triage): images the promoted model
        # scores confidently positive; its grid page pre-selects the positive class.
        CONFIRM = "confirm", _("Confirm positives (grid)")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queues")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.LABELING)
    labels_per_item = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Overrides the project's overlap k; empty = project's."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="queue_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.project} / {self.name}"

    @property
    def is_review(self) -> bool:
        return self.kind == self.Kind.REVIEW

    @property
    def effective_labels_per_item(self) -> int:
        if self.is_review:
            return 1
        return self.labels_per_item or self.project.labels_per_item


class Strategy(models.TextChoices):
    """Why an item was queued; every Label copies it so each strategy's yield is measurable."""

    MANUAL = "manual", _("Manual / imported")
    COLD_START = "cold_start", _("Cold-start recall")
    CONFIDENCE_BAND = "confidence_band", _("Confidence band")
    LOSS_RANKED = "loss_ranked", _("Loss-prediction top-K")
    BAND_AND_LOSS = "band_and_loss", _("Confidence band and loss top-K")
    RANDOM_AUDIT = "random_audit", _("Random audit")
    NOISE_REVIEW = "noise_review", _("Noise re-review (O2U)")
    # A stratified probability sample of the pool (labeling.services.audit), weighted by its
    # known inclusion probabilities in the pool estimates; served like any other item.
    POOL_AUDIT = "pool_audit", _("Pool audit (stratified sample)")
    # A cold-start seed, labeled positive by the engineer who picked it.
    SEED = "seed", _("Cold-start seed (engineer)")
    # An image of the frozen validation split, queued to be measured on, never chosen by a model.
    VALIDATION = "validation", _("Validation split")
    # Triage of the live pool (labeling.services.triage): a uniform sample of the images it
    # accepted without a person, labeled to measure its miss rate; and its confident positives.
    TRIAGE_AUDIT = "triage_audit", _("Triage audit (sample of the machine-accepted)")
    TRIAGE_CONFIRM = "triage_confirm", _("Triage: confirm a confident positive")
    # A gold item served to an annotator to measure them; their answer never counts as a label
    # of the image (labeling.selectors.labels.labels_active leaves it out).
    GOLD = "gold", _("Gold item")


class QueueItem(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        DONE = "done", _("Done")
        REMOVED = "removed", _("Removed")

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="queue_items")
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.MANUAL)
    priority = models.FloatField(default=0.0, help_text="Higher is served first.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    labels_needed = models.PositiveSmallIntegerField(default=1)
    labels_done = models.PositiveSmallIntegerField(default=0)
    details = models.JSONField(
        default=dict, blank=True, help_text="What produced it: scores, O2U rank, job id, ..."
    )
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "image"], name="queueitem_unique_image"),
            models.CheckConstraint(
                condition=Q(labels_done__lte=models.F("labels_needed")),
                name="queueitem_done_le_needed",
            ),
        ]
        indexes = [
            models.Index(fields=["queue", "status", "-priority", "id"], name="queueitem_next"),
            # The queue items page in serving order without a status filter, and the image
            # list's strategy filter (migration 0011).
            models.Index(fields=["queue", "-priority", "id"], name="queueitem_order"),
            models.Index(fields=["strategy", "image"], name="queueitem_strategy"),
            # The claim's index (labeling.services.hot_sql, migration 0016): open items only,
            # in serving order. With queueitem_next or queueitem_order the planner may walk
            # every done item at the head of the serving order, which grows with each label.
            models.Index(
                fields=["queue", "-priority", "id"],
                condition=Q(status="open"),
                name="queueitem_open",
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.pk} ({self.strategy}, {self.status})"


class QueueItemCount(models.Model):
    """Per queue, status and slot: a delta of the queue's item count in that status, kept by
    database triggers on labeling_queueitem (labeling.selectors.item_count_sql, migration 0017)
    so a queue's progress sums a few dozen rows instead of counting its items (issue 11). A
    count is the SUM over the slots; the slots spread concurrent submits over several rows.
    No foreign key: a trigger on the queue's DELETE removes its rows. Read-only for the code."""

    queue_id = models.BigIntegerField()
    status = models.CharField(max_length=8)
    slot = models.SmallIntegerField()
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["queue_id", "status", "slot"], name="queueitemcount_key"
            )
        ]

    def __str__(self) -> str:
        return f"queue {self.queue_id}, {self.status}, slot {self.slot}: {self.n}"


class Lease(models.Model):
    """One person's hold on one slot of a queue item, until it expires or is labeled."""

    class State(models.TextChoices):
        ACTIVE = "active", _("Active")
        COMPLETED = "completed", _("Completed (labeled)")
        EXPIRED = "expired", _("Expired")
        RELEASED = "released", _("Released (skipped or undone)")

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(User, on_delete=models.CASCADE, related_name="leases")
    slot = models.PositiveSmallIntegerField(default=0)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # The queue a gold item's lease was served in (its item lives in the hidden gold queue);
    # null for every other lease, whose queue is its item's.
    served_in = models.ForeignKey(
        Queue, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta:
        constraints = [
            # The race guard of last resort: one active holder per slot...
            models.UniqueConstraint(
                fields=["item", "slot"],
                condition=Q(state="active"),
                name="lease_one_active_per_slot",
            ),
            # ...and one person never holds or completes the same item twice (overlap k means
            # k *different* annotators).
            models.UniqueConstraint(
                fields=["item", "annotator"],
                condition=Q(state__in=["active", "completed"]),
                name="lease_one_per_annotator",
            ),
        ]
        indexes = [
            models.Index(fields=["annotator", "state"]),
            models.Index(fields=["state", "expires_at"]),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} of item {self.item_id} slot {self.slot} ({self.state})"


class Label(models.Model):
    class Kind(models.TextChoices):
        ANNOTATION = "annotation", _("Annotation")
        CORRECTION = "correction", _("Lead correction (flip)")
        CONFIRMATION = "confirmation", _("Lead confirmation")
        RETRACTION = "retraction", _("Retraction (undo)")
        IMPORTED = "imported", _("Imported")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labels")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="labels")
    annotator = models.ForeignKey(User, on_delete=models.PROTECT, related_name="labels")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.ANNOTATION)
    value = models.CharField(max_length=64, blank=True, help_text="Class key; empty for undo.")
    subcategory = models.CharField(max_length=64, blank=True)
    supersedes = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="superseded_by",
    )
    queue = models.ForeignKey(Queue, null=True, blank=True, on_delete=models.SET_NULL)
    queue_item = models.ForeignKey(
        QueueItem, null=True, blank=True, on_delete=models.SET_NULL, related_name="labels"
    )
    strategy = models.CharField(max_length=20, choices=Strategy.choices, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # Tiles on the grid page this label was submitted with (its duration_ms is the page's time
    # divided by them); null for a label given one image at a time.
    page_size = models.PositiveSmallIntegerField(null=True, blank=True)
    client_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Idempotency key from the browser, so a retried submit is stored once.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["supersedes"],
                condition=Q(supersedes__isnull=False),
                name="label_superseded_once",
            ),
            models.UniqueConstraint(
                fields=["annotator", "client_id"],
                condition=~Q(client_id=""),
                name="label_unique_client_id",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "image"]),
            models.Index(fields=["project", "annotator", "created_at"]),
            # The image list's annotator filter (migration 0011).
            models.Index(fields=["project", "annotator", "image"], name="label_annotator_image"),
            # "Has this person labeled this item?", asked by every claim and submit
            # (labeling.services.hot_sql, migration 0016): one probe, where the annotator's or
            # the item's index alone left the planner free to read all of a person's labels.
            models.Index(fields=["queue_item", "annotator"], name="label_item_annotator"),
            # Answers to gold items, for the gold accuracy table (migration 0015).
            models.Index(
                fields=["project", "created_at"],
                condition=Q(strategy="gold"),
                name="label_gold_answers",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.value!r} on image {self.image_id} by {self.annotator_id}"

    def save(self, *args, **kwargs):
        # Append-only: an existing label is never rewritten.
        if self.pk is not None and not kwargs.pop("_allow_update", False):
            raise ValidationError(
                _("Labels are append-only; write a new Label that supersedes it.")
            )
        super().save(*args, **kwargs)


class CurrentLabel(models.Model):
    """Each labeled image's current value, kept by a database trigger on labeling_label
    (labeling.selectors.current_sql, migration 0011) so pages and list filters read one row per
    image instead of deriving it from the whole history (issue 11, item 3). Read-only for the
    code: only the trigger writes it. `split` is the image's (fixed at import), copied so the
    split's counts are index-only."""

    image = models.OneToOneField(
        Image, primary_key=True, on_delete=models.CASCADE, related_name="current_row"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    split = models.CharField(max_length=12)
    value = models.CharField(max_length=64)

    class Meta:
        indexes = [
            models.Index(fields=["project", "value", "image"], name="currentlabel_value"),
            models.Index(fields=["project", "split", "value", "image"], name="currentlabel_split"),
        ]

    def __str__(self) -> str:
        return f"image {self.image_id}: {self.value!r}"


class AnnotatorTally(models.Model):
    """Per project, annotator, queue and hour (UTC): the counts the quality page and the
    annotator's own stats read, kept by a database trigger on labeling_label and on review
    queue items (labeling.selectors.tally_sql, migration 0015) so they cost a few hundred rows
    to read, not every label of the pool (issue 11, item 3). Read-only for the code.

    Every count is of ANNOTATION labels no RETRACTION supersedes: `annotations` all of them
    (answers to gold items included), `gold` those answers, `positives` those of the project's
    positive class; `flagged` and `overturned` (gold answers excluded) as in
    labeling.selectors.labels.annotator_quality. `queue_key` is the label's queue id, 0 for
    none."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    annotator_id = models.IntegerField()
    queue_key = models.IntegerField()
    hour = models.DateTimeField()
    annotations = models.IntegerField(default=0)
    gold = models.IntegerField(default=0)
    positives = models.IntegerField(default=0)
    flagged = models.IntegerField(default=0)
    overturned = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "annotator_id", "queue_key", "hour"], name="annotatortally_key"
            )
        ]
        indexes = [models.Index(fields=["project", "hour"], name="annotatortally_hour")]

    def __str__(self) -> str:
        return f"annotator {self.annotator_id}, queue {self.queue_key}, {self.hour}"


class GridTally(models.Model):
    """Per project, annotator and time per tile (ms, capped at tally_sql.GRID_MS_CAP; -1 for
    none): the grid tiles (annotations from grid pages, not undone) and their pages (1 / page
    size each), kept by the same trigger, so the rubber-stamp check counts pages faster than
    any floor and the median time per tile without reading the labels."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    annotator_id = models.IntegerField()
    ms = models.IntegerField()
    tiles = models.IntegerField(default=0)
    pages = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "annotator_id", "ms"], name="gridtally_key")
        ]

    def __str__(self) -> str:
        return f"annotator {self.annotator_id}, {self.ms} ms per tile"


class GoldItem(models.Model):
    """An image with a known answer, served unmarked among an annotator's items to measure
    them (issue 9, item 3). Its `item` sits in the project's hidden gold queue; answers to it
    are labels with strategy GOLD, which never count as the image's labels."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_items")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    item = models.OneToOneField(QueueItem, on_delete=models.CASCADE, related_name="gold")
    value = models.CharField(max_length=64)
    subcategory = models.CharField(max_length=64, blank=True)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "image"], name="golditem_unique_image")
        ]

    def __str__(self) -> str:
        return f"gold {self.value!r} on image {self.image_id}"


class AnnotatorPause(models.Model):
    """An annotator's labeling in a project stopped until a lead lifts it: their gold accuracy
    fell under the project's threshold (issue 9, item 3)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pauses")
    annotator = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    accuracy = models.FloatField()
    answers = models.PositiveIntegerField()
    threshold = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "annotator"],
                condition=Q(lifted_at__isnull=True),
                name="pause_one_active",
            )
        ]

    def __str__(self) -> str:
        return f"pause of {self.annotator_id} in {self.project_id}"


def checkpoint_upload_path(instance: ModelVersion, filename: str) -> str:
    return f"models/{instance.project_id}/{filename}"


class ModelVersion(models.Model):
    """A trained classifier (a cascade) and its metrics on the project's frozen validation split."""

    class Status(models.TextChoices):
        TRAINING = "training", _("Training")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=120)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.TRAINING)
    checkpoint = models.FileField(upload_to=checkpoint_upload_path, max_length=300, blank=True)
    config = models.JSONField(default=dict, blank=True)
    class_keys = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    data_snapshot = models.JSONField(default=dict, blank=True)
    pr_curve = models.FileField(upload_to=checkpoint_upload_path, max_length=300, blank=True)
    training_seconds = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="modelversion_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.project} / {self.name}"


class Score(models.Model):
    """A model version's output for one image. Written in bulk by scoring jobs (upserts)."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="scores")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="scores")
    stage1 = models.FloatField(help_text="Stage-1 probability of the positive class.")
    stage2 = models.FloatField(null=True, blank=True)
    score = models.FloatField(help_text="Cascade score used for ranking (min of the stages).")
    decision = models.BooleanField(default=False, help_text="stage1 AND stage2 positive.")
    predicted_loss = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="score_unique")
        ]
        indexes = [
            models.Index(fields=["model_version", "score"]),
            models.Index(fields=["model_version", "predicted_loss"]),
        ]

    def __str__(self) -> str:
        return f"score {self.score:.3f} of image {self.image_id} by {self.model_version_id}"


class Job(models.Model):
    """A background job (Celery) with progress the browser can poll, and a cancel switch."""

    class Kind(models.TextChoices):
        COLD_START = "cold_start", _("Cold-start recall")
        SCORE_POOL = "score_pool", _("Score the pool")
        SELECT = "select", _("Fill the labeling queue")
        DETECT_NOISE = "detect_noise", _("Noise detection (O2U)")
        TRAIN_CASCADE = "train_cascade", _("Train the cascade")
        IMPORT = "import", _("Import images")
        AUDIT = "audit", _("Audit the pool (estimates)")

    class Status(models.TextChoices):
        QUEUED = "queued", pgettext_lazy("job status", "Queued")
        RUNNING = "running", pgettext_lazy("job status", "Running")
        SUCCEEDED = "succeeded", pgettext_lazy("job status", "Succeeded")
        FAILED = "failed", pgettext_lazy("job status", "Failed")
        CANCELLED = "cancelled", pgettext_lazy("job status", "Cancelled")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=120, blank=True)
    percent = models.FloatField(default=0.0)
    log = models.JSONField(default=list, blank=True, help_text="Recent log lines.")
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Who runs it: "host:pid:attempt" of the worker process that started it. A redelivery
    # takes the job over at once when that process is provably gone (same host, no such
    # process), else only when the heartbeat stops (labeling.services.jobs.job_start).
    owner = models.CharField(max_length=200, blank=True)
    # When its task was last handed to the broker; None while never sent (the broker was down).
    # The recovery sweep sends a queued job again when this is missing or older than the
    # broker's last start (a Redis restart loses its messages): labeling.services.jobs.
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "kind", "status"])]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED}


class JobShard(models.Model):
    """One bounded chunk of a sharded job (pool scoring): an upsert key and a status guard."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DONE = "done", _("Done")

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="shards")
    index = models.PositiveIntegerField()
    image_ids = models.JSONField(default=list)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="jobshard_unique_index")
        ]

    def __str__(self) -> str:
        return f"shard {self.index} of job {self.job_id} ({self.status})"


class Preference(models.Model):
    """One person's view preferences in one project, kept on the server so they follow the
    person from browser to browser (static/labeling/prefs.js reads and writes them)."""

    class Protection(models.TextChoices):
        OFF = "off", _("Off: images shown as they are")
        BLUR = "blur", _("Blur until revealed: R or a click reveals the image on screen")
        SESSION = (
            "session",
            _("Blur until revealed once: the reveal stays on until you close the tab"),
        )
        GRAYSCALE = "grayscale", _("Grayscale: images shown without colour")

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="preferences")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="preferences")
    protection = models.CharField(max_length=10, choices=Protection.choices)
    pixelated = models.BooleanField(default=False)
    # When the person first saw the explanation of the protection modes (shown once).
    intro_seen_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="preference_one_per_project")
        ]

    def __str__(self) -> str:
        return f"preferences of user {self.user_id} in project {self.project_id}"


class TriageRun(models.Model):
    """One run of triage of the live pool (labeling.services.triage): the model version and
    thresholds it was started with, and whether it is running, paused by its own audit or
    stopped. At most one run of a project is running or paused at a time."""

    class Status(models.TextChoices):
        RUNNING = "running", pgettext_lazy("triage status", "Running")
        PAUSED = "paused", pgettext_lazy("triage status", "Paused")
        STOPPED = "stopped", pgettext_lazy("triage status", "Stopped")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="triage_runs")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="triage_runs"
    )
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    # Why it paused itself ("upper_bound" / "lower_bound", mlcore.estimates.triage_verdict)
    # and the audit's figures at that moment.
    pause_reason = models.CharField(max_length=20, blank=True)
    pause_figures = models.JSONField(default=dict, blank=True)
    started_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    reverted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=["running", "paused"]),
                name="triagerun_one_live_per_project",
            )
        ]

    def __str__(self) -> str:
        return f"triage run {self.pk} of {self.project} ({self.status})"


class TriageDecision(models.Model):
    """Where one run of triage sent one pool image. An *accepted* image was accepted without a
    person (machine-accepted): it holds no Label, so nothing trains on it unless an engineer
    asks; `reverted_at` undoes the decision (the image goes back to the normal flow and the
    queue item triage removed, if any, is open again)."""

    class Route(models.TextChoices):
        ACCEPTED = "accepted", _("Accepted without a person")
        CONFIRM = "confirm", _("Confirm queue")
        NORMAL = "normal", _("Normal queues")

    run = models.ForeignKey(TriageRun, on_delete=models.CASCADE, related_name="decisions")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="triage_decisions")
    route = models.CharField(max_length=8, choices=Route.choices)
    score = models.FloatField(help_text="The score triage decided on.")
    audited = models.BooleanField(
        default=False, help_text="Drawn into the audit of the machine-accepted images."
    )
    removed_item = models.ForeignKey(
        QueueItem,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The waiting queue item triage removed (opened again on revert).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    reverted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "image"], name="triagedecision_unique_image")
        ]
        indexes = [models.Index(fields=["run", "route", "audited"])]

    def __str__(self) -> str:
        return f"{self.route} image {self.image_id} (run {self.run_id})"


class AppendOnlyError(Exception):
    """Something tried to change or remove an audit event."""


class AuditEventQuerySet(models.QuerySet):
    """Append-only: a queryset of audit events refuses bulk updates and deletes."""

    def update(self, **kwargs):
        raise AppendOnlyError(_("The audit log is append-only."))

    def delete(self):
        raise AppendOnlyError(_("The audit log is append-only."))


class AuditEvent(models.Model):
    """One thing someone did that matters (issue 8, item 10), written by one service
    (labeling.services.audit_log) in the same transaction as the deed. Append-only: the model
    refuses saves of an existing row and deletes, the admin shows events read-only, and on
    PostgreSQL a trigger refuses UPDATE and DELETE (migration 0009). The actor and the project
    are kept as plain ids with their names copied, so deleting a person or a project never
    touches the log."""

    class Action(models.TextChoices):
        ROLE_CHANGED = "role_changed", _("Role changed")
        USER_CREATED = "user_created", _("Person added")
        MEMBERSHIP_CHANGED = "membership_changed", _("Project membership changed")
        PROJECT_CREATED = "project_created", _("Project created")
        IMAGES_IMPORTED = "images_imported", _("Images imported")
        LABELS_IMPORTED = "labels_imported", _("Labels imported")
        LABELS_EXPORTED = "labels_exported", _("Labels exported")
        JOB_STARTED = "job_started", _("Job started")
        JOB_CANCELLED = "job_cancelled", _("Job cancelled")
        MODEL_PROMOTED = "model_promoted", _("Model version promoted")
        MODEL_ROLLED_BACK = "model_rolled_back", _("Model version rolled back")
        LABEL_CORRECTED = "label_corrected", _("Label corrected by a lead")
        AUDIT_EXPORTED = "audit_exported", _("Audit log exported")

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # None: the system itself (an automatic promotion, a job started by another job).
    actor_id = models.IntegerField(null=True, blank=True, db_index=True)
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=24, choices=Action.choices)
    # None: not about one project (a role change, a new person).
    project_id = models.IntegerField(null=True, blank=True, db_index=True)
    project_slug = models.CharField(max_length=80, blank=True)
    # What it was done to, e.g. "user 12 (ann)", "job 40 (train_cascade)".
    target = models.CharField(max_length=300, blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["project_id", "-at"], name="audit_project_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action}"

    def save(self, *args, **kwargs):
        if self.pk is not None or not self._state.adding:
            raise AppendOnlyError(_("The audit log is append-only."))
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(_("The audit log is append-only."))


class WebhookDelivery(models.Model):
    """One event sent (or being sent) to a project's webhook URL: the delivery log engineers
    read (labeling.services.webhooks). The body is kept exactly as signed, so a retry sends the
    same bytes and the same delivery id (receivers deduplicate on it)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    event = models.CharField(max_length=40)
    url = models.CharField(max_length=500)
    body = models.TextField()
    # Set for events that must fire once per occurrence (a queue emptied): a second insert of
    # the same key is dropped by the unique constraint.
    dedupe_key = models.CharField(max_length=120, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"], name="webhook_project_at")]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "dedupe_key"],
                condition=~models.Q(dedupe_key=""),
                name="webhook_unique_dedupe_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} #{self.pk} ({self.status})"


class ReviewDecision(models.Model):
    """One step of a lead's review stream (labeling.services.review): a decision on a flagged
    item (confirm, correct, send back to the annotator) or a skip, with the lead's comment.
    The lead's "undo" walks back the latest one that is not undone yet (`undone_at`); the
    labels it wrote stay in the append-only history, retracted."""

    class Action(models.TextChoices):
        CONFIRM = "confirm", _("Confirmed")
        CORRECT = "correct", _("Corrected")
        SEND_BACK = "send_back", _("Sent back to the annotator")
        SKIP = "skip", _("Skipped")

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="review_decisions")
    lead = models.ForeignKey(User, on_delete=models.CASCADE, related_name="review_decisions")
    action = models.CharField(max_length=10, choices=Action.choices)
    comment = models.TextField(blank=True, max_length=2000)
    # The CONFIRMATION or CORRECTION a decision wrote; the RETRACTION a send-back wrote.
    label = models.ForeignKey(
        Label, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # A send-back: the annotator whose label went back, and their labeling-queue item.
    returned_to = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.CASCADE, related_name="returned_reviews"
    )
    returned_item = models.ForeignKey(
        QueueItem, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["lead", "-created_at"], name="reviewdecision_lead_at"),
            models.Index(fields=["returned_to", "-created_at"], name="reviewdecision_returned"),
        ]

    def __str__(self) -> str:
        return f"{self.action} of item {self.item_id} by {self.lead_id}"
