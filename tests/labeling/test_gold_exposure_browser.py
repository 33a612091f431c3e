"""Gold items and exposure limits in a real headless Chromium (issue 9, items 3 and 4).

- A lead marks an image as gold from the quality page; the annotator labels their queue by
  keyboard, answers the gold item wrongly without anything on the page or in the API telling
  it apart, and the lead's quality page shows that annotator's gold accuracy fall (1/1 to 1/2).
- With a daily cap of 3 positive-class images and a break reminder after 2 in a row: the
  reminder appears after the second positive, holds the keys until dismissed, and the third
  positive stops the queue with the message; a reload (the server refuses the claim) says the
  same, in Chinese for a browser that asks for Chinese; the lead sees the figures.
"""

from __future__ import annotations

import os

import pytest

from labeling.models import Label, Strategy
from labeling.services.gold import gold_mark
from labeling.services.labels import lease_submit
from labeling.services.queues import queue_claim_next, queue_items_add
from tests.factories import PASSWORD, make_image, make_project, make_queue, make_user
from tests.labeling.browser import ARGS, CHROMIUM

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(browser, base, username, **context_options):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, **context_options)
    page = context.new_page()
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.press("#id_password", "Enter")
    page.wait_for_url(f"{base}/")
    return context, page


def _dismiss_dialogs(page):
    """Close a first-visit dialog (image protection intro) if the page opens one."""
    for _ in range(3):
        if not page.evaluate("() => !!document.querySelector('dialog[open]')"):
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(100)


def _shown(page) -> str:
    return page.evaluate("() => document.getElementById('current-label').dataset.image || ''")


def _wait_new_image(page, previous: str) -> str:
    page.wait_for_function(
        """(prev) => {
            const id = document.getElementById('current-label').dataset.image || '';
            const placeholder = document.querySelector('#stage .placeholder');
            const settled = placeholder && !/Loading/.test(placeholder.textContent);
            return (id && id !== prev && document.querySelector('#stage > img')) || settled;
        }""",
        arg=previous,
        timeout=10_000,
    )
    return _shown(page) if page.locator("#stage > img").count() else ""


def _wait_saved(page):
    page.wait_for_function(
        "() => window.imageclean && window.imageclean.pending() === 0",
        timeout=15_000,
    )


def _gold_cell(page, username) -> str:
    return page.locator(f"#gold-checks tr[data-annotator='{username}'] .gold-accuracy").inner_text()


def test_a_wrong_gold_answer_lowers_accuracy_on_the_leads_page(live_server):
    from playwright.sync_api import sync_playwright

    lead = make_user("lead", username="lea")
    alice = make_user("annotator", username="alice")
    project = make_project(
        members=[lead, alice], slug="sortp", name="Sorting", blur_images=False, gold_rate=1.0
    )
    queue = make_queue(project, name="Labeling")
    first_gold, second_gold = make_image(project), make_image(project)
    for image in (first_gold, second_gold):
        Label.objects.create(
            project=project, image=image, annotator=lead, kind=Label.Kind.IMPORTED, value="normal"
        )
    # Alice already answered one gold item correctly: 1/1.
    gold_mark(project=project, images=[first_gold.pk], user=lead)
    queue_items_add(queue=queue, images=[make_image(project)], strategy="manual")
    (lease,) = queue_claim_next(queue=queue, annotator=alice, count=1)
    assert lease.item.strategy == Strategy.GOLD  # gold rate 1: gold first, beside real work
    lease_submit(lease=lease, annotator=alice, value="normal")
    ordinary = [make_image(project) for _ in range(3)]
    queue_items_add(queue=queue, images=ordinary, strategy="manual")
    base = live_server.url

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            lead_context, lead_page = _login(browser, base, "lea")
            lead_page.goto(f"{base}/projects/sortp/quality/")
            assert _gold_cell(lead_page, "alice").startswith("1/1")
            # The lead marks the second image as gold from the quality page.
            lead_page.fill("#gold-mark input[name=images]", str(second_gold.pk))
            lead_page.click("#gold-mark button[type=submit]")
            lead_page.wait_for_load_state()
            assert lead_page.locator(f"#gold-items tr[data-image='{second_gold.pk}']").count() == 1

            alice_context, page = _login(browser, base, "alice")
            payloads: list[str] = []
            page.on(
                "response",
                lambda r: payloads.append(r.text()) if "/api/v1/" in r.url and r.ok else None,
            )
            page.goto(f"{base}/projects/sortp/queues/{queue.pk}/label/")
            _dismiss_dialogs(page)
            seen = []
            current = _wait_new_image(page, "")
            # Everything here is labeled positive ("2"): the gold item's answer is "normal".
            while current and page.locator("#stage > img").count():
                seen.append(int(current))
                html = page.content().lower()
                assert "gold" not in html and "honeypot" not in html
                page.keyboard.press("2")
                current = _wait_new_image(page, current)
            _wait_saved(page)
            # The page served the gold item among the others (4 ordinary + the new gold).
            assert second_gold.pk in seen and len(seen) == 5, seen
            assert not any("gold" in body.lower() for body in payloads)
            answer = Label.objects.get(annotator=alice, image=second_gold)
            assert answer.strategy == Strategy.GOLD and answer.value == "disgusting"

            lead_page.reload()
            assert _gold_cell(lead_page, "alice").startswith("1/2")
            assert "50%" in _gold_cell(lead_page, "alice")
            lead_context.close()
            alice_context.close()
        finally:
            browser.close()
    # The gold image keeps its label.
    from labeling.selectors.labels import image_current_label

    assert image_current_label(image=second_gold).value == "normal"


