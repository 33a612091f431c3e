"""Smoke test of the embedded default: SQLite, the filesystem broker and a real worker.

`manage.py serve` is started exactly as scripts/run-app starts it, in a temporary var/ folder;
the test logs in over HTTP and has the worker run a real task through the filesystem broker.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
from datetime import timedelta
from django.contrib.auth.models import Group, User
from django.utils import timezone
from labeling.models import Lease, Queue, QueueItem
from labeling.services.projects import project_create
from tests.factories import make_image

user = User.objects.create_user("ann", password="smoke-test-password-1")
user.groups.add(Group.objects.get(name="annotator"))
project = project_create(
    name="Smoke", slug="smoke",
    label_schema={"classes": [{"key": "a", "name": "A", "hotkey": "1"},
                              {"key": "b", "name": "B", "hotkey": "2"}],
                  "positive": "b", "default": "a", "subcategories": []},
    members=[user],
)
queue = Queue.objects.get(project=project, kind="labeling")
item = QueueItem.objects.create(queue=queue, image=make_image(project, seed=7))
Lease.objects.create(item=item, annotator=user, expires_at=timezone.now() - timedelta(hours=1))
"""

SEND = "from labeling.tasks import leases_expire; leases_expire.delay()"
CHECK = "from labeling.models import Lease; print('STATE', Lease.objects.get().state)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def embedded_env(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        IMAGECLEAN_VAR_DIR=str(tmp_path / "var"),
        DJANGO_DEBUG="0",
        PYTHONPATH=str(ROOT),
    )
    return env


def _manage(env, *args, timeout=120):
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_embedded_default_serves_and_runs_a_task(embedded_env, tmp_path):
    _manage(embedded_env, "migrate", "--noinput")
    assert (tmp_path / "var" / "db.sqlite3").exists()
    _manage(embedded_env, "shell", "-c", SETUP)

    port = _free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env=embedded_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        # Three children boot at once (web, worker, beat): on the shared 2-core machine under
        # load that has taken more than a minute.
        deadline = time.time() + 180
        while True:
            try:
                page = opener.open(f"{base}/login/", timeout=5).read().decode()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError((tmp_path / "serve.log").read_text()) from None
                time.sleep(0.5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode(
            {"username": "ann", "password": "smoke-test-password-1", "csrfmiddlewaretoken": token}
        ).encode()
        request = urllib.request.Request(f"{base}/login/", data=form, headers={"Referer": base})
        home = opener.open(request, timeout=10)
        assert home.status == 200
        assert "/login/" not in home.url  # logged in: redirected away from the login page
        assert "Smoke" in opener.open(f"{base}/", timeout=10).read().decode()

        # A real task through the filesystem broker, run by the worker that `serve` started.
        _manage(embedded_env, "shell", "-c", SEND)
        deadline = time.time() + 60
        state = None
        while time.time() < deadline:
            out = _manage(embedded_env, "shell", "-c", CHECK)
            state = out.split("STATE", 1)[1].strip()
            if state == "expired":
                break
            time.sleep(1)
        assert state == "expired", (tmp_path / "serve.log").read_text()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
