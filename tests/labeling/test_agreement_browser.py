"""Agreement on the quality page in a real headless Chromium (issue 9, item 8): a lead reads the
pairs' kappas and Fleiss' kappa, sends the disagreements to re-review, follows a disagreement's
link to the review page and confirms its label there. The page has no horizontal overflow on a
laptop-sized viewport."""

from __future__ import annotations

import os

import pytest

from labeling.models import Label, Queue, QueueItem, Strategy
from tests.factories import PASSWORD, make_image, make_project, make_user
from tests.labeling.browser import ARGS, CHROMIUM

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

D, N = "disgusting", "normal"
VOTES = {"a": [D, D, D, N, N, N], "b": [D, D, N, N, N, D], "c": [D, N, D, N, N, N]}


def test_a_lead_reads_agreement_and_reviews_a_disagreement(live_server):
    from playwright.sync_api import sync_playwright

    lead = make_user("lead", username="agr-lead")
    people = {name: make_user("annotator", username=f"agr-{name}") for name in VOTES}
    project = make_project(members=[lead, *people.values()], labels_per_item=3)
    images = [make_image(project) for _ in range(6)]
    for name, values in VOTES.items():
        for image, value in zip(images, values, strict=True):
            Label.objects.create(
                project=project,
                image=image,
                annotator=people[name],
                kind=Label.Kind.ANNOTATION,
                value=value,
                strategy=Strategy.MANUAL,
            )
    base = live_server.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{base}/login/")
        page.fill("#id_username", lead.username)
        page.fill("#id_password", PASSWORD)
        page.press("#id_password", "Enter")
        page.wait_for_url(f"{base}/")
        page.goto(f"{base}/projects/{project.slug}/quality/")
        assert page.locator("#agreement-summary .fleiss").inner_text() == "0.325"
        kappas = {
            row.get_attribute("data-pair"): row.locator(".kappa").inner_text()
            for row in page.locator("#agreement-pairs tbody tr").all()
        }
        assert kappas == {"agr-a|agr-b": "0.333", "agr-a|agr-c": "0.667", "agr-b|agr-c": "0.000"}
        assert page.locator("#disagreements tbody tr").count() == 3
        assert page.locator("#disagreements .review-link").count() == 0
        page.click("#disagreements-queue")
        page.wait_for_selector("#disagreements .review-link")
        assert page.locator("#disagreements .review-link").count() == 3
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        page.screenshot(path=os.environ.get("AGREEMENT_SHOT", "/tmp/agreement.png"), full_page=True)
        first = page.locator("#disagreements tbody tr").first
        image_id = int(first.get_attribute("data-image"))
        first.locator(".review-link").click()
        page.wait_for_selector("#review-confirm")
        item = QueueItem.objects.get(queue__kind=Queue.Kind.REVIEW, image_id=image_id)
        assert f"item={item.pk}" in page.url
        page.click("#review-confirm")
        page.wait_for_url(lambda url: "item=" not in url)
        assert Label.objects.filter(image_id=image_id, kind=Label.Kind.CONFIRMATION).count() == 1
        browser.close()
