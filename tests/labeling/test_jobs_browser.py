"""The jobs page in a real headless Chromium against a live server and the real PostgreSQL
(issue 9, item 13): an engineer cancels a queued job from its row; the page comes back with a
message, the row says "Cancelled" and has no cancel button, and the finished job next to it
never had one."""

from __future__ import annotations

import os

import pytest

from labeling.models import Job
from tests.factories import make_project, make_user
from tests.labeling.browser import ARGS, CHROMIUM, session_cookie

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
def test_engineer_cancels_a_queued_job_from_the_jobs_page(live_server):
    from playwright.sync_api import expect, sync_playwright

    engineer = make_user("site_engineer")
    project = make_project()
    finished = Job.objects.create(
        project=project,
        kind=Job.Kind.SCORE_POOL,
        status=Job.Status.SUCCEEDED,
        result={"images": 10, "scored": 10, "shards": 1, "shards_done": 1, "error_count": 0},
    )
    queued = Job.objects.create(project=project, kind=Job.Kind.DETECT_NOISE)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([session_cookie(engineer, live_server)])
            page = context.new_page()
            page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
            page.goto(f"{live_server.url}/projects/{project.slug}/jobs/")
            row = page.locator(f"#job-{queued.pk}")
            done_row = page.locator(f"#job-{finished.pk}")
            expect(row.locator(".tag.job-status")).to_have_text("Queued")
            expect(done_row.locator("button.job-cancel")).to_have_count(0)
            expect(done_row.locator(".job-summary")).to_contain_text("Scored 10 of 10 images.")

            with page.expect_navigation():
                row.get_by_role("button", name=f"Cancel job #{queued.pk}").click()

            row = page.locator(f"#job-{queued.pk}")
            expect(row.locator(".tag.job-status")).to_have_text("Cancelled")
            expect(row.locator(".tag.job-status")).to_have_class("tag job-status job-cancelled")
            expect(row.locator("button.job-cancel")).to_have_count(0)
            expect(page.locator(".messages")).to_contain_text(f"Job #{queued.pk} cancelled.")
            assert page.url.endswith(f"/projects/{project.slug}/jobs/#job-{queued.pk}")
            # No JSON reached the page.
            assert "{" not in page.locator("main").inner_text()
            context.close()
        finally:
            browser.close()
    queued.refresh_from_db()
    assert queued.status == Job.Status.CANCELLED
    assert not errors, errors


@pytest.mark.django_db(transaction=True)
def test_job_page_shows_the_summary_once_the_job_finishes(live_server):
    """The job's page polls; when the job finishes it reloads once, and the server's summary
    replaces the waiting line while the cancel button goes."""
    from playwright.sync_api import expect, sync_playwright

    engineer = make_user("site_engineer")
    project = make_project()
    job = Job.objects.create(project=project, kind=Job.Kind.SCORE_POOL, status=Job.Status.RUNNING)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([session_cookie(engineer, live_server)])
            page = context.new_page()
            page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{live_server.url}/jobs/{job.pk}/")
            expect(page.locator("#job-cancel")).to_be_visible()
            expect(page.locator("#job-summary")).to_contain_text("when the job finishes")
            Job.objects.filter(pk=job.pk).update(
                status=Job.Status.SUCCEEDED,
                percent=100.0,
                result={"images": 3, "scored": 3, "shards": 1, "shards_done": 1},
            )
            expect(page.locator("#job-summary")).to_contain_text("Scored 3 of 3 images.")
            expect(page.locator("#job-cancel")).to_have_count(0)
            expect(page.locator("#job-status")).to_have_class("tag job-status job-succeeded")
            expect(page.locator("details.raw-json pre")).to_be_hidden()
            context.close()
        finally:
            browser.close()
    assert not errors, errors
