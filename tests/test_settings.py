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
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
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


@pytest.mark.slow
def test_production_passes_check_deploy():
    key = "k" * 20 + "Z9x!q" + "v7Lp2" * 6  # 55 characters, varied: test-only
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_extra={
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": key,
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
