"""Webhooks (issue 9, item 15): a project's events POSTed, signed, to the URL its engineers set.

How it fits together (docs/webhooks.md says it for receivers):

- The URL and the secret are project settings declared once in labeling.project_settings
  (PROJECT_WEBHOOK); `webhook_url_check` is the URL's rule, used when the setting is saved and
  again before every attempt (a name that resolved to a public address may not any more).
- The one service function of each action calls `webhook_emit` (model_version_promote,
  model_version_rollback, the training job, job_fail, a queue item's completion). `webhook_emit`
  writes a WebhookDelivery row in the caller's transaction and sends the delivery task once it
  commits. It never raises: a broken receiver, a broker outage or a bad URL must not undo a
  promotion or a label.
- `webhook_attempt` (the Celery task labeling.tasks.webhook_deliver calls it) makes one POST and
  records it on the row: delivered on 2xx; retried with exponential backoff on a network error,
  a timeout, 408, 429 or 5xx, until IMAGECLEAN_WEBHOOK_MAX_ATTEMPTS; failed at once on any other
  answer (a redirect is not followed: it could point anywhere, the cluster's own services
  included).

The body is signed with HMAC-SHA256 over "<timestamp>.<body>" (Stripe's scheme, which receivers
already know how to check); the timestamp is that of the attempt, so a receiver can refuse
replays older than a few minutes without refusing our late retries. `webhook_verify` is the
reference check (the tests use it; docs/webhooks.md shows the same in a few lines).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import random
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_lazy

from labeling.models import Job, ModelVersion, Project, Queue, QueueItem, WebhookDelivery
from labeling.services.webhook_url import webhook_url_check

logger = logging.getLogger(__name__)

TASK_NAME = "labeling.tasks.webhook_deliver"
SIGNATURE_HEADER = "X-Imageclean-Signature"
EVENT_HEADER = "X-Imageclean-Event"
DELIVERY_HEADER = "X-Imageclean-Delivery"
# How far a receiver should let the signed timestamp drift from its clock (seconds).
REPLAY_TOLERANCE = 300
# Answers worth another try: the receiver is down, busy or timed out, not refusing.
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# How many deliveries the log shows.
LOG_SIZE = 50
MAX_ERROR_CHARS = 500


class Event:
    """The events a project's webhook receives, as the "event" field and header name them."""

    TRAINED = "model_version.trained"
    PROMOTED = "model_version.promoted"
    ROLLED_BACK = "model_version.rolled_back"
    JOB_FAILED = "job.failed"
    QUEUE_EMPTY = "queue.empty"
    PING = "ping"


EVENT_DESCRIPTIONS = {
    Event.TRAINED: gettext_lazy("A training job stored a new model version."),
    Event.PROMOTED: gettext_lazy("A model version became the project's active one."),
    Event.ROLLED_BACK: gettext_lazy("The active model version was rolled back."),
    Event.JOB_FAILED: gettext_lazy("A job failed."),
    Event.QUEUE_EMPTY: gettext_lazy("A queue's last open item was done."),
    Event.PING: gettext_lazy("A test event sent from the webhooks page."),
}


# --- The secret --------------------------------------------------------------------------------
def webhook_secret(*, project: Project) -> str:
    """The project's signing secret, made on first need (32 random bytes, URL-safe text): a
    secret people pick is weaker, and one made here is never typed into a form. Engineers read
    it on the webhooks page to configure their receiver."""
    if project.webhook_secret:
        return project.webhook_secret
    made = secrets.token_urlsafe(32)
    # Two first uses at once keep the one written first.
    Project.objects.filter(pk=project.pk, webhook_secret="").update(webhook_secret=made)
    project.webhook_secret = (
        Project.objects.filter(pk=project.pk).values_list("webhook_secret", flat=True).get()
    )
    return project.webhook_secret


def webhook_secret_rotate(*, project: Project) -> str:
    """A new secret; deliveries signed from now on use it (a retry of an older one too)."""
    project.webhook_secret = secrets.token_urlsafe(32)
    Project.objects.filter(pk=project.pk).update(webhook_secret=project.webhook_secret)
    return project.webhook_secret


