"""Serve the app on the embedded default: a supervisor of the web server, a worker and beat.

Runs migrations, then starts and watches three children (issue 8, item 3):

- web: gunicorn (threads, so 50 people can label at once);
- worker: a real Celery worker consuming both queues (on the embedded default the broker is
  kombu's filesystem transport under var/broker, so nothing needs installing);
- beat: Celery beat (lease sweeps, stalled-job recovery), only while this process holds the
  deployment's beat lock (`var/beat.lock`, an flock): a second `serve` on the same var/ runs no
  beat, so two beats never schedule twice.

A child that dies is started again after a backoff (1 s, doubling to 30 s; back to 1 s once it
has run for a minute), so nothing is left half-alive. Ctrl+C or SIGTERM stops every child
warm first (SIGTERM: Celery finishes its current task step, gunicorn its requests), then cold
(SIGKILL) after `--stop-timeout` seconds. Each child also gets SIGTERM from the kernel if this
supervisor itself dies (PR_SET_PDEATHSIG), so no orphan beat keeps scheduling after a crash.
`var/serve.json` lists the children's process ids (for people and tests).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a child that ran this long starts again from the first backoff
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when the supervisor dies, however it dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST_S
    restart_at: float | None = None
    restarts: int = field(default=0)


class Command(BaseCommand):
    help = "Run migrations, then supervise the web app (gunicorn), a Celery worker and beat."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help=(
                "Address to listen on. 127.0.0.1 (the default) serves this machine only; "
                "0.0.0.0 serves every network the machine is on, so anyone who can reach it "
                "sees the login page: add the name they use to DJANGO_ALLOWED_HOSTS, keep "
                "DJANGO_DEBUG unset, and put HTTPS in front (docs/security.md)."
            ),
        )
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2, help="gunicorn processes")
        parser.add_argument("--threads", type=int, default=8, help="threads per process")
        parser.add_argument("--no-worker", action="store_true", help="do not start Celery")
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=20.0,
            help="seconds a warm stop may take before the children are killed",
        )

    # --- Children ---------------------------------------------------------------------------
    def _children(self, opts, bin_dir: str, with_beat: bool) -> list[Child]:
        children = [
            Child(
                "web",
                [
                    os.path.join(bin_dir, "gunicorn"),
                    "config.wsgi:application",
                    "--bind",
                    f"{opts['host']}:{opts['port']}",
                    "--workers",
                    str(opts["workers"]),
                    "--threads",
                    str(opts["threads"]),
                    "--access-logfile",
                    "-",
                ],
            )
        ]
        if opts["no_worker"]:
            return children
        celery = os.path.join(bin_dir, "celery")
        children.append(
            Child(
                "worker",
                [
                    celery,
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    "default,ml",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "INFO",
                    "-n",
                    "embedded@%h",
                ],
            )
        )
        if with_beat:
            children.append(
                Child(
                    "beat",
                    [
                        celery,
                        "-A",
                        "config",
                        "beat",
                        "--loglevel",
                        "INFO",
                        "--schedule",
                        str(settings.VAR_DIR / "celerybeat-schedule"),
                    ],
                )
            )
        return children

    def _start(self, child: Child, env: dict) -> None:
        child.proc = subprocess.Popen(
            child.argv, env=env, cwd=settings.BASE_DIR, preexec_fn=_die_with_parent
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        self.stdout.write(f"serve: {child.name} started (pid {child.proc.pid})")

    def _write_status(self, children: list[Child]) -> None:
        status = {
            c.name: {"pid": c.proc.pid if c.proc else None, "restarts": c.restarts}
            for c in children
        }
        path = settings.VAR_DIR / "serve.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"supervisor": os.getpid(), "children": status}))
        tmp.replace(path)

    def _beat_lock(self):
        """The deployment's beat lock, or None when another serve holds it."""
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        handle = open(settings.VAR_DIR / "beat.lock", "w")  # noqa: SIM115 - held until exit
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    # --- Run --------------------------------------------------------------------------------
    def handle(self, *args, **opts):
        call_command("migrate", interactive=False, verbosity=0)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
        bin_dir = os.path.dirname(sys.executable)
        lock = None if opts["no_worker"] else self._beat_lock()
        if not opts["no_worker"] and lock is None:
            self.stderr.write("serve: another serve holds var/beat.lock; running without beat")
        children = self._children(opts, bin_dir, with_beat=lock is not None)
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for child in children:
            self._start(child, env)
        self._write_status(children)
        self.stdout.write(
            self.style.SUCCESS(f"Serving on http://{opts['host']}:{opts['port']}/ (Ctrl+C stops)")
        )
        try:
            while not stopping:
                now = time.monotonic()
                changed = False
                for child in children:
                    if child.proc is not None and child.proc.poll() is not None:
                        ran = now - child.started_at
                        if ran >= HEALTHY_AFTER_S:
                            child.backoff = BACKOFF_FIRST_S
                        self.stderr.write(
                            f"serve: {child.name} exited with {child.proc.returncode} after "
                            f"{ran:.0f} s; starting it again in {child.backoff:.0f} s"
                        )
                        child.proc = None
                        child.restart_at = now + child.backoff
                        child.backoff = min(BACKOFF_MAX_S, child.backoff * 2)
                        changed = True
                    if (
                        child.proc is None
                        and child.restart_at is not None
                        and now >= child.restart_at
                    ):
                        child.restarts += 1
                        self._start(child, env)
                        changed = True
                if changed:
                    self._write_status(children)
                time.sleep(0.2)
        finally:
            self._stop(children, opts["stop_timeout"])
            if lock is not None:
                lock.close()

    def _stop(self, children: list[Child], timeout: float) -> None:
        """Warm (SIGTERM), then cold (SIGKILL) once `timeout` seconds have passed."""
        running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.stdout.write("serve: stopped")
