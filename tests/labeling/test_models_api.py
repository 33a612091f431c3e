"""Model versions through the API and the pages: detail, promote, rollback (a stack of
promotions), the PR curve, roles; and the prediction endpoint with import-grade validation,
session and token authentication."""

from __future__ import annotations

import io

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.ml.cascade import load_cascade
from labeling.ml.datasets import ImageRow
from labeling.ml.scoring import score_rows
from labeling.models import ModelVersion
from tests.factories import make_image, make_project, make_user, png_bytes
from tests.labeling.worker import make_cascade_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    lead = make_user("lead")
    annotator = make_user("annotator")
    project = make_project(members=[lead, annotator])
    v1 = make_cascade_version(project, name="v1", seed=1, activate=False)
    v2 = make_cascade_version(project, name="v2", seed=2, activate=False)
    return {
        "project": project,
        "engineer": make_user("site_engineer"),
        "lead": lead,
        "annotator": annotator,
        "v1": v1,
        "v2": v2,
    }


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def promote_url(version: ModelVersion) -> str:
    return reverse(
        "api-model-version-promote", kwargs={"slug": version.project.slug, "pk": version.pk}
    )


def rollback_url(project) -> str:
    return reverse("api-model-version-rollback", kwargs={"slug": project.slug})


def test_promote_and_rollback_are_a_stack_of_promotions(world):
    project, engineer, v1, v2 = world["project"], world["engineer"], world["v1"], world["v2"]
    client = api(engineer)

    response = client.post(rollback_url(project))
    assert response.status_code == 400
    assert "no active model version" in str(response.json())

    response = client.post(promote_url(v1))
    assert response.status_code == 200, response.json()
    assert response.json()["is_active"] is True
    project.refresh_from_db()
    assert project.active_model_version_id == v1.pk

    assert client.post(promote_url(v1)).status_code == 400  # already active
    assert client.post(promote_url(v2)).status_code == 200
    project.refresh_from_db()
    assert project.active_model_version_id == v2.pk

    response = client.post(rollback_url(project))
    assert response.status_code == 200, response.json()
    assert response.json()["name"] == "v1"
    project.refresh_from_db()
    v2.refresh_from_db()
    assert project.active_model_version_id == v1.pk
    assert v2.promoted_at is None  # popped off the stack

    response = client.post(rollback_url(project))
    assert response.status_code == 400
    assert "nothing to roll back to" in str(response.json())
    project.refresh_from_db()
    assert project.active_model_version_id == v1.pk


def test_a_version_without_checkpoint_is_not_promoted(world):
    project = world["project"]
    broken = ModelVersion.objects.create(project=project, name="training", status="training")
    response = api(world["engineer"]).post(promote_url(broken))
    assert response.status_code == 400
    assert "not ready" in str(response.json())
    project.refresh_from_db()
    assert project.active_model_version is None


def test_leads_read_versions_but_do_not_promote(world):
    project, lead, v1 = world["project"], world["lead"], world["v1"]
    detail = reverse("api-model-version-detail", kwargs={"slug": project.slug, "pk": v1.pk})
    response = api(lead).get(detail)
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "v1" and body["config"]["format"] == "imageclean.cascade/1"
    assert body["pr_curve_url"] is None
    assert api(lead).post(promote_url(v1)).status_code == 403
    assert api(lead).post(rollback_url(project)).status_code == 403
    assert api(world["annotator"]).get(detail).status_code == 403
    project.refresh_from_db()
    assert project.active_model_version is None
    # Another project's version is not found through this project.
    other = make_project()
    other_version = make_cascade_version(other, name="x", activate=False)
    url = reverse("api-model-version-detail", kwargs={"slug": project.slug, "pk": other_version.pk})
    assert api(world["engineer"]).get(url).status_code == 404


