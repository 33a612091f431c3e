"""50 annotators at once through gunicorn on PostgreSQL and SQLite, and import images/s.

What runs: a fresh database (PostgreSQL: a new database `imageclean_bench_latency`; SQLite: a
new file), migrated; a project with N images in its labeling queue and 50 annotators with API
tokens; gunicorn (gthread workers, keep-alive) on 127.0.0.1 with config.settings.test (DEBUG
off, throttling out of the way). The tables are ANALYZEd after seeding, as autovacuum would do
within a minute on a real server: without statistics PostgreSQL plans the progress count as a
loop over every open item.

The simulated annotators are cheap on purpose, because they share the machine's cores with the
server and the database: one asyncio event loop in this process, 50 keep-alive connections,
hand-written HTTP/1.1 requests, each annotator with its own token looping
POST /api/v1/queues/<id>/next/ ({"count": 1}, with the progress counts the labeling page shows)
then POST /api/v1/leases/<id>/submit/ (pattern "one_by_one", comparable with Label Studio); the
latency of a label is the wall time of that pair. Pattern "submit_and_claim" is the labeling
page's: AHEAD items claimed first, then one POST /api/v1/queues/<id>/submit-next/ per label that
submits it and claims one more; the latency of a label is that one request.
Shapes:
- saturation: no pause between labels (comparable with TARGETS.md's Label Studio table), run
  once per gunicorn configuration (workers x threads), side by side, on the same database;
- saturation again with the best configuration but `"progress": false` in next (full run only):
  what the page's progress counts (two count queries over the whole queue) cost;
- saturation in the page's pattern (submit_and_claim) with the best configuration;
- human pace: a random 1-3 s pause between labels, as people do, with the best configuration,
  in both patterns.
On PostgreSQL each phase starts with VACUUM ANALYZE, as autovacuum would run between phases on a
deployed server (the shared server here runs with it off; each phase records that setting).
Each phase also reports the CPU the server processes and the PostgreSQL backends spent per
label, which other people's load on the shared cores changes far less than wall-clock figures.
After each phase the database itself is asked how many items two annotators held at once
(overlapping active/completed leases of different people on one item) and how many items got
more annotations than they needed; and how many database connections the server opened during
the phase (persistent connections: about one per server thread, not one per request).
Import throughput: `images_import` on generated PNGs.

Everything binds to 127.0.0.1 only, and every phase is bounded in time and count.
"""

from __future__ import annotations

