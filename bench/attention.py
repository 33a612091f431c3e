"""attention: CBAM on vs off in the app's cascade (cpu_transfer), rare task

Protocol 6 of shared/DATA.md: the cascade benchmark (bench/cascade.py: same pool, label noise,
validation and test splits, epochs, seeds, one ``mlcore.pipeline.fit_cascade`` per seed and
setting) run with ``CascadeSpec(cbam=True)``, the app's default (a CBAM block, Woo et al. 2018,
after the head convolution of each stage's fine-tuned last stage, freshly initialised on the
ImageNet network), and with ``cbam=False`` (the pretrained last stage alone). Everything else is
identical, including the cached trunk outputs; the single stage-1 network and the cascade are
both reported in each setting. Mean ± sd over seeds.
"""

from __future__ import annotations

import argparse
import functools
import time
from dataclasses import asdict
from typing import Any

from bench import _rare, common
from bench.cascade import (
    FULL_WORKERS,
    Budget,
    add_workers_argument,
    budget_for,
    run_seed,
    strip_curves,
    summarise,
)
from mlcore.config import resolve_device
from mlcore.metrics import plot_pr_curves

# Two fits per seed (CBAM on and off): a smaller pool than the cascade benchmark's.
FULL = Budget(pool=5000, validation=2000, test=None, seeds=3, epochs=None, views=2)
QUICK = Budget(pool=600, validation=300, test=600, seeds=1, epochs=1, views=1)
SETTINGS = {"cbam_on": True, "cbam_off": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _rare.add_task_arguments(parser, pool=FULL.pool, validation=FULL.validation, test="all 10,000")
    add_workers_argument(parser)


def run(
    *,
    quick: bool,
    seed: int,
    positives: str = "5,8",
    seeds: int | None = None,
    pool: int | None = None,
    validation: int | None = None,
    test: int | None = None,
    views: int | None = None,
    epochs: int | None = None,
    workers: int | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    threads = common.limit_threads()
    device = resolve_device("auto")
    budget = budget_for(
        quick,
        FULL,
        QUICK,
        seeds=seeds,
        pool=pool,
        validation=validation,
        test=test,
        views=views,
        epochs=epochs,
    )
    classes = _rare.parse_classes(positives)
    started, cpu = time.perf_counter(), time.process_time()
    splits = _rare.build_splits(
        positives=classes,
        pool=budget.pool,
        validation=budget.validation,
        test=budget.test,
        views=budget.views,
        seed=seed,
    )
    tasks = [(seed + offset, name) for offset in range(budget.seeds) for name in SETTINGS]
    records = _rare.run_parallel(
        [
            functools.partial(
                run_seed,
                splits,
                seed=task_seed,
                epochs=budget.epochs,
                views=budget.views,
                cbam=SETTINGS[name],
                device=device,
            )
            for task_seed, name in tasks
        ],
        workers=workers if workers is not None else (1 if quick else FULL_WORKERS),
    )
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for (_, name), record in zip(tasks, records, strict=True):
        runs[name].append(record)
    path = common.image_name("attention", quick)
    if plot:  # tests run tiny sizes and leave the documented figures alone
        plot_pr_curves(
            {
                f"{arm}, {name.replace('_', ' ')}": runs[name][0]["curves"][arm]
                for name in SETTINGS
                for arm in ("single stage 1", "cascade, AND (t1 = t2)")
            },
            path,
            title=f"CBAM on/off, classes {','.join(map(str, classes))} at 1%, seed {seed}",
        )
    on, off = runs["cbam_on"], runs["cbam_off"]
    spec = _rare.trunk_spec(views=budget.views, epochs=budget.epochs).resolved()
    return common.rounded(
        {
            "protocol": {
                **splits.describe(),
                "budget": asdict(budget),
                "spec": {k: v for k, v in asdict(spec).items() if k not in ("weights_dir", "cbam")},
                "settings": SETTINGS,
                "target_precision": common.TARGET_PRECISION,
                "threads": threads,
                "functions": {
                    **_rare.FUNCTIONS,
                    "train_recorded": sorted({r["function"] for rs in runs.values() for r in rs}),
                },
            },
            "summary": {name: summarise(rs) for name, rs in runs.items()},
            "cbam_higher_cascade_ap": sum(
                a["cascade"]["ap"] > b["cascade"]["ap"] for a, b in zip(on, off, strict=True)
            ),
            "cbam_higher_single_ap": sum(
                a["single"]["ap"] > b["single"]["ap"] for a, b in zip(on, off, strict=True)
            ),
            "runs": {name: strip_curves(rs) for name, rs in runs.items()},
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu,
            "plot": str(path.relative_to(common.REPO_ROOT)),
        }
    )