def test_the_exposure_cap_stops_the_queue_with_a_clear_message(live_server):
    from playwright.sync_api import sync_playwright

    lead = make_user("lead", username="lea2")
    bob = make_user("annotator", username="bob")
    project = make_project(
        members=[lead, bob],
        slug="capp",
        name="Cap project",
        blur_images=False,
        exposure_daily_cap=3,
        exposure_break_after=2,
    )
    queue = make_queue(project, name="Labeling")
    queue_items_add(queue=queue, images=[make_image(project) for _ in range(10)], strategy="manual")
    base = live_server.url

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context, page = _login(browser, base, "bob")
            page.goto(f"{base}/projects/capp/queues/{queue.pk}/label/")
            _dismiss_dialogs(page)
            current = _wait_new_image(page, "")
            page.keyboard.press("2")
            current = _wait_new_image(page, current)
            page.keyboard.press("2")
            # Two positives in a row: the break reminder, which holds the labeling keys.
            reminder = page.locator("#break-reminder")
            reminder.wait_for(state="visible", timeout=5_000)
            assert "break" in reminder.inner_text().lower()
            current = _shown(page)
            page.keyboard.press("1")  # swallowed while the reminder is open
            page.wait_for_timeout(300)
            assert _shown(page) == current
            page.locator("#break-reminder button").click()
            reminder.wait_for(state="hidden", timeout=5_000)
            page.keyboard.press("2")  # the third positive today: the cap
            stop = page.locator("#stage .placeholder")
            stop.wait_for(timeout=5_000)
            text = stop.inner_text()
            assert "Labeling stopped" in text and "daily limit" in text and "3" in text, text
            assert page.locator("#stage > img").count() == 0
            _wait_saved(page)
            assert Label.objects.filter(annotator=bob, value="disgusting").count() == 3
            # A reload: the server refuses the claim with the same message.
            page.reload()
            page.locator("#stage .placeholder").wait_for(timeout=10_000)
            assert "daily limit" in page.locator("#stage .placeholder").inner_text()
            context.close()

            # In Chinese for a browser that asks for Chinese.
            zh_context, zh_page = _login(browser, base, "bob", locale="zh-CN")
            zh_page.goto(f"{base}/projects/capp/queues/{queue.pk}/label/")
            _dismiss_dialogs(zh_page)
            zh_page.locator("#stage .placeholder").wait_for(timeout=10_000)
            zh_text = zh_page.locator("#stage .placeholder").inner_text()
            assert "daily limit" not in zh_text and "上限" in zh_text, zh_text
            zh_context.close()

            # The lead sees the figures.
            lead_context, lead_page = _login(browser, base, "lea2")
            lead_page.goto(f"{base}/projects/capp/quality/")
            row = lead_page.locator("#gold-checks tr[data-annotator='bob']")
            assert row.locator(".positives-today").inner_text() == "3"
            lead_context.close()
        finally:
            browser.close()


def test_the_exposure_cap_stops_a_grid_page_too(live_server):
    from playwright.sync_api import sync_playwright

    carol = make_user("annotator", username="carol")
    project = make_project(
        members=[carol], slug="capg", name="Cap grid", blur_images=False, exposure_daily_cap=3
    )
    queue = make_queue(project, name="Grid")
    queue_items_add(queue=queue, images=[make_image(project) for _ in range(30)], strategy="manual")
    base = live_server.url

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context, page = _login(browser, base, "carol")
            page.goto(f"{base}/projects/capg/queues/{queue.pk}/grid/")
            _dismiss_dialogs(page)
            tiles = page.locator("#tiles .tile")
            tiles.first.wait_for(timeout=10_000)
            for index in range(3):  # three positives on one page: the day's cap
                tiles.nth(index).click()
            for index in range(tiles.count()):  # a person looks at every tile first
                tiles.nth(index).scroll_into_view_if_needed()
            page.click("#submit-page")
            stop = page.locator("#tiles .placeholder")
            stop.wait_for(timeout=5_000)
            text = stop.inner_text()
            assert "Labeling stopped" in text and "daily limit" in text, text
            assert page.locator("#tiles .tile").count() == 0
            _wait_saved(page)
            assert Label.objects.filter(annotator=carol, value="disgusting").count() == 3
            context.close()
        finally:
            browser.close()