def _png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_models_page_side_by_side_with_pr_curve_and_buttons_for_engineers(world):
    project, v1, v2 = world["project"], world["v1"], world["v2"]
    v1.metrics = {
        "cascade": {"precision": 0.9, "recall": 0.8, "ap": 0.85},
        "stage1": {"precision": 0.7, "recall": 0.9, "ap": 0.8, "threshold": 0.4},
        "thresholds": {"rule": "chosen on the validation split for precision 0.95"},
    }
    v1.data_snapshot = {"labeled_positive": 12, "labeled_negative": 40, "validation_size": 9}
    v1.pr_curve.save("v1-pr.png", ContentFile(_png()), save=False)
    v1.save()
    url = reverse("project-models", kwargs={"slug": project.slug})

    lead = Client()
    lead.force_login(world["lead"])
    page = lead.get(url).content.decode()
    assert 'data-version="v1"' in page and 'data-version="v2"' in page
    assert "0.850" in page and "12 positive" in page
    assert "Promote v1" not in page and "Read-only" in page
    curve_url = reverse("project-model-pr-curve", kwargs={"slug": project.slug, "pk": v1.pk})
    assert curve_url in page
    curve = lead.get(curve_url)
    assert curve.status_code == 200 and curve["Content-Type"] == "image/png"
    assert b"".join(curve.streaming_content) == _png()

    engineer = Client()
    engineer.force_login(world["engineer"])
    page = engineer.get(url).content.decode()
    assert "Promote v1" in page and "Promote v2" in page
    promote = reverse("project-model-promote", kwargs={"slug": project.slug, "pk": v2.pk})
    # Promote asks first (tests/labeling/test_model_compare.py covers the confirmation).
    response = engineer.post(promote)
    assert response.status_code == 200 and "Yes, promote v2" in response.content.decode()
    project.refresh_from_db()
    assert project.active_model_version_id is None
    response = engineer.post(promote, {"confirm": "yes", "current": "none"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.active_model_version_id == v2.pk
    assert engineer.post(promote, follow=True).content.decode().count("already the active") == 1

    annotator = Client()
    annotator.force_login(world["annotator"])
    assert annotator.get(url).status_code == 403


# --- Prediction -----------------------------------------------------------------------------
def predict_url(project) -> str:
    return reverse("api-predict", kwargs={"slug": project.slug})


def upload(data: bytes, name: str = "x.png") -> dict:
    return {"file": ContentFile(data, name=name)}


def test_predict_needs_an_active_version(world):
    response = api(world["engineer"]).post(
        predict_url(world["project"]), upload(png_bytes(1)), format="multipart"
    )
    assert response.status_code == 400
    assert "no active model version" in str(response.json())


def test_predict_gives_the_cascades_scores_and_decision(world):
    project, v1 = world["project"], world["v1"]
    project.active_model_version = v1
    project.save()
    response = api(world["engineer"]).post(
        predict_url(project), upload(png_bytes(77)), format="multipart"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["model_version"] == "v1" and body["positive_class"] == "disgusting"
    t1, t2 = body["thresholds"]
    assert body["decision"] == (body["stage1"] >= t1 and body["stage2"] >= t2)
    assert body["score"] == pytest.approx(min(body["stage1"], body["stage2"]))
    # The same image scored by the pool-scoring pipeline gives the same numbers.
    image = make_image(project, seed=77)
    record = score_rows(
        load_cascade(v1, device="cpu"),
        [ImageRow(image.pk, image.file.name)],
        batch_size=1,
        num_workers=0,
    ).records[0]
    assert body["stage1"] == pytest.approx(record.stage1, abs=1e-5)
    assert body["stage2"] == pytest.approx(record.stage2, abs=1e-5)


def test_predict_roles_and_token_authenticated_service_accounts(world):
    project = world["project"]
    project.active_model_version = world["v1"]
    project.save()
    service = make_user("site_engineer", username="svc-moderation")
    token = Token.objects.create(user=service)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.post(predict_url(project), upload(png_bytes(5)), format="multipart")
    assert response.status_code == 200, response.json()
    assert set(response.json()) >= {"stage1", "stage2", "score", "decision", "thresholds"}

    for role in ("annotator", "lead"):
        user = world[role]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        response = client.post(predict_url(project), upload(png_bytes(5)), format="multipart")
        assert response.status_code == 403, role
    anonymous = APIClient().post(predict_url(project), upload(png_bytes(5)), format="multipart")
    assert anonymous.status_code in (401, 403)


@pytest.mark.bad_input
def test_predict_validates_uploads_like_imports(world, settings):
    project = world["project"]
    project.active_model_version = world["v1"]
    project.save()
    client = api(world["engineer"])
    good = png_bytes(9)
    cases = [
        (good[: len(good) // 2], "corrupt or truncated"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not an image Pillow recognises"),
        (b"", "empty file"),
    ]
    for data, reason in cases:
        response = client.post(predict_url(project), upload(data), format="multipart")
        assert response.status_code == 400, reason
        assert reason in str(response.json()), response.json()
    tiff = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(tiff, format="TIFF")
    response = client.post(
        predict_url(project), upload(tiff.getvalue(), "a.tif"), format="multipart"
    )
    assert response.status_code == 400 and "TIFF images are not accepted" in str(response.json())
    response = client.post(predict_url(project), {}, format="multipart")
    assert response.status_code == 400 and "file" in response.json()
    settings.IMAGECLEAN_MAX_IMAGE_BYTES = 50
    response = client.post(predict_url(project), upload(good), format="multipart")
    assert response.status_code == 400 and "file too large" in str(response.json())