import asyncio
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
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG_DB = "imageclean_bench_latency"
ANNOTATORS = 50
BOOT_TIMEOUT_S = 180


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
        # Booting Django in every worker takes seconds on a busy shared machine.
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"gunicorn exited:\n{self.log.read().decode()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/login/")
                if conn.getresponse().status == 200:
                    conn.close()
                    # Every worker imports Django on its own; let them all finish booting so
                    # the phase's CPU accounting counts requests, not start-up.
                    while len(_children(self.proc.pid)) < workers and time.monotonic() < deadline:
                        time.sleep(0.2)
                    time.sleep(3)
                    return
            except OSError:
                time.sleep(0.3)
        self.log.seek(0)
        log = self.log.read().decode()[-3000:]
        self.stop()  # no gunicorn left behind by a failed start
        raise RuntimeError(f"gunicorn did not answer within {BOOT_TIMEOUT_S} s:\n{log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# --- Simulated annotators -------------------------------------------------------------------
class _Connection:
    """One keep-alive HTTP/1.1 connection, requests written by hand: a few microseconds of
    client CPU per request, so the server gets the cores."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.head = (
            f"Host: 127.0.0.1:{port}\r\nAuthorization: Token {token}\r\n"
            "Content-Type: application/json\r\nConnection: keep-alive\r\n"
        )
        self.reader = self.writer = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        payload = json.dumps(body).encode()
        request = (
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        for attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                self.writer.write(request)
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("server closed the keep-alive connection")
                status = int(status_line.split()[1])
                length, close = 0, False
                while (line := await self.reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "connection" and value.strip().lower() == "close":
                        close = True
                data = await self.reader.readexactly(length) if length else b""
                if close:
                    await self.close()
                return status, (json.loads(data) if data else {})
            except (OSError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")


# How many items the page's pattern keeps claimed ahead (the labeling page prefetches a few).
AHEAD = 3
PATTERNS = ("one_by_one", "submit_and_claim")


class Annotator:
    def __init__(self, port, token, queue_id, *, stop_at, pause, rng, value, progress, pattern):
        self.conn = _Connection(port, token)
        self.claim = {"count": 1, "progress": progress}
        self.progress, self.pattern = progress, pattern
        self.queue_id, self.stop_at, self.pause, self.rng, self.value = (
            queue_id, stop_at, pause, rng, value,
        )  # fmt: skip
        self.latencies_ms: list[float] = []
        self.errors: Counter = Counter()
        self.error_examples: dict[str, str] = {}
        self.empty = False

    async def run(self) -> None:
        if self.pattern == "submit_and_claim":
            await self.run_submit_and_claim()
        else:
            await self.run_one_by_one()

    async def run_submit_and_claim(self) -> None:
        """The labeling page's pattern: AHEAD items claimed ahead, then one request per label
        that submits it and claims one more (POST /api/v1/queues/<id>/submit-next/). The
        latency of a label is that one request."""
        loop = asyncio.get_running_loop()
        held: list[int] = []
        seen: set[int] = set()
        url = f"/api/v1/queues/{self.queue_id}/submit-next/"
        try:
            status, body = await self.conn.post(
                f"/api/v1/queues/{self.queue_id}/next/",
                {"count": AHEAD, "progress": self.progress},
            )
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors[type(exc).__name__] += 1
            return
        if status != 200:
            self.errors[f"next {status}"] += 1
            self.error_examples.setdefault(f"next {status}", json.dumps(body)[:300])
            return
        for lease in body["leases"]:
            seen.add(lease["lease"])
            held.append(lease["lease"])
        while loop.time() < self.stop_at:
            if not held:
                self.empty = True
                break
            if self.pause:
                await asyncio.sleep(self.rng.uniform(*self.pause))
                if loop.time() >= self.stop_at:
                    break
            lease_id = held.pop(0)
            entry = {"lease": lease_id, "value": self.value, "client_id": uuid.uuid4().hex}
            started = time.perf_counter()
            try:
                status, body = await self.conn.post(
                    url, {"entries": [entry], "count": AHEAD, "progress": self.progress}
                )
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.errors[type(exc).__name__] += 1
                continue
            if status != 200:
                self.errors[f"submit-next {status}"] += 1
                self.error_examples.setdefault(f"submit-next {status}", json.dumps(body)[:300])
                continue
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            for lease in body["leases"]:
                if lease["lease"] not in seen:
                    seen.add(lease["lease"])
                    held.append(lease["lease"])
        await self.conn.close()

    async def run_one_by_one(self) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < self.stop_at:
            if self.pause:
                await asyncio.sleep(self.rng.uniform(*self.pause))
                if loop.time() >= self.stop_at:
                    break
            started = time.perf_counter()
            try:
                status, body = await self.conn.post(
                    f"/api/v1/queues/{self.queue_id}/next/", self.claim
                )
                if status != 200:
                    self.errors[f"next {status}"] += 1
                    self.error_examples.setdefault(f"next {status}", json.dumps(body)[:300])
                    continue
                if not body["leases"]:
                    self.empty = True
                    break
                lease = body["leases"][0]["lease"]
                status, answer = await self.conn.post(
                    f"/api/v1/leases/{lease}/submit/",
                    {"value": self.value, "client_id": uuid.uuid4().hex},
                )
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.errors[type(exc).__name__] += 1
                continue
            if status != 200:
                self.errors[f"submit {status}"] += 1
                self.error_examples.setdefault(f"submit {status}", json.dumps(answer)[:300])
                continue
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
        await self.conn.close()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)


async def _drive_async(port, tokens, queue_id, *, classes, seconds, pause, seed, progress, pattern):
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    annotators = [
        Annotator(
            port, token, queue_id, stop_at=stop_at, pause=pause,
            rng=random.Random(rng.random()), value=rng.choice(classes), progress=progress,
            pattern=pattern,
        )
        for token in tokens
    ]  # fmt: skip
    # Bounded: a request still in flight 60 s after the end is abandoned, not waited for.
    await asyncio.wait_for(asyncio.gather(*(a.run() for a in annotators)), timeout=seconds + 60)
    return annotators


def _drive(
    port, tokens, queue_id, *, classes, seconds, pause, seed, progress=True, pattern="one_by_one"
) -> dict:
    started = time.perf_counter()
    cpu_started = time.process_time()
    annotators = asyncio.run(
        _drive_async(
            port, tokens, queue_id, classes=classes, seconds=seconds, pause=pause, seed=seed,
            progress=progress, pattern=pattern,
        )
    )  # fmt: skip
    wall = time.perf_counter() - started
    latencies = [ms for a in annotators for ms in a.latencies_ms]
    errors = sum((a.errors for a in annotators), Counter())
    return {
        "pattern": pattern,
        "annotators": len(tokens),
        "seconds": round(wall, 1),
        "pause_s": list(pause) if pause else None,
        "progress_in_next": progress,
        "labels": len(latencies),
        "labels_per_s": round(len(latencies) / wall, 1),
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
        "p99_ms": _percentile(latencies, 99),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "errors": dict(errors),
        "error_examples": {k: v for a in annotators for k, v in a.error_examples.items()},
        "queue_ran_dry": any(a.empty for a in annotators),
        # What the simulated annotators themselves cost on the shared cores.
        "client_cpu_s": round(time.process_time() - cpu_started, 2),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


# --- CPU accounting --------------------------------------------------------------------------
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids) -> float:
    """utime + stime of these processes (Linux /proc); a process already gone counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLOCK_TICKS


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _pg_backend_pids(database_url: str) -> list[int]:
    if not database_url.startswith("postgres"):
        return []
    import psycopg2

    conn = psycopg2.connect(f"{PG_ADMIN_URL}/postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [PG_DB])
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


# --- One database end to end ----------------------------------------------------------------
def _pg_sessions(database_url: str) -> int | None:
    """Connections ever opened to the benchmark's PostgreSQL database (pg_stat_database)."""
    if not database_url.startswith("postgres"):
        return None
    import psycopg2

    conn = psycopg2.connect(f"{PG_ADMIN_URL}/postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", [PG_DB])
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _vacuum(database_url: str) -> dict | None:
    """VACUUM ANALYZE the benchmark's database before a phase, as autovacuum would have done
    between phases on a deployed server. Here the shared PostgreSQL runs with autovacuum off:
    without this, each phase inherits the dead lease and item rows of the ones before, the
    claim re-reads them all, and the database's CPU per label grows phase by phase (what the
    idle run of 2026-12-02 showed; docs/platform-benchmarks.md)."""
    if not database_url.startswith("postgres"):
        return None
    import psycopg2

    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW autovacuum")
            autovacuum = cur.fetchone()[0]
            started = time.perf_counter()
            cur.execute("VACUUM (ANALYZE)")
            return {"seconds": round(time.perf_counter() - started, 2), "autovacuum": autovacuum}
    finally:
        conn.close()


def _phase(
    env, database_url, seeded, srv, *, seconds, pause, seed, progress=True, pattern="one_by_one"
) -> dict:
    vacuum = _vacuum(database_url)
    before = json.loads(_child(env, "-m", "bench.latency", "check", str(seeded["queue"])))
    load_before = [round(x, 2) for x in os.getloadavg()]
    sessions_before = _pg_sessions(database_url)
    server_pids = [srv.proc.pid, *_children(srv.proc.pid)]
    server_cpu_before = _cpu_seconds(server_pids)
    db_cpu_before = _cpu_seconds(_pg_backend_pids(database_url))
    result = {"server": {"workers": srv.workers, "threads": srv.threads}}
    if vacuum is not None:
        result["vacuum_before"] = vacuum
    result.update(
        _drive(
            srv.port, seeded["tokens"], seeded["queue"], classes=seeded["classes"],
            seconds=seconds, pause=pause, seed=seed, progress=progress, pattern=pattern,
        )
    )  # fmt: skip
    result["load_average_before"] = load_before
    # CPU the server spent in this phase: the gunicorn processes and, on PostgreSQL, the
    # backends serving them (persistent connections opened by this phase's fresh server; a
    # backend that exited meanwhile is missed, db_connections_opened says whether any could
    # have). Per label, this is what the work costs whatever else runs on the machine;
    # cores / (CPU ms per label) bounds the labels/s of an otherwise idle machine.
    server_cpu = _cpu_seconds(server_pids) - server_cpu_before
    db_cpu = _cpu_seconds(_pg_backend_pids(database_url)) - db_cpu_before
    labels = max(result["labels"], 1)
    result["server_cpu_s"] = round(server_cpu, 2)
    result["server_cpu_ms_per_label"] = round(server_cpu * 1000 / labels, 2)
    if sessions_before is not None:
        result["db_backend_cpu_s"] = round(db_cpu, 2)
        result["db_cpu_ms_per_label"] = round(db_cpu * 1000 / labels, 2)
        # Minus the one this count itself opens.
        result["db_connections_opened"] = _pg_sessions(database_url) - sessions_before - 1
    after = json.loads(_child(env, "-m", "bench.latency", "check", str(seeded["queue"])))
    result["labels_in_db"] = after["labels"] - before["labels"]
    result["items_held_twice"] = after["items_held_twice"]
    result["items_over_labeled"] = after["items_over_labeled"]
    return result


def _scenario(
    database_url, var_dir, *, n_images, configs, saturation_s, human_s, seed,
    without_progress=False,
) -> dict:  # fmt: skip
    """Saturation once per gunicorn configuration (each on a fresh server, the same database),
    then human pace with the configuration that labeled fastest."""
    env = _env(database_url, var_dir)
    _child(env, "manage.py", "migrate", "--noinput", timeout=600)
    seeded = json.loads(_child(env, "-m", "bench.latency", "seed", str(n_images), str(ANNOTATORS)))
    out: dict = {"images": n_images, "saturation": []}
    for workers, threads in configs:
        srv = Server(env, workers=workers, threads=threads)
        try:
            out["saturation"].append(
                _phase(env, database_url, seeded, srv, seconds=saturation_s, pause=None, seed=seed)
            )
        finally:
            srv.stop()
    best = max(out["saturation"], key=lambda r: r["labels_per_s"])
    out["best_server"] = best["server"]
    if without_progress:
        # The same saturation without the queue's progress counts in each answer: what those
        # two count queries over the whole queue cost (the page asks for them; scripts need not).
        srv = Server(env, **best["server"])
        try:
            out["saturation_without_progress"] = _phase(
                env, database_url, seeded, srv, seconds=saturation_s, pause=None, seed=seed,
                progress=False,
            )  # fmt: skip
        finally:
            srv.stop()
    # The labeling page's pattern (claim ahead, then submit-and-claim in one request), on the
    # configuration the one-by-one pattern liked best.
    srv = Server(env, **best["server"])
    try:
        out["saturation_submit_and_claim"] = _phase(
            env, database_url, seeded, srv, seconds=saturation_s, pause=None, seed=seed,
            pattern="submit_and_claim",
        )  # fmt: skip
    finally:
        srv.stop()
    if human_s:
        human = (("human_pace", "one_by_one"), ("human_pace_submit_and_claim", "submit_and_claim"))
        for key, pattern in human:
            srv = Server(env, **best["server"])
            try:
                out[key] = _phase(
                    env, database_url, seeded, srv, seconds=human_s, pause=(1.0, 3.0),
                    seed=seed, pattern=pattern,
                )  # fmt: skip
            finally:
                srv.stop()
    return out


# gunicorn shapes compared on the 2-core machine: a process per core with a few threads each
# (the GIL lets one thread of a process run Python at a time; the others wait on the database),
# one more process than cores, and the old 4 x 8.
PG_CONFIGS = [(2, 4), (3, 4), (4, 8)]
SQLITE_CONFIGS = [(2, 4), (4, 8)]


def run(*, quick: bool, seed: int) -> dict:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    figures: dict = {"annotators": ANNOTATORS, "load_average_before": list(os.getloadavg())}
    try:
        figures["postgresql"] = _scenario(
            _fresh_postgres_database(),
            var_dir / "pg",
            n_images=15000 if quick else 60000,
            configs=PG_CONFIGS[::2] if quick else PG_CONFIGS,
            saturation_s=15 if quick else 40,
            human_s=20 if quick else 60,
            seed=seed,
            without_progress=not quick,
        )
        sqlite_path = var_dir / "sqlite" / "db.sqlite3"
        sqlite_path.parent.mkdir(parents=True)
        figures["sqlite"] = _scenario(
            f"sqlite:///{sqlite_path}",
            var_dir / "sqlite",
            n_images=6000 if quick else 15000,
            configs=SQLITE_CONFIGS,
            saturation_s=15 if quick else 40,
            human_s=0,
            seed=seed,
        )
        env = _env(f"{PG_ADMIN_URL}/{PG_DB}", var_dir / "pg")
        n = 200 if quick else 500
        figures["import"] = json.loads(_child(env, "-m", "bench.latency", "import", str(n)))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    figures["load_average_after"] = list(os.getloadavg())
    return figures


# --- Child commands (run with Django set up against the benchmark's database) -------------------
def _seed(n_images: int, n_annotators: int) -> dict:
    import hashlib

    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    from labeling.models import Image, Queue, QueueItem
    from labeling.services.projects import project_create

    engineer = User.objects.create_user("bench-engineer", password=uuid.uuid4().hex)
    engineer.groups.add(Group.objects.get(name="site_engineer"))
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
    # Planner statistics, as autovacuum would gather within a minute of such a bulk insert.
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("ANALYZE")
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
