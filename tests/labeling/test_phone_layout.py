"""Issue 9, item 6: on a 390 px phone the labeling, grid and review pages fit the screen (no
horizontal overflow), the grid scrolls with the page (no scroll box inside it), a tap reveals
a blurred review image, and the single-image page disables its label buttons once the queue is
empty (undo stays: it brings an image back).
"""

from __future__ import annotations

import os

import pytest

from labeling.models import Strategy
from labeling.services.queues import queue_items_add
from tests.factories import make_image, make_project, make_queue, make_user
from tests.labeling.browser import ARGS, CHROMIUM
from tests.labeling.test_review_pages import flagged_world

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.browser


def overflow(page) -> int:
    """How many CSS pixels the page is wider than the screen (0 when it fits)."""
    return page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth"
    )


def login(context, live_server, client, user) -> None:
    client.force_login(user)
    host = live_server.url.split("//")[1].split(":")[0]
    session = client.cookies["sessionid"].value
    context.add_cookies([{"name": "sessionid", "value": session, "domain": host, "path": "/"}])


@pytest.mark.django_db(transaction=True)
def test_labeling_grid_and_review_pages_fit_a_phone(live_server, client):
    from playwright.sync_api import sync_playwright

    annotator = make_user("annotator")
    project = make_project(members=[annotator], blur_images=True)
    single = make_queue(project, name="Single")
    grid = make_queue(project, name="Grid")
    queue_items_add(queue=single, images=[make_image(project)], strategy=Strategy.MANUAL)
    queue_items_add(
        queue=grid, images=[make_image(project) for _ in range(24)], strategy=Strategy.MANUAL
    )
    review_project, _annotator, lead, _image, _label, _item = flagged_world()
    review_project.blur_images = True
    review_project.save()
    # Leads see review evidence unblurred unless they ask for it (issue 9, item 7): this one did.
    from labeling.services.preferences import preference_update

    preference_update(user=lead, project=review_project, protection="blur")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            login(context, live_server, client, annotator)
            page = context.new_page()

            # Single image: fits; label the only image, then the buttons are disabled.
            page.goto(f"{live_server.url}/projects/{project.slug}/queues/{single.pk}/label/")
            page.wait_for_selector("#stage img")
            assert overflow(page) <= 0
            label_buttons = page.locator(".keybar button[data-hotkey]:not([data-hotkey='undo'])")
            assert label_buttons.count() > 0
            assert all(b.is_enabled() for b in label_buttons.all())
            page.keyboard.press("1")
            page.wait_for_selector("#stage .placeholder")
            assert all(b.is_disabled() for b in label_buttons.all())
            assert page.locator(".keybar button[data-hotkey='undo']").is_enabled()
            assert overflow(page) <= 0

            # Grid: fits, and the page itself scrolls (the tiles are not in a scroll box).
            page.goto(f"{live_server.url}/projects/{project.slug}/queues/{grid.pk}/grid/")
            page.wait_for_function("() => document.querySelectorAll('.tile').length === 24")
            assert overflow(page) <= 0
            wrap = page.evaluate(
                "(() => { const w = document.querySelector('.grid-wrap');"
                " return [w.scrollHeight, w.clientHeight]; })()"
            )
            assert wrap[0] <= wrap[1] + 1, "the grid scrolls inside a box"
            assert page.evaluate("document.documentElement.scrollHeight") > PHONE["height"]
            context.close()

            # Review: fits, and a tap reveals the blurred image.
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            login(context, live_server, client, lead)
            page = context.new_page()
            page.goto(f"{live_server.url}/projects/{review_project.slug}/review/")
            figure = page.locator("#review-page.blur-on .review-evidence figure").first
            image = figure.locator("img")
            assert "blur" in image.evaluate("img => getComputedStyle(img).filter")
            figure.tap()
            page.locator("h1").tap()  # the finger moves on: no hover keeps the image clear
            assert image.evaluate("img => getComputedStyle(img).filter") == "none"
            figure.tap()
            page.locator("h1").tap()
            assert "blur" in image.evaluate("img => getComputedStyle(img).filter")
            assert overflow(page) <= 0
        finally:
            browser.close()
