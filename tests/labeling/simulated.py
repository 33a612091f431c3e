"""The SIMULATED annotator of the audit and triage tests: it answers whatever the product serves
from a truth the test planted in each image's metadata (``true_label``), and checks on the way
that nothing served tells an item's origin (the audit's and triage's promise to annotators).

Two ways in, as a person would work: through the queue API (``answer_queue_by_api``) and on the
labeling page in Chromium (``answer_on_page``).
"""

from __future__ import annotations

import re

from django.urls import reverse
from rest_framework.test import APIClient

from labeling.models import Image, Queue
from tests.labeling.test_browser import wait_for_other_image, wait_until_saved


def answer_queue_by_api(api: APIClient, queue: Queue, *, forbidden: set[str]) -> int:
    """SIMULATION: answer every item ``queue`` serves with its planted truth, through the API an
    annotator's page uses; no lease nor its image carries a key of ``forbidden``. Returns how
    many items were answered."""
    done = 0
    while True:
        response = api.post(
            reverse("api-queue-next", kwargs={"pk": queue.pk}), {"count": 50}, format="json"
        )
        assert response.status_code == 200, response.json()
        leases = response.json()["leases"]
        if not leases:
            return done
        for lease in leases:
            assert not forbidden & set(lease), lease
            assert not forbidden & set(lease["image"]), lease["image"]
            image = Image.objects.get(pk=lease["image"]["id"])
            response = api.post(
                reverse("api-lease-submit", kwargs={"pk": lease["lease"]}),
                {"value": image.metadata["true_label"]},
                format="json",
            )
            assert response.status_code == 200, response.json()
            done += 1


def answer_on_page(
    page, count: int, responses: list, payloads: list, *, telltales: re.Pattern[str]
) -> int:
    """SIMULATION: on the labeling page, press the key of each shown image's planted truth
    (``2`` for the positive class ``disgusting``, ``1`` otherwise), ``count`` times (fewer if
    the queue empties); the stage never shows a word matching ``telltales``. The bodies of the
    API ``responses`` seen so far move into ``payloads`` (read before the page navigates away
    from them). Returns how many images were labeled."""
    done = 0
    shown = wait_for_other_image(page, None)
    while shown is not None and done < count:
        assert not telltales.search(page.locator("#stage").inner_html())
        truth = Image.objects.get(pk=shown).metadata["true_label"]
        page.keyboard.press("2" if truth == "disgusting" else "1")
        done += 1
        shown = wait_for_other_image(page, shown)
        _read(responses, payloads)
    wait_until_saved(page)
    _read(responses, payloads)
    return done


def _read(responses: list, payloads: list) -> None:
    payloads.extend(r.json() for r in responses if r.status == 200)
    responses.clear()
