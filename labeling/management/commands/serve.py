"""Serve the app with its Celery worker: one command for the embedded default.

Runs migrations, then starts gunicorn (threads, so 50 people can label at once) and a real
Celery worker process consuming both queues, and stops both on Ctrl+C. On the embedded default
the broker is kombu's filesystem transport under var/broker, so nothing needs installing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run migrations, then serve the web app (gunicorn) and a Celery worker together."

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

    def handle(self, *args, **opts):
        call_command("migrate", interactive=False, verbosity=0)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
        bin_dir = os.path.dirname(sys.executable)
        procs: list[subprocess.Popen] = []
        if not opts["no_worker"]:
            procs.append(
                subprocess.Popen(
                    [
                        os.path.join(bin_dir, "celery"),
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
                        # Embedded beat: the periodic lease sweep and stalled-job recovery.
                        "--beat",
                        "--schedule",
                        str(settings.VAR_DIR / "celerybeat-schedule"),
                    ],
                    env=env,
                    cwd=settings.BASE_DIR,
                )
            )
        procs.append(
            subprocess.Popen(
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
                env=env,
                cwd=settings.BASE_DIR,
            )
        )
        self.stdout.write(
            self.style.SUCCESS(f"Serving on http://{opts['host']}:{opts['port']}/ (Ctrl+C stops)")
        )
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for proc in procs:
                    if proc.poll() is not None:
                        self.stderr.write(f"{proc.args[0]} exited with {proc.returncode}")
                        stopping = True
                time.sleep(0.5)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
