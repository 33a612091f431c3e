"""The validation split's progress on the jobs page and its GET API (issue 11, item 3): the
unlabeled images no open item holds (half a second to count at a million images) counted at most
once a minute, saying when; the other counts, the refill and the training job's message count
afresh."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import Image, Label
from labeling.selectors.validation import validation_progress
from tests.factories import make_image, make_project, make_user

pytestmark = pytest.mark.django_db


def test_progress_is_reused_for_a_minute_says_when_and_the_refill_recounts():
    engineer, annotator = make_user("site_engineer"), make_user("annotator")
    project = make_project(members=[annotator])
    images = [make_image(project, seed=91_000 + i, split=Image.Split.VALIDATION) for i in range(3)]
    client = Client()
    client.force_login(engineer)
    url = reverse("api-validation-progress", kwargs={"slug": project.slug})
    first = client.get(url).json()
    assert (first["images"], first["labeled"], first["not_queued"]) == (3, 0, 3)
    assert first["not_queued_counted_at"]

    # A label and a new image: the labels and images are counted again, the images in no queue
    # are the figure taken a moment ago, with its time.
    Label.objects.create(project=project, image=images[0], annotator=annotator, value="normal")
    make_image(project, seed=91_100, split=Image.Split.VALIDATION)
    again = client.get(url).json()
    assert (again["images"], again["labeled"], again["not_queued"]) == (4, 1, 3)
    assert again["not_queued_counted_at"] == first["not_queued_counted_at"]
    page = client.get(reverse("project-jobs", kwargs={"slug": project.slug})).content.decode()
    assert "Images in no queue counted" in page and "at most once a minute" in page
    # Callers that act on the figure count now.
    exact = validation_progress(project=project)
    assert (exact["images"], exact["labeled"], exact["not_queued"]) == (4, 1, 3)

    # The refill changes what is queued: its answer and the next reads count afresh.
    filled = client.post(reverse("api-validation-fill", kwargs={"slug": project.slug})).json()
    assert filled["added"] == 3 and filled["progress"]["not_queued"] == 0
    after = client.get(url).json()
    assert (after["images"], after["labeled"], after["open"], after["not_queued"]) == (4, 1, 3, 0)
    assert after["not_queued_counted_at"] > first["not_queued_counted_at"]
