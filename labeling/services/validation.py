"""The frozen validation split's own queue: (re)filling it.

Every model version is measured on the validation split (labeling.services.training), so its
images must get labeled, and never because a model chose them. Imports put each validation
image into the project's VALIDATION queue (labeling.services.imports); this service is the
engineers' "refill" action (page and API) for images that are not there: imported before the
queue existed, queued into the ordinary labeling queue by an older import, or whose label was
retracted.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, OuterRef

from labeling.models import Image, Project, Queue, QueueItem, Strategy
from labeling.selectors.labels import labels_active
from labeling.selectors.validation import validation_not_queued_forget
from labeling.services.projects import project_validation_queue_ensure
from labeling.services.queues import queue_items_add


@transaction.atomic
def validation_queue_fill(*, project: Project, created_by: User | None = None) -> dict:
    """Queue every unlabeled validation image that has no open item in the validation queue;
    waiting items of those images in the ordinary labeling queues are removed (the validation
    queue serves them now, so nobody labels them twice). Returns the counts and the queue."""
    queue = project_validation_queue_ensure(project=project)
    unlabeled = (
        Image.objects.filter(project=project, split=Image.Split.VALIDATION)
        .exclude(Exists(labels_active(project=project).filter(image=OuterRef("pk"))))
        .exclude(Exists(QueueItem.objects.filter(queue=queue, image=OuterRef("pk"))))
        .order_by("pk")
    )
    ids = list(unlabeled.values_list("pk", flat=True))
    # Lock order: item rows by ascending id (labeling.services.queues).
    stray = list(
        QueueItem.objects.select_for_update()
        .filter(
            queue__project=project,
            queue__kind=Queue.Kind.LABELING,
            image_id__in=ids,
            status=QueueItem.Status.OPEN,
            labels_done=0,
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    QueueItem.objects.filter(pk__in=stray).update(status=QueueItem.Status.REMOVED)
    added = queue_items_add(
        queue=queue,
        images=ids,
        strategy=Strategy.VALIDATION,
        details={"source": "validation refill"},
        created_by=created_by,
    )
    # Now, for a reader in this transaction, and again once it commits (a reader between the
    # two may have counted the state from before).
    validation_not_queued_forget(project=project)
    transaction.on_commit(lambda: validation_not_queued_forget(project=project))
    return {"queue_id": queue.pk, "queue": queue.name, "added": added, "moved": len(stray)}