# --- Signing -----------------------------------------------------------------------------------
def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: int = REPLAY_TOLERANCE,
    now: float | None = None,
) -> bool:
    """What a receiver does: the header's timestamp is recent and its v1 matches the body."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _sep, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = webhook_signature(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


# --- Emitting ----------------------------------------------------------------------------------
def _version(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    # The cascade's figures on the frozen validation split (stage figures stay on the page).
    cascade = (version.metrics or {}).get("cascade") or {}
    return {
        "id": version.pk,
        "name": version.name,
        "status": version.status,
        "metrics": {key: cascade.get(key) for key in ("precision", "recall", "ap")},
    }


def webhook_emit(
    *, project: Project, event: str, data: dict[str, Any], dedupe_key: str = ""
) -> WebhookDelivery | None:
    """Queue `event` for the project's webhook, if it has one; None otherwise or when anything
    goes wrong (logged). Runs inside the caller's transaction (a rolled-back action sends
    nothing) and sends the task after it commits. `dedupe_key`: an event that must fire once
    per occurrence; a second emit with the same key is dropped."""
    try:
        url = Project.objects.filter(pk=project.pk).values_list("webhook_url", flat=True).first()
        if not url:
            return None
        # A savepoint: a failed insert (a duplicate key) must not break the caller's transaction.
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                project_id=project.pk, event=event, url=url, body="", dedupe_key=dedupe_key
            )
            body = {
                "id": delivery.pk,
                "event": event,
                "created_at": delivery.created_at.isoformat(),
                "project": {"id": project.pk, "slug": project.slug, "name": project.name},
                "data": data,
            }
            delivery.body = json.dumps(body, sort_keys=True, default=str)
            delivery.save(update_fields=["body"])
    except IntegrityError:
        return None  # already sent for this occurrence
    except DatabaseError:
        logger.exception("webhook %s of project %s not recorded", event, project.pk)
        return None
    _send_on_commit(delivery.pk)
    return delivery


def _send_on_commit(delivery_id: int, countdown: float | None = None) -> None:
    def send() -> None:
        from config.celery import app

        try:
            app.send_task(TASK_NAME, args=[delivery_id], countdown=countdown)
        except Exception:
            # The broker is down: the row stays pending in the log, where it shows.
            logger.exception("webhook delivery %s not enqueued", delivery_id)

    transaction.on_commit(send)


def emit_trained(version: ModelVersion, *, job_id: int | None) -> None:
    webhook_emit(
        project=version.project,
        event=Event.TRAINED,
        data={"model_version": _version(version), "job_id": job_id},
        dedupe_key=f"trained:{version.pk}",  # a retried training job finds its version again
    )


def emit_promoted(version: ModelVersion, *, previous_id: int | None, by) -> None:
    webhook_emit(
        project=version.project,
        event=Event.PROMOTED,
        data={
            "model_version": _version(version),
            "previous_version_id": previous_id,
            "by": by.get_username() if by is not None else None,
        },
    )


def emit_rolled_back(*, project: Project, to: ModelVersion, from_: ModelVersion, by) -> None:
    webhook_emit(
        project=project,
        event=Event.ROLLED_BACK,
        data={
            "model_version": _version(to),
            "from_version": _version(from_),
            "by": by.get_username() if by is not None else None,
        },
    )


def emit_job_failed(job: Job) -> None:
    webhook_emit(
        project=job.project,
        event=Event.JOB_FAILED,
        data={"job": {"id": job.pk, "kind": job.kind, "error": job.error[:MAX_ERROR_CHARS]}},
        dedupe_key=f"job.failed:{job.pk}",
    )


def emit_queue_empty_on_commit(queue: Queue) -> None:
    """Called when an item of `queue` is done, inside the labeling transaction. After the commit
    (so two annotators finishing the last two items both see the final state): when no item is
    open any more, send queue.empty once, keyed on the queue and its newest done item (two
    emits for the same emptying share the key; a queue refilled and emptied again gets a new
    one). The hidden gold queue never counts."""
    # The project came with the item's lock (select_related): no query when it has no webhook,
    # so the labeling hot path stays as it was (tests/labeling/test_hot_path_queries.py).
    if queue.kind == Queue.Kind.GOLD or not queue.project.webhook_url:
        return
    project_id, queue_id = queue.project_id, queue.pk

    def check() -> None:
        try:
            project = Project.objects.filter(pk=project_id).exclude(webhook_url="").first()
            if project is None:
                return
            items = QueueItem.objects.filter(queue_id=queue_id)
            if items.filter(status=QueueItem.Status.OPEN).exists():
                return
            last = items.order_by("-done_at", "-pk").values_list("pk", flat=True).first()
            queue_now = Queue.objects.get(pk=queue_id)
            webhook_emit(
                project=project,
                event=Event.QUEUE_EMPTY,
                data={"queue": {"id": queue_id, "name": queue_now.name, "kind": queue_now.kind}},
                dedupe_key=f"queue.empty:{queue_id}:{last}",
            )
        except Exception:
            logger.exception("queue.empty check of queue %s failed", queue_id)

    transaction.on_commit(check)


def webhook_ping(*, project: Project) -> WebhookDelivery | None:
    """A test event, sent from the webhooks page so an engineer can check their receiver."""
    return webhook_emit(project=project, event=Event.PING, data={})


# --- Delivering --------------------------------------------------------------------------------
class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, not to whatever the name resolves to a moment
    later (DNS rebinding would otherwise turn a checked public name into a private address)."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the host name, as for any https call.
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class Attempt:
    status: int | None  # the HTTP status, None when no answer came
    error: str
    refused: bool = False  # the URL broke its rule: no retry changes that


def _post(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    try:
        addresses = webhook_url_check(url)
    except ValidationError as error:
        return Attempt(None, "; ".join(error.messages), refused=True)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    connection_class = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(
        parts.hostname, port, addresses[0], timeout=settings.IMAGECLEAN_WEBHOOK_TIMEOUT
    )
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)  # the receiver's answer is not kept; read a little, politely
        return Attempt(response.status, "" if response.status < 300 else response.reason)
    except (OSError, http.client.HTTPException) as error:
        return Attempt(None, f"{type(error).__name__}: {error}")
    finally:
        connection.close()


def retry_delay(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: the base doubled per attempt made, plus up to a
    quarter more so receivers coming back up are not hit by every sender at once."""
    base = settings.IMAGECLEAN_WEBHOOK_BACKOFF * 2 ** (attempts - 1)
    return base * random.uniform(1.0, 1.25)


