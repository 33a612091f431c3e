"""Issue 9, items 1, 2 and 14 in a real Chromium: image protection as a per-person, per-project
preference that persists on the server (explained once, on the first visit), grid reveal per
page; undo that brings the previous image back with the answer given highlighted and walks back
skips too; a change from "my recent labels"; a submitted grid page reopened and changed; a grid
page that fits 1440x900, and a small window that refuses submit until every tile was on screen.
The database is checked after: one current label per person per item, retractions for every
change."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from labeling.models import Label, Preference, Strategy
from labeling.services.queues import queue_items_add
from tests.factories import PASSWORD, make_image, make_project, make_queue, make_user
from tests.labeling.browser import ARGS, CHROMIUM

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


pytestmark = pytest.mark.browser


def label_shown(page) -> str:
    return page.evaluate("document.getElementById('current-label').dataset.image")


def wait_other(page, previous: str) -> str:
    page.wait_for_function(
        """(prev) => {
            const id = document.getElementById('current-label').dataset.image || '';
            return id && id !== prev && document.querySelector('#stage img');
        }""",
        arg=previous,
        timeout=10_000,
    )
    return label_shown(page)


def wait_saved(page):
    page.wait_for_function(
        "() => window.imageclean.pending() === 0 && window.imageclean.state() === 'saved'",
        timeout=15_000,
    )


def stage_filter(page) -> str:
    return page.eval_on_selector("#stage > img", "img => getComputedStyle(img).filter")


def wait_clear(page, selector="#stage > img"):
    """The image's filter settles at none (the stylesheet animates the change)."""
    page.wait_for_function(
        "(sel) => getComputedStyle(document.querySelector(sel)).filter === 'none'",
        arg=selector,
        timeout=5_000,
    )


def current_annotations(user, queue):
    return Label.objects.filter(
        annotator=user, queue=queue, kind=Label.Kind.ANNOTATION, superseded_by__isnull=True
    )


