"""The settings that matter took effect (a misspelled Celery setting is silently ignored)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_celery_settings_took_effect():
    from config.celery import app

    conf = app.conf
    assert conf.broker_url.startswith("redis://")
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    # Longer than the longest task, or Redis re-delivers a running job to a second worker.
    assert conf.broker_transport_options["visibility_timeout"] >= 3600
    assert conf.task_routes["labeling.tasks.ml_*"] == {"queue": "ml"}
    assert "labeling.tasks.leases_expire" in {e["task"] for e in conf.beat_schedule.values()}


def _manage(*args, env_extra=None):
    # A clean environment: no secret key, and none of the test-only switches other test modules
    # set for themselves (the browser tests allow sync ORM calls from Playwright's loop).
    dropped = {"DJANGO_SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_to_start_without_a_real_secret_key():
    result = _manage("check", env_extra={"DJANGO_SETTINGS_MODULE": "config.settings.production"})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "k" * 20 + "Z9x!q" + "v7Lp2" * 6,  # 55 varied characters, test-only
}


@pytest.mark.slow
def test_production_passes_check_deploy():
    # Every deployment (security) check, warnings included, must pass...
    result = _manage(
        "check",
        "--deploy",
        "--tag",
        "security",
        "--fail-level",
        "WARNING",
        env_extra=PRODUCTION_ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # ...and no check of any kind may report an error.
    result = _manage("check", "--deploy", env_extra=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_openapi_schema_generates_without_warnings(tmp_path):
    """Every API view is described in the schema (a view drf-spectacular cannot describe is
    missing from the docs that other services build clients from)."""
    out = tmp_path / "schema.yml"
    result = _manage("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/api/v1/queues/{id}/next/" in out.read_text()
