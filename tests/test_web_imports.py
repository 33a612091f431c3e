"""A web worker does not import PyTorch or SciPy until a request needs them (issue 8, item 8):
torch costs about 800 MB per gunicorn process and `import scipy.stats` about 80 MB (a worker went
from 83 to 162 MB idle when two modules a view loads imported it at the top), and pages, the
labeling API and the admin do not need them at start-up. Checked in a fresh process on the
embedded default: the WSGI app, every URL pattern's view, the task module a `.delay()` loads and
a page request leave torch, torchvision and scipy unimported (statistics import scipy inside the
functions that compute them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import sys
from config.wsgi import application
from django.test import Client
from django.urls import URLResolver, get_resolver
import labeling.tasks  # what a view's task.delay() loads

def walk(resolver):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            walk(entry)
        else:
            entry.callback  # imports the view's module

walk(get_resolver())
Client(HTTP_HOST="localhost").get("/login/")
print("LOADED", sorted(m for m in ("torch", "torchvision", "scipy") if m in sys.modules))
"""


def test_web_process_does_not_import_torch_or_scipy(tmp_path):
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
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout, result.stdout
