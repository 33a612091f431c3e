"""The pool audit in a real headless Chromium, a live server, a real Celery worker and the real
PostgreSQL (issue 10):

1. an engineer opens the project's estimates page (no audit yet), starts an audit from its form
   and the job runs in the worker;
2. an annotator labels by keyboard on the normal labeling page, where audit items and
   model-chosen items are mixed: no field of any API payload, no text of the page and no URL
   gives an audit item away; the annotator gets 403 on the estimates page;
3. the engineer reloads the estimates page as labels arrive and sees the estimates and the
   forecast change.

SIMULATION: the model version's scores and the annotator's answers come from a truth planted
in each image's metadata (tests.labeling.test_audit_e2e's helpers).
"""

from __future__ import annotations

import os
import re

import pytest

from labeling.models import Job, Queue, Score, Strategy
from labeling.services.queues import queue_get_or_create, queue_items_add
from tests.factories import make_project, make_user
from tests.labeling import worker as loop_worker
from tests.labeling.browser import ARGS, CHROMIUM, session_cookie
from tests.labeling.simulated import answer_on_page
from tests.labeling.test_audit_e2e import simulated_pool, simulated_version
from tests.labeling.test_browser import (
    all_keys,
    current_image_id,
)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir

pytestmark = pytest.mark.browser

# Words that would tell an annotator why an item is there.
TELLTALES = re.compile(r"audit|stratum|strata|pool_audit|strategy|confidence_band", re.I)
FORBIDDEN_KEYS = {"strategy", "details", "priority", "audit_id", "stratum", "score"}


def _figures(page) -> tuple[str, str]:
    """The estimates table's text and the forecast's text."""
    return page.locator("#estimates").inner_text(), page.locator("#forecast").inner_text()


@pytest.mark.django_db(transaction=True)
def test_audit_in_real_chromium(live_server, celery_worker, worker_storage):
    from playwright.sync_api import sync_playwright

    engineer, annotator = make_user("site_engineer"), make_user("annotator")
    project = make_project(members=[annotator])
    images, truth = simulated_pool(project, size=160, positives=12)
    version = simulated_version(project, images, truth)
    # Model-chosen work in the same queue: the 10 highest scores.
    queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    top = list(
        Score.objects.filter(model_version=version)
        .order_by("-score")
        .values_list("image_id", flat=True)[:10]
    )
    queue_items_add(queue=queue, images=top, strategy=Strategy.CONFIDENCE_BAND, priority=1.0)
    base = live_server.url
    estimates_url = f"{base}/projects/{project.slug}/estimates/"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # --- 1. The engineer starts an audit from the estimates page --------------------
            engineer_context = browser.new_context()
            engineer_context.add_cookies([session_cookie(engineer, live_server)])
            eng = engineer_context.new_page()
            eng.goto(estimates_url)
            assert eng.locator("#no-audit").is_visible()
            form = eng.locator("#start-audit")
            form.locator("input[name=labels]").fill("40")
            form.locator("input[name=strata]").fill("4")
            form.locator("button[type=submit]").click()
            eng.wait_for_url(f"{base}/jobs/*/")
            job = Job.objects.get(project=project, kind=Job.Kind.AUDIT)
            assert job.params["labels"] == 40 and job.params["strata"] == 4

            def finished() -> bool:
                job.refresh_from_db()
                return job.is_finished

            loop_worker.wait_for(finished, timeout=120, worker=celery_worker, what="the audit")
            assert job.status == Job.Status.SUCCEEDED, job.error
            eng.goto(estimates_url)
            assert eng.locator("#no-estimates").is_visible()

            # --- 2. The annotator labels; nothing tells audit items apart -------------------
            annotator_context = browser.new_context(viewport={"width": 1280, "height": 860})
            annotator_context.add_cookies([session_cookie(annotator, live_server)])
            ann = annotator_context.new_page()
            responses: list = []
            urls: list[str] = []
            ann.on("request", lambda r: urls.append(r.url))
            ann.on("response", lambda r: responses.append(r) if "/api/v1/" in r.url else None)
            payloads: list = []
            ann.goto(f"{base}/projects/{project.slug}/queues/{queue.pk}/label/")
            assert answer_on_page(ann, 15, responses, payloads, telltales=TELLTALES) == 15
            refused = ann.goto(estimates_url)
            assert refused is not None and refused.status == 403

            # --- 3. The engineer sees the estimates, then sees them move --------------------
            eng.goto(estimates_url)
            first_table, first_forecast = _figures(eng)
            assert eng.locator("#row-prevalence").is_visible()
            ann.goto(f"{base}/projects/{project.slug}/queues/{queue.pk}/label/")
            labeled = answer_on_page(ann, 100, responses, payloads, telltales=TELLTALES)
            assert labeled > 15
            eng.goto(estimates_url)
            second_table, second_forecast = _figures(eng)
            assert (second_table, second_forecast) != (first_table, first_forecast)
            assert current_image_id(ann) is None  # the queue is empty: all of it labeled
        finally:
            browser.close()

    assert payloads, "the labeling page made no API call"
    for payload in payloads:
        assert not FORBIDDEN_KEYS & all_keys(payload), payload
        assert not TELLTALES.search(str(payload)), payload
    assert not [url for url in urls if TELLTALES.search(url)]
    # Both kinds of item were served and labeled.
    labeled_strategies = set(
        queue.items.filter(labels_done__gt=0).values_list("strategy", flat=True)
    )
    assert {Strategy.POOL_AUDIT, Strategy.CONFIDENCE_BAND} <= labeled_strategies
