"""The labeling (queue) API: claim next, submit, skip, undo, grid batch submit, own throughput.

One view per operation. Each view parses its input, finds the queue or lease *scoped to what the
caller may see* (another project's queue, or somebody else's lease, is a 404, so ids leak
nothing), calls one service or selector, and serializes. Role rules come from
`labeling.permissions`; the services re-check them (a review queue is for leads only).

A service's `django.core.exceptions.ValidationError` (an expired lease, an item already done...)
becomes a 400 with the service's message, never a 500, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.models import Lease, Queue
from labeling.permissions import (
    IsAnnotator,
    is_site_wide,
    project_access_known,
    project_visible_or_404,
    queue_access_check,
)
from labeling.roles import user_role
from labeling.selectors.labels import annotator_recent_labels, annotator_stats
from labeling.selectors.queues import queue_progress
from labeling.services import hot_sql
from labeling.services.hot_path import labels_submit_in_order, lease_in_queue, lease_submit_quick
from labeling.services.labels import (
    label_undo_last,
    labels_submit_batch,
    lease_unskip,
)
from labeling.services.preferences import preference_read, preference_update
from labeling.services.queues import lease_skip, queue_claim_next

from . import queue_serializers as s


def _check_queue_roles(user, queue: Queue) -> None:
    queue_access_check(user, queue)  # the one statement of who may open a queue


def _visible(user) -> tuple[bool, bool]:
    """(has a role at all, sees every project): labeling.permissions.projects_visible_to's
    two questions, answered from the roles read with the token (no query)."""
    return user_role(user) is not None, is_site_wide(user)


@contextmanager
def _queue_for(user, pk: int) -> Iterator[Queue]:
    """The queue, if the user may label in it: 404 outside their projects, 403 for a review
    queue when they are not a lead.

    The queue is looked up *inside* the caller's projects (one statement, with its project:
    labeling.services.hot_sql), so finding it proves membership: within the block the
    permission checks (this view's and the service's) reuse that answer instead of asking the
    database again."""
    has_role, site_wide = _visible(user)
    queue = has_role and hot_sql.visible_queue(queue_id=pk, user=user, site_wide=site_wide)
    if not queue:
        raise Http404
    with project_access_known(user, queue.project_id, True):
        _check_queue_roles(user, queue)
        yield queue


@contextmanager
def _own_lease(user, pk: int) -> Iterator[Lease]:
    """The caller's own lease in a project they can see, with its item, queue and project (one
    statement); anybody else's lease is a 404. Same role checks as the queue (a lead demoted to
    annotator loses their review leases)."""
    has_role, site_wide = _visible(user)
    lease = has_role and hot_sql.own_lease(lease_id=pk, annotator=user, site_wide=site_wide)
    if not lease:
        raise Http404
    queue = lease.item.queue
    if queue.kind == Queue.Kind.GOLD and lease.served_in_id is not None:
        # A gold item mixed into a queue (labeling.services.gold): that queue's roles apply.
        lease.served_in = Queue.objects.get(pk=lease.served_in_id)
        lease.served_in.project = queue.project
        queue = lease.served_in
    with project_access_known(user, queue.project_id, True):
        _check_queue_roles(user, queue)
        yield lease


def _progress(queue: Queue) -> dict:
    return s.ProgressOutput(queue_progress(queue=queue)).data


# How old the progress counts in `next`'s answer may be. They are two count queries over the
# whole queue, which cost more than the claim itself on a large queue (about 8 ms of database
# CPU per call at 60,000 items, bench/latency.py), while the page only shows "done of total".
# So `next` reuses counts up to this many seconds old (per server process, or shared when the
# cache is Redis); undo, batch submit and stats always count afresh.
NEXT_PROGRESS_MAX_AGE_S = 2


def _recent_progress(queue: Queue) -> dict:
    key = f"labeling:queue-progress:{queue.pk}:{queue.created_at.timestamp()}"
    progress = cache.get(key)
    if progress is None:
        progress = _progress(queue)
        cache.set(key, progress, NEXT_PROGRESS_MAX_AGE_S)
    return progress


def _leases_payload(leases, queue: Queue, *, progress: bool = True, recent: bool = False) -> dict:
    counts = None
    if progress:
        counts = _recent_progress(queue) if recent else _progress(queue)
    return {"leases": [s.lease_payload(lease) for lease in leases], "progress": counts}


class _LabelingApi(APIView):
    """The labeling endpoints: annotators and up; a token request reads its roles in the same
    query as the token (labeling.api.authentication, the first of the default classes)."""

    permission_classes = [IsAnnotator]


@extend_schema(request=s.ClaimInput, responses=s.LeasesResponse)
class QueueNextApi(_LabelingApi):
    """Claim up to `count` items; the caller's own unfinished leases come back first.
    The queue's progress counts come along, up to NEXT_PROGRESS_MAX_AGE_S old;
    `"progress": false` leaves them out."""

    def post(self, request, pk: int):
        with _queue_for(request.user, pk) as queue:
            data = s.ClaimInput(data=request.data)
            data.is_valid(raise_exception=True)
            leases = queue_claim_next(
                queue=queue,
                annotator=request.user,
                count=data.validated_data["count"],
            )
            return Response(
                _leases_payload(
                    leases, queue, progress=data.validated_data["progress"], recent=True
                )
            )


@extend_schema(request=s.SubmitInput, responses=s.LabelResponse)
class LeaseSubmitApi(_LabelingApi):
    """Label one leased item. Retrying with the same `client_id` stores the label once."""

    def post(self, request, pk: int):
        with _own_lease(request.user, pk) as lease:
            data = s.SubmitInput(data=request.data, context={"project": lease.item.queue.project})
            data.is_valid(raise_exception=True)
            label = lease_submit_quick(lease=lease, annotator=request.user, **data.validated_data)
            return Response({"label": s.label_payload(label)})


@extend_schema(request=s.SubmitNextInput, responses=s.SubmitNextResponse)
class QueueSubmitNextApi(_LabelingApi):
    """Submit and claim in one round trip (the labeling page's pattern: answer one, take one
    more). The labels are stored as by `submit` (each lease the caller's own in this queue; all
    or none; a retried `client_id` stores nothing twice), then `count` items are claimed
    exactly as `next` claims them (own unfinished leases first). When the labels are stored but
    no item may be claimed (a paused queue, today's cap), the answer is still 200, with no
    leases and the reason in `stopped`, so a page never sends stored labels again."""

    def post(self, request, pk: int):
        with _queue_for(request.user, pk) as queue:
            data = s.SubmitNextInput(data=request.data, context={"project": queue.project})
            data.is_valid(raise_exception=True)
            entries = data.validated_data["entries"]
            has_role, site_wide = _visible(request.user)
            leases = {}
            for entry in entries:
                lease = hot_sql.own_lease(
                    lease_id=entry["lease"], annotator=request.user, site_wide=site_wide
                )
                if lease is not None and lease_in_queue(lease, queue):
                    lease.item.queue.project = queue.project
                    leases[lease.pk] = lease
            missing = [e["lease"] for e in entries if e["lease"] not in leases]
            if missing:
                raise serializers.ValidationError(
                    {
                        "entries": [
                            _("Leases %(leases)s are not yours in this queue.")
                            % {"leases": missing}
                        ]
                    }
                )
            count = data.validated_data["count"]
            claimed, stopped = [], None
            # One transaction, so one commit (one WAL flush) per label. The claim never waits
            # for a lock here (this transaction holds the submitted items' locks), and a claim
            # refused (a paused queue, today's cap) is raised before it writes anything, so the
            # labels stay.
            with transaction.atomic():
                if len(entries) == 1:
                    entry = dict(entries[0])
                    labels = [
                        lease_submit_quick(
                            lease=leases[entry.pop("lease")],
                            annotator=request.user,
                            in_transaction=True,
                            **entry,
                        )
                    ]
                else:
                    labels = labels_submit_in_order(
                        annotator=request.user,
                        entries=[{**e, "lease": leases[e["lease"]]} for e in entries],
                    )
                if count:
                    try:
                        claimed = queue_claim_next(
                            queue=queue, annotator=request.user, count=count, may_wait=False
                        )
                    except (DjangoValidationError, PermissionDenied) as exc:
                        stopped = " ".join(getattr(exc, "messages", None) or [str(exc)])
            payload = {"labels": [s.label_payload(label) for label in labels], "stopped": stopped}
            payload.update(
                _leases_payload(
                    claimed, queue, progress=data.validated_data["progress"], recent=True
                )
            )
            return Response(payload)


@extend_schema(request=None, responses=s.SkipResponse)
class LeaseSkipApi(_LabelingApi):
    """Give a leased item back without labeling it."""

    def post(self, request, pk: int):
        with _own_lease(request.user, pk) as lease:
            lease_skip(lease=lease, annotator=request.user)
            return Response({"lease": lease.pk, "skipped": True})


@extend_schema(request=s.UndoInput, responses=s.LeasesResponse)
class QueueUndoApi(_LabelingApi):
    """Retract the caller's last `count` labels in this queue; returns fresh leases on those
    items so the page can show them again."""

    def post(self, request, pk: int):
        with _queue_for(request.user, pk) as queue:
            data = s.UndoInput(data=request.data)
            data.is_valid(raise_exception=True)
            leases = label_undo_last(
                annotator=request.user,
                queue=queue,
                count=data.validated_data["count"],
                label_ids=data.validated_data.get("labels"),
            )
            payload = _leases_payload(leases, queue)
            payload["undone"] = s.UndoneOutput([lease.undone for lease in leases], many=True).data
            return Response(payload)


@extend_schema(request=None, responses=s.LeasesResponse)
class LeaseUnskipApi(_LabelingApi):
    """Walk back a skip: a fresh lease on the skipped item, while it is still free."""

    def post(self, request, pk: int):
        with _own_lease(request.user, pk) as lease:
            fresh = lease_unskip(lease=lease, annotator=request.user)
            return Response(_leases_payload([fresh], lease.item.queue, progress=False))


@extend_schema(parameters=[s.RecentInput], responses=s.RecentResponse)
class QueueRecentLabelsApi(_LabelingApi):
    """The caller's own latest labels in this queue ("my recent labels"), newest first, each
    with what became of it (current, undone, reviewed). A current one can be changed through
    undo with `labels: [id]`."""

    def get(self, request, pk: int):
        with _queue_for(request.user, pk) as queue:
            data = s.RecentInput(data=request.query_params)
            data.is_valid(raise_exception=True)
            rows = annotator_recent_labels(
                annotator=request.user, queue=queue, limit=data.validated_data["limit"]
            )
            return Response({"labels": s.RecentLabelOutput(rows, many=True).data})


@extend_schema(request=s.PreferenceInput, responses=s.PreferenceOutput)
class ProjectPreferencesApi(_LabelingApi):
    """The caller's own view preferences in a project they belong to: image protection (off,
    blur, session, grayscale), sharp pixels, and whether they saw the protection explanation.
    PATCH changes the fields it names."""

    def get(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        return Response(
            s.PreferenceOutput(preference_read(user=request.user, project=project)).data
        )

    def patch(self, request, slug: str):
        project = project_visible_or_404(request.user, slug)
        data = s.PreferenceInput(data=request.data)
        data.is_valid(raise_exception=True)
        prefs = preference_update(user=request.user, project=project, **data.validated_data)
        return Response(s.PreferenceOutput(prefs).data)


@extend_schema(request=s.BatchInput, responses=s.BatchResponse)
class QueueSubmitBatchApi(_LabelingApi):
    """Label a whole grid page in one request (all or nothing)."""

    def post(self, request, pk: int):
        with _queue_for(request.user, pk) as queue:
            data = s.BatchInput(data=request.data, context={"project": queue.project})
            data.is_valid(raise_exception=True)
            entries = data.validated_data["entries"]
            leases = {
                lease.pk: lease
                for lease in Lease.objects.select_related("item__image").filter(
                    # Gold items served in this queue live in the hidden gold queue.
                    Q(item__queue=queue) | Q(served_in=queue),
                    annotator=request.user,
                    pk__in=[e["lease"] for e in entries],
                )
            }
            missing = [e["lease"] for e in entries if e["lease"] not in leases]
            if missing:
                raise serializers.ValidationError(
                    {
                        "entries": [
                            _("Leases %(leases)s are not yours in this queue.")
                            % {"leases": missing}
                        ]
                    }
                )
            labels = labels_submit_batch(
                annotator=request.user,
                entries=[{**e, "lease": leases[e["lease"]]} for e in entries],
            )
            return Response(
                {"labels": s.LabelOutput(labels, many=True).data, "progress": _progress(queue)}
            )


@extend_schema(responses=s.StatsResponse)
class QueueStatsApi(_LabelingApi):
    """The caller's own throughput in this queue, and the queue's progress (both count the
    same queue, so the page's counters agree)."""

    def get(self, request, pk: int):
        with _queue_for(request.user, pk) as queue:
            stats = annotator_stats(project=queue.project, annotator=request.user, queue=queue)
            return Response({"stats": s.StatsOutput(stats).data, "progress": _progress(queue)})
