"""50 annotators at once through gunicorn on PostgreSQL and SQLite, and import images/s.

What runs: a fresh database (PostgreSQL: a new database `imageclean_bench_latency`; SQLite: a
new file), migrated; a project with N images in its labeling queue and 50 annotators with API
tokens; gunicorn (gthread workers, keep-alive) on 127.0.0.1 with config.settings.test (DEBUG
off, throttling out of the way). Each simulated annotator is a thread with its own token and
its own keep-alive HTTP connection, looping POST /api/v1/queues/<id>/next/ then
POST /api/v1/leases/<id>/submit/. Two shapes:
- saturation: no pause between labels (comparable with TARGETS.md's Label Studio table);
- human pace: a random 1-3 s pause between labels, as people do.
After each run the database itself is asked how many items two annotators held at once
(overlapping active/completed leases of different people on one item) and how many items got
more annotations than they needed. Import throughput: `images_import` on generated PNGs.

Everything binds to 127.0.0.1 only, and every phase is bounded in time and count.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG_DB = "imageclean_bench_latency"
ANNOTATORS = 50


# --- Processes ------------------------------------------------------------------------------
def _env(database_url: str, var_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url,
        IMAGECLEAN_VAR_DIR=str(var_dir),
        DJANGO_DEBUG="0",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
    )
    # The benchmark never touches the broker; keep it off other people's Redis databases.
    env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/6")
    return env


def _child(env: dict, *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [PYTHON, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _fresh_postgres_database() -> str:
    import psycopg2

    conn = psycopg2.connect(f"{PG_ADMIN_URL}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{PG_DB}"')
    conn.close()
    return f"{PG_ADMIN_URL}/{PG_DB}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn with gthread workers (keep-alive) on 127.0.0.1."""

    def __init__(self, env: dict, *, workers: int, threads: int):
        self.port = _free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PYTHON, "-m", "gunicorn", "config.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}",
                "--worker-class", "gthread",
                "--workers", str(workers),
                "--threads", str(threads),
                "--keep-alive", "30",
                "--timeout", "60",
                "--log-level", "warning",
            ],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.workers, self.threads = workers, threads
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"gunicorn exited:\n{self.log.read().decode()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/login/")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("gunicorn did not answer within 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# --- Simulated annotators -------------------------------------------------------------------
class Annotator(threading.Thread):
    def __init__(self, port, token, queue_id, *, stop_at, pause, rng, value):
        super().__init__(daemon=True)
        self.port, self.token, self.queue_id = port, token, queue_id
        self.stop_at, self.pause, self.rng, self.value = stop_at, pause, rng, value
        self.latencies_ms: list[float] = []
        self.errors: Counter = Counter()
        self.error_examples: dict[str, str] = {}
        self.empty = False
        self.conn = None

    def _post(self, path: str, body: dict) -> tuple[int, dict]:
        payload = json.dumps(body)
        headers = {
            "Authorization": f"Token {self.token}",
            "Content-Type": "application/json",
            "Connection": "keep-alive",
        }
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request("POST", path, payload, headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else {})
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            if self.pause:
                time.sleep(self.rng.uniform(*self.pause))
                if time.monotonic() >= self.stop_at:
                    break
            started = time.perf_counter()
            try:
                status, body = self._post(f"/api/v1/queues/{self.queue_id}/next/", {"count": 1})
                if status != 200:
                    self.errors[f"next {status}"] += 1
                    continue
                if not body["leases"]:
                    self.empty = True
                    break
                lease = body["leases"][0]["lease"]
                status, answer = self._post(
                    f"/api/v1/leases/{lease}/submit/",
                    {"value": self.value, "client_id": uuid.uuid4().hex},
                )
            except (OSError, http.client.HTTPException) as exc:
                self.errors[type(exc).__name__] += 1
                continue
            if status != 200:
                self.errors[f"submit {status}"] += 1
                self.error_examples.setdefault(f"submit {status}", json.dumps(answer)[:300])
                continue
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
        if self.conn is not None:
            self.conn.close()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)


