"""An annotator whose browser asks for Chinese labels 20 images in real Chromium and never sees
an English word: every text node, user-facing attribute (title, alt, aria-label, placeholder)
and the document title of the labeling page are collected at the start, with the help open,
every five labels and on the empty queue, and at the grid page too.

What is data, not UI, and how the test treats it:
- The class and sub-category names come from the project's label schema, which names them per
  language (`"names": {"zh-hans": ...}`); the page must show those, so they are Chinese here.
- The project, queue and user names are what a Chinese team would type: Chinese. A default
  queue the code names ("Labeling") is translated like any UI string.
- Key caps (<kbd>: Ctrl, Enter, Esc, letters) are printed on the keyboard, and the language
  switcher names each language in itself (`lang="en"` on "English"), so both are left out;
  "imageclean" is the product's name.

Also: Accept-Language picks the language (zh-CN -> zh-hans), the switcher changes it and a cookie
keeps it, and the 20 labels are stored.

SAVE_SCREENSHOTS=1 also writes docs/img/labeling-page-zh.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from labeling.models import Label, Strategy
from labeling.services.queues import queue_items_add
from tests.factories import PASSWORD, make_image, make_project, make_queue, make_user
from tests.labeling.browser import CHROMIUM

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

REPO = Path(__file__).resolve().parents[2]
ALLOWED = {"imageclean"}
SCHEMA = {
    "classes": [
        {"key": "normal", "name": "Normal", "names": {"zh-hans": "正常"}, "hotkey": "1"},
        {"key": "disgusting", "name": "Disgusting", "names": {"zh-hans": "恶心"}, "hotkey": "2"},
    ],
    "positive": "disgusting",
    "default": "normal",
    "subcategories": [
        {"key": "animal", "name": "Animal", "names": {"zh-hans": "动物"}, "hotkey": "a"},
        {"key": "human", "name": "Human", "names": {"zh-hans": "人体"}, "hotkey": "h"},
    ],
}

# Every piece of text a person can read or hear (screen readers read the attributes).
COLLECT_TEXT = """() => {
    const skip = (el) => el.closest('kbd, script, style, template, [lang]:not([lang^="zh"])');
    const out = [document.title];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const el = node.parentElement;
        const text = node.textContent.trim();
        if (el && text && !skip(el)) out.push(text);
    }
    const attrs = ['title', 'alt', 'aria-label', 'placeholder'];
    for (const el of document.body.querySelectorAll(attrs.map((a) => `[${a}]`).join(','))) {
        if (skip(el)) continue;
        for (const a of attrs) {
            const value = (el.getAttribute(a) || '').trim();
            if (value) out.push(value);
        }
    }
    return out;
}"""

pytestmark = pytest.mark.browser


def english_in(page) -> list[str]:
    assert page.evaluate("document.documentElement.lang") == "zh-hans"
    found = []
    for text in page.evaluate(COLLECT_TEXT):
        words = [w for w in re.findall(r"[A-Za-z]{2,}", text) if w not in ALLOWED]
        if words:
            found.append(text)
    return found


@pytest.fixture
def chinese_world():
    annotator = make_user("annotator", username="张伟")
    project = make_project(
        members=[annotator], slug="qingli", name="商品图片清理", label_schema=SCHEMA
    )
    single = make_queue(project, name="主队列")
    grid = make_queue(project, name="网格队列")
    # The name the code gives a project's default queue is UI text, translated on display.
    make_queue(project, name="Labeling")
    queue_items_add(
        queue=single,
        images=[make_image(project) for _ in range(20)],
        strategy=Strategy.CONFIDENCE_BAND,
    )
    queue_items_add(
        queue=grid, images=[make_image(project) for _ in range(6)], strategy=Strategy.MANUAL
    )
    return {"annotator": annotator, "project": project, "single": single, "grid": grid}


def shown_image(page, previous: str) -> str:
    """Wait until the stage shows an image other than `previous`; its id."""
    page.wait_for_function(
        """(prev) => {
            const id = document.getElementById('current-label').dataset.image || '';
            return id && id !== prev && document.querySelector('#stage img');
        }""",
        arg=previous,
        timeout=10_000,
    )
    return page.evaluate("document.getElementById('current-label').dataset.image")


@pytest.mark.django_db(transaction=True)
def test_annotator_labels_20_images_in_chinese_with_no_english_on_the_page(
    live_server, chinese_world
):
    from playwright.sync_api import sync_playwright

    w = chinese_world
    base = live_server.url
    slug = w["project"].slug
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            # The browser asks for Chinese (Accept-Language: zh-CN); nobody chose anything yet.
            context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 860})
            page = context.new_page()
            page.goto(f"{base}/login/")
            assert page.get_by_role("heading", name="登录").is_visible()
            # The switcher names each language in itself, whatever the page's language.
            switcher = page.locator(".lang-switch button")
            assert switcher.all_inner_texts() == ["English", "简体中文"]
            assert switcher.evaluate_all("bs => bs.map((b) => b.lang)") == ["en", "zh-hans"]
            assert english_in(page) == []
            page.fill("#id_username", "张伟")
            page.fill("#id_password", PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/")
            assert page.get_by_role("heading", name="你的项目").is_visible()

            # The switcher: English for this person, remembered in a cookie; then back.
            page.locator(".lang-switch button[value='en']").click()
            page.wait_for_load_state()
            assert page.get_by_role("heading", name="Your projects").is_visible()
            cookies = {c["name"]: c["value"] for c in context.cookies()}
            assert cookies.get("django_language") == "en"
            page.reload()
            assert page.get_by_role("heading", name="Your projects").is_visible()
            page.locator(".lang-switch button[value='zh-hans']").click()
            page.wait_for_load_state()
            assert page.get_by_role("heading", name="你的项目").is_visible()
            assert english_in(page) == []
            # The collector sees the page's text (it is not vacuous): the heading, and the
            # queue list's words and names.
            collected = page.evaluate(COLLECT_TEXT)
            assert "你的项目" in collected and "主队列" in collected

            # --- 20 labels by keyboard, no English at any point ---------------------------
            page.goto(f"{base}/projects/{slug}/queues/{w['single'].pk}/label/")
            shown = shown_image(page, "")
            assert shown
            assert english_in(page) == []
            assert page.locator(".keybar").inner_text().count("恶心") == 3  # class + 2 subs
            page.keyboard.press("?")
            page.wait_for_selector("#help[open]")
            assert english_in(page) == []
            page.keyboard.press("Escape")
            keys = ["1", "1", "2", "1", "a"] * 4
            seen = set()
            for index, key in enumerate(keys):
                if index == 3 and os.environ.get("SAVE_SCREENSHOTS") == "1":
                    target = REPO / "docs" / "img" / "labeling-page-zh.png"
                    page.screenshot(path=str(target))
                assert shown not in seen, "an image was shown twice"
                seen.add(shown)
                labeled_src = page.eval_on_selector("#stage > img", "img => img.src")
                page.keyboard.press(key)
                if index < len(keys) - 1:
                    shown = shown_image(page, shown)
                    # The confirmation shows over the next image, with a thumbnail of the one
                    # it confirms (issue 9, item 6).
                    flash = page.locator("#flash")
                    assert flash.locator("img").get_attribute("src") in labeled_src
                    assert flash.inner_text() in {"正常", "恶心", "恶心 · 动物"}
                if index % 5 == 4:
                    assert english_in(page) == [], f"after label {index + 1}"
            assert len(seen) == 20
            page.wait_for_function(
                "() => document.querySelector('#stage .placeholder h2')?.textContent"
                " === '此队列已空'",
                timeout=30_000,
            )
            page.wait_for_function(
                "() => window.imageclean.pending() === 0 && window.imageclean.state() === 'saved'",
                timeout=15_000,
            )
            assert page.locator("#stage .placeholder h2").inner_text() == "此队列已空"
            assert page.locator("#save-state").inner_text() == "已保存"
            # The counters agree (issue 9, item 6): 20 of 20 done in the queue, 20 by this
            # person in it (a label in another queue would not count here).
            page.wait_for_function(
                """() => ['progress-done', 'progress-total', 'own-total']
                    .every((id) => document.getElementById(id).textContent === '20')""",
                timeout=30_000,
            )
            assert english_in(page) == []

            # --- The grid page ---------------------------------------------------------------
            page.goto(f"{base}/projects/{slug}/queues/{w['grid'].pk}/grid/")
            page.wait_for_function("() => document.querySelectorAll('.tile').length === 6")
            assert english_in(page) == []
        finally:
            browser.close()

    labels = Label.objects.filter(annotator=w["annotator"], kind=Label.Kind.ANNOTATION)
    assert labels.count() == 20
    assert labels.filter(value="disgusting").count() == 8  # "2" and "a", four times each
    assert labels.filter(subcategory="animal").count() == 4
