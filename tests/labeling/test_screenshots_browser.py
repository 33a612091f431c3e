"""Each role's main page, from a seeded demo, in Chromium: the screenshots in docs/img/screens/
that README.md and docs/walkthrough.md show.

The demo is `manage.py demo` (real images: Fashion-MNIST and Tux Paint stamps) plus what a few
minutes of work leave behind: the annotator's labels, two model versions (the active one a real,
small cascade, so the review page can draw its Grad-CAM), suspects O2U flagged for the lead, and
jobs that succeeded, failed and are running.

Every run checks that each page opens for its role and shows its main content. With
SAVE_SCREENSHOTS=1 it also rewrites the PNGs; `python -m tests.labeling.screenshots` does that
(scripts/test's services and data must be there, as for any browser test).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone

from labeling.models import Image, Job, ModelVersion, Project, Queue
from labeling.services.labels import lease_submit
from labeling.services.noise import noise_suspects_queue
from labeling.services.preferences import preference_update
from labeling.services.queues import queue_claim_next
from tests.labeling.browser import ARGS, CHROMIUM, session_cookie
from tests.labeling.worker import make_cascade_version

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

OUT = Path(__file__).resolve().parents[2] / "docs" / "img" / "screens"
VIEWPORT = {"width": 1280, "height": 860}

pytestmark = pytest.mark.browser


def _label_some(project: Project, annotator: User, queue: Queue, count: int) -> None:
    """Label `count` items of `queue` as the images' dataset class says (the demo keeps it)."""
    leases = queue_claim_next(queue=queue, annotator=annotator, count=count)
    for lease in leases:
        truth = lease.item.image.metadata.get("true_label", project.default_class)
        lease_submit(lease=lease, annotator=annotator, value=truth, duration_ms=1800)


def _figures(*, tp: int, fp: int, fn: int, ap: float) -> dict:
    """A version's cascade figures as training stores them (counts on the validation split)."""
    return {
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "ap": ap,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "predicted_positive": tp + fp,
        "positives": tp + fn,
    }


def seed() -> dict:
    call_command("demo", "--pool", "240", "--queue", "80", "--password", "demo-password-1")
    project = Project.objects.get(slug="demo")
    users = {name: User.objects.get(username=name) for name in ("annotator", "lead", "engineer")}
    labeling = Queue.objects.get(project=project, kind=Queue.Kind.LABELING)
    validation = Queue.objects.get(project=project, kind=Queue.Kind.VALIDATION)
    # The annotator chose their protection when the page first asked (the intro is not shown).
    preference_update(user=users["annotator"], project=project, protection="off", intro_seen=True)
    _label_some(project, users["annotator"], validation, 12)
    _label_some(project, users["annotator"], labeling, 30)

    # Two versions: v1 a real small cascade (active), v2 a better-looking one to compare.
    v1 = make_cascade_version(project, name="v1")
    v1.metrics = {"cascade": _figures(tp=7, fp=1, fn=4, ap=0.79)}
    v1.promoted_at = timezone.now() - timedelta(hours=2)
    v1.save(update_fields=["metrics", "promoted_at"])
    v2 = ModelVersion.objects.create(
        project=project,
        name="v2",
        status=ModelVersion.Status.READY,
        metrics={"cascade": _figures(tp=8, fp=1, fn=3, ap=0.86)},
        training_seconds=412.0,
    )

    # Suspects for the lead: labeled images O2U ranked high.
    labeled = list(
        Image.objects.filter(project=project, labels__isnull=False).distinct().order_by("pk")[:5]
    )
    values = {image.pk: image.labels.first().value for image in labeled}
    noise_suspects_queue(
        project=project,
        job=None,
        suspects=[(image.pk, rank, 3.0 - rank * 0.3) for rank, image in enumerate(labeled, 1)],
        values=values,
        samples=42,
    )

    now = timezone.now()
    jobs = [
        (Job.Kind.TRAIN_CASCADE, Job.Status.SUCCEEDED, {"model_version": v2.pk}, ""),
        (Job.Kind.SCORE_POOL, Job.Status.RUNNING, {}, ""),
        (Job.Kind.DETECT_NOISE, Job.Status.FAILED, {}, "No labeled images to check yet."),
    ]
    for index, (kind, status, result, error) in enumerate(jobs):
        Job.objects.create(
            project=project,
            kind=kind,
            status=status,
            result=result,
            error=error,
            percent=100.0 if status != Job.Status.RUNNING else 40.0,
            stage="done" if status != Job.Status.RUNNING else "scoring",
            created_by=users["engineer"],
            started_at=now - timedelta(minutes=20 - index * 5),
            finished_at=None if status == Job.Status.RUNNING else now - timedelta(minutes=9),
            model_version=v2 if kind == Job.Kind.TRAIN_CASCADE else v1,
        )
    return {"project": project, "users": users, "labeling": labeling}


def pages(world) -> list[tuple[str, str, str, str]]:
    """(file name, role, path, selector of the page's main content)."""
    slug = world["project"].slug
    queue = f"/projects/{slug}/queues/{world['labeling'].pk}"
    return [
        ("annotator-labeling.png", "annotator", f"{queue}/label/", "#stage img"),
        ("annotator-grid.png", "annotator", f"{queue}/grid/", ".tile img"),
        ("lead-review.png", "lead", f"/projects/{slug}/review/", "[data-item]"),
        ("lead-quality.png", "lead", f"/projects/{slug}/quality/", "h1"),
        ("engineer-project.png", "engineer", f"/projects/{slug}/", "nav.project-links"),
        ("engineer-models.png", "engineer", f"/projects/{slug}/models/", "text=v2"),
        ("engineer-estimates.png", "engineer", f"/projects/{slug}/estimates/", "h1"),
        ("engineer-jobs.png", "engineer", f"/projects/{slug}/jobs/", "[data-status='failed']"),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_each_roles_main_page(live_server):
    from playwright.sync_api import sync_playwright

    world = seed()
    save = os.environ.get("SAVE_SCREENSHOTS") == "1"
    if save:
        OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            contexts = {}
            for name, role, path, selector in pages(world):
                if role not in contexts:
                    context = browser.new_context(viewport=VIEWPORT, locale="en")
                    context.add_cookies([session_cookie(world["users"][role], live_server)])
                    contexts[role] = context.new_page()
                    # The review page draws Grad-CAM heat maps on demand: slow on a busy machine.
                    contexts[role].set_default_timeout(180_000)
                page = contexts[role]
                response = page.goto(live_server.url + path)
                assert response.status == 200, (path, response.status)
                page.wait_for_selector(selector)
                page.wait_for_load_state("networkidle")
                page.locator(selector).first.scroll_into_view_if_needed()
                if save:
                    page.screenshot(path=str(OUT / name))
        finally:
            browser.close()
