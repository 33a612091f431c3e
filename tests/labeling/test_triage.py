"""Triage of the live pool (issue 10, item 4): the services against the real database.

SIMULATION: the model version's scores are Score rows written by the test (what a scoring job
would store), with a planted truth in each image's metadata; the labels that answer triage's
audit are written from that truth. Everything else is the product's code: the declaration of
triage's parameters, a pass (candidates, routes, audit sample, queues), the pause rule, revert,
selection and training leaving machine-accepted images alone unless asked, the confirm queue's
grid, and who may see and do what.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from labeling.models import (
    Image,
    Label,
    ModelVersion,
    Queue,
    QueueItem,
    Score,
    Strategy,
    TriageDecision,
    TriageRun,
)
from labeling.services.queues import queue_get_or_create, queue_items_add
from labeling.services.selection import eligible_scores
from labeling.services.training import TRAIN_CASCADE, training_data
from labeling.services.triage import (
    TRIAGE,
    machine_accepted_ids,
    triage_check,
    triage_figures,
    triage_pass,
    triage_revert,
    triage_start,
    triage_stop,
)
from tests.factories import PASSWORD, make_image, make_project, make_user

pytestmark = pytest.mark.django_db

POOL = 120


def _setup(size: int = POOL, *, positives: int = 12):
    """SIMULATION: a project with `size` pool images, a planted truth and a READY version whose
    stage-1 probabilities are a noisy function of it (made the active version)."""
    engineer, lead, annotator = make_user("engineer"), make_user("lead"), make_user("annotator")
    project = make_project(members=[engineer, lead, annotator])
    rng = np.random.default_rng(3)
    truth = np.zeros(size, dtype=bool)
    truth[rng.choice(size, size=positives, replace=False)] = True
    images = [
        make_image(
            project, seed=70_000 + i, metadata={"true_label": "disgusting" if t else "normal"}
        )
        for i, t in enumerate(truth)
    ]
    version = ModelVersion.objects.create(
        project=project,
        name="simulated",
        status=ModelVersion.Status.READY,
        metrics={"thresholds": {"stage1": 0.5, "stage2": 0.5}},
    )
    p1 = np.where(truth, rng.uniform(0.3, 1.0, size), rng.uniform(0.0, 0.4, size))
    Score.objects.bulk_create(
        Score(
            image=image,
            model_version=version,
            stage1=float(a),
            stage2=float(a),
            score=float(a),
            decision=bool(a >= 0.5),
        )
        for image, a in zip(images, p1, strict=True)
    )
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    return project, images, version, engineer, lead, annotator


def _answer(project, image_ids, annotator) -> None:
    """SIMULATION: a person labels these images from the planted truth, as the audit asks."""
    for image in Image.objects.filter(pk__in=list(image_ids)):
        Label.objects.create(
            project=project,
            image=image,
            annotator=annotator,
            value=image.metadata["true_label"],
            strategy=Strategy.TRIAGE_AUDIT,
        )


def test_parameters_are_declared_once_and_bad_ones_refused():
    project, _images, _version, engineer, lead, _annotator = _setup(10, positives=1)
    assert TRIAGE.names == (
        "model_version_id",
        "accept_below",
        "confirm_at",
        "audit_rate",
        "max_error",
        "seed",
    )
    bad = [
        {"accept_below": 0.6},  # over its bound
        {"audit_rate": 0},
        {"max_error": "lots"},
        {"accept_below": 0.5, "confirm_at": 0.5000001, "nonsense": 1},  # unknown name
        {"model_version_id": 999_999},
    ]
    for params in bad:
        with pytest.raises(ValidationError):
            triage_start(project=project, params=params, by=engineer)
    # Leads see the figures, never start.
    with pytest.raises(PermissionDenied):
        triage_start(project=project, params={}, by=lead)
    assert not TriageRun.objects.exists()
    # No model, no triage.
    project.active_model_version = None
    project.save(update_fields=["active_model_version"])
    with pytest.raises(ValidationError, match="active model version"):
        triage_start(project=project, params={}, by=engineer)


def test_a_pass_routes_the_pool_and_samples_the_accepted_for_its_audit():
    project, images, version, engineer, _lead, annotator = _setup()
    labeling = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    # An import queued a third of the pool; people labeled two images; a selection round
    # queued two more on purpose. Triage decides only images nobody touched.
    imported = images[:40]
    queue_items_add(queue=labeling, images=imported, strategy=Strategy.MANUAL)
    Label.objects.create(project=project, image=images[50], annotator=annotator, value="normal")
    Label.objects.create(project=project, image=images[51], annotator=annotator, value="normal")
    queue_items_add(queue=labeling, images=images[52:54], strategy=Strategy.CONFIDENCE_BAND)
    run = triage_start(
        project=project,
        params={"accept_below": 0.2, "confirm_at": 0.8, "audit_rate": 0.3, "seed": 1},
        by=engineer,
    )
    outcome = triage_pass(project_id=project.pk)
    untouched = {image.pk for image in images} - {images[i].pk for i in (50, 51, 52, 53)}
    decided = {d.image_id: d for d in run.decisions.all()}
    assert set(decided) == untouched and outcome["decided"] == len(untouched)
    stage1 = dict(Score.objects.filter(model_version=version).values_list("image_id", "stage1"))
    score = dict(Score.objects.filter(model_version=version).values_list("image_id", "score"))
    for image_id, decision in decided.items():
        if stage1[image_id] < 0.2:
            assert decision.route == TriageDecision.Route.ACCEPTED
        elif score[image_id] >= 0.8:
            assert decision.route == TriageDecision.Route.CONFIRM
        else:
            assert decision.route == TriageDecision.Route.NORMAL
    accepted = [d for d in decided.values() if d.route == TriageDecision.Route.ACCEPTED]
    audited = {d.image_id for d in accepted if d.audited}
    assert 0 < len(audited) < len(accepted) and outcome["audited"] == len(audited)
    assert not any(d.audited for d in decided.values() if d.route != "accepted")
    # The audited go to the labeling queue as triage-audit items (an import's item keeps its
    # row and now says why it is there); the other accepted leave the queue.
    items = {i.image_id: i for i in QueueItem.objects.filter(queue=labeling)}
    for image_id in audited:
        assert items[image_id].strategy == Strategy.TRIAGE_AUDIT
        assert items[image_id].status == QueueItem.Status.OPEN
    imported_ids = {image.pk for image in imported}
    for decision in accepted:
        if decision.image_id in imported_ids and not decision.audited:
            assert items[decision.image_id].status == QueueItem.Status.REMOVED
            assert decision.removed_item_id == items[decision.image_id].pk
    # Confident positives wait in the confirm queue, most confident first.
    confirm = Queue.objects.get(project=project, kind=Queue.Kind.CONFIRM)
    confirm_ids = {d.image_id for d in decided.values() if d.route == "confirm"}
    assert (
        confirm_ids
        and set(
            confirm.items.filter(strategy=Strategy.TRIAGE_CONFIRM).values_list(
                "image_id", flat=True
            )
        )
        == confirm_ids
    )
    # Nothing was labeled by the machine: accepted images hold no Label.
    assert not Label.objects.filter(image_id__in=[d.image_id for d in accepted]).exists()
    assert machine_accepted_ids(project=project) == {d.image_id for d in accepted}
    # Selection never queues what triage accepted.
    eligible = set(
        eligible_scores(project=project, model_version=version).values_list("image_id", flat=True)
    )
    assert not eligible & machine_accepted_ids(project=project)
    # A second pass decides nothing new.
    assert triage_pass(project_id=project.pk)["decided"] == 0
    figures = triage_figures(project=project)
    assert figures["routes"]["accepted"] == len(accepted)
    assert figures["audit"] == {"drawn": len(audited), "labeled": 0, "pending": len(audited)}
    assert figures["status"] == "running" and figures["verdict"] is None


def test_the_audit_measures_the_miss_rate_and_triage_pauses_itself():
    project, images, _version, engineer, _lead, annotator = _setup(300, positives=30)
    # A threshold far too loose: positives score from 0.3 on stage 1, so some get accepted.
    run = triage_start(
        project=project,
        params={"accept_below": 0.5, "confirm_at": 0.9, "audit_rate": 1.0, "max_error": 0.02},
        by=engineer,
    )
    triage_pass(project_id=project.pk)
    accepted = run.decisions.filter(route=TriageDecision.Route.ACCEPTED)
    audited = list(accepted.filter(audited=True).values_list("image_id", flat=True))
    truth = {
        i.pk: i.metadata["true_label"] == "disgusting"
        for i in Image.objects.filter(pk__in=accepted.values("image_id"))
    }
    true_rate = sum(truth.values()) / len(truth)
    assert true_rate > 0.02  # the planted truth: this threshold misses too much
    _answer(project, audited, annotator)
    reason = triage_check(project_id=project.pk)
    run.refresh_from_db()
    assert run.status == TriageRun.Status.PAUSED and reason == run.pause_reason
    figures = triage_figures(project=project)
    error = figures["error"]
    assert error["labels"] == len(audited)
    assert error["errors"] == sum(truth[i] for i in audited)
    assert error["rate"]["low"] <= true_rate <= error["rate"]["high"]
    assert error["rate"]["high"] > 0.02
    assert "Paused" in figures["pause_reason_text"]
    # Paused: new images are not accepted any more.
    newcomer = make_image(project, seed=99_001, metadata={"true_label": "normal"})
    Score.objects.create(
        image=newcomer, model_version=run.model_version, stage1=0.0, score=0.0, decision=False
    )
    assert triage_pass(project_id=project.pk)["decided"] == 0
    assert not TriageDecision.objects.filter(image=newcomer).exists()


def test_a_clean_audit_keeps_triage_running():
    project, _images, _version, engineer, _lead, annotator = _setup(300, positives=30)
    # Strict enough: no positive scores below 0.25 on stage 1 in this simulation.
    run = triage_start(
        project=project,
        params={"accept_below": 0.25, "audit_rate": 1.0, "max_error": 0.1},
        by=engineer,
    )
    triage_pass(project_id=project.pk)
    audited = run.decisions.filter(audited=True).values_list("image_id", flat=True)
    assert len(audited) > 40
    _answer(project, audited, annotator)
    assert triage_check(project_id=project.pk) is None
    run.refresh_from_db()
    assert run.status == TriageRun.Status.RUNNING
    error = triage_figures(project=project)["error"]
    assert error["errors"] == 0 and error["rate"]["high"] < 0.1


def test_revert_undoes_a_run_and_training_uses_accepted_images_only_when_asked():
    project, images, version, engineer, lead, annotator = _setup()
    labeling = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    queue_items_add(queue=labeling, images=images, strategy=Strategy.MANUAL)
    run = triage_start(
        project=project, params={"accept_below": 0.2, "audit_rate": 0.001}, by=engineer
    )
    triage_pass(project_id=project.pk)
    accepted = machine_accepted_ids(project=project)
    assert accepted
    # Training: people's labels only, unless the engineer asks.
    for image in images[:30]:
        Label.objects.create(
            project=project, image=image, annotator=annotator, value=image.metadata["true_label"]
        )
    Image.objects.filter(pk__in=[i.pk for i in images[30:34]]).update(split="validation")
    for image in images[30:34]:
        Label.objects.create(
            project=project, image=image, annotator=annotator, value=image.metadata["true_label"]
        )
    Label.objects.create(project=project, image=images[30], annotator=lead, value="disgusting")
    Label.objects.create(project=project, image=images[31], annotator=lead, value="normal")
    for image in images[34:37]:
        Label.objects.create(project=project, image=image, annotator=lead, value="disgusting")
    base = TRAIN_CASCADE.clean(project=project, params={"min_per_class": 2})
    plain = training_data(project=project, params=base)
    assert plain["snapshot"]["machine_accepted"] == 0
    asked = training_data(project=project, params={**base, "machine_accepted": True})
    trained = {row.image_id: row for row in asked["train"]}
    extra = accepted - set(Label.objects.values_list("image_id", flat=True))
    assert asked["snapshot"]["machine_accepted"] == len(extra) > 0
    assert all(trained[i].label == 0 for i in extra)
    assert not extra & {row.image_id for row in plain["train"]}

    with pytest.raises(PermissionDenied):
        triage_revert(project=project, run_id=run.pk, by=lead)
    count = triage_revert(project=project, run_id=run.pk, by=engineer)
    assert count == run.decisions.count()
    run.refresh_from_db()
    assert run.status == TriageRun.Status.STOPPED and run.reverted_at is not None
    assert machine_accepted_ids(project=project) == set()
    # The import items triage removed wait again; nothing is left in the confirm queue.
    assert not QueueItem.objects.filter(queue=labeling, status=QueueItem.Status.REMOVED).exists()
    assert not QueueItem.objects.filter(
        queue__kind=Queue.Kind.CONFIRM, status=QueueItem.Status.OPEN
    ).exists()
    with pytest.raises(ValidationError):
        triage_stop(project=project, by=engineer)
    # A new run decides the images again.
    second = triage_start(project=project, params={"accept_below": 0.2}, by=engineer)
    triage_pass(project_id=project.pk)
    assert second.decisions.filter(route="accepted").exists()


def test_confirm_queue_grid_preselects_the_positive_class():
    project, _images, _version, engineer, _lead, annotator = _setup(60, positives=20)
    triage_start(project=project, params={"confirm_at": 0.6}, by=engineer)
    triage_pass(project_id=project.pk)
    confirm = Queue.objects.get(project=project, kind=Queue.Kind.CONFIRM)
    client = Client()
    client.login(username=annotator.username, password=PASSWORD)
    page = client.get(reverse("queue-grid", args=[project.slug, confirm.pk]))
    assert page.status_code == 200
    config = page.context["config"]["schema"]
    assert config["default"] == "disgusting" and config["common"] == "normal"
    labeling = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    other = client.get(reverse("queue-grid", args=[project.slug, labeling.pk]))
    assert other.context["config"]["schema"]["default"] == "normal"


def test_who_sees_and_does_what():
    project, _images, _version, engineer, lead, annotator = _setup(30, positives=3)
    apis = {}
    for user in (engineer, lead, annotator):
        apis[user.username] = APIClient()
        apis[user.username].force_authenticate(user)
    url = reverse("api-project-triage", args=[project.slug])
    assert apis[lead.username].get(url).json() == {"triage": None}
    assert apis[annotator.username].get(url).status_code == 403
    assert apis[lead.username].post(url, {}, format="json").status_code == 403
    refused = apis[engineer.username].post(url, {"audit_rate": True}, format="json")
    assert refused.status_code == 400
    refused = apis[engineer.username].post(
        url, {"accept_below": 0.5, "confirm_at": 0.6, "x": 1}, format="json"
    )
    assert refused.status_code == 400 and "x" in str(refused.json())
    refused = apis[engineer.username].post(
        url, {"accept_below": 0.5, "confirm_at": 0.5, "max_error": 0.9}, format="json"
    )
    assert refused.status_code == 400 and "max_error" in refused.json()
    assert not TriageRun.objects.exists()
    started = apis[engineer.username].post(url, {"accept_below": 0.1}, format="json")
    assert started.status_code == 201 and started.json()["triage"]["status"] == "running"
    assert TriageRun.objects.filter(project=project, status="running").count() == 1
    stop = reverse("api-project-triage-stop", args=[project.slug])
    assert apis[lead.username].post(stop).status_code == 403
    assert apis[engineer.username].post(stop).json()["triage"]["status"] == "stopped"
    assert apis[engineer.username].post(stop).status_code == 400  # nothing running
    # The estimates page: leads see the figures, no controls; annotators nothing.
    client = Client()
    client.login(username=lead.username, password=PASSWORD)
    page = client.get(reverse("project-estimates", args=[project.slug])).content.decode()
    assert 'id="triage-status"' in page and 'id="start-triage"' not in page
    client.login(username=annotator.username, password=PASSWORD)
    assert client.get(reverse("project-estimates", args=[project.slug])).status_code == 403
