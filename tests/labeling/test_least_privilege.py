"""Least privilege for annotators (issue 8, item 7): the image API gives them what labeling
needs and nothing that names the class or the hidden validation split; image URLs work with a
token as well as a session."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import Image, Label
from tests.factories import make_image, make_project, make_user

pytestmark = [pytest.mark.authz, pytest.mark.django_db]

LABELING_FIELDS = {"id", "project", "width", "height", "format", "file_url", "thumbnail_url"}


def _named(image: Image, source: str) -> Image:
    """The image as an import from a folder that names the class would have stored it."""
    Image.objects.filter(pk=image.pk).update(source=source)
    image.source = source
    return image


@pytest.fixture
def world():
    annotator, lead, other = make_user("annotator"), make_user("lead"), make_user("annotator")
    project = make_project(members=[annotator, lead, other])
    pool = _named(make_image(project), "insects/Brown_slug.png")
    hidden = _named(make_image(project, split="validation"), "reptiles/gecko.png")
    Label.objects.create(project=project, image=pool, annotator=other, value="disgusting")
    return {"annotator": annotator, "lead": lead, "project": project, "images": [pool, hidden]}


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_annotators_image_rows_carry_only_what_labeling_needs(world):
    url = f"/api/v1/projects/{world['project'].slug}/images/"
    response = _client(world["annotator"]).get(url)
    assert response.status_code == 200
    rows = response.json()["results"]
    assert len(rows) == 2
    for row in rows:
        assert set(row) == LABELING_FIELDS
    text = response.content.decode()
    for secret in ("insects", "Brown_slug", "gecko", "validation", "disgusting"):
        assert secret not in text
    # Nor can the split be asked for.
    assert _client(world["annotator"]).get(f"{url}?split=validation").status_code == 403


def test_leads_still_see_origin_and_split(world):
    url = f"/api/v1/projects/{world['project'].slug}/images/"
    rows = _client(world["lead"]).get(url).json()["results"]
    assert {row["source"] for row in rows} == {"insects/Brown_slug.png", "reptiles/gecko.png"}
    assert {row["split"] for row in rows} == {"pool", "validation"}
    hidden = _client(world["lead"]).get(f"{url}?split=validation").json()["results"]
    assert [row["id"] for row in hidden] == [world["images"][1].pk]


def test_image_urls_from_the_api_work_with_a_token(world):
    token = Token.objects.create(user=world["annotator"])
    url = f"/api/v1/projects/{world['project'].slug}/images/"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    row = client.get(url).json()["results"][0]
    for key in ("file_url", "thumbnail_url"):
        response = client.get(row[key])
        assert response.status_code == 200, key
        assert response["Content-Type"].startswith("image/")
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = bad.get(row["file_url"])
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    # A token of someone outside the project: the image does not exist for them.
    outsider = Token.objects.create(user=make_user("annotator"))
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Token {outsider.key}")
    assert stranger.get(row["file_url"]).status_code == 404
