"""The jobs pages read well (issue 9, item 13): each status has its colour, the waiting and
running times are in words, a job's result is a few sentences (the raw JSON only inside a
<details>), the cancel button shows on queued and running jobs only and answers with a
redirect and a message, never JSON."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.utils import timezone

from labeling.models import Job
from labeling.services.jobs import job_spec
from labeling.views.job_results import duration_text, job_result_summary
from labeling.views.jobs import PAGE_KINDS
from tests.factories import make_project, make_user

TRAIN_RESULT = {
    "model_version_id": 7,
    "model_version": "cascade-0042",
    "data": {"train": 120},
    "cascade": {"precision": 0.912, "recall": 0.85, "precision_ci": [0.8, 0.97]},
    "thresholds": {"t1": 0.2},
    "target": {"precision": 0.9},
    "training_seconds": 185.4,
    "comparison": {"verdict": "better"},
    "promoted": False,
}
SCORE_RESULT = {
    "images": 500,
    "scored": 498,
    "shards": 4,
    "shards_done": 4,
    "error_count": 2,
    "errors": [{"image_id": 3, "error": "truncated"}],
    "brand_new_key": 17,
}


class _VisibleText(HTMLParser):
    """Text outside <details>, <script>, <style> and <title>, as a person sees the page."""

    def __init__(self):
        super().__init__()
        self.hidden_depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in {"details", "script", "style", "title"}:
            self.hidden_depth += 1

    def handle_endtag(self, tag):
        if tag in {"details", "script", "style", "title"}:
            self.hidden_depth -= 1

    def handle_data(self, data):
        if not self.hidden_depth:
            self.parts.append(data)


def _visible(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    return " ".join(parser.parts)


def _jobs(project):
    now = timezone.now()
    train = Job.objects.create(
        project=project,
        kind=Job.Kind.TRAIN_CASCADE,
        status=Job.Status.SUCCEEDED,
        result=TRAIN_RESULT,
        percent=100.0,
    )
    Job.objects.filter(pk=train.pk).update(
        created_at=now - timedelta(minutes=10),
        started_at=now - timedelta(minutes=9, seconds=30),
        finished_at=now - timedelta(minutes=6, seconds=25),
    )
    score = Job.objects.create(
        project=project,
        kind=Job.Kind.SCORE_POOL,
        status=Job.Status.SUCCEEDED,
        result=SCORE_RESULT,
        percent=100.0,
    )
    running = Job.objects.create(
        project=project,
        kind=Job.Kind.SELECT,
        status=Job.Status.RUNNING,
        percent=40.0,
        params={"seed": 3, "sizing": "auto"},
    )
    Job.objects.filter(pk=running.pk).update(started_at=now - timedelta(seconds=5))
    queued = Job.objects.create(project=project, kind=Job.Kind.DETECT_NOISE)
    return train, score, running, queued


def _row(html: str, job: Job) -> str:
    match = re.search(rf'<tr id="job-{job.pk}".*?</tr>', html, re.S)
    assert match, f"no row for job {job.pk}"
    return match.group(0)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/jobs/", "/projects/{slug}/jobs/"])
def test_jobs_table_summaries_times_and_cancel_only_where_it_applies(path):
    project = make_project()
    train, score, running, queued = _jobs(project)
    client = Client()
    client.force_login(make_user("site_engineer"))
    html = client.get(path.format(slug=project.slug)).content.decode()

    # The cancel button: on the running and the queued job, never on a finished one.
    for job in (running, queued):
        assert f'action="/jobs/{job.pk}/cancel/"' in _row(html, job)
    for job in (train, score):
        row = _row(html, job)
        assert "/cancel/" not in row and "job-cancel" not in row
    # Status colours: one class per status.
    assert "job-succeeded" in _row(html, train) and "job-running" in _row(html, running)
    assert "job-queued" in _row(html, queued)
    # Durations in words: the training job waited 30 s and ran 3 min 05 s.
    assert "30 s" in _row(html, train) and "3 min 05 s" in _row(html, train)
    # Readable summaries, for a training and a scoring job.
    assert "Trained model version cascade-0042." in _row(html, train)
    assert "On validation: precision 0.912, recall 0.85." in _row(html, train)
    assert "Scored 498 of 500 images." in _row(html, score)
    assert "2 images could not be scored." in _row(html, score)
    # An unknown key falls back to "key: value".
    assert "brand new key: 17" in _row(html, score)
    # No raw JSON anywhere.
    visible = _visible(html)
    assert "{" not in visible, visible[visible.find("{") - 200 : visible.find("{") + 100]
    assert "&quot;model_version_id&quot;" not in html


@pytest.mark.django_db
def test_job_detail_summary_and_raw_json_only_in_details():
    project = make_project()
    train, score, running, _queued = _jobs(project)
    client = Client()
    client.force_login(make_user("site_engineer"))
    for job, summary in (
        (train, "Training took 3 min 05 s."),
        (score, "4 of 4 shards done."),
    ):
        html = client.get(f"/jobs/{job.pk}/").content.decode()
        assert summary in html
        visible = _visible(html)
        assert "{" not in visible and "[" not in visible, visible
        details = re.search(r"<details class=\"raw-json\">.*?</details>", html, re.S).group(0)
        assert "&quot;model_version&quot;" in details or "&quot;images&quot;" in details
        assert 'id="job-cancel"' not in html  # finished: no cancel
    running_html = client.get(f"/jobs/{running.pk}/").content.decode()
    assert 'id="job-cancel"' in running_html and f'action="/jobs/{running.pk}/cancel/"' in (
        running_html
    )
    # The parameters are shown by their labels, not as a dict.
    labels = {p.name: str(p.label) for p in job_spec(Job.Kind.SELECT).params}
    assert f'<th scope="row">{labels["seed"]}</th><td>3</td>' in running_html
    assert "{" not in _visible(running_html)


@pytest.mark.django_db
def test_cancel_from_the_page_redirects_back_with_a_message():
    project = make_project()
    train, _score, running, queued = _jobs(project)
    client = Client()
    client.force_login(make_user("site_engineer"))
    back = f"/projects/{project.slug}/jobs/"
    response = client.post(f"/jobs/{queued.pk}/cancel/", {"next": back}, follow=True)
    assert response.redirect_chain == [(back, 302)]
    assert f"Job #{queued.pk} cancelled." in response.content.decode()
    queued.refresh_from_db()
    assert queued.status == Job.Status.CANCELLED
    assert "/cancel/" not in _row(response.content.decode(), queued)

    response = client.post(f"/jobs/{running.pk}/cancel/", {"next": back}, follow=True)
    assert "will stop at its next progress report" in response.content.decode()
    running.refresh_from_db()
    assert running.status == Job.Status.RUNNING and running.cancel_requested

    # A finished job: refused with a message, not JSON; an outside "next" is not followed.
    response = client.post(f"/jobs/{train.pk}/cancel/", {"next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == f"/jobs/{train.pk}/"
    page = client.get(response["Location"]).content.decode()
    assert f"Job #{train.pk} not cancelled" in page and "already finished" in page

    # Other roles cannot cancel.
    for role in ("lead", "annotator"):
        user = make_user(role)
        project.members.add(user)
        other = Client()
        other.force_login(user)
        assert other.post(f"/jobs/{running.pk}/cancel/").status_code == 403


def test_durations_in_words():
    assert duration_text(None) == "—"
    assert duration_text(0.4) == "0 s"
    assert duration_text(59) == "59 s"
    assert duration_text(61) == "1 min 01 s"
    assert duration_text(3600 * 2 + 7 * 60) == "2 h 07 min"
    assert duration_text(86400 * 3 + 3600 * 4) == "3 d 4 h"


def test_an_older_result_of_another_shape_still_reads():
    job = Job(kind=Job.Kind.SELECT, result={"added": 5, "moved": "x", "mystery": "yes"})
    lines = job_result_summary(job)
    assert lines == ["Also: mystery: yes."]
    assert job_result_summary(Job(kind=Job.Kind.IMPORT, result={"created": 3})) == [
        "Also: created: 3."
    ]


def test_every_kind_started_from_the_jobs_page_explains_each_parameter():
    for kind in PAGE_KINDS:
        for param in job_spec(kind).params:
            assert str(param.label).strip(), (kind, param.name)
            assert str(param.help_text).strip(), (kind, param.name)
