"""Send the items annotators disagreed on to the project's re-review queue (issue 9, item 8).

The lead's existing review page works them like the noise detector's suspects: confirm the
current label or correct it (labeling.services.labels.review_resolve). An image already in the
re-review queue, open or resolved, is not added again (`queue_items_add` skips it).
"""

from __future__ import annotations

from django.contrib.auth.models import User

from labeling.models import Project, Queue, Strategy
from labeling.selectors.agreement import shared_votes
from labeling.services.queues import queue_get_or_create, queue_items_add

# The most disagreements one call queues (the newest first); a second call queues the rest.
MAX_DISAGREEMENTS_QUEUED = 1000


def disagreements_queue(*, project: Project, lead: User) -> dict:
    """Queue up to MAX_DISAGREEMENTS_QUEUED disagreements for re-review. Returns how many
    disagreements there are, how many were added and how many were already in the queue."""
    votes = shared_votes(project=project)
    images = sorted(
        (image_id for image_id, by in votes.items() if len(set(by.values())) > 1), reverse=True
    )
    chosen = images[:MAX_DISAGREEMENTS_QUEUED]
    queue = queue_get_or_create(project=project, kind=Queue.Kind.REVIEW)
    users = dict(
        User.objects.filter(pk__in={a for i in chosen for a in votes[i]}).values_list(
            "pk", "username"
        )
    )
    added = queue_items_add(
        queue=queue,
        images=chosen,
        strategy=Strategy.MANUAL,
        details_by_image={
            image_id: {
                "reason": "disagreement",
                "votes": {users[a]: value for a, value in sorted(votes[image_id].items())},
            }
            for image_id in chosen
        },
        created_by=lead,
    )
    return {"disagreements": len(images), "added": added, "already_queued": len(chosen) - added}
