"""Webhooks (issue 9, item 15): a real Celery worker POSTs to a real HTTP server in this process.

The receiver is a threaded http.server on 127.0.0.1 that records each request and answers with
the statuses the test scripts (a 500 first, say). The worker runs with
IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE=1 (the receiver is on the loopback address the rule refuses by
default) and a backoff of a fraction of a second, so a retry comes within the test.

Checked: each event fired by its service function (promote, rollback, a failed job, the last
item of a queue done, training's hook), its signature verified as a receiver would, a retry
after a 500 with the same delivery id and body, a receiver that always fails or is not there
never breaking the action and ending as a failed delivery after the attempts allowed, the URL
rule (scheme, credentials, private and loopback addresses) wherever the setting is written, and
the log engineers read.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import Client
from django.urls import reverse

from labeling.api.serializers import ProjectUpdateInput
from labeling.models import Job, ModelVersion, Project, QueueItem, WebhookDelivery
from labeling.project_settings import PROJECT_WEBHOOK
from labeling.services import webhooks
from labeling.services.jobs import job_fail
from labeling.services.labels import lease_submit
from labeling.services.models import model_version_promote, model_version_rollback
from labeling.services.projects import project_update
from labeling.services.queues import queue_claim_next, queue_items_add
from labeling.services.webhook_url import webhook_url_check
from labeling.views.job_forms import job_form
from tests.factories import make_image, make_project, make_queue, make_user
from tests.labeling.worker import CeleryWorker, broker_flush, wait_for

MAX_ATTEMPTS = 3
WORKER_ENV = {
    "IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE": "1",
    "IMAGECLEAN_WEBHOOK_BACKOFF": "0.3",
    "IMAGECLEAN_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "IMAGECLEAN_WEBHOOK_TIMEOUT": "3",
}


class Receiver:
    """An HTTP server recording every POST; `statuses` are answered in turn (the last one
    repeats)."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append(
                        {"headers": dict(self.headers), "body": body, "path": self.path}
                    )
                    index = min(len(receiver.requests), len(receiver.statuses)) - 1
                    status = receiver.statuses[index]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/imageclean?x=1"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[str]:
        with self.lock:
            return [json.loads(r["body"])["event"] for r in self.requests]


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, tmp_path_factory):
    broker_flush()
    process = CeleryWorker(
        var_dir=tmp_path_factory.mktemp("webhooks-var"), env=WORKER_ENV, name="hooks"
    ).start(timeout=240)  # a loaded machine takes its time importing torch
    yield process
    process.stop()


@pytest.fixture
def allow_private(settings):
    # This process checks the URL when the setting is saved; the worker checks it again.
    settings.IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE = True
    return settings


def _ready_version(project, name: str) -> ModelVersion:
    # Promotion only needs a READY row with a checkpoint name; nothing loads the file here.
    return ModelVersion.objects.create(
        project=project, name=name, status=ModelVersion.Status.READY, checkpoint=f"ck/{name}.pt"
    )


def _settled(project, count: int):
    def check() -> bool:
        rows = WebhookDelivery.objects.filter(project=project)
        return (
            rows.count() >= count
            and not rows.filter(status=WebhookDelivery.Status.PENDING).exists()
        )

    return check


def _verified(request: dict, secret: str) -> dict:
    header = request["headers"][webhooks.SIGNATURE_HEADER]
    assert webhooks.webhook_verify(secret, header, request["body"])
    # The same signature over another body, or replayed ten minutes later, is refused.
    assert not webhooks.webhook_verify(secret, header, request["body"] + b" ")
    assert not webhooks.webhook_verify(secret, header, request["body"], now=time.time() + 600)
    assert not webhooks.webhook_verify("another secret", header, request["body"])
    return json.loads(request["body"])


