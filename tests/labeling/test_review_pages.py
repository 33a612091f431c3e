"""The lead's re-review page and API, the Grad-CAM image (stored by the noise job or rendered on
request), annotator quality and the cold-start page, against the real database with a real
(small) cascade checkpoint."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage

from labeling.models import Image, Job, Label, ModelVersion, Queue, QueueItem, Score, Strategy
from labeling.services.noise import (
    gradcam_storage_name,
    noise_suspects_explain,
    noise_suspects_queue,
)
from tests.factories import make_image, make_project, make_user
from tests.labeling.worker import make_cascade_version

pytestmark = pytest.mark.django_db


def flagged_world():
    """A project whose image carries an annotator's 'normal' label, flagged by O2U (rank 1)."""
    annotator = make_user("annotator")
    lead = make_user("lead")
    project = make_project(members=[annotator, lead])
    image = make_image(project)
    clean = make_image(project)
    label = Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    Label.objects.create(project=project, image=clean, annotator=annotator, value="normal")
    added, already = noise_suspects_queue(
        project=project,
        job=None,
        suspects=[(image.pk, 1, 2.75)],
        values={image.pk: "normal"},
        samples=40,
    )
    assert (added, already) == (1, 0)
    item = QueueItem.objects.get(queue__project=project, queue__kind=Queue.Kind.REVIEW)
    return project, annotator, lead, image, label, item


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_review_page_shows_history_scores_rank_and_gradcam_link():
    project, annotator, lead, image, _label, item = flagged_world()
    version = ModelVersion.objects.create(project=project, name="v7", status="ready")
    Score.objects.create(image=image, model_version=version, stage1=0.91, stage2=0.4, score=0.4)
    page = client_for(lead).get(reverse("project-review", kwargs={"slug": project.slug}))
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-item="{item.pk}"' in html
    assert annotator.username in html and "Annotation" in html  # who and which kind
    assert "O2U rank <b>1</b> of 40" in html and "2.750" in html
    assert "v7" in html and "0.910" in html  # the version's Score row
    assert 'id="review-flip"' in html and 'value="disgusting"' in html
    # No active version: no Grad-CAM image and no active scores on the page.
    assert "review-gradcam" not in html and "No active model version" in html
    assert "review-active-score" not in html
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    html = client_for(lead).get(f"/projects/{project.slug}/review/").content.decode()
    assert f"/projects/{project.slug}/review/images/{image.pk}/gradcam.png?v={version.pk}" in html
    assert 'data-source="on-request"' in html and "rendered on request" in html
    # The active version's scores sit beside the label: stage 1, stage 2 and the decision.
    line = html[html.index('id="review-active-score"') :].split("</p>")[0]
    assert "<b>v7</b>" in line and "<b>0.910</b>" in line and "<b>0.400</b>" in line
    assert '<b id="review-decision">not Disgusting</b>' in line
    # A version that has not scored the image says so instead.
    v8 = ModelVersion.objects.create(project=project, name="v8", status="ready")
    project.active_model_version = v8
    project.save(update_fields=["active_model_version"])
    html = client_for(lead).get(f"/projects/{project.slug}/review/").content.decode()
    assert "The active model v8 has not scored this image yet" in html


def test_gradcam_endpoint_renders_a_png_for_leads_only():
    project, annotator, lead, image, _label, _item = flagged_world()
    url = reverse("project-review-gradcam", kwargs={"slug": project.slug, "pk": image.pk})
    missing = client_for(lead).get(url)
    assert missing.status_code == 404  # no active version yet
    make_cascade_version(project)
    response = client_for(lead).get(url)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"].startswith("private")
    png = PILImage.open(io.BytesIO(response.content))
    assert png.format == "PNG" and png.size == (32, 32)  # the image's own size (under 384)
    assert response["X-Gradcam-Source"] == "rendered"  # the noise job stored none
    assert client_for(annotator).get(url).status_code == 403
    outsider = make_user("lead")  # a lead of no project
    assert client_for(outsider).get(url).status_code == 404


def _flat_cascade_version(project, *, name: str):
    """A cascade whose stage 1 ignores its input (last layer's weights zero): every Grad-CAM
    map is flat, so the overlay must say "no focus"."""
    import torch

    from labeling.ml.cascade import save_cascade
    from mlcore.backbones import build_backbone
    from mlcore.config import BackboneConfig

    torch.manual_seed(1)
    stage1 = build_backbone(
        BackboneConfig(name="small_cnn", cbam=False, input_size=32, width_mult=0.25)
    )
    torch.nn.init.zeros_(stage1.fc.weight)
    stage2 = build_backbone(BackboneConfig(name="small_cnn", cbam=False, input_size=32))
    version = save_cascade(
        project=project,
        name=name,
        stage1=stage1,
        stage2=stage2,
        loss_prediction=None,
        loss_prediction_options=None,
        thresholds=(0.5, 0.5),
        positive_index=project.class_keys.index(project.positive_class),
    )
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    return version


