"""Triage of the live pool in a real headless Chromium, a live server, a real Celery worker and
the real PostgreSQL (issue 10, item 4):

1. an engineer opens the estimates page (no triage yet), starts triage from its form (the form
   is built from labeling.services.triage.TRIAGE) and the worker routes the pool: the page
   shows the images accepted without a person, the confirm queue, the audit;
2. an annotator labels on the normal labeling page, where triage's audit items are served:
   nothing on the page, in the API payloads or in the URLs says "triage", and the annotator
   gets 403 on the estimates page;
3. the engineer sees the audit's labels and the miss rate's interval, stops the run and
   reverts it; a lead sees the figures but no control.

SIMULATION: the model version's scores and the annotator's answers come from a truth planted
in each image's metadata (tests.labeling.test_audit_e2e's helpers).
"""

from __future__ import annotations

import os
import re

import pytest

from labeling.models import Queue, QueueItem, Strategy, TriageRun
from tests.factories import make_project, make_user
from tests.labeling import worker as loop_worker
from tests.labeling.browser import ARGS, CHROMIUM, session_cookie
from tests.labeling.simulated import answer_on_page
from tests.labeling.test_audit_e2e import simulated_pool, simulated_version
from tests.labeling.test_browser import all_keys

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir

pytestmark = pytest.mark.browser

TELLTALES = re.compile(r"triage|audit|strategy|confirm_at|machine", re.I)
FORBIDDEN_KEYS = {"strategy", "details", "priority", "triage_run", "score", "rule"}


@pytest.mark.django_db(transaction=True)
def test_triage_in_real_chromium(live_server, celery_worker, worker_storage):  # noqa: F811
    from playwright.sync_api import sync_playwright

    engineer, lead, annotator = (
        make_user("site_engineer"),
        make_user("lead"),
        make_user("annotator"),
    )
    project = make_project(members=[lead, annotator])
    images, truth = simulated_pool(project, size=120, positives=8)
    simulated_version(project, images, truth)
    base = live_server.url
    estimates_url = f"{base}/projects/{project.slug}/estimates/"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # --- 1. The engineer starts triage from the estimates page ----------------------
            engineer_context = browser.new_context()
            engineer_context.add_cookies([session_cookie(engineer, live_server)])
            eng = engineer_context.new_page()
            eng.goto(estimates_url)
            assert eng.locator("#no-triage").is_visible()
            form = eng.locator("#start-triage")
            assert form.locator("input[name=max_error]").is_visible()
            form.locator("input[name=accept_below]").fill("0.3")
            form.locator("input[name=audit_rate]").fill("0.2")
            form.locator("input[name=max_error]").fill("0.2")
            form.locator("button[type=submit]").click()
            eng.wait_for_url(re.compile(r".*/estimates/#triage$"))
            run = TriageRun.objects.get(project=project)
            assert run.params["accept_below"] == 0.3 and run.params["audit_rate"] == 0.2
            assert eng.locator("#triage-status").get_attribute("data-status") == "running"
            loop_worker.wait_for(
                lambda: run.decisions.count() == len(images),
                timeout=120,
                worker=celery_worker,
                what="triage's pass",
            )
            eng.goto(estimates_url)
            accepted = int(eng.locator("#triage-accepted").inner_text())
            assert 0 < accepted < len(images)
            audited = QueueItem.objects.filter(strategy=Strategy.TRIAGE_AUDIT).count()
            assert audited > 0
            assert eng.locator("#triage-audit").inner_text().strip() == f"0 / {audited}"

            # --- 2. The annotator labels; nothing says triage -------------------------------
            annotator_context = browser.new_context(viewport={"width": 1280, "height": 860})
            annotator_context.add_cookies([session_cookie(annotator, live_server)])
            ann = annotator_context.new_page()
            responses: list = []
            urls: list[str] = []
            ann.on("request", lambda r: urls.append(r.url))
            ann.on("response", lambda r: responses.append(r) if "/api/v1/" in r.url else None)
            payloads: list = []
            ann.goto(f"{base}/projects/{project.slug}/")
            assert not TELLTALES.search(ann.locator("main").inner_text())
            queue = Queue.objects.get(project=project, kind=Queue.Kind.LABELING)
            ann.goto(f"{base}/projects/{project.slug}/queues/{queue.pk}/label/")
            assert answer_on_page(ann, audited, responses, payloads, telltales=TELLTALES) == audited
            refused = ann.goto(estimates_url)
            assert refused is not None and refused.status == 403

            # --- 3. The engineer sees the audit, stops and reverts the run -------------------
            eng.goto(estimates_url)
            assert eng.locator("#triage-audit").inner_text().strip() == f"{audited} / {audited}"
            assert "95%" in eng.locator("#triage-rate").inner_text()
            lead_context = browser.new_context()
            lead_context.add_cookies([session_cookie(lead, live_server)])
            led = lead_context.new_page()
            led.goto(estimates_url)
            assert led.locator("#triage-accepted").inner_text() == str(accepted)
            assert led.locator("#start-triage").count() == 0
            assert led.locator("#triage-stop").count() == 0
            eng.locator("#triage-stop button").click()
            eng.wait_for_url(re.compile(r".*/estimates/#triage$"))
            assert eng.locator("#triage-status").get_attribute("data-status") == "stopped"
            eng.locator("#triage-revert button").click()
            eng.wait_for_url(re.compile(r".*/estimates/#triage$"))
            assert eng.locator("#triage-accepted").inner_text() == "0"
            assert eng.locator("#triage-revert").count() == 0
        finally:
            browser.close()

    assert payloads, "the labeling page made no API call"
    for payload in payloads:
        assert not FORBIDDEN_KEYS & all_keys(payload), payload
        assert not TELLTALES.search(str(payload)), payload
    assert not [url for url in urls if TELLTALES.search(url)]
    run.refresh_from_db()
    assert run.reverted_at is not None
