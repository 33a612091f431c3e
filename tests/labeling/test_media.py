"""Authenticated image serving: content type from the stored format, security headers, scoping."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from PIL import Image as PILImage

from labeling.services.imports import images_import
from tests.factories import PASSWORD, make_image, make_project, make_user, png_bytes

pytestmark = pytest.mark.django_db


def _jpeg() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (30, 20), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def imported(client):
    """A JPEG uploaded under a .png name, and a real PNG, imported into a project."""
    member = make_user("annotator")
    project = make_project(members=[member])
    jpeg = _jpeg()
    report = images_import(project=project, files=[("liar.png", jpeg), ("real.png", png_bytes(4))])
    ids = {e.name: e.image_id for e in report.entries}
    return project, member, ids, jpeg


def test_member_gets_file_with_type_from_content_and_strict_headers(client, imported):
    project, member, ids, jpeg = imported
    client.login(username=member.username, password=PASSWORD)
    response = client.get(reverse("image-file", args=[ids["liar.png"]]))
    assert response.status_code == 200
    # The name says .png; Pillow found a JPEG at import, and that is what the browser is told.
    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'"
    assert response["Content-Disposition"] == "inline"
    assert response["Cache-Control"] == "private, max-age=86400"
    assert _body(response) == jpeg

    png = client.get(reverse("image-file", args=[ids["real.png"]]))
    assert png["Content-Type"] == "image/png"
    assert _body(png) == png_bytes(4)

    thumb = client.get(reverse("image-thumb", args=[ids["liar.png"]]))
    assert thumb.status_code == 200
    assert thumb["Content-Type"] == "image/jpeg"
    assert thumb["X-Content-Type-Options"] == "nosniff"
    with PILImage.open(io.BytesIO(_body(thumb))) as img:
        assert img.format == "JPEG"
        assert img.size == (30, 20)


def test_other_projects_annotator_gets_404_like_a_missing_image(client, imported):
    _project, _member, ids, _jpeg_bytes = imported
    outsider = make_user("annotator")
    make_project(members=[outsider])
    client.login(username=outsider.username, password=PASSWORD)
    for name in ("image-file", "image-thumb"):
        assert client.get(reverse(name, args=[ids["liar.png"]])).status_code == 404
        assert client.get(reverse(name, args=[999_999_999])).status_code == 404


def test_lead_member_and_engineer_may_view(client, imported):
    project, _member, ids, _jpeg_bytes = imported
    lead = make_user("lead")
    project.members.add(lead)
    engineer = make_user("site_engineer")  # sees every project without membership
    for user in (lead, engineer):
        client.login(username=user.username, password=PASSWORD)
        assert client.get(reverse("image-file", args=[ids["real.png"]])).status_code == 200
        client.logout()
    outsider_lead = make_user("lead")
    client.login(username=outsider_lead.username, password=PASSWORD)
    assert client.get(reverse("image-file", args=[ids["real.png"]])).status_code == 404


def test_anonymous_goes_to_login_and_writes_are_refused(client, imported):
    _project, member, ids, _jpeg_bytes = imported
    url = reverse("image-file", args=[ids["real.png"]])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    client.login(username=member.username, password=PASSWORD)
    assert client.post(url).status_code == 405


def test_thumb_falls_back_to_the_file_when_no_thumbnail_was_made(client):
    member = make_user("annotator")
    project = make_project(members=[member])
    image = make_image(project, seed=42)  # the factory stores no thumbnail
    client.login(username=member.username, password=PASSWORD)
    response = client.get(reverse("image-thumb", args=[image.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert _body(response) == png_bytes(42)
