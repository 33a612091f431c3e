"""`manage.py serve` supervises its children (issue 8, item 3): kill -9 each child (web, worker,
beat) in turn and it is running again within 10 s; a second serve on the same var/ runs no beat
(the beat lock); SIGTERM stops everything within the stop timeout, leaving no child alive.
Started as scripts/run-app starts it, on the embedded default in a temporary var/."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BACK_WITHIN_S = 10.0
STOP_TIMEOUT_S = 15

pytestmark = [pytest.mark.fault, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _status(var: Path) -> dict:
    try:
        return json.loads((var / "serve.json").read_text())["children"]
    except (OSError, ValueError, KeyError):
        return {}


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout} s\n" + log.read_text()[-4000:])


@pytest.fixture
def embedded(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        IMAGECLEAN_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
    )
    return env, tmp_path / "var"


def _serve(env, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve",
            "--port",
            str(port),
            "--workers",
            "1",
            "--stop-timeout",
            str(STOP_TIMEOUT_S),
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_children_come_back_and_sigterm_leaves_none(embedded, tmp_path):
    env, var = embedded
    port = _free_port()
    log = tmp_path / "serve.log"
    serve = _serve(env, port, log)
    seen: set[int] = set()
    try:
        status = _wait(
            lambda: (s := _status(var)) and len(s) == 3 and s, 120, "three children", log
        )
        assert set(status) == {"web", "worker", "beat"}
        _wait(lambda: _web_answers(port), 120, "the web server answering", log)
        for name in ("web", "worker", "beat"):
            old = _status(var)[name]["pid"]
            seen.add(old)
            os.kill(old, signal.SIGKILL)
            new = _wait(
                lambda name=name, old=old: (
                    (p := _status(var)[name]["pid"]) not in (None, old) and _alive(p) and p
                ),
                BACK_WITHIN_S,
                f"{name} back",
                log,
            )
            seen.add(new)
            assert _status(var)[name]["restarts"] >= 1
        _wait(lambda: _web_answers(port), 60, "the web server answering again", log)

        # A second serve on the same var/ gets no beat: the lock is held.
        other_port = _free_port()
        other_log = tmp_path / "serve2.log"
        second = _serve(env, other_port, other_log)
        try:
            _wait(
                lambda: "running without beat" in other_log.read_text(),
                60,
                "the second serve refusing beat",
                other_log,
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=STOP_TIMEOUT_S + 10)

        children = {c["pid"] for c in _status(var).values()}
        seen |= children
        started = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=STOP_TIMEOUT_S + 10)
        assert time.monotonic() - started <= STOP_TIMEOUT_S + 10
        time.sleep(1)
        assert not [pid for pid in seen if _alive(pid)], log.read_text()[-3000:]
    finally:
        if serve.poll() is None:
            serve.kill()
