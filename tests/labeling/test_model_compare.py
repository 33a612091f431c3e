"""Model comparison that protects (issue 9, item 11), through the pages and the API: versions
side by side with deltas and 95% intervals, the warning on figures resting on too few
positives, PR curves of both versions on the same validation images with their operating points,
the data each saw; promote only after a confirmation, rollback to a worse version only after a
confirmation naming what gets worse, and a stale confirmation asks again."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from sklearn.metrics import average_precision_score

from tests.labeling.compare_world import SCORES, TRUTH, compare_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return compare_world()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_compare_page_shows_deltas_intervals_warning_and_curves(world):
    project, v1, v2 = world["project"], world["v1"], world["v2"]
    url = reverse("project-models-compare", kwargs={"slug": project.slug})
    page = client_for(world["lead"]).get(url, {"v": [v1.pk, v2.pk]}).content.decode()
    # The cascade's precision of v2 with its counts, interval and delta from v1 (1.0 - 0.8).
    assert "(1/1)" in page and "[0.21–1.00]" in page and "Δ +0.200" in page
    assert "Δ -0.429" in page  # recall 1/7 - 4/7
    assert "Cascade precision 1.000 rests on 1 true positive(s) of 1 predicted positive(s)" in page
    assert "only 7 positive images" in page
    # Both curves and both operating points, drawn on the same 20 validation images.
    assert page.count('class="pr-curve"') == 2 and page.count('class="operating-point"') == 2
    assert "PR curves on the 20 labeled validation images" in page
    # The data each version saw.
    assert "train: 30 positive / 300 negative labels" in page
    assert "train: 41 positive / 420 negative labels" in page
    assert "no audit of this version" in page
    # ...and what trained it: the job's parameters, labeled as on the jobs page, and its start.
    assert "Epochs: 3" in page and "Epochs: 5" in page and "labels as of" in page
    assert reverse("job-detail", kwargs={"pk": v1.data_snapshot["job_id"]}) in page
    # Leads read it but get no promote button; engineers do.
    assert "Promote v2" not in page
    page = client_for(world["engineer"]).get(url, {"v": [v1.pk, v2.pk]}).content.decode()
    assert "Promote v2" in page
    assert client_for(world["annotator"]).get(url).status_code == 403
    assert client_for(world["lead"]).get(url, {"v": "x"}).status_code == 400


def test_default_selection_is_the_active_and_the_newest_other(world):
    url = reverse("project-models-compare", kwargs={"slug": world["project"].slug})
    page = client_for(world["lead"]).get(url).content.decode()
    assert page.count('class="pr-curve"') == 2
    assert page.index('data-version="v1"') < page.index('data-version="v2"')


def test_promote_asks_first_and_a_stale_confirmation_asks_again(world):
    project, v1, v2 = world["project"], world["v1"], world["v2"]
    engineer = client_for(world["engineer"])
    url = reverse("project-model-promote", kwargs={"slug": project.slug, "pk": v2.pk})
    response = engineer.post(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Promote v2?" in page and "Yes, promote v2" in page
    assert "v2 is worse than v1" in page and "cascade recall: 0.143 instead of 0.571" in page
    project.refresh_from_db()
    assert project.active_model_version_id == v1.pk
    # A confirmation made against another active version is stale: asked again.
    response = engineer.post(url, {"confirm": "yes", "current": "none"})
    assert response.status_code == 200 and "Yes, promote v2" in response.content.decode()
    project.refresh_from_db()
    assert project.active_model_version_id == v1.pk
    response = engineer.post(url, {"confirm": "yes", "current": str(v1.pk)})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.active_model_version_id == v2.pk


def test_rollback_to_a_worse_version_asks_first(world):
    project, v1, v2 = world["project"], world["v1"], world["v2"]
    engineer = client_for(world["engineer"])
    promote = reverse("project-model-promote", kwargs={"slug": project.slug, "pk": v2.pk})
    engineer.post(promote, {"confirm": "yes", "current": str(v1.pk)})
    rollback = reverse("project-model-rollback", kwargs={"slug": project.slug})
    response = engineer.post(rollback)
    page = response.content.decode()
    assert response.status_code == 200 and "Roll back to v1?" in page
    # v1's cascade precision (0.8) is lower than v2's (1.0): named before anything happens.
    assert "v1 is worse than v2" in page and "cascade precision: 0.800 instead of 1.000" in page
    project.refresh_from_db()
    assert project.active_model_version_id == v2.pk
    # The confirmation names the target it showed; another target asks again.
    assert engineer.post(rollback, {"confirm": "yes", "target": "0"}).status_code == 200
    response = engineer.post(rollback, {"confirm": "yes", "target": str(v1.pk)})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.active_model_version_id == v1.pk


def test_rollback_to_a_version_no_worse_needs_no_confirmation(world):
    project, v1, v2 = world["project"], world["v1"], world["v2"]
    # v2 measured as good as v1 on every cascade figure: nothing to warn about.
    v2.metrics = {**v2.metrics, "cascade": v1.metrics["cascade"]}
    v2.save()
    engineer = client_for(world["engineer"])
    promote = reverse("project-model-promote", kwargs={"slug": project.slug, "pk": v2.pk})
    assert engineer.post(promote, {"confirm": "yes", "current": str(v1.pk)}).status_code == 302
    rollback = reverse("project-model-rollback", kwargs={"slug": project.slug})
    assert engineer.post(rollback).status_code == 302
    project.refresh_from_db()
    assert project.active_model_version_id == v1.pk


def test_api_compare_matches_scikit_learn_on_the_stored_scores(world):
    project, v1, v2 = world["project"], world["v1"], world["v2"]
    url = reverse("api-model-version-compare", kwargs={"slug": project.slug})
    client = APIClient()
    client.force_authenticate(world["lead"])
    body = client.get(url, {"v": [v2.pk, v1.pk]}).json()
    assert body["baseline"] == "v2"
    rows = {row["name"]: row for row in body["versions"]}
    assert rows["v2"]["delta"] is None
    assert rows["v1"]["delta"]["cascade"]["precision"] == pytest.approx(-0.2)
    assert rows["v2"]["worse_than_active"] and rows["v1"]["worse_than_active"] == []
    assert any("rests on 1 true positive" in text for text in rows["v2"]["warnings"])
    assert body["curves"]["images"] == 20 and body["curves"]["positives"] == 7
    assert rows["v1"]["training_job"]["id"] == v1.data_snapshot["job_id"]
    assert {"name": "epochs", "label": "Epochs", "value": 3} in rows["v1"]["training"]
    y = np.array(TRUTH)
    for name in ("v1", "v2"):
        curve = rows[name]["curve"]
        assert curve["ap"] == pytest.approx(average_precision_score(y, SCORES[name]), abs=1e-6)
        assert curve["points"][0][0] == 0.0 and curve["points"][-1][0] == 1.0
    assert rows["v1"]["curve"]["operating"]["tp"] == 4
    assert rows["v1"]["curve"]["operating"]["fp"] == 1
    assert rows["v2"]["curve"]["operating"]["precision"] == 1.0
    annotator = APIClient()
    annotator.force_authenticate(world["annotator"])
    assert annotator.get(url).status_code == 403