def webhook_attempt(*, delivery_id: int) -> float | None:
    """One POST of a pending delivery, recorded on its row. Returns the seconds to wait before
    the next attempt, or None when the delivery is settled (delivered, failed, or no longer
    pending: a second message for it does nothing)."""
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id,
        status=WebhookDelivery.Status.PENDING,
        attempts__lt=settings.IMAGECLEAN_WEBHOOK_MAX_ATTEMPTS,
    ).update(attempts=F("attempts") + 1, last_attempt_at=timezone.now())
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("project").get(pk=delivery_id)
    secret = webhook_secret(project=delivery.project)
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "imageclean-webhooks/1",
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.pk),
        SIGNATURE_HEADER: webhook_signature(secret, int(time.time()), body),
    }
    attempt = _post(delivery.url, body, headers)
    fields: dict[str, Any] = {
        "response_status": attempt.status,
        "error": attempt.error[:MAX_ERROR_CHARS],
    }
    delay = None
    if attempt.status is not None and 200 <= attempt.status < 300:
        fields.update(status=WebhookDelivery.Status.DELIVERED, delivered_at=timezone.now())
    elif (
        (attempt.status is None and not attempt.refused) or attempt.status in RETRYABLE_STATUSES
    ) and delivery.attempts < settings.IMAGECLEAN_WEBHOOK_MAX_ATTEMPTS:
        delay = retry_delay(delivery.attempts)
    else:
        fields["status"] = WebhookDelivery.Status.FAILED
    WebhookDelivery.objects.filter(pk=delivery_id).update(**fields)
    return delay


# --- The log -----------------------------------------------------------------------------------
def webhook_deliveries(*, project: Project, limit: int = LOG_SIZE) -> list[WebhookDelivery]:
    return list(
        WebhookDelivery.objects.filter(project=project).order_by("-created_at", "-pk")[:limit]
    )
