"""A REAL Celery worker process for tests, against pytest-django's test database and Redis.

`CeleryWorker` starts `celery -A config worker -Q default,ml --pool solo` in a subprocess whose
DATABASE_URL names the test database (settings.DATABASES['default']['NAME'], which pytest-django
created), whose broker is this run's CELERY_BROKER_URL, and whose media root is the folder the
test stores its files in. Tests that use it need `@pytest.mark.django_db(transaction=True)` so
the worker sees committed rows.

The broker's Redis database is flushed before each worker starts, so messages left over from
an earlier test (a cancelled job's shards, say) never reach this one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def broker_flush() -> None:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


class CeleryWorker:
    def __init__(
        self,
        *,
        var_dir: Path,
        env: dict[str, str] | None = None,
        name: str = "w1",
        pool: str = "solo",
    ):
        """``pool``: "solo" (one process) or "prefork" (a master and one pool process, the
        production layout: the master replaces a pool process that dies)."""
        self.pool = pool
        self.var_dir = var_dir
        self.extra_env = env or {}
        self.name = name
        self.process: subprocess.Popen | None = None
        self.log_path = var_dir / f"worker-{name}-{int(time.time() * 1000)}.log"

    def start(self, *, timeout: float = 60.0) -> CeleryWorker:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "IMAGECLEAN_VAR_DIR": str(self.var_dir),
            "PYTHONUNBUFFERED": "1",
            # Two shared cores: one torch thread keeps the worker from starving the test.
            "OMP_NUM_THREADS": "1",
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "default,ml",
                "--pool",
                self.pool,
                "--concurrency",
                "1",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"{self.name}-{os.getpid()}@%h",
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited at start:\n{self.log()}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement, no cleanup (a machine dying)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()


def wait_for(predicate: Callable[[], bool], *, timeout: float, worker=None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    log = f"\nworker log:\n{worker.log()}" if worker is not None else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}{log}")


def use_worker_storage(settings_fixture, var_dir: Path) -> Path:
    """Point this test's storage at the media root the worker reads (config.settings.test puts
    it at IMAGECLEAN_VAR_DIR/test-media)."""
    media = var_dir / "test-media"
    media.mkdir(parents=True, exist_ok=True)
    settings_fixture.MEDIA_ROOT = media
    settings_fixture.STORAGES = {
        **settings_fixture.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media), "base_url": "/media/"},
        },
    }
    return media


def make_cascade_version(
    project, *, name: str = "v1", seed: int = 0, activate: bool = True, input_size: int = 32
):
    """A real (small, untrained) cascade checkpoint with an LP module, stored as a READY
    ModelVersion through the bridge, and made the project's active version."""
    import torch

    from labeling.ml.cascade import save_cascade
    from mlcore.backbones import build_backbone
    from mlcore.config import BackboneConfig
    from mlcore.loss_prediction import LossPredictionModule

    torch.manual_seed(seed)
    stage1 = build_backbone(
        BackboneConfig(name="small_cnn", cbam=False, input_size=input_size, width_mult=0.25)
    )
    stage2 = build_backbone(BackboneConfig(name="small_cnn", cbam=True, input_size=input_size))
    lp = LossPredictionModule(list(stage1.feature_channels), hidden=16)
    version = save_cascade(
        project=project,
        name=name,
        stage1=stage1,
        stage2=stage2,
        loss_prediction=lp,
        loss_prediction_options={"hidden": 16},
        thresholds=(0.5, 0.5),
        positive_index=project.class_keys.index(project.positive_class),
    )
    if activate:
        project.active_model_version = version
        project.save(update_fields=["active_model_version"])
    return version


@pytest.fixture(scope="module")
def worker_var_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("loop-var")


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker, worker_var_dir):
    """One real worker for the module's tests (starting one costs seconds)."""
    broker_flush()
    worker = CeleryWorker(var_dir=worker_var_dir).start()
    yield worker
    worker.stop()


@pytest.fixture
def worker_storage(settings, worker_var_dir) -> Path:
    return use_worker_storage(settings, worker_var_dir)