def test_noise_job_heat_maps_are_stored_served_instantly_and_not_made_twice():
    project, annotator, lead, image, _label, item = flagged_world()
    url = reverse("project-review-gradcam", kwargs={"slug": project.slug, "pk": image.pk})
    # No active version: nothing is rendered, and the result says why.
    none = noise_suspects_explain(project=project, image_ids=[image.pk])
    assert none["heatmaps"] == 0 and "no active model version" in none["summary"]

    version = make_cascade_version(project)
    made = noise_suspects_explain(project=project, image_ids=[image.pk])
    assert made["heatmaps"] == 1 and made["heatmap_error_count"] == 0, made
    item.refresh_from_db()
    record = item.details["gradcam"]
    assert record["model_version_id"] == version.pk and record["model_version"] == version.name
    assert record["file"] == gradcam_storage_name(model_version_id=version.pk, image_id=image.pk)
    assert item.details["rank"] == 1  # the O2U details are kept beside it
    with default_storage.open(record["file"], "rb") as handle:
        stored_png = handle.read()
    picture = PILImage.open(io.BytesIO(stored_png))
    assert picture.format == "PNG" and picture.size == (32, 32) and picture.mode == "RGB"

    # The page and the endpoint serve the stored picture.
    lead_client = client_for(lead)
    page = lead_client.get(reverse("project-review", kwargs={"slug": project.slug}))
    assert 'data-source="stored"' in page.content.decode()
    assert "made by the noise job" in page.content.decode()
    served = lead_client.get(url)
    assert served.status_code == 200 and served["X-Gradcam-Source"] == "stored"
    assert served.content == stored_png
    assert served["X-Gradcam-Focus"] == ("region" if record["focused"] else "none")
    api = lead_client.get(f"/api/v1/projects/{project.slug}/review/next/").json()["item"]
    assert api["gradcam_stored"] is True and api["gradcam_focused"] == record["focused"]

    # Re-running makes nothing twice.
    again = noise_suspects_explain(project=project, image_ids=[image.pk])
    assert again["heatmaps"] == 0 and again["heatmaps_existing"] == 1

    # The stored file is gone: the endpoint renders on request, the same picture.
    default_storage.delete(record["file"])
    rendered = lead_client.get(url)
    assert rendered.status_code == 200 and rendered["X-Gradcam-Source"] == "rendered"
    assert rendered.content == stored_png
    # ... and keeps it, so the next request and the next run find it made.
    assert lead_client.get(url)["X-Gradcam-Source"] == "stored"
    assert noise_suspects_explain(project=project, image_ids=[image.pk])["heatmaps_existing"] == 1
    assert client_for(annotator).get(url).status_code == 403


def test_a_flat_heat_map_is_shown_as_no_focus_not_a_tint():
    project, _annotator, lead, image, _label, item = flagged_world()
    _flat_cascade_version(project, name="flat")
    result = noise_suspects_explain(project=project, image_ids=[image.pk])
    assert result["heatmaps"] == 1 and result["heatmaps_no_focus"] == 1
    item.refresh_from_db()
    assert item.details["gradcam"]["focused"] is False
    html = client_for(lead).get(f"/projects/{project.slug}/review/").content.decode()
    assert 'id="review-gradcam-no-focus"' in html and "No focus" in html
    served = client_for(lead).get(
        reverse("project-review-gradcam", kwargs={"slug": project.slug, "pk": image.pk})
    )
    assert served["X-Gradcam-Focus"] == "none"
    pixels = np.asarray(PILImage.open(io.BytesIO(served.content)).convert("RGB")).astype(int)
    # Grey, untinted: the three channels are equal everywhere.
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_confirm_keeps_the_label_and_flip_writes_a_superseding_correction():
    project, _annotator, lead, image, label, item = flagged_world()
    client = client_for(lead)
    resolve = reverse("project-review-resolve", kwargs={"slug": project.slug, "pk": item.pk})
    flipped = client.post(resolve, {"value": "disgusting"})
    assert flipped.status_code == 302
    correction = Label.objects.get(image=image, kind=Label.Kind.CORRECTION)
    assert correction.value == "disgusting" and correction.supersedes_id == label.pk
    assert correction.annotator == lead and correction.strategy == Strategy.NOISE_REVIEW
    item.refresh_from_db()
    assert item.status == QueueItem.Status.DONE
    # Answering again changes nothing and says why.
    again = client.post(resolve, {"action": "confirm"}, follow=True)
    assert "already resolved" in again.content.decode()
    assert Label.objects.filter(image=image).count() == 2
    # Nothing left: the page says so.
    empty = client.get(reverse("project-review", kwargs={"slug": project.slug}))
    assert 'id="review-empty"' in empty.content.decode()

    # A second flagged image: confirm keeps its value as a CONFIRMATION.
    other = make_image(project)
    old = Label.objects.create(project=project, image=other, annotator=lead, value="disgusting")
    noise_suspects_queue(
        project=project, job=None, suspects=[(other.pk, 1, 3.0)], values={}, samples=9
    )
    other_item = QueueItem.objects.get(image=other, queue__kind=Queue.Kind.REVIEW)
    url = reverse("project-review-resolve", kwargs={"slug": project.slug, "pk": other_item.pk})
    assert client.post(url, {}).status_code == 400  # neither confirm nor a class
    assert client.post(url, {"action": "confirm"}).status_code == 302
    confirmation = Label.objects.get(image=other, kind=Label.Kind.CONFIRMATION)
    assert confirmation.value == "disgusting" and confirmation.supersedes_id == old.pk


