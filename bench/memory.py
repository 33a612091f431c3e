"""Memory of a web worker: idle, after 100 labels, and at its peak while 4 large images import.

What runs: a fresh PostgreSQL database (`imageclean_bench_memory`), migrated, with one project,
its labeling queue of 2,000 image rows, a site-wide engineer and an annotator with an API token;
then gunicorn as `manage.py serve` runs it (gthread, 8 threads; here 1 worker, so every request
lands on the worker measured) with the embedded default's settings (`config.settings.local`,
DEBUG off), the filesystem broker and a media folder of its own under a temporary directory.

Measured on the worker process, from /proc/<pid>/status:
- idle: VmRSS once the worker has answered its first requests (the sign-in page, the project
  list through the API) and sat still for 2 s. Also whether PyTorch is mapped into it at all
  (a libtorch in /proc/<pid>/maps): a web worker should not load it until a prediction asks;
- after labels: VmRSS after N labels through the API (next + submit, the labeling page's
  calls; N = 100, 30 in the quick mode);
- imports: 4 sessions of the engineer post one large but valid image each to the import page
  at the same moment (4600 x 4600 RGB JPEG of about 3 MB, 63.5 MB decoded, under every cap
  of docs/security.md). Peak: the highest VmRSS sampled every 10 ms while they run, and VmHWM
  (the kernel's high-water mark of the worker's resident memory over its whole life). Also the
  RSS 2 s after they finish.
- imports, PNG: the same with 4 PNGs of the same size (smooth gradients, under 0.1 MB each).
  A JPEG's thumbnail is decoded at a reduced DCT scale (Pillow's draft mode); a PNG is always
  decoded in full, so this is the decoding slots' worst case. Its VmHWM covers both phases.

Goals (issue 8): idle worker <= 250 MB, peak during the 4 imports <= 600 MB (both phases). MB
here are 10^6 bytes (/proc's kB are KiB, converted).
Everything binds to 127.0.0.1 and the temporary directory and database are removed after.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG_DB = "imageclean_bench_memory"
GOAL_IDLE_MB = 250
GOAL_IMPORT_PEAK_MB = 600
IMAGE_SIDE = 4600  # 4600 x 4600 x 3 bytes = 63.5 MB decoded, under the 64 MiB raster cap
THREADS = 8  # manage.py serve's default threads per gunicorn worker
IMPORTS_AT_ONCE = 4


def _env(var_dir: Path, database_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DATABASE_URL=database_url,
        IMAGECLEAN_VAR_DIR=str(var_dir),
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
    )
    env.pop("DJANGO_DEBUG", None)
    return env


def _child(env: dict, *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [PYTHON, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _postgres(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG_ADMIN_URL}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def _mb(kib: int) -> float:
    """/proc's kB (KiB) as MB of 10^6 bytes, the unit of the goals."""
    return round(kib * 1024 / 1e6, 1)