def _drive(port, tokens, queue_id, *, classes, seconds, pause, seed) -> dict:
    rng = random.Random(seed)
    stop_at = time.monotonic() + seconds
    threads = [
        Annotator(
            port, token, queue_id, stop_at=stop_at, pause=pause,
            rng=random.Random(rng.random()), value=rng.choice(classes),
        )
        for token in tokens
    ]  # fmt: skip
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    wall = time.perf_counter() - started
    latencies = [ms for t in threads for ms in t.latencies_ms]
    errors = sum((t.errors for t in threads), Counter())
    return {
        "annotators": len(tokens),
        "seconds": round(wall, 1),
        "pause_s": list(pause) if pause else None,
        "labels": len(latencies),
        "labels_per_s": round(len(latencies) / wall, 1),
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
        "p99_ms": _percentile(latencies, 99),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "errors": dict(errors),
        "error_examples": {k: v for t in threads for k, v in t.error_examples.items()},
        "queue_ran_dry": any(t.empty for t in threads),
    }


# --- One database end to end ----------------------------------------------------------------
def _scenario(database_url, var_dir, *, n_images, shapes, server, seed) -> dict:
    env = _env(database_url, var_dir)
    _child(env, "manage.py", "migrate", "--noinput", timeout=600)
    seeded = json.loads(_child(env, "-m", "bench.latency", "seed", str(n_images), str(ANNOTATORS)))
    srv = Server(env, **server)
    out = {"images": n_images, "server": {"workers": srv.workers, "threads": srv.threads}}
    try:
        for name, seconds, pause in shapes:
            before = json.loads(_child(env, "-m", "bench.latency", "check", str(seeded["queue"])))
            result = _drive(
                srv.port, seeded["tokens"], seeded["queue"], classes=seeded["classes"],
                seconds=seconds, pause=pause, seed=seed,
            )  # fmt: skip
            after = json.loads(_child(env, "-m", "bench.latency", "check", str(seeded["queue"])))
            result["labels_in_db"] = after["labels"] - before["labels"]
            result["items_held_twice"] = after["items_held_twice"]
            result["items_over_labeled"] = after["items_over_labeled"]
            out[name] = result
    finally:
        srv.stop()
    return out


def run(*, quick: bool, seed: int) -> dict:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    saturation = 15 if quick else 45
    human = 20 if quick else 60
    figures: dict = {"annotators": ANNOTATORS}
    try:
        figures["postgresql"] = _scenario(
            _fresh_postgres_database(),
            var_dir / "pg",
            n_images=6000 if quick else 20000,
            shapes=[("saturation", saturation, None), ("human_pace", human, (1.0, 3.0))],
            server={"workers": 4, "threads": 8},
            seed=seed,
        )
        sqlite_path = var_dir / "sqlite" / "db.sqlite3"
        sqlite_path.parent.mkdir(parents=True)
        figures["sqlite"] = _scenario(
            f"sqlite:///{sqlite_path}",
            var_dir / "sqlite",
            n_images=3000 if quick else 8000,
            shapes=[("saturation", saturation, None)],
            server={"workers": 4, "threads": 8},
            seed=seed,
        )
        env = _env(f"{PG_ADMIN_URL}/{PG_DB}", var_dir / "pg")
        n = 200 if quick else 500
        figures["import"] = json.loads(_child(env, "-m", "bench.latency", "import", str(n)))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    return figures


