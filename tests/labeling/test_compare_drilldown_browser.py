"""Model comparison and the quality drill-down in a real headless Chromium (issue 9, items 11
and 9):

- an engineer compares two versions: the 95% intervals and the too-few-positives warning are
  on screen, both PR curves and operating points are drawn; promote asks for a confirmation
  and nothing changes until it is given; a rollback to the worse version warns, naming the
  figure, before it happens;
- a lead follows an annotator's row on the quality page to that person's gold-failed item and
  sees the image, the answer and the correct one.
"""

from __future__ import annotations

import os

import pytest

from tests.labeling.browser import ARGS, CHROMIUM, session_cookie
from tests.labeling.compare_world import compare_world
from tests.labeling.drilldown_world import drilldown_world

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _no_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_engineer_compares_confirms_promote_and_is_warned_on_rollback(live_server):
    from playwright.sync_api import expect, sync_playwright

    world = compare_world()
    project, v1, v2 = world["project"], world["v1"], world["v2"]
    base = live_server.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([session_cookie(world["engineer"], live_server)])
        page = context.new_page()
        # A loaded shared machine: the first page's server-side imports can take a while.
        page.set_default_timeout(90_000)
        page.goto(f"{base}/projects/{project.slug}/models/")
        page.click("#compare-link")
        page.wait_for_url("**/models/compare/")
        # The default: the active version (v1) against the newest other (v2).
        cell = page.locator(
            'tr[data-stage="cascade"][data-metric="precision"] td[data-version="v2"]'
        )
        expect(cell).to_contain_text("1.000")
        expect(cell.locator(".ci")).to_have_text("[0.21–1.00]")
        expect(cell.locator(".delta")).to_have_text("Δ +0.200")
        warning = page.locator('.compare-warnings[data-version="v2"] .trust-warning').nth(1)
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("rests on 1 true positive(s) of 1 predicted positive(s)")
        expect(page.locator("#pr-chart polyline.pr-curve")).to_have_count(2)
        expect(page.locator("#pr-chart circle.operating-point")).to_have_count(2)
        assert page.locator("#pr-chart").bounding_box()["width"] > 300
        assert _no_overflow(page)

        # Promote asks first; the active version stays until the confirmation.
        page.get_by_role("button", name="Promote v2…").click()
        expect(page.locator("#confirm-title")).to_have_text("Promote v2?")
        expect(page.locator("#worse-warning")).to_contain_text(
            "cascade recall: 0.143 instead of 0.571"
        )
        project.refresh_from_db()
        assert project.active_model_version_id == v1.pk
        page.get_by_role("button", name="Yes, promote v2").click()
        page.wait_for_url("**/models/")
        expect(page.locator("#active-version")).to_have_text("v2")

        # Rolling back to v1, whose cascade precision is lower, warns before anything happens.
        page.click("#rollback button[type=submit]")
        expect(page.locator("#confirm-title")).to_have_text("Roll back to v1?")
        expect(page.locator("#worse-warning")).to_be_visible()
        expect(page.locator("#worse-warning")).to_contain_text(
            "cascade precision: 0.800 instead of 1.000"
        )
        project.refresh_from_db()
        assert project.active_model_version_id == v2.pk
        page.get_by_role("button", name="Yes, roll back to v1").click()
        page.wait_for_url("**/models/")
        expect(page.locator("#active-version")).to_have_text("v1")
        browser.close()


def test_lead_drills_down_from_a_quality_row_to_a_gold_failed_item(live_server):
    from playwright.sync_api import expect, sync_playwright

    world = drilldown_world()
    project, ann = world["project"], world["ann"]
    failed = world["gold_images"][0]  # gold "disgusting", Ann answered "normal"
    base = live_server.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([session_cookie(world["lead"], live_server)])
        page = context.new_page()
        # A loaded shared machine: the first page's server-side imports can take a while.
        page.set_default_timeout(90_000)
        page.goto(f"{base}/projects/{project.slug}/quality/")
        page.locator(f'#quality tr[data-annotator="{ann.username}"] a.drill').click()
        page.wait_for_url(f"**/quality/annotators/{ann.pk}/")
        row = page.locator(f'#gold-failed tr[data-image="{failed.pk}"]')
        expect(row).to_be_visible()
        expect(row.locator(".answer")).to_have_text("Normal")
        expect(row.locator(".correct")).to_have_text("Disgusting")
        expect(row.locator("time")).to_be_visible()
        # The thumbnail is a real image the browser decoded, not a broken link.
        assert row.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
        expect(page.locator("#gold-failed tbody tr")).to_have_count(2)
        expect(page.locator("#overturned tbody tr")).to_have_count(1)
        assert _no_overflow(page)
        browser.close()
