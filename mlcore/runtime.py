"""Process-wide CPU settings for processes that run the networks; applied before torch loads.

PyTorch's CPU kernels run on OpenMP (GNU libgomp in the Linux wheels). With OMP_WAIT_POLICY
unset, libgomp keeps a thread that has finished its share of a parallel region spinning
(GOMP_SPINCOUNT 300,000) until its teammates arrive, instead of sleeping. On an idle machine
that saves a wake-up per region; on cores shared with other processes (the decode worker, the
database, other jobs) a teammate is often descheduled, and the spinning thread burns its own
time slice waiting for it. bench/scoring.py saw the scoring pipeline fall to 0.10-0.26 of the
bare forward that way at load 7-10 on two cores, the CPU time per image at 4-10 times the
forward's own (docs/platform-benchmarks.md, "Scoring and selection at pool scale").
PASSIVE makes a waiting thread sleep at once.

libgomp reads its environment once, when the library loads (at `import torch`); setting the
variable later changes nothing. So `openmp_defaults()` is called first thing by the entry
points that go on to load torch: the `config` package (every Django and Celery process: the
ml worker, manage.py, the WSGI server) and `python -m bench`. A value already in the
environment wins: an operator who wants spinning on a dedicated machine sets
OMP_WAIT_POLICY=ACTIVE.

No torch import here: this module must be importable before torch.
"""

from __future__ import annotations

import os
import sys

# The variables and the values this project runs with unless the environment says otherwise.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def openmp_defaults() -> bool:
    """Put OPENMP_DEFAULTS into the environment where unset. Returns False when torch is
    already loaded in this process (then they take effect only in processes started later)."""
    for name, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return "torch" not in sys.modules