@pytest.mark.django_db(transaction=True)
def test_protection_undo_recent_and_grid_reopen(live_server):
    from playwright.sync_api import sync_playwright

    annotator = make_user("annotator", username="ann")
    project = make_project(members=[annotator], slug="gross", blur_images=True)
    single = make_queue(project, name="Single")
    grid = make_queue(project, name="Grid")
    queue_items_add(
        queue=single, images=[make_image(project) for _ in range(4)], strategy=Strategy.MANUAL
    )
    queue_items_add(
        queue=grid, images=[make_image(project) for _ in range(48)], strategy=Strategy.MANUAL
    )
    base = live_server.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            page = context.new_page()
            page.goto(f"{base}/login/")
            page.fill("#id_username", "ann")
            page.fill("#id_password", PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/")

            # --- Item 1: explained once, kept on the server ------------------------------
            page.goto(f"{base}/projects/gross/queues/{single.pk}/label/")
            a = wait_other(page, "")
            intro = page.locator("#protection-intro")
            assert intro.is_visible() and "Blur until revealed" in intro.inner_text()
            assert "blur" in stage_filter(page)
            intro.locator("button[data-protection='grayscale']").click()
            assert not intro.is_visible()
            assert "grayscale" in stage_filter(page) and "blur" not in stage_filter(page)
            page.wait_for_function(
                "async () => (await (await fetch('/api/v1/projects/gross/preferences/')).json())"
                ".protection === 'grayscale'"
            )
            page.reload()
            a = wait_other(page, "")
            assert not page.locator("#protection-intro").is_visible()  # shown once
            assert page.locator("#protection").input_value() == "grayscale"
            pref = Preference.objects.get(user=annotator, project=project)
            assert pref.protection == "grayscale" and pref.intro_seen_at is not None
            # Reveal kept for the session: R once, and the next image is clear too.
            page.select_option("#protection", "session")
            assert "blur" in stage_filter(page)
            page.keyboard.press("r")
            wait_clear(page)

            # --- Item 2: undo walks back labels and skips, with the answer shown ---------
            page.keyboard.press("2")  # image a: positive
            b = wait_other(page, a)
            wait_clear(page)  # the reveal stayed on
            page.keyboard.press(" ")  # image b: skipped
            wait_other(page, b)
            wait_saved(page)  # both reached the server: undo now goes through it
            page.keyboard.press("z")
            page.wait_for_function(
                "(want) => document.getElementById('current-label').dataset.image === want",
                arg=b,
            )
            assert page.locator(".keybar button.previous").get_attribute("data-hotkey") == "skip"
            assert "skipped" in page.locator("#previous-answer").inner_text()
            page.keyboard.press("z")
            page.wait_for_function(
                "(want) => document.getElementById('current-label').dataset.image === want",
                arg=a,
            )
            assert page.locator(".keybar button.previous").get_attribute("data-hotkey") == "2"
            assert "Disgusting" in page.locator("#previous-answer").inner_text()
            page.keyboard.press("1")  # a again: normal this time
            assert wait_other(page, a) == b
            # b was walked back too: it still says what was done with it.
            assert "skipped" in page.locator("#previous-answer").inner_text()
            page.keyboard.press("2")  # b: positive
            wait_other(page, b)
            wait_saved(page)

            # "My recent labels": change a's answer from the list.
            page.keyboard.press("l")
            rows = page.locator("#recent li")
            rows.first.wait_for()
            states = rows.evaluate_all("els => els.map((e) => [e.dataset.image, e.dataset.state])")
            assert states[:3] == [[b, "current"], [a, "current"], [a, "undone"]]
            page.locator(f"#recent li[data-image='{a}'][data-state='current'] button").click()
            page.wait_for_function(
                "(want) => document.getElementById('current-label').dataset.image === want",
                arg=a,
            )
            assert page.locator(".keybar button.previous").get_attribute("data-hotkey") == "1"
            page.keyboard.press("2")
            wait_other(page, a)
            wait_saved(page)

            # --- Grid: fits 1440x900, reveal per page, a submitted page reopened ----------
            page.select_option("#protection", "blur")
            page.wait_for_function(
                "async () => (await (await fetch('/api/v1/projects/gross/preferences/')).json())"
                ".protection === 'blur'"
            )
            page.goto(f"{base}/projects/gross/queues/{grid.pk}/grid/")
            page.wait_for_function("() => document.querySelectorAll('.tile').length === 24")
            bottoms = page.eval_on_selector_all(
                ".tile", "els => els.map((e) => e.getBoundingClientRect().bottom)"
            )
            assert max(bottoms) <= 900, f"tiles below the fold: {max(bottoms)}"
            tile_filter = "() => getComputedStyle(document.querySelectorAll('.tile img')[5]).filter"
            assert "blur" in page.evaluate(tile_filter)
            page.keyboard.press("r")  # the whole page, not only the focused tile
            wait_clear(page, ".tile:nth-child(6) img")
            page.keyboard.press("Enter")  # tile 1 -> positive
            first_page = page.eval_on_selector_all(
                ".tile", "els => els.map((e) => Number(e.dataset.image))"
            )
            page.keyboard.press("Control+Enter")
            page.wait_for_function(
                "(first) => document.querySelector('.tile') &&"
                " Number(document.querySelector('.tile').dataset.image) !== first",
                arg=first_page[0],
            )
            assert "blur" in page.evaluate(tile_filter)  # a new page starts blurred again
            wait_saved(page)
            page.keyboard.press("z")
            page.wait_for_function(
                "(first) => Number(document.querySelector('.tile').dataset.image) === first"
                " && document.querySelector('.tile').dataset.reopened === 'true'",
                arg=first_page[0],
            )
            assert page.locator(".tile").nth(0).get_attribute("data-positive") == "true"
            page.keyboard.press("ArrowRight")
            page.keyboard.press("Enter")  # tile 2 -> positive too
            page.keyboard.press("Control+Enter")
            page.wait_for_function(
                "(first) => Number(document.querySelector('.tile').dataset.image) !== first",
                arg=first_page[0],
            )
            wait_saved(page)
            context.close()

            # --- A small window: submit waits until every tile was on screen -------------
            context = browser.new_context(viewport={"width": 1000, "height": 500})
            small = context.new_page()
            small.goto(f"{base}/login/")
            small.fill("#id_username", "ann")
            small.fill("#id_password", PASSWORD)
            small.keyboard.press("Enter")
            small.wait_for_url(f"{base}/")
            small.goto(f"{base}/projects/gross/queues/{grid.pk}/grid/")
            small.wait_for_function("() => document.querySelectorAll('.tile').length === 24")
            small.keyboard.press("Control+Enter")
            status = small.locator("#grid-status")
            assert "Not submitted" in status.inner_text() and "24" in status.inner_text()
            for _ in range(40):  # scroll through the page as a person would
                small.mouse.move(500, 400)
                small.mouse.wheel(0, 150)
                small.wait_for_timeout(50)
            small.keyboard.press("Control+Enter")
            small.wait_for_function(
                "() => document.getElementById('grid-status').textContent.includes('Page sent')"
            )
            small.wait_for_function(
                "() => window.imageclean.pending() === 0 && window.imageclean.state() === 'saved'",
                timeout=15_000,
            )
        finally:
            browser.close()

    # --- The database: every change kept the one-label-per-person rule ---------------------
    a_labels = current_annotations(annotator, single).filter(image_id=int(a))
    assert [(lab.value) for lab in a_labels] == ["disgusting"]
    assert current_annotations(annotator, single).get(image_id=int(b)).value == "disgusting"
    assert (
        Label.objects.filter(annotator=annotator, queue=single, kind=Label.Kind.RETRACTION).count()
        == 2
    )  # a's first answer, a's second (changed from the list)
    grid_current = current_annotations(annotator, grid)
    assert grid_current.count() == 48
    assert set(grid_current.filter(value="disgusting").values_list("image_id", flat=True)) == {
        first_page[0],
        first_page[1],
    }
    assert (
        Label.objects.filter(annotator=annotator, queue=grid, kind=Label.Kind.RETRACTION).count()
        == 24
    )
    per_image = Counter(grid_current.values_list("image_id", flat=True))
    assert set(per_image.values()) == {1}  # one current label per person per item
