"""Big imports run as a job (issue 8, item 6): above the threshold (IMAGECLEAN_IMPORT_JOB_BYTES
or _FILES, declared once in the settings, decided by `import_runs_as_job`) the upload is staged
to disk and an import Job imports it with progress and a report on its page; below it the
request imports as before. The same caps apply on both paths. A worker killed in the middle is
replaced and the job resumes after the last file it recorded: every file is reported once and
imported once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from labeling.models import Image, Job, QueueItem
from labeling.services.imports import import_runs_as_job, staged_import_run, staging_sweep
from labeling.services.jobs import job_cancel
from tests.factories import make_project, make_user, png_bytes
from tests.labeling.test_import import noise_png, png_claiming, zip_of
from tests.labeling.worker import CeleryWorker, broker_flush, use_worker_storage, wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def staging(settings, tmp_path) -> Path:
    settings.IMAGECLEAN_IMPORT_STAGING_DIR = tmp_path / "staging"
    return settings.IMAGECLEAN_IMPORT_STAGING_DIR


def _engineer_and_project():
    engineer = make_user("site_engineer")
    project = make_project(members=[engineer])
    client = Client()
    client.force_login(engineer)
    return engineer, project, client


def _upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def test_the_threshold_is_one_rule_on_bytes_and_files(settings):
    settings.IMAGECLEAN_IMPORT_JOB_BYTES = 1000
    settings.IMAGECLEAN_IMPORT_JOB_FILES = 3
    small = [_upload(f"{n}.png", b"x" * 100) for n in range(3)]
    assert not import_runs_as_job(small)
    assert import_runs_as_job([*small, _upload("3.png", b"x")])  # 4 files
    assert import_runs_as_job([_upload("big.zip", b"x" * 1001)])  # over the bytes


def test_below_the_threshold_the_request_imports(settings, staging):
    settings.IMAGECLEAN_IMPORT_JOB_FILES = 3
    settings.IMAGECLEAN_IMPORT_JOB_BYTES = 8 * 1024 * 1024
    _engineer, project, client = _engineer_and_project()
    page = client.get(f"/projects/{project.slug}/import/").content.decode()
    assert "Batches over 8 MB or 3 files are imported in the background" in page
    response = client.post(
        f"/projects/{project.slug}/import/",
        {"files": [_upload(f"{n}.png", png_bytes(70_000 + n)) for n in range(3)]},
    )
    assert response.status_code == 200
    assert project.images.count() == 3
    assert not Job.objects.filter(kind=Job.Kind.IMPORT).exists()
    assert not staging.exists() or not any(staging.iterdir())


def test_above_the_threshold_a_job_imports_with_a_report_and_the_caps(settings, staging):
    settings.IMAGECLEAN_IMPORT_JOB_FILES = 3
    settings.IMAGECLEAN_MAX_IMAGE_PIXELS = 1_000_000
    settings.IMAGECLEAN_MAX_UPLOAD_BYTES = 20_000
    engineer, project, client = _engineer_and_project()
    archive = zip_of({f"in/{n}.png": png_bytes(71_000 + n) for n in range(5)})
    too_big = zip_of({"noise.png": noise_png(100)})
    assert len(too_big) > settings.IMAGECLEAN_MAX_UPLOAD_BYTES
    files = [
        _upload("a.png", png_bytes(71_100)),
        _upload("again.png", png_bytes(71_100)),  # same content
        _upload("notes.jpg", b"<svg/>"),
        _upload("bomb.png", png_claiming(5000, 5000)),  # over the pixel cap
        _upload("batch.zip", archive),
        _upload("huge.zip", too_big),
    ]
    response = client.post(f"/projects/{project.slug}/import/", {"files": files})
    job = Job.objects.get(kind=Job.Kind.IMPORT)
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert project.images.count() == 0  # nothing imported in the request
    assert job.status == Job.Status.QUEUED and job.created_by == engineer
    assert job.params["files"] == 6 and job.params["add_to_queue"] is False
    staged = staging / job.params["staging"]
    assert sorted(p.name for p in staged.iterdir())[-1] == "manifest.json"

    staged_import_run(job_id=job.pk)  # what the worker's task calls

    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    result = job.result
    assert (result["imported"], result["duplicates"], result["rejected"]) == (6, 1, 2)
    assert result["done"] == 9 and result["files"] == 6
    assert len(result["archive_errors"]) == 1 and "huge.zip" in result["archive_errors"][0]
    reasons = {p["name"]: p["reason"] for p in result["problems"]}
    assert "decompression bomb" in reasons["bomb.png"]
    assert "not an image" in reasons["notes.jpg"]
    assert "same content as a.png" in reasons["again.png"]
    assert project.images.count() == 6
    assert not staged.exists()  # the staged copy is removed once imported
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "9 files read: 6 imported, 1 duplicates, 2 rejected, 0 skipped." in page
    assert "bomb.png" in page and "huge.zip" in page


def test_only_engineers_who_manage_the_project_start_one(settings, staging):
    settings.IMAGECLEAN_IMPORT_JOB_FILES = 0
    annotator = make_user("annotator")
    project = make_project(members=[annotator])
    client = Client()
    client.force_login(annotator)
    response = client.post(
        f"/projects/{project.slug}/import/", {"files": [_upload("a.png", png_bytes(73_000))]}
    )
    assert response.status_code == 403
    assert not Job.objects.exists()
    assert not staging.exists() or not any(staging.iterdir())


def test_a_queued_import_whose_files_are_gone_fails_with_its_reason(settings, staging):
    settings.IMAGECLEAN_IMPORT_JOB_FILES = 0
    _engineer, project, client = _engineer_and_project()
    client.post(
        f"/projects/{project.slug}/import/", {"files": [_upload("a.png", png_bytes(73_100))]}
    )
    job = Job.objects.get(kind=Job.Kind.IMPORT)
    for path in (staging / job.params["staging"]).iterdir():
        path.unlink()
    staged_import_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "upload them again" in job.error


@pytest.mark.fault
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_import_job_resumes_after_its_worker_is_killed(settings, tmp_path):
    var_dir = tmp_path / "var"
    use_worker_storage(settings, var_dir)
    settings.IMAGECLEAN_IMPORT_STAGING_DIR = var_dir / "import-staging"
    settings.IMAGECLEAN_IMPORT_JOB_FILES = 1
    engineer, project, client = _engineer_and_project()
    broker_flush()  # no message of an earlier test reaches this worker
    members = {f"batch/{n:03d}.png": png_bytes(74_000 + n, size=(96, 96)) for n in range(150)}
    files = [
        _upload("batch.zip", zip_of(members)),
        _upload("dup.png", png_bytes(74_000, size=(96, 96))),
        _upload("bad.png", b"not a png"),
    ]
    response = client.post(
        f"/projects/{project.slug}/import/", {"files": files, "add_to_queue": "on"}
    )
    assert response.status_code == 302
    job = Job.objects.get(kind=Job.Kind.IMPORT)
    env = {
        "IMAGECLEAN_IMPORT_STAGING_DIR": str(settings.IMAGECLEAN_IMPORT_STAGING_DIR),
        "IMAGECLEAN_JOB_STALE_SECONDS": "3",
    }
    first = CeleryWorker(var_dir=var_dir, env=env, name="import-doomed").start(timeout=180)
    second = None
    try:

        def done() -> int:
            job.refresh_from_db()
            return int((job.result or {}).get("done", 0))

        wait_for(lambda: done() >= 20, timeout=120, worker=first, what="20 files imported")
        first.kill()
        at_kill = done()
        assert job.status == Job.Status.RUNNING and at_kill < 152, "finished before the kill"
        second = CeleryWorker(var_dir=var_dir, env=env, name="import-rescuer").start(timeout=180)
        started = time.monotonic()
        wait_for(
            lambda: job.refresh_from_db() or job.is_finished,
            timeout=120,
            worker=second,
            what="the import job to finish",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert job.status == Job.Status.SUCCEEDED, (job.error, job.log[-5:])
    assert any("is gone" in line for line in job.log), job.log  # taken over, not restarted
    result = job.result
    # Every file reported once, each image imported once, whatever the kill interrupted.
    assert result["done"] == 152
    assert (result["imported"], result["duplicates"], result["rejected"]) == (150, 1, 1)
    assert project.images.count() == 150
    assert QueueItem.objects.filter(image__project=project).count() == 150
    assert Image.objects.filter(project=project).values("content_hash").distinct().count() == 150
    assert not (settings.IMAGECLEAN_IMPORT_STAGING_DIR / job.params["staging"]).exists()
    assert time.monotonic() - started < 120


def test_the_sweep_removes_staged_files_no_job_needs(settings, staging):
    """A job cancelled before it started never runs its body, which is what removes its
    folder; the hourly sweep does, and leaves a queued job's folder alone."""
    settings.IMAGECLEAN_IMPORT_JOB_FILES = 0
    engineer, project, client = _engineer_and_project()
    for n in range(2):
        client.post(
            f"/projects/{project.slug}/import/",
            {"files": [_upload("a.png", png_bytes(75_000 + n))]},
        )
    cancelled, queued = Job.objects.filter(kind=Job.Kind.IMPORT).order_by("pk")
    job_cancel(job=cancelled, by=engineer)
    (staging / "not-a-token").mkdir()
    assert staging_sweep() == []  # both folders are younger than an hour
    assert staging_sweep(min_age_seconds=0) == [cancelled.params["staging"]]
    assert sorted(p.name for p in staging.iterdir()) == sorted(
        [queued.params["staging"], "not-a-token"]
    )