# --- With a real worker and receiver ------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_promote_is_signed_and_retried_after_a_500(worker, allow_private):
    engineer = make_user("site_engineer")
    project = make_project(members=[engineer])
    v1 = _ready_version(project, "v1")
    with Receiver(statuses=(500, 200)) as receiver:
        project_update(project=project, webhook_url=receiver.url)
        model_version_promote(version=v1, by=engineer)
        wait_for(_settled(project, 1), timeout=60, worker=worker, what="the delivery")
        delivery = WebhookDelivery.objects.get(project=project)
        assert delivery.status == WebhookDelivery.Status.DELIVERED
        assert delivery.attempts == 2
        assert delivery.response_status == 200
        assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first["path"] == "/hooks/imageclean?x=1"
    project.refresh_from_db()
    assert len(project.webhook_secret) >= 40  # made on first use
    for request in (first, second):
        body = _verified(request, project.webhook_secret)
        assert request["headers"][webhooks.EVENT_HEADER] == "model_version.promoted"
        assert request["headers"][webhooks.DELIVERY_HEADER] == str(delivery.pk)
        assert body["event"] == "model_version.promoted"
        assert body["id"] == delivery.pk
        assert body["project"]["slug"] == project.slug
        assert body["data"]["model_version"]["name"] == "v1"
        assert body["data"]["by"] == engineer.username
    # A retry sends the same bytes (receivers deduplicate on the delivery id).
    assert first["body"] == second["body"]

    # The log engineers read: page and API.
    client = Client()
    client.force_login(engineer)
    page = client.get(reverse("project-webhooks", kwargs={"slug": project.slug}))
    assert page.status_code == 200
    html = page.content.decode()
    assert f'id="delivery-{delivery.pk}" data-status="delivered"' in html
    assert project.webhook_secret in html
    api = client.get(reverse("api-webhook-deliveries", kwargs={"slug": project.slug}))
    assert api.status_code == 200
    assert api.json()[0]["attempts"] == 2 and api.json()[0]["status"] == "delivered"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_rollback_job_failure_and_empty_queue_each_send_their_event(worker, allow_private):
    engineer = make_user("site_engineer")
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    queue = make_queue(project)
    queue_items_add(queue=queue, images=[make_image(project)], strategy="manual")
    v1, v2 = _ready_version(project, "v1"), _ready_version(project, "v2")
    model_version_promote(version=v1, by=engineer)  # before the URL: sends nothing
    job = Job.objects.create(
        project=project, kind=Job.Kind.TRAIN_CASCADE, status=Job.Status.RUNNING
    )
    with Receiver() as receiver:
        project_update(project=project, webhook_url=receiver.url)
        model_version_promote(version=v2, by=engineer)
        assert model_version_rollback(project=project, by=engineer) == v1
        job_fail(job_id=job.pk, error="CUDA out of memory")
        job_fail(job_id=job.pk, error="again")  # already finished: no second event
        (lease,) = queue_claim_next(queue=queue, annotator=annotator)
        lease_submit(lease=lease, annotator=annotator, value=project.default_class)
        assert not queue.items.filter(status=QueueItem.Status.OPEN).exists()
        wait_for(_settled(project, 4), timeout=60, worker=worker, what="four deliveries")
        time.sleep(1)  # nothing more comes
        assert sorted(receiver.events()) == sorted(
            ["model_version.promoted", "model_version.rolled_back", "job.failed", "queue.empty"]
        )
        secret = WebhookDelivery.objects.filter(project=project).first().project.webhook_secret
        bodies = {body["event"]: body for body in (_verified(r, secret) for r in receiver.requests)}
    rolled = bodies["model_version.rolled_back"]["data"]
    assert rolled["model_version"]["name"] == "v1" and rolled["from_version"]["name"] == "v2"
    assert bodies["job.failed"]["data"]["job"] == {
        "id": job.pk,
        "kind": Job.Kind.TRAIN_CASCADE,
        "error": "CUDA out of memory",
    }
    assert bodies["queue.empty"]["data"]["queue"]["id"] == queue.pk
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_failing_receiver_never_breaks_the_action(worker, allow_private):
    engineer = make_user("site_engineer")
    project = make_project()
    v1 = _ready_version(project, "v1")
    with Receiver(statuses=(503,)) as receiver:
        project_update(project=project, webhook_url=receiver.url)
        promoted = model_version_promote(version=v1, by=engineer)
        # The action is done before any delivery is tried, whatever the receiver does.
        project.refresh_from_db()
        assert promoted == v1 and project.active_model_version_id == v1.pk
        wait_for(_settled(project, 1), timeout=60, worker=worker, what="the attempts")
        delivery = WebhookDelivery.objects.get(project=project)
        assert delivery.status == WebhookDelivery.Status.FAILED
        assert delivery.attempts == MAX_ATTEMPTS == len(receiver.requests)
        assert delivery.response_status == 503

    # Nobody listening at all: connection refused, retried, then failed; the rollback stands.
    v2 = _ready_version(project, "v2")
    model_version_promote(version=v2, by=engineer)
    assert model_version_rollback(project=project, by=engineer) == v1
    wait_for(_settled(project, 3), timeout=60, worker=worker, what="the refused deliveries")
    refused = WebhookDelivery.objects.filter(project=project).exclude(pk=delivery.pk)
    assert [d.status for d in refused] == ["failed", "failed"]
    assert all(d.attempts == MAX_ATTEMPTS and d.response_status is None for d in refused)
    assert all("ConnectionRefused" in d.error for d in refused)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_4xx_is_not_retried_and_the_url_rule_is_checked_again_at_delivery(worker, settings):
    engineer = make_user("site_engineer")
    project = make_project()
    v1, v2 = _ready_version(project, "v1"), _ready_version(project, "v2")
    with Receiver(statuses=(410,)) as receiver:
        settings.IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE = True
        project_update(project=project, webhook_url=receiver.url)
        model_version_promote(version=v1, by=engineer)
        wait_for(_settled(project, 1), timeout=60, worker=worker, what="the delivery")
        delivery = WebhookDelivery.objects.get(project=project)
        assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, 410)
    # A URL written before the rule (or a name that now resolves to a private address) is
    # refused by the worker too, when its setting does not allow private addresses. The worker
    # here allows them, so the rule is checked in this process, as the worker would.
    settings.IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(ValidationError):
        webhook_url_check(receiver.url)
    assert v2.pk  # (v2 stays unpromoted: nothing else to send)


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_action_sends_nothing_and_no_url_records_nothing(worker, allow_private):
    engineer = make_user("site_engineer")
    project = make_project()
    v1 = _ready_version(project, "v1")
    model_version_promote(version=v1, by=engineer)
    assert not WebhookDelivery.objects.exists()  # no URL: nothing recorded
    with Receiver() as receiver:
        project_update(project=project, webhook_url=receiver.url)
        v2 = _ready_version(project, "v2")
        with pytest.raises(RuntimeError), transaction.atomic():
            model_version_promote(version=v2, by=engineer)
            raise RuntimeError("the caller's transaction fails after the promotion")
        time.sleep(2)
        assert not WebhookDelivery.objects.exists()
        assert receiver.requests == []


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_training_job_sends_trained_then_its_automatic_promotion(worker, allow_private):
    import torch

    from labeling.services.training import train_cascade_params_clean, train_cascade_run
    from tests.labeling.test_training import TINY, labeled_world

    project, _annotator, _images = labeled_world(seed0=7000)
    params = {**TINY, "epochs": 1, "auto_promote_precision": 0.0, "auto_promote_recall": 0.0}
    # The job row without job_create: its task must not reach the worker, which would race the
    # inline run below (the same body the worker runs).
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.TRAIN_CASCADE,
        params=train_cascade_params_clean(project=project, params=params),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Receiver() as receiver:
            project_update(project=project, webhook_url=receiver.url)
            train_cascade_run(job_id=job.pk)
            job.refresh_from_db()
            assert job.status == Job.Status.SUCCEEDED, job.error
            version = ModelVersion.objects.get(pk=job.result["model_version_id"])
            wait_for(_settled(project, 2), timeout=60, worker=worker, what="two deliveries")
            secret = Project.objects.get(pk=project.pk).webhook_secret
            bodies = [_verified(request, secret) for request in receiver.requests]
    finally:
        torch.set_num_threads(threads)
    assert sorted(body["event"] for body in bodies) == [
        "model_version.promoted",
        "model_version.trained",
    ]
    trained = next(body for body in bodies if body["event"] == "model_version.trained")
    assert trained["data"]["job_id"] == job.pk
    assert trained["data"]["model_version"]["id"] == version.pk
    assert trained["data"]["model_version"]["metrics"]["ap"] == version.metrics["cascade"]["ap"]
    promoted = next(body for body in bodies if body["event"] == "model_version.promoted")
    assert promoted["data"]["by"] is None  # the system promoted it, targets met


