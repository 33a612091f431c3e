"""A selection round sized to the pool (issue 12): a stated share of the eligible images at
most, a random audit that never empties, what a round takes shown before it starts, and images
waiting in the queue since an import moved (not skipped) when the model chooses them."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import Image, Job, Label, ModelVersion, QueueItem, Score, Strategy
from labeling.services.jobs import job_create
from labeling.services.projects import project_default_queues_ensure
from labeling.services.queues import queue_items_add
from labeling.services.selection import SELECT, select_run
from tests.factories import make_project, make_user

pytestmark = pytest.mark.django_db

POOL = 300


def _pool(n: int = POOL, *, queued: int = 0):
    """`n` unlabeled pool images (rows only: selection never opens a file) scored by an active
    version like an early model on a rare class; the first `queued` wait in the labeling queue
    as an import left them."""
    project = make_project(validation_fraction=0.0)
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    tag = uuid.uuid4().hex[:16]
    images = Image.objects.bulk_create(
        Image(
            project=project,
            content_hash=f"{tag}{i:048d}",
            file=f"rows/{tag}/{i}.png",
            width=8,
            height=8,
            format="PNG",
            byte_size=10,
            split=Image.Split.POOL,
        )
        for i in range(n)
    )
    rng = np.random.default_rng(0)
    scores = rng.beta(0.5, 20.0, size=n)
    losses = rng.random(n)
    Score.objects.bulk_create(
        Score(
            image=image,
            model_version=version,
            stage1=float(p),
            stage2=float(p),
            score=float(p),
            decision=False,
            predicted_loss=float(loss),
        )
        for image, p, loss in zip(images, scores, losses, strict=True)
    )
    labeling, _review = project_default_queues_ensure(project=project)
    if queued:
        queue_items_add(
            queue=labeling,
            images=[image.pk for image in images[:queued]],
            strategy=Strategy.MANUAL,
            details={"source": "import"},
        )
    return project, version, images, labeling


def test_a_round_on_300_images_keeps_its_audit_and_its_stated_share():
    project, version, images, labeling = _pool()
    engineer = make_user("site_engineer")
    client = Client()
    client.force_login(engineer)
    share = SELECT.param("max_share").default

    # Before the round starts, the page and the API say what it will take.
    preview = client.get(reverse("api-selection-preview", kwargs={"slug": project.slug}))
    assert preview.status_code == 200, preview.content
    planned = preview.json()
    assert planned["eligible"] == POOL and planned["max_share"] == share
    assert planned["cap"] == int(share * POOL) == 60
    assert planned["most"] <= planned["cap"] and planned["audit"] >= 1
    page = client.get(reverse("project-jobs", kwargs={"slug": project.slug}))
    text = page.content.decode()
    assert 'id="selection-preview"' in text
    assert f"at most <b>{planned['most']}</b> of the <b>{POOL}</b> eligible images" in text

    job = job_create(project=project, kind=Job.Kind.SELECT, params={}, created_by=engineer)
    assert job.params["sizing"] == "auto"  # the default scales with the pool
    select_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    items = QueueItem.objects.filter(queue=labeling, details__job_id=job.pk)
    taken = items.count()
    audit = items.filter(strategy=Strategy.RANDOM_AUDIT).count()
    assert taken == job.result["total"]
    assert 0 < taken <= share * POOL  # never more than the stated share
    assert audit >= 1  # the random audit never empties
    assert audit == job.result["by_rule"]["random_audit"] == planned["audit"]
    assert taken <= planned["most"]
    assert job.result["sizes"]["cap"] == planned["cap"]
    # Each item says where it stands: its rank in the round and the rule that chose it.
    ranks = sorted(item.details["rank"] for item in items)
    assert ranks == list(range(1, taken + 1))
    assert {item.details["rule"] for item in items.filter(strategy=Strategy.RANDOM_AUDIT)} == {
        "random_audit"
    }

    # The old fixed sizes (200 + 200) on the same pool stay inside the share too.
    fixed = job_create(
        project=project,
        kind=Job.Kind.SELECT,
        params={"sizing": "fixed", "k_band": 200, "k_loss": 200, "seed": 1},
        created_by=engineer,
    )
    select_run(job_id=fixed.pk)
    fixed.refresh_from_db()
    eligible_then = POOL - taken
    assert fixed.result["sizes"]["eligible"] == eligible_then
    assert 0 < fixed.result["total"] <= share * eligible_then
    assert fixed.result["by_rule"]["random_audit"] >= 1


def test_a_model_moves_images_an_import_queued_and_says_so():
    project, version, images, labeling = _pool(queued=POOL)  # "add to queue" on import
    engineer = make_user("site_engineer")
    job = job_create(project=project, kind=Job.Kind.SELECT, params={}, created_by=engineer)
    select_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    moved = sum(job.result["moved"].values())
    assert moved == job.result["total"] > 0 and sum(job.result["added"].values()) == 0
    chosen = QueueItem.objects.filter(queue=labeling, details__job_id=job.pk)
    assert chosen.count() == moved
    assert QueueItem.objects.filter(queue=labeling).count() == POOL  # moved, never duplicated
    for item in chosen:
        assert item.details["moved_from"]["strategy"] == Strategy.MANUAL
        assert item.strategy != Strategy.MANUAL
    # Served first: the round's items outrank everything the import queued.
    first = QueueItem.objects.filter(queue=labeling).order_by("-priority", "id")[:moved]
    assert {item.pk for item in first} == {item.pk for item in chosen}


def test_a_round_that_finds_nothing_says_why():
    project, version, images, labeling = _pool(n=5)
    Score.objects.filter(model_version=version).delete()
    engineer = make_user("site_engineer")
    job = job_create(project=project, kind=Job.Kind.SELECT, params={}, created_by=engineer)
    select_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.result["total"] == 0
    assert "Score the pool" in job.result["notice"]
    client = Client()
    client.force_login(engineer)
    page = client.get(reverse("job-detail", kwargs={"pk": job.pk})).content.decode()
    assert 'id="job-notice"' in page and "scored none of the pool" in page


def test_automatic_rounds_follow_the_labeling_rate():
    project, version, images, labeling = _pool()
    annotator, engineer = make_user("annotator"), make_user("site_engineer")
    # 70 annotations this week: 10 a day, so a round is about a day of labeling (at least 20).
    Label.objects.bulk_create(
        Label(project=project, image=image, annotator=annotator, value="normal")
        for image in images[:70]
    )
    client = Client()
    client.force_login(engineer)
    url = reverse("api-selection-preview", kwargs={"slug": project.slug})
    planned = client.get(url).json()
    assert planned["eligible"] == POOL - 70 and planned["cap"] == int(0.2 * (POOL - 70))
    assert planned["k_band"] + planned["k_loss"] == 20  # max(20, 10 a day)
    assert planned["audit"] == 1 and planned["most"] == 21
    assert "10 labels a day" in planned["rule"]
    # A fixed size and a share of the pool, as the job takes them; a refused value says why.
    fixed = client.get(url, {"sizing": "fixed", "k_band": "100", "k_loss": "0", "max_share": "0.1"})
    assert fixed.json()["most"] <= 23 and "capped" in fixed.json()["rule"]
    refused = client.get(url, {"max_share": "2"})
    assert refused.status_code == 400 and "max_share" in refused.json()
    assert client.get(url, {"nonsense": "1"}).status_code == 400


def test_the_preview_reuses_its_counts_says_how_old_and_a_round_recounts():
    """At a million scores the eligible count takes seconds (docs/platform-benchmarks.md), so
    the page and the form's API count at most once per PREVIEW_CACHE_SECONDS and say when;
    a round changes what is eligible, so the next preview counts again."""
    project, version, images, labeling = _pool()
    engineer, annotator = make_user("site_engineer"), make_user("annotator")
    client = Client()
    client.force_login(engineer)
    url = reverse("api-selection-preview", kwargs={"slug": project.slug})
    first = client.get(url).json()
    assert first["eligible"] == POOL and "counted" in first and first["counted_at"]
    # A label makes one image ineligible; the preview keeps the figure it counted, and its age.
    Label.objects.create(project=project, image=images[0], annotator=annotator, value="normal")
    again = client.get(url, {"sizing": "fixed", "k_band": "10", "k_loss": "10"}).json()
    assert again["eligible"] == POOL and again["counted_at"] == first["counted_at"]
    page = client.get(reverse("project-jobs", kwargs={"slug": project.slug})).content.decode()
    assert f"of the <b>{POOL}</b> eligible images" in page and "Eligible images counted" in page

    job = job_create(project=project, kind=Job.Kind.SELECT, params={}, created_by=engineer)
    select_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["sizes"]["eligible"] == POOL - 1  # the job counts afresh
    after = client.get(url).json()
    assert after["eligible"] == POOL - 1 - job.result["total"]
    assert after["counted_at"] > first["counted_at"]
