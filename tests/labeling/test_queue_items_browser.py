"""Why each queue item is there, in a real headless Chromium against a live server and the real
PostgreSQL (issue 12): an engineer sees each item's strategy, rank and similarity or score band
on the queue's page; an annotator labeling the same queue receives none of them in any payload
and cannot open that page or its API."""

from __future__ import annotations

import os

import pytest

from labeling.models import ModelVersion, Queue, Score, Strategy
from labeling.services.projects import project_default_queues_ensure
from labeling.services.queues import queue_items_add, queue_items_place
from tests.factories import make_image, make_project, make_user
from tests.labeling.browser import ARGS, CHROMIUM, session_cookie
from tests.labeling.test_browser import all_keys

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# What explains an item; none of it may reach an annotator.
EXPLAINING = {
    "strategy",
    "strategy_name",
    "rank",
    "similarity",
    "probability",
    "seed_image_id",
    "score",
    "rule",
    "band",
    "high",
    "priority",
    "details",
    "moved_from",
    "model_version",
}

pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
def test_engineer_sees_strategy_and_rank_annotator_sees_none_of_it(live_server):
    from playwright.sync_api import sync_playwright

    engineer, annotator = make_user("site_engineer"), make_user("annotator")
    project = make_project(members=[annotator], validation_fraction=0.0)
    labeling, _review = project_default_queues_ensure(project=project)
    images = [make_image(project, seed=91_000 + i) for i in range(8)]
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    Score.objects.bulk_create(
        Score(image=image, model_version=version, stage1=0.4, stage2=0.4, score=0.4)
        for image in images
    )
    # An import queued everything; a cold start moved three of them up with their similarity,
    # a selection moved two more with their score band.
    queue_items_add(queue=labeling, images=[i.pk for i in images], strategy=Strategy.MANUAL)
    recalled = images[:3]
    queue_items_place(
        queue=labeling,
        ranked=[i.pk for i in recalled],
        strategy=Strategy.COLD_START,
        priorities={image.pk: 3.0 - n * 0.1 for n, image in enumerate(recalled)},
        details_by_image={
            image.pk: {"job_id": 1, "rank": n + 1, "ranking": "similarity", "similarity": 0.9}
            for n, image in enumerate(recalled)
        },
    )
    selected = images[3:5]
    queue_items_place(
        queue=labeling,
        ranked=[i.pk for i in selected],
        strategy=Strategy.CONFIDENCE_BAND,
        priorities={image.pk: 2.5 - n * 0.1 for n, image in enumerate(selected)},
        details_by_image={
            image.pk: {
                "rank": n + 1,
                "score": 0.4,
                "rule": "uncertain_band",
                "band": [0.3, 0.6],
                "model_version": "v1",
            }
            for n, image in enumerate(selected)
        },
    )
    expected = {
        item.pk: item
        for item in labeling.items.all()  # strategy and rank as the database holds them
    }
    base = live_server.url

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # --- The engineer: the project page links to the queue's contents ----------------
            context = browser.new_context()
            context.add_cookies([session_cookie(engineer, live_server)])
            page = context.new_page()
            page.goto(f"{base}/projects/{project.slug}/")
            page.locator(f"a[href='/projects/{project.slug}/queues/{labeling.pk}/items/']").click()
            page.wait_for_selector("#queue-items")
            rows = page.locator("#queue-items tbody tr[data-item]")
            assert rows.count() == len(expected) == 8
            shown = []
            for n in range(rows.count()):
                row = rows.nth(n)
                item = expected[int(row.get_attribute("data-item"))]
                strategy = row.locator(".strategy").inner_text()
                rank = row.locator(".rank").inner_text()
                assert strategy == str(Strategy(item.strategy).label)
                assert rank == (str(item.details["rank"]) if "rank" in item.details else "—")
                shown.append((item.strategy, rank))
            # Served order: the cold start's three by rank, the selection's two, then the rest.
            assert shown[:5] == [
                (Strategy.COLD_START, "1"),
                (Strategy.COLD_START, "2"),
                (Strategy.COLD_START, "3"),
                (Strategy.CONFIDENCE_BAND, "1"),
                (Strategy.CONFIDENCE_BAND, "2"),
            ]
            text = page.locator("#queue-items").inner_text()
            assert "similarity 0.900" in text and "uncertain_band [0.300, 0.600]" in text
            assert "Manual" in text  # where the moved items came from

            # --- ... and the jobs page says what a selection round will take, as it is set --
            page.goto(f"{base}/projects/{project.slug}/jobs/")
            preview = page.locator("#selection-preview")
            assert "of the 8 eligible images" in preview.inner_text()
            page.locator("#select-max_share").fill("0.5")
            page.locator("#select-max_share").dispatch_event("change")
            # A function, not a string: the page's CSP forbids eval.
            page.wait_for_function(
                "() => document.getElementById('selection-preview').dataset.state === 'ok'"
            )
            # Half of 8 is 4, the audit keeps one of them: at most 4 in all.
            assert "takes at most 4 of the 8 eligible images" in preview.inner_text()
            assert "random audit 1" in preview.inner_text()
            context.close()

            # --- The annotator labels the queue: no payload explains anything --------------
            context = browser.new_context()
            context.add_cookies([session_cookie(annotator, live_server)])
            page = context.new_page()
            payloads = []

            def keep(response) -> None:
                json_answer = "json" in response.headers.get("content-type", "")
                if "/api/v1/" in response.url and response.status == 200 and json_answer:
                    payloads.append(response.json())

            page.on("response", keep)
            with page.expect_response(lambda r: "/next/" in r.url and r.status == 200):
                page.goto(f"{base}/projects/{project.slug}/queues/{labeling.pk}/label/")
            page.wait_for_selector("#stage img")
            for _ in range(3):
                page.keyboard.press("1")
                page.wait_for_timeout(300)
            page.wait_for_function(
                "() => window.imageclean && window.imageclean.pending() === 0", timeout=15_000
            )
            assert payloads, "the labeling page made no API call"
            for payload in payloads:
                assert not all_keys(payload) & EXPLAINING, payload
            # The project page offers annotators no way in, and the page and API refuse them.
            page.goto(f"{base}/projects/{project.slug}/")
            assert page.locator(f"a[href$='/queues/{labeling.pk}/items/']").count() == 0
            refused = page.goto(f"{base}/projects/{project.slug}/queues/{labeling.pk}/items/")
            assert refused.status == 403
            refused = page.goto(f"{base}/api/v1/queues/{labeling.pk}/items/")
            assert refused.status == 403
            context.close()
        finally:
            browser.close()
    assert Queue.objects.filter(project=project, kind=Queue.Kind.LABELING).count() == 1