# --- The URL rule, wherever the setting is written --------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "http://user:pw@93.184.216.34/",
        "http://127.0.0.1:8000/",
        "http://localhost/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "javascript:alert(1)",
    ],
)
def test_the_url_rule_refuses(url, settings):
    settings.IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(ValidationError) as error:
        webhook_url_check(url)
    assert "webhook_url" in error.value.message_dict


def test_the_url_rule_accepts_public_addresses_and_private_ones_only_when_allowed(settings):
    settings.IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE = False
    assert webhook_url_check("https://93.184.216.34:8443/hook") == ["93.184.216.34"]
    settings.IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE = True
    assert webhook_url_check("http://127.0.0.1:9/") == ["127.0.0.1"]


@pytest.mark.django_db
def test_the_setting_is_declared_once_and_checked_by_model_api_and_form(settings):
    from labeling.project_settings import PROJECT_SETTINGS

    settings.IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE = False
    assert PROJECT_WEBHOOK in PROJECT_SETTINGS  # the setup page and the API pick it up
    assert "webhook_url" in ProjectUpdateInput().fields
    assert "webhook_url" in job_form(PROJECT_WEBHOOK).fields
    assert "webhook_secret" not in ProjectUpdateInput().fields  # made by the service only
    engineer = make_user("site_engineer")
    project = make_project(members=[engineer])
    with pytest.raises(ValidationError) as error:
        project_update(project=project, webhook_url="http://10.0.0.1/hook")
    assert "webhook_url" in error.value.message_dict
    client = Client()
    client.force_login(engineer)
    answer = client.patch(
        reverse("api-project-update", kwargs={"slug": project.slug}),
        data=json.dumps({"webhook_url": "http://169.254.169.254/"}),
        content_type="application/json",
    )
    assert answer.status_code == 400 and "webhook_url" in answer.json()
    page = client.post(
        reverse("project-webhooks-save", kwargs={"slug": project.slug}),
        {"webhook_url": "gopher://93.184.216.34/"},
        follow=True,
    )
    assert "Not saved" in page.content.decode()
    project.refresh_from_db()
    assert project.webhook_url == ""
    answer = client.patch(
        reverse("api-project-update", kwargs={"slug": project.slug}),
        data=json.dumps({"webhook_url": "https://93.184.216.34/hook"}),
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.content
    project.refresh_from_db()
    assert project.webhook_url == "https://93.184.216.34/hook"
    assert "webhook_secret" not in answer.json()


def test_signature_matches_the_documented_recipe():
    """docs/webhooks.md tells receivers: hex HMAC-SHA256 of "<t>.<body>" with the secret."""
    import hashlib
    import hmac

    body = b'{"event":"ping"}'
    header = webhooks.webhook_signature("s3cret", 1_700_000_000, body)
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert webhooks.webhook_verify("s3cret", header, body, now=1_700_000_100)
    assert not webhooks.webhook_verify("s3cret", header, body, now=1_700_000_400)
    assert not webhooks.webhook_verify("s3cret", "v1=" + expected, body, now=1_700_000_000)