def _torch_mapped(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as handle:
        return any("libtorch" in line for line in handle)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except FileNotFoundError:
        return []


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn as `manage.py serve` starts it, with one worker."""

    def __init__(self, env: dict):
        import requests

        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PYTHON, "-m", "gunicorn", "config.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}",
                "--workers", "1",
                "--threads", str(THREADS),
                "--timeout", "120",
                "--log-level", "warning",
            ],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"gunicorn exited:\n{self.log.read().decode()[-3000:]}")
            try:
                if requests.get(f"{self.base}/login/", timeout=10).status_code == 200:
                    workers = _children(self.proc.pid)
                    if workers:
                        self.worker = workers[0]
                        return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("gunicorn did not answer within 120 s")

    def rss_kb(self) -> int:
        return _status_kb(self.worker, "VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _label(base: str, token: str, queue_id: int, classes: list[str], n: int) -> int:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    done = 0
    for i in range(n):
        claim = session.post(f"{base}/api/v1/queues/{queue_id}/next/", json={"count": 1})
        claim.raise_for_status()
        leases = claim.json()["leases"]
        if not leases:
            break
        submit = session.post(
            f"{base}/api/v1/leases/{leases[0]['lease']}/submit/", json={"value": classes[i % 2]}
        )
        submit.raise_for_status()
        done += 1
    return done


def _large_jpegs(count: int, side: int) -> list[bytes]:
    """`count` distinct JPEGs of side x side RGB: smooth gradients with a little noise, so the
    files stay a few MB (under the 20 MB file cap) while the decoded raster is full size."""
    import numpy as np
    from PIL import Image as PILImage

    files = []
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    for i in range(count):
        pixels = np.empty((side, side, 3), dtype=np.float32)
        pixels[..., 0] = ramp[None, :]
        pixels[..., 1] = ramp[:, None]
        pixels[..., 2] = (i * 60) % 256
        pixels += rng.normal(0, 6, size=(side, side, 1)).astype(np.float32)
        image = PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        files.append(buffer.getvalue())
    return files


def _large_pngs(count: int, side: int) -> list[bytes]:
    """`count` distinct PNGs of side x side RGB: smooth gradients (a few tens of KB each), the
    full raster once decoded."""
    import numpy as np
    from PIL import Image as PILImage

    files = []
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    for i in range(count):
        pixels = np.empty((side, side, 3), dtype=np.uint8)
        pixels[..., 0] = ramp[None, :]
        pixels[..., 1] = ramp[:, None]
        pixels[..., 2] = (i * 60 + 30) % 256
        buffer = io.BytesIO()
        PILImage.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
        files.append(buffer.getvalue())
    return files


def _signed_in(base: str, username: str, password: str):
    import requests

    session = requests.Session()
    session.get(f"{base}/login/").raise_for_status()
    response = session.post(
        f"{base}/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/login/"},
        allow_redirects=False,
    )
    if response.status_code != 302:
        raise RuntimeError(f"sign-in failed: HTTP {response.status_code}")
    return session


def _imports_at_once(server: Server, seeded: dict, files: list[bytes], kind: str = "jpeg") -> dict:
    base, slug = server.base, seeded["slug"]
    sessions = [_signed_in(base, seeded["engineer"], seeded["password"]) for _ in files]
    url = f"{base}/projects/{slug}/import/"
    for session in sessions:
        session.get(url).raise_for_status()  # the form, and its CSRF cookie
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(server.rss_kb())
            time.sleep(0.01)

    barrier = threading.Barrier(len(files))
    results: list = [None] * len(files)

    def post(i: int) -> None:
        session = sessions[i]
        barrier.wait()
        started = time.perf_counter()
        response = session.post(
            url,
            data={"csrfmiddlewaretoken": session.cookies["csrftoken"]},
            files={"files": (f"large-{kind}-{i}.{kind}", files[i], f"image/{kind}")},
            headers={"Referer": url},
            timeout=600,
        )
        results[i] = (response.status_code, round(time.perf_counter() - started, 2))

    before = server.rss_kb()
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(files))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    peak_sampled = max(samples + [server.rss_kb()])
    high_water = _status_kb(server.worker, "VmHWM")
    time.sleep(2)
    return {
        "files": len(files),
        "file_mb": [round(len(f) / 1e6, 2) for f in files],
        "side_px": IMAGE_SIDE,
        "decoded_mb_each": round(IMAGE_SIDE * IMAGE_SIDE * 3 / 1e6, 1),
        "http_status_and_seconds": results,
        "wall_s": round(wall, 2),
        "rss_before_mb": _mb(before),
        "peak_rss_sampled_mb": _mb(peak_sampled),
        "samples": len(samples),
        "vm_hwm_mb": _mb(high_water),
        "rss_2s_after_mb": _mb(server.rss_kb()),
    }


def run(*, quick: bool, seed: int) -> dict:
    n_labels = 30 if quick else 100
    var_dir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    figures: dict = {"load_average_before": list(os.getloadavg()), "threads": THREADS}
    _postgres(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
    _postgres(f'CREATE DATABASE "{PG_DB}"')
    server = None
    try:
        env = _env(var_dir, f"{PG_ADMIN_URL}/{PG_DB}")
        _child(env, "manage.py", "migrate", "--noinput")
        seeded = json.loads(_child(env, "-m", "bench.memory", "seed", "2000"))
        files = _large_jpegs(IMPORTS_AT_ONCE, IMAGE_SIDE)
        server = Server(env)
        import requests

        requests.get(f"{server.base}/login/").raise_for_status()
        requests.get(
            f"{server.base}/api/v1/projects/",
            headers={"Authorization": f"Token {seeded['token']}"},
        ).raise_for_status()
        time.sleep(2)
        idle = server.rss_kb()
        figures["idle"] = {
            "worker_rss_mb": _mb(idle),
            "torch_mapped": _torch_mapped(server.worker),
            "master_rss_mb": _mb(_status_kb(server.proc.pid, "VmRSS")),
        }
        started = time.perf_counter()
        labeled = _label(server.base, seeded["token"], seeded["queue"], seeded["classes"], n_labels)
        figures["after_labels"] = {
            "labels": labeled,
            "seconds": round(time.perf_counter() - started, 2),
            "worker_rss_mb": _mb(server.rss_kb()),
            "torch_mapped": _torch_mapped(server.worker),
        }
        figures["imports"] = _imports_at_once(server, seeded, files)
        figures["imports"]["images_in_project"] = json.loads(
            _child(env, "-m", "bench.memory", "count", str(seeded["project"]))
        )["images"]
        pngs = _large_pngs(IMPORTS_AT_ONCE, IMAGE_SIDE)
        figures["imports_png"] = _imports_at_once(server, seeded, pngs, kind="png")
        figures["imports_png"]["images_in_project"] = json.loads(
            _child(env, "-m", "bench.memory", "count", str(seeded["project"]))
        )["images"]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
        _postgres(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
    figures["goals"] = {
        "idle_worker_mb": GOAL_IDLE_MB,
        "import_peak_mb": GOAL_IMPORT_PEAK_MB,
        "idle_met": figures["idle"]["worker_rss_mb"] <= GOAL_IDLE_MB,
        "import_peak_met": max(
            figures["imports"]["peak_rss_sampled_mb"], figures["imports"]["vm_hwm_mb"]
        )
        <= GOAL_IMPORT_PEAK_MB,
        "import_peak_png_met": max(
            figures["imports_png"]["peak_rss_sampled_mb"], figures["imports_png"]["vm_hwm_mb"]
        )
        <= GOAL_IMPORT_PEAK_MB,
    }
    figures["load_average_after"] = list(os.getloadavg())
    return figures


# --- Child commands (Django set up against the benchmark's database) ----------------------------
def _seed(n_images: int) -> dict:
    import hashlib

    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    from labeling.models import Image, Queue, QueueItem
    from labeling.services.projects import project_create

    password = uuid.uuid4().hex
    engineer = User.objects.create_user("bench-engineer", password=password)
    engineer.groups.add(Group.objects.get(name="site_engineer"))
    project = project_create(
        name="Memory bench", slug="memory-bench", created_by=engineer, blur_images=False
    )
    queue = Queue.objects.get(project=project, kind=Queue.Kind.LABELING)
    # Rows only: next + submit never open the image files.
    images = []
    for i in range(n_images):
        digest = hashlib.sha256(f"bench-memory-{i}".encode()).hexdigest()
        images.append(
            Image(
                project=project, content_hash=digest, file=f"images/bench/{digest}.png",
                width=32, height=32, format="PNG", byte_size=100, source=f"bench-{i}.png",
                split="pool",
            )
        )  # fmt: skip
    Image.objects.bulk_create(images, batch_size=2000)
    QueueItem.objects.bulk_create(
        [QueueItem(queue=queue, image=image) for image in Image.objects.filter(project=project)],
        batch_size=2000,
    )
    annotator = User.objects.create_user("bench-annotator", password=uuid.uuid4().hex)
    annotator.groups.add(Group.objects.get(name="annotator"))
    project.members.add(annotator)
    return {
        "project": project.pk,
        "slug": project.slug,
        "queue": queue.pk,
        "classes": project.class_keys,
        "token": Token.objects.create(user=annotator).key,
        "engineer": engineer.username,
        "password": password,
    }


def _count(project_id: int) -> dict:
    from labeling.models import Image

    return {"images": Image.objects.filter(project_id=project_id).count()}


def _child_main(argv: list[str]) -> None:
    import django

    django.setup()
    command, args = argv[0], [int(a) for a in argv[1:]]
    print(json.dumps({"seed": _seed, "count": _count}[command](*args)))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
