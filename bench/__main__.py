"""Entry point: python -m bench NAME [--quick] [--seed N] [options of NAME] | python -m bench --list

A benchmark module may define ``add_arguments(parser)``: its options (seeds, sizes...) are then
parsed from the rest of the command line and passed to its ``run`` as keyword arguments."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import bench
from mlcore.runtime import openmp_defaults

# Before any benchmark module loads torch, as in the app's processes (config/__init__.py), so
# the benchmarks measure the OpenMP settings the app runs with (mlcore.runtime).
openmp_defaults()

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NOT_BENCHMARKS = {"__main__", "common"}


def available() -> dict[str, str]:
    names: dict[str, str] = {}
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name in NOT_BENCHMARKS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if callable(getattr(module, "run", None)):
            doc = (module.__doc__ or "").strip().splitlines()
            names[info.name] = doc[0] if doc else ""
    return names


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        # As libgomp read it when torch loaded (mlcore.runtime sets it unless given).
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", nargs="?", help="benchmark to run")
    parser.add_argument("--list", action="store_true", help="name the benchmarks")
    parser.add_argument("--quick", action="store_true", help="CI-sized run (under two minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tag",
        default="",
        help="suffix of the results file (NAME-TAG.json), to keep runs of other settings apart",
    )
    args, rest = parser.parse_known_args(argv)

    if not re.fullmatch(r"[A-Za-z0-9_-]*", args.tag):
        parser.error("--tag takes letters, digits, '-' and '_' only (it names a file)")
    names = available()
    if args.list or not args.name:
        for name, doc in sorted(names.items()):
            print(f"{name:16s} {doc}")
        return 0
    if args.name not in names:
        parser.error(f"unknown benchmark {args.name!r}; known: {', '.join(sorted(names))}")

    module = importlib.import_module(f"bench.{args.name}")
    options: dict = {}
    if callable(getattr(module, "add_arguments", None)):
        own = argparse.ArgumentParser(prog=f"python -m bench {args.name}")
        module.add_arguments(own)
        options = vars(own.parse_args(rest))
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    started = time.perf_counter()
    figures = module.run(quick=args.quick, seed=args.seed, **options)
    wall = time.perf_counter() - started
    record = {
        "benchmark": args.name,
        "mode": "quick" if args.quick else "full",
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "options": options,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "machine": machine(),
        "figures": figures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    out = RESULTS_DIR / f"{args.name}{tag}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(json.dumps(record["figures"], indent=2, default=float))
    print(f"wrote {out} ({wall:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
