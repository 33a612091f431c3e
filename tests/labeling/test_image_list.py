"""The image list API pages by keyset and filters by strategy and annotator (issue 11, item 3):
walking `next` visits every image once, in id order, whatever the page size; the strategy and
annotator filters keep exactly the images they name; annotators may use neither."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from labeling.api.image_views import ImageCursorPagination
from labeling.models import Label, QueueItem, Strategy
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


def _client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_walking_next_visits_every_image_once_in_order(monkeypatch):
    monkeypatch.setattr(ImageCursorPagination, "page_size", 3)
    lead = make_user("lead")
    project = make_project(members=[lead])
    images = [make_image(project, seed=i) for i in range(8)]
    client = _client(lead)
    url, seen, pages = f"/api/v1/projects/{project.slug}/images/", [], 0
    while url:
        body = client.get(url).json()
        assert "count" not in body  # a keyset page does not count the whole pool
        seen += [row["id"] for row in body["results"]]
        url, pages = body["next"], pages + 1
    assert seen == sorted(image.pk for image in images)
    assert pages == 3


def test_strategy_and_annotator_filters_keep_exactly_their_images():
    lead, annotator, other = make_user("lead"), make_user("annotator"), make_user("annotator")
    project = make_project(members=[lead, annotator, other])
    queue = make_queue(project)
    a, b, c = (make_image(project, seed=i) for i in range(3))
    QueueItem.objects.create(queue=queue, image=a, strategy=Strategy.LOSS_RANKED)
    QueueItem.objects.create(queue=queue, image=b, strategy=Strategy.RANDOM_AUDIT)
    Label.objects.create(project=project, image=b, annotator=annotator, value="normal")
    Label.objects.create(project=project, image=c, annotator=other, value="disgusting")
    client = _client(lead)
    url = f"/api/v1/projects/{project.slug}/images/"

    def ids(query: str) -> list[int]:
        response = client.get(f"{url}?{query}")
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids("strategy=loss_ranked") == [a.pk]
    assert ids("strategy=random_audit") == [b.pk]
    assert ids(f"annotator={annotator.pk}") == [b.pk]
    assert ids(f"annotator={other.pk}&label=disgusting") == [c.pk]
    assert ids(f"annotator={other.pk}&label=normal") == []
    rows = client.get(f"{url}?annotator={annotator.pk}").json()["results"]
    assert rows[0]["current_label"] == "normal"
    assert client.get(f"{url}?strategy=nonsense").status_code == 400
    for query in ("strategy=loss_ranked", f"annotator={annotator.pk}"):
        assert _client(annotator).get(f"{url}?{query}").status_code == 403, query
