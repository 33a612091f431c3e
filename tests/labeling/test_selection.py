"""Selection into the labeling queue: planted scores, a real worker runs the `select` job; the
quantile band fills its budget on a rare pool where the fixed band would not."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from labeling.models import Image, Job, Label, ModelVersion, Queue, QueueItem, Score, Strategy
from labeling.selectors.strategies import strategy_yield
from labeling.services.jobs import job_create
from labeling.services.queues import queue_get_or_create, queue_items_add
from labeling.services.selection import SELECT, queue_fill_from_scores, select_run
from mlcore.selection import BAND_MODES, BandConfig
from tests.factories import make_image, make_project, make_user
from tests.labeling import worker as loop_worker
from tests.labeling.worker import wait_for

# The real-worker fixtures (tests/labeling/worker.py).
celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir


def _world():
    """60 pool images with planted scores (index: score, predicted loss, decision):
    0-9 confident (0.90..0.99), 10-19 in the band (0.35..0.53), 20-29 low score but high loss,
    30-34 in the band AND highest loss, 35-59 neither. Image 0 and 20 are labeled, image 11 is
    already queued."""
    annotator = make_user("annotator")
    lead = make_user("lead")
    project = make_project(members=[annotator, lead])
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    images = [make_image(project, seed=30_000 + i) for i in range(60)]
    rows = []
    for i, image in enumerate(images):
        if i < 10:
            score, loss = 0.90 + i * 0.01, 0.1
        elif i < 20:
            score, loss = 0.35 + (i - 10) * 0.02, 0.1
        elif i < 30:
            score, loss = 0.05, 5.0 + (i - 20) * 0.1
        elif i < 35:
            score, loss = 0.5, 9.0
        else:
            score, loss = 0.1, 0.2
        rows.append(
            Score(
                image=image,
                model_version=version,
                stage1=min(1.0, score + 0.01),
                stage2=score,
                score=score,
                decision=score >= 0.9,
                predicted_loss=loss,
            )
        )
    Score.objects.bulk_create(rows)
    for i in (0, 20):
        Label.objects.create(project=project, image=images[i], annotator=annotator, value="normal")
    queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    queue_items_add(queue=queue, images=[images[11]], strategy=Strategy.MANUAL)
    return project, version, images, annotator, lead


def _ids(images, indexes) -> set[int]:
    return {images[i].pk for i in indexes}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_select_job_fills_the_queue_with_the_right_strategies(celery_worker, worker_storage):
    project, version, images, annotator, lead = _world()
    engineer = make_user("site_engineer")
    # The fixed thresholds (0.9; 0.3-0.6), so the planted groups are exactly the band.
    params = {
        "k_band": 100,
        "k_loss": 15,
        "audit_share": 0.1,
        "seed": 7,
        "band_mode": "absolute",
        # The sizes as given, over the whole pool (the automatic sizes have their own test).
        "sizing": "fixed",
        "max_share": 1.0,
    }
    job = job_create(project=project, kind=Job.Kind.SELECT, params=params, created_by=engineer)

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(finished, timeout=60, worker=celery_worker, what="selection")
    assert job.status == Job.Status.SUCCEEDED, job.error

    items = {
        item.image_id: item
        for item in QueueItem.objects.filter(queue__project=project).exclude(
            strategy=Strategy.MANUAL
        )
    }
    by_strategy: dict[str, set[int]] = {}
    for image_id, item in items.items():
        by_strategy.setdefault(item.strategy, set()).add(image_id)
    assert by_strategy[Strategy.BAND_AND_LOSS] == _ids(images, range(30, 35))
    # Image 11 was waiting in the queue (an import's item): chosen by the band, it is moved.
    assert by_strategy[Strategy.CONFIDENCE_BAND] == _ids(images, range(1, 20))
    # The 10 highest remaining losses: 21-29, then the first of the 0.2 ties (ids ascending).
    assert by_strategy[Strategy.LOSS_RANKED] == _ids(images, [*range(21, 30), 35])
    audit = by_strategy[Strategy.RANDOM_AUDIT]
    assert len(audit) == 4  # ceil(0.1 * 34)
    assert audit <= _ids(images, range(36, 60))
    # Never a labeled image, never a second item for an image already queued: the waiting one
    # moved, with its trail.
    assert not set(items) & _ids(images, [0, 20])
    assert QueueItem.objects.filter(image=images[11]).count() == 1
    assert items[images[11].pk].details["moved_from"]["strategy"] == Strategy.MANUAL
    assert items[images[11].pk].details["rank"] >= 1
    assert job.result["added"] == {
        "band_and_loss": 5,
        "confidence_band": 18,
        "loss_ranked": 10,
        "random_audit": 4,
    }
    assert job.result["moved"] == {
        "band_and_loss": 0,
        "confidence_band": 1,
        "loss_ranked": 0,
        "random_audit": 0,
    }
    # Per rule: 9 confident (1-9), 15 in the band (10-19 and the 5 chosen by both), 10 by
    # loss alone; the thresholds are the fixed ones.
    assert job.result["by_rule"] == {
        "high_score": 9,
        "uncertain_band": 15,
        "loss_top_k": 10,
        "band_and_loss": 5,
        "random_audit": 4,
    }
    assert job.result["band_thresholds"]["mode"] == "absolute"
    assert job.result["band_thresholds"]["high"] == 0.9
    assert job.result["band_thresholds"]["band"] == [0.3, 0.6]
    assert job.result["band_thresholds"]["candidates"] == 58
    assert items[images[9].pk].details["rule"] == "high_score"
    assert items[images[12].pk].details["rule"] == "uncertain_band"
    assert items[images[25].pk].details["rule"] == "loss_top_k"
    # Priorities: the union interleaves the two rankings (most confident, then highest loss).
    ranked = sorted(items.values(), key=lambda item: -item.priority)
    assert [ranked[0].image_id, ranked[1].image_id] == [images[9].pk, images[30].pk]
    top = items[images[30].pk]
    assert top.details["score"] == 0.5
    assert top.details["predicted_loss"] == 9.0
    assert top.details["model_version_id"] == version.pk
    assert top.details["job_id"] == job.pk
    assert top.details["decision"] is False

    # Running it again never queues an image twice, and never moves what this version chose
    # already: the band is used up, the loss ranking and the audit take from what is left
    # (images 36-59 minus the first audit).
    again = job_create(project=project, kind=Job.Kind.SELECT, params=params, created_by=engineer)

    def again_finished() -> bool:
        again.refresh_from_db()
        return again.is_finished

    wait_for(again_finished, timeout=60, worker=celery_worker, what="second selection")
    assert again.status == Job.Status.SUCCEEDED, again.error
    assert again.result["added"] == {
        "band_and_loss": 0,
        "confidence_band": 0,
        "loss_ranked": 15,
        "random_audit": 2,
    }
    second = set(
        QueueItem.objects.filter(details__job_id=again.pk).values_list("image_id", flat=True)
    )
    assert len(second) == 17
    assert not second & set(items)
    assert second <= _ids(images, range(36, 60)) - audit
    image_ids = list(QueueItem.objects.filter(queue__project=project).values_list("image_id"))
    assert len(image_ids) == len(set(image_ids))


@pytest.mark.django_db
def test_strategy_yield_counts_labels_positives_and_flips():
    project, version, images, annotator, lead = _world()
    queue_fill_from_scores(
        project=project,
        model_version=version,
        k_band=100,
        k_loss=15,
        audit_share=0.0,
        high=0.9,
        band=(0.3, 0.6),
        seed=0,
        band_mode="absolute",
    )
    # Image 9: the model said positive, the label agrees. Image 30: the model said negative,
    # the label says positive (a flip). Image 21: negative on both sides.
    for index, value in ((9, "disgusting"), (30, "disgusting"), (21, "normal")):
        Label.objects.create(project=project, image=images[index], annotator=annotator, value=value)
    rows = {row["strategy"]: row for row in strategy_yield(project=project)}
    band = rows["confidence_band"]
    # 18 added and image 11 moved there from the import's item.
    assert (band["queued"], band["labeled"], band["positive"], band["flipped"]) == (19, 1, 1, 0)
    assert (rows["band_and_loss"]["labeled"], rows["band_and_loss"]["flipped"]) == (1, 1)
    assert (rows["loss_ranked"]["labeled"], rows["loss_ranked"]["positive"]) == (1, 0)
    assert rows["loss_ranked"]["flipped"] == 0

    client = Client()
    client.force_login(lead)
    response = client.get(f"/api/v1/projects/{project.slug}/strategy-yield/")
    assert response.status_code == 200
    api_rows = {row["strategy"]: row for row in response.json()}
    assert api_rows["band_and_loss"]["flipped"] == 1
    client.force_login(annotator)
    assert client.get(f"/api/v1/projects/{project.slug}/strategy-yield/").status_code == 403
    engineer = make_user("site_engineer")
    client.force_login(engineer)
    page = client.get(f"/projects/{project.slug}/jobs/")
    assert page.status_code == 200
    assert b'data-strategy="band_and_loss"' in page.content


@pytest.mark.django_db
@pytest.mark.bad_input
@pytest.mark.parametrize(
    "bad",
    [
        {"band": (0.7, 0.2)},
        {"high": 1.5},
        {"band_mode": "relative"},
        {"high_share": 1.5},
        {"band_center": -0.1},
        {"k_band": -1},
        {"audit_share": float("nan")},
    ],
)
def test_bad_selection_parameters_are_refused_and_queue_nothing(bad):
    project, version, images, annotator, lead = _world()
    before = QueueItem.objects.count()
    args = {
        "k_band": 10,
        "k_loss": 10,
        "audit_share": 0.0,
        "high": 0.9,
        "band": (0.3, 0.6),
        "seed": 0,
        **bad,
    }
    with pytest.raises(ValidationError):
        queue_fill_from_scores(project=project, model_version=version, **args)
    assert QueueItem.objects.count() == before


def _rare_world(n: int = 400, seed: int = 0):
    """`n` pool images scored like an early model at a rare prevalence (almost all far below
    0.3), no predicted losses; the first 20 are labeled."""
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    version = ModelVersion.objects.create(project=project, name="v1", status="ready")
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    images = Image.objects.bulk_create(
        Image(
            project=project,
            content_hash=f"{seed:08d}{i:056d}",
            file=f"rare/{i}.png",
            width=32,
            height=32,
            format="PNG",
            byte_size=100,
            source=f"rare-{i}.png",
            split=Image.Split.POOL,
        )
        for i in range(n)
    )
    scores = np.random.default_rng(seed).beta(0.5, 40.0, size=n)
    Score.objects.bulk_create(
        Score(image=image, model_version=version, stage1=p, stage2=p, score=p, decision=False)
        for image, p in zip(images, scores.tolist(), strict=True)
    )
    for image in images[:20]:
        Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    return project, version, images, scores


@pytest.mark.django_db
def test_quantile_band_fills_k_band_on_a_rare_pool_where_fixed_thresholds_do_not():
    project, version, images, scores = _rare_world()
    eligible = scores[20:]
    fixed = ((eligible >= 0.9) | ((eligible >= 0.3) & (eligible <= 0.6))).sum()
    assert fixed < 5  # the fixed band would leave the round to chance
    engineer = make_user("site_engineer")
    job = job_create(
        project=project,
        kind=Job.Kind.SELECT,
        params={
            "k_band": 50,
            "k_loss": 10,
            "audit_share": 0.1,
            "sizing": "fixed",
            "max_share": 1.0,
        },
        created_by=engineer,
    )
    assert job.params["band_mode"] == "quantile"
    select_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    result = job.result
    # No predicted losses (no loss-prediction module): the band alone fills k_band.
    assert result["added"]["confidence_band"] == 50 and result["added"]["loss_ranked"] == 0
    assert result["by_rule"] == {
        "high_score": 4,  # ceil(1% of 380 eligible)
        "uncertain_band": 46,
        "loss_top_k": 0,
        "band_and_loss": 0,
        "random_audit": 5,  # ceil(0.1 * 50)
    }
    thresholds = result["band_thresholds"]
    assert thresholds["mode"] == "quantile" and thresholds["candidates"] == 380
    top_four = np.sort(eligible)[-4:]
    assert thresholds["high"] == pytest.approx(top_four.min())
    assert result["function"] == "mlcore.selection.confidence_band"
    items = QueueItem.objects.filter(details__job_id=job.pk)
    by_rule: dict[str, list[float]] = {}
    for item in items:
        by_rule.setdefault(item.details["rule"], []).append(item.details["score"])
    assert sorted(by_rule["high_score"]) == pytest.approx(sorted(top_four.tolist()))
    low, high = thresholds["band"]
    assert all(low <= score <= high < thresholds["high"] for score in by_rule["uncertain_band"])
    assert len(by_rule["random_audit"]) == 5
    assert any("band thresholds (quantile)" in line for line in job.log)


def test_select_spec_defaults_are_mlcores_band_defaults():
    """The form's band defaults and mlcore's BandConfig say the same thing."""
    defaults = BandConfig()
    declared = {spec.name: spec.default for spec in SELECT.params}
    assert declared["band_mode"] == defaults.mode
    mode = next(spec for spec in SELECT.params if spec.name == "band_mode")
    assert set(mode.choice_values) == set(BAND_MODES)
    assert declared["high_share"] == defaults.high_share
    assert declared["band_share"] == defaults.band_share
    assert declared["band_center"] == defaults.band_center
    assert declared["high"] == defaults.high
    assert (declared["band_low"], declared["band_high"]) == defaults.band