def test_review_api_next_and_resolve():
    project, annotator, lead, image, label, item = flagged_world()
    client = client_for(lead)
    nxt = client.get(f"/api/v1/projects/{project.slug}/review/next/").json()["item"]
    assert nxt["id"] == item.pk and nxt["details"]["rank"] == 1
    assert [h["annotator"] for h in nxt["history"]] == [annotator.username]
    assert nxt["image_url"] == reverse("image-file", kwargs={"pk": image.pk})
    bad = client.post(
        f"/api/v1/review/items/{item.pk}/resolve/",
        {"confirm": False},
        content_type="application/json",
    )
    assert bad.status_code == 400 and "value" in bad.json()
    done = client.post(
        f"/api/v1/review/items/{item.pk}/resolve/",
        {"confirm": False, "value": "disgusting"},
        content_type="application/json",
    )
    assert done.status_code == 201 and done.json()["kind"] == "correction"
    assert done.json()["supersedes"] == label.pk
    assert client.get(f"/api/v1/projects/{project.slug}/review/next/").json() == {"item": None}
    denied = client_for(annotator).get(f"/api/v1/projects/{project.slug}/review/next/")
    assert denied.status_code == 403


def test_quality_page_counts_labels_flagged_and_overturned():
    project, annotator, lead, image, _label, item = flagged_world()
    client_for(lead).post(
        reverse("project-review-resolve", kwargs={"slug": project.slug, "pk": item.pk}),
        {"value": "disgusting"},
    )
    page = client_for(lead).get(reverse("project-quality", kwargs={"slug": project.slug}))
    assert page.status_code == 200
    html = page.content.decode()
    row = html[html.index(f'data-annotator="{annotator.username}"') :].split("</tr>")[0]
    assert '<td class="labels">2</td>' in row
    assert '<td class="flagged">1</td>' in row
    assert '<td class="overturned">1</td>' in row
    assert "50%" in row
    api = client_for(lead).get(f"/api/v1/projects/{project.slug}/quality/").json()
    assert api == [
        {
            "annotator_id": annotator.pk,
            "username": annotator.username,
            "labels": 2,
            "flagged": 1,
            "overturned": 1,
        }
    ]
    assert client_for(annotator).get(f"/projects/{project.slug}/quality/").status_code == 403


def test_cold_start_page_lists_searches_and_starts_a_job():
    engineer = make_user("site_engineer")
    project = make_project()
    images = [make_image(project) for _ in range(3)]
    for image, source in zip(images, ["insect-0.png", "insect-1.png", "sofa.png"], strict=True):
        Image.objects.filter(pk=image.pk).update(source=source)
    seeds = images[:2]
    client = client_for(engineer)
    url = reverse("project-cold-start", kwargs={"slug": project.slug})
    page = client.get(url).content.decode()
    assert "sofa.png" in page and "insect-0.png" in page
    found = client.get(url, {"q": "INSECT"}).content.decode()
    assert "insect-1.png" in found and "sofa.png" not in found
    refused = client.post(url, {"k": "5"})
    assert (
        refused.status_code == 400 and "Pick at least one seed image." in refused.content.decode()
    )
    assert not Job.objects.filter(project=project).exists()
    started = client.post(url, {"seed_image_ids": [str(s.pk) for s in seeds], "k": "5"})
    job = Job.objects.get(project=project, kind=Job.Kind.COLD_START)
    assert started.status_code == 302 and started["Location"] == f"/jobs/{job.pk}/"
    assert job.params == {
        "seed_image_ids": [s.pk for s in seeds],
        "k": 5,
        "batch_size": 32,
        "aggregate": "softmax",
        "label_seeds": True,
    }
    lead = make_user("lead")
    project.members.add(lead)
    assert client_for(lead).get(url).status_code == 403


def test_annotators_are_refused_every_review_page():
    project, annotator, _lead, image, _label, item = flagged_world()
    client = client_for(annotator)
    for url in [
        "/review/",
        f"/projects/{project.slug}/review/",
        f"/projects/{project.slug}/quality/",
        f"/projects/{project.slug}/cold-start/",
        f"/projects/{project.slug}/review/images/{image.pk}/gradcam.png",
    ]:
        assert client.get(url).status_code == 403, url
    resolve = f"/projects/{project.slug}/review/items/{item.pk}/resolve/"
    assert client.post(resolve, {"value": "disgusting"}).status_code == 403
    assert Label.objects.filter(image=image).count() == 1
