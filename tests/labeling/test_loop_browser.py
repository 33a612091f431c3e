"""The loop's roles in a real headless Chromium, a live server, a real Celery worker process and
the real PostgreSQL:

1. an engineer starts noise detection from the project's jobs page and watches its progress
   advance on the job page without reloading, until it succeeds;
2. a lead opens the re-review page and flips the most suspicious label with the F key; the
   database then holds a CORRECTION that supersedes the annotator's label;
3. an annotator gets 403 on the jobs page and on the review page.
"""

from __future__ import annotations

import os

import pytest

from labeling.models import Job, Label, Queue, QueueItem
from tests.factories import make_user
from tests.labeling import worker as loop_worker
from tests.labeling.browser import ARGS, CHROMIUM, session_cookie
from tests.labeling.test_noise import labeled_pool

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir

pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
def test_engineer_lead_and_annotator_in_real_chromium(live_server, celery_worker, worker_storage):
    from playwright.sync_api import sync_playwright

    annotator = make_user("annotator")
    lead = make_user("lead")
    engineer = make_user("site_engineer")
    project, planted, _ = labeled_pool(n=40, flipped=2, annotators=[annotator])
    project.members.add(lead)
    base = live_server.url

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # --- 1. The engineer starts noise detection and watches it run -------------------
            context = browser.new_context()
            context.add_cookies([session_cookie(engineer, live_server)])
            page = context.new_page()
            page.goto(f"{base}/projects/{project.slug}/jobs/")
            form = page.locator("#start-detect-noise")
            form.locator("input[name=pretrain_epochs]").fill("40")
            form.locator("input[name=cycle_length]").fill("5")
            form.locator("input[name=n_cycles]").fill("2")
            form.locator("input[name=batch_size]").fill("8")
            form.locator("button[type=submit]").click()
            page.wait_for_url(f"{base}/jobs/*/")
            job = Job.objects.get(project=project, kind=Job.Kind.DETECT_NOISE)
            assert job.params["pretrain_epochs"] == 40 and job.params["fraction"] == 0.05
            # Record every percentage the page shows while the job runs (reported to the test,
            # so the record outlives the document) and every navigation: the page follows the
            # job by polling, without reloading, and reloads once when the job finishes so the
            # server-written summary appears.
            seen: list[str] = []
            navigations: list[str] = []
            page.expose_function("reportPercent", lambda text: seen.append(text))
            page.on(
                "framenavigated",
                lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
            )
            with page.expect_navigation(timeout=240_000):  # the one reload, at the finish
                page.evaluate(
                    """() => {
                        const percent = document.getElementById('job-percent');
                        window.reportPercent(percent.textContent);
                        const report = () => window.reportPercent(percent.textContent);
                        new MutationObserver(report).observe(
                            percent, {childList: true, characterData: true, subtree: true}
                        );
                    }"""
                )
            page.wait_for_function(
                "() => document.getElementById('job-status').textContent === 'Succeeded'"
            )
            assert len(navigations) == 1, navigations  # no reload while it ran
            assert page.locator("#job-percent").text_content().strip() == "100%"
            values = [int(text.rstrip("%")) for text in seen]
            in_between = sorted({value for value in values if 0 < value < 100})
            assert len(in_between) >= 2, values  # it advanced in steps, not in one jump
            assert values == sorted(values), values  # and never went backwards
            job.refresh_from_db()
            assert job.status == Job.Status.SUCCEEDED and job.result["suspects"] == 2
            context.close()

            # --- 2. The lead flips the most suspicious label with the F key -------------------
            item = (
                QueueItem.objects.filter(queue__project=project, queue__kind=Queue.Kind.REVIEW)
                .order_by("-priority", "id")
                .first()
            )
            old = Label.objects.get(image=item.image, superseded_by__isnull=True)
            context = browser.new_context()
            context.add_cookies([session_cookie(lead, live_server)])
            page = context.new_page()
            page.goto(f"{base}/projects/{project.slug}/review/")
            assert page.locator("#review-item").get_attribute("data-item") == str(item.pk)
            history = page.locator("#review-history").inner_text()
            assert annotator.username in history and "Annotation" in history
            flip_to = "normal" if old.value == "disgusting" else "disgusting"
            # The button names the class as the schema does, in the reader's language.
            flip_name = {"normal": "Normal", "disgusting": "Disgusting"}[flip_to]
            assert flip_name in page.locator("#review-flip").inner_text()
            page.keyboard.press("f")
            page.wait_for_selector(".messages li.success")
            assert "Corrected to" in page.locator(".messages").inner_text()
            correction = Label.objects.get(image=item.image, kind=Label.Kind.CORRECTION)
            assert correction.supersedes_id == old.pk and correction.value == flip_to
            assert correction.annotator == lead
            item.refresh_from_db()
            assert item.status == QueueItem.Status.DONE
            # The page moved on to the next flagged item.
            assert page.locator("#review-item").get_attribute("data-item") != str(item.pk)
            context.close()

            # --- 3. The annotator reaches neither page ------------------------------------
            context = browser.new_context()
            context.add_cookies([session_cookie(annotator, live_server)])
            page = context.new_page()
            for path in (f"/projects/{project.slug}/jobs/", f"/projects/{project.slug}/review/"):
                response = page.goto(f"{base}{path}")
                assert response.status == 403, path
            context.close()
        finally:
            browser.close()
