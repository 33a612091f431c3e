"""The processes that run the networks start OpenMP with passive waiting (mlcore.runtime).

libgomp reads its environment once, when torch loads it; OMP_DISPLAY_ENV=VERBOSE makes it print
what it took, GOMP_SPINCOUNT among it: 300000 by default (threads spin while they wait, which on
shared cores cost the scoring pipeline up to ten times its speed), 0 under
OMP_WAIT_POLICY=PASSIVE. Each check starts a fresh interpreter, since in this one torch (and
libgomp) is long loaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The app's ml worker path: the config package first (as `celery -A config` and manage.py do),
# then Django, then the module a scoring shard runs, which loads torch.
WORKER = (
    "import config, django; django.setup(); import labeling.ml.scoring, torch; torch.ones(8).sum()"
)


def _spincounts(code: list[str], **env_extra: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.update(
        OMP_DISPLAY_ENV="VERBOSE", DJANGO_SETTINGS_MODULE="config.settings.test", **env_extra
    )
    done = subprocess.run(
        [sys.executable, *code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Every OpenMP runtime loaded prints its block (torch's, and faiss's in the benchmarks).
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)


def test_torch_alone_spins():
    """The premise: without the project's entry points, torch's OpenMP threads spin."""
    assert _spincounts(["-c", "import torch; torch.ones(8).sum()"]) == ["300000"]


def test_worker_path_waits_passively():
    counts = _spincounts(["-c", WORKER])
    assert counts and set(counts) == {"0"}


def test_benchmarks_wait_passively():
    """`python -m bench` loads every benchmark module (and torch) before running one."""
    counts = _spincounts(["-m", "bench", "--list"])
    assert counts and set(counts) == {"0"}


def test_an_operator_setting_wins():
    counts = _spincounts(["-c", WORKER], OMP_WAIT_POLICY="ACTIVE")
    assert counts and "0" not in counts