# --- Child commands (run with Django set up against the benchmark's database) -------------------
def _seed(n_images: int, n_annotators: int) -> dict:
    import hashlib

    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    from labeling.models import Image, Queue, QueueItem
    from labeling.services.projects import project_create

    engineer = User.objects.create_user("bench-engineer", password=uuid.uuid4().hex)
    engineer.groups.add(Group.objects.get(name="engineer"))
    project = project_create(
        name="Latency bench", slug="latency-bench", created_by=engineer, blur_images=False
    )
    queue = Queue.objects.get(project=project, kind=Queue.Kind.LABELING)
    # Rows only: next + submit never open the files, and writing 20k files would time the
    # disk, not the labeling path.
    images = []
    for i in range(n_images):
        digest = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        images.append(
            Image(
                project=project, content_hash=digest, file=f"images/bench/{digest}.png",
                width=32, height=32, format="PNG", byte_size=100, source=f"bench-{i}.png",
                split=project.split_for_hash(digest),
            )
        )  # fmt: skip
    Image.objects.bulk_create(images, batch_size=2000)
    rng = random.Random(0)
    QueueItem.objects.bulk_create(
        [
            QueueItem(queue=queue, image=image, priority=rng.random(), labels_needed=1)
            for image in Image.objects.filter(project=project)
        ],
        batch_size=2000,
    )
    annotator_group = Group.objects.get(name="annotator")
    tokens = []
    for i in range(n_annotators):
        user = User.objects.create_user(f"bench-annotator-{i}", password=uuid.uuid4().hex)
        user.groups.add(annotator_group)
        project.members.add(user)
        tokens.append(Token.objects.create(user=user).key)
    return {
        "project": project.pk,
        "queue": queue.pk,
        "tokens": tokens,
        "classes": project.class_keys,
    }


def _check(queue_id: int) -> dict:
    from django.db import connection

    from labeling.models import Label

    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT COUNT(DISTINCT a.item_id) FROM labeling_lease a
            JOIN labeling_lease b ON a.item_id = b.item_id AND a.id < b.id
                 AND a.annotator_id <> b.annotator_id
            JOIN labeling_queueitem qi ON qi.id = a.item_id
            WHERE qi.queue_id = %s AND qi.labels_needed = 1
              AND a.state IN ('active', 'completed') AND b.state IN ('active', 'completed')
              AND a.created_at < COALESCE(b.finished_at, b.expires_at)
              AND b.created_at < COALESCE(a.finished_at, a.expires_at)
            """,
            [queue_id],
        )
        held_twice = cur.fetchone()[0]
        cur.execute(
            """
            SELECT COUNT(*) FROM (
                SELECT l.queue_item_id, COUNT(*) AS n FROM labeling_label l
                WHERE l.kind = 'annotation' AND l.queue_id = %s
                GROUP BY l.queue_item_id) t
            JOIN labeling_queueitem qi ON qi.id = t.queue_item_id
            WHERE t.n > qi.labels_needed
            """,
            [queue_id],
        )
        over_labeled = cur.fetchone()[0]
    return {
        "labels": Label.objects.filter(queue_id=queue_id).count(),
        "items_held_twice": held_twice,
        "items_over_labeled": over_labeled,
    }


def _import(n: int) -> dict:
    from PIL import Image as PILImage

    from labeling.models import Project
    from labeling.services.imports import images_import
    from labeling.services.projects import project_create

    project = project_create(name="Import bench", slug="import-bench")
    rng = random.Random(0)
    files = []
    for i in range(n):
        img = PILImage.new("RGB", (256, 256), (rng.randrange(256), rng.randrange(256), i % 256))
        # Some texture, so thumbnails and hashing do real work.
        for _ in range(64):
            img.putpixel((rng.randrange(256), rng.randrange(256)), (i % 256, 0, 255))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        files.append((f"gen-{i}.png", buf.getvalue()))
    started = time.perf_counter()
    report = images_import(project=Project.objects.get(pk=project.pk), files=files)
    seconds = time.perf_counter() - started
    created = project.images.count()
    return {
        "files": n,
        "images_created": created,
        "png_size": "256x256",
        "seconds": round(seconds, 2),
        "images_per_s": round(created / seconds, 1),
        "imported_per_report": report.imported,
        "archive_errors": len(report.archive_errors),
    }


def _child_main(argv: list[str]) -> None:
    import django

    django.setup()
    command, args = argv[0], [int(a) for a in argv[1:]]
    result = {"seed": _seed, "check": _check, "import": _import}[command](*args)
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
