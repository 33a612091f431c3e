"""cascade: OHEM cascade (AND) vs the single stage-1 network, through the app's pipeline, rare task

Protocol 5 of shared/DATA.md, run through the functions the train and score jobs call:
``mlcore.pipeline.fit_cascade`` on the app's default preset ``cpu_transfer`` (EfficientNet-Lite0
from ImageNet, frozen trunk cached once per image and view, last stage + CBAM fine-tuned at
112 px in both stages; stage 1 on batches of A = 32, stage 2 on the B = 8 of each batch with the
largest stage-1 loss), temperatures and the AND thresholds chosen on the frozen validation split
at the target precision 0.95, then ``mlcore.pipeline.predict_cascade`` on the test split.

The task (bench/_rare.py): positives = ``--positives`` (default Sandal + Bag) at 1% of a pool of
``--pool`` training images with the task's asymmetric label noise; a clean validation split at
the same 1%; the t10k split as the test set, never trained on, its negatives reweighted to 1%
prevalence. Each seed draws the pool's positives, the noise and the training.

Arms, from one fit per seed:
- **single**: stage 1 alone, at the threshold the pipeline chose for it on validation
  (``evaluate_cascade``'s ``stage1_alone_at_target``). Stage 1's training in ``train_cascade``
  never reads stage 2 (its step comes first and uses only its own loss), so it *is* the single
  network trained with the same recipe and batches; only the random streams (view and dropout
  draws) interleave with stage 2's.
- **cascade**: the AND decision at the pipeline's validation-chosen pair (t1, t2).

Reported per arm, on the test split at 1% prevalence: AP (the cascade scored by min(p1, p2), the
AND decision with t1 = t2, and the app's Score.score), the best recall at 95% precision the test
scores allow (single threshold on s1, resp. on min(p1, p2); and for the cascade also the best
(t1, t2) pair, which flatters it: a two-threshold search has more freedom to fit the test set's
few hard negatives), and precision and recall at the validation-chosen thresholds. Mean ± sd
over seeds.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from bench import _rare, common
from mlcore.cascade import cascade_decision, choose_thresholds
from mlcore.config import resolve_device
from mlcore.metrics import (
    average_precision,
    plot_pr_curves,
    pr_curve,
    precision_recall_at,
    prevalence_weights,
    recall_at_precision,
)
from mlcore.pipeline import fit_cascade, predict_cascade


@dataclass(frozen=True)
class Budget:
    """Sizes of a run. ``epochs`` None: the preset's default; ``test`` None: all of t10k."""

    pool: int
    validation: int
    test: int | None
    seeds: int
    epochs: int | None
    views: int


# Sized for about 30 minutes on two idle cores with two workers: one fit of the preset's
# 6 epochs over the pool per seed.
FULL = Budget(pool=8000, validation=2000, test=None, seeds=3, epochs=None, views=2)
QUICK = Budget(pool=1000, validation=300, test=1000, seeds=1, epochs=1, views=1)
FULL_WORKERS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _rare.add_task_arguments(parser, pool=FULL.pool, validation=FULL.validation, test="all 10,000")
    add_workers_argument(parser)


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"processes for the seeds' fits (full: {FULL_WORKERS}, quick: 1)",
    )


def budget_for(quick: bool, base_full: Budget, base_quick: Budget, **given: Any) -> Budget:
    """The mode's budget with the options the command line gave."""
    base = base_quick if quick else base_full
    return replace(base, **{key: value for key, value in given.items() if value is not None})


def _weighted(y: np.ndarray, decision: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """Precision and recall at 1% prevalence of a boolean decision (precision None: nothing
    called positive)."""
    result = precision_recall_at(
        y, decision.astype(np.float64), threshold=0.5, sample_weight=weights
    )
    precision = None if math.isnan(result.precision) else result.precision
    return {"precision": precision, "recall": result.recall}


def _finite_or_none(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def run_seed(
    splits: _rare.RareSplits, *, seed: int, epochs: int | None, views: int, cbam: bool, device: Any
) -> dict[str, Any]:
    """One fit of the cascade on the seed's pool; both arms measured on the test split."""
    pool = _rare.draw_pool(splits, seed=seed)
    train = splits.encoded_candidates.subset(pool.members, pool.noisy)
    spec = _rare.trunk_spec(views=views, epochs=epochs, cbam=cbam, seed=seed)
    fit = fit_cascade(train, splits.encoded_validation, spec=spec)
    scores = predict_cascade(
        fit.stage1,
        fit.stage2,
        splits.encoded_test,
        thresholds=fit.thresholds,
        temperatures=fit.temperatures,
        device=device,
    )
    y = splits.y_test
    weights = prevalence_weights(y, prevalence=_rare.PREVALENCE)
    s1, s2 = scores.stage1, scores.stage2
    and_score = np.minimum(s1, s2)
    single_threshold = _finite_or_none(fit.metrics["stage1_alone_at_target"]["threshold"])
    single_decision = (
        s1 >= single_threshold if single_threshold is not None else np.zeros(len(y), bool)
    )
    # Whether a pair reached the target on the validation split (fit.thresholds is that pair).
    reached = bool(fit.metrics["thresholds"]["found"])
    cascade_at_validation = (
        cascade_decision(s1, s2, thresholds=fit.thresholds) if reached else np.zeros(len(y), bool)
    )
    best_pair = choose_thresholds(
        s1, s2, y, target_precision=common.TARGET_PRECISION, sample_weight=weights
    )
    best_pair_recall = (
        _weighted(y, cascade_decision(s1, s2, thresholds=best_pair), weights)["recall"]
        if math.isfinite(best_pair[0])
        else 0.0
    )

    def best_recall(score: np.ndarray) -> float:
        return recall_at_precision(
            y, score, precision=common.TARGET_PRECISION, prevalence=_rare.PREVALENCE
        )

    validation = fit.metrics
    record = {
        "seed": seed,
        "pool_positives": int(pool.clean.sum()),
        "label_noise_flips": int((pool.clean != pool.noisy).sum()),
        "train_seconds": fit.seconds,
        "function": fit.function,
        "score_function": scores.function,
        "validation": {
            "thresholds_reached": reached,
            "single_threshold": single_threshold,
            "cascade_thresholds": list(fit.thresholds) if reached else None,
            "single": validation["stage1_alone_at_target"],
            "cascade": {
                k: validation["cascade"][k]
                for k in ("ap", "precision", "recall")
                if k in validation["cascade"]
            },
            "probe_ap": validation.get("baseline", {}).get("ap"),
            # The epoch fit_cascade deployed (0: the probe-initialised start) and stage 1's
            # validation AP after each epoch, which chose it.
            "epoch_selection": validation.get("epoch_selection"),
        },
        "single": {
            "ap": average_precision(y, s1, sample_weight=weights),
            "best_recall_at_95_precision": best_recall(s1),
            "at_validation_threshold": _weighted(y, single_decision, weights),
        },
        "cascade": {
            "ap": average_precision(y, and_score, sample_weight=weights),
            "stage2_ap": average_precision(y, s2, sample_weight=weights),
            "best_recall_at_95_precision": best_recall(and_score),
            "best_pair_recall_at_95_precision": best_pair_recall,
            "at_validation_thresholds": _weighted(y, cascade_at_validation, weights),
        },
    }
    print(
        f"[seed {seed} cbam {cbam}] single AP {record['single']['ap']:.3f} R@95P "
        f"{record['single']['best_recall_at_95_precision']:.3f}; cascade AP "
        f"{record['cascade']['ap']:.3f} R@95P "
        f"{record['cascade']['best_recall_at_95_precision']:.3f} ({fit.seconds:.0f} s)",
        flush=True,
    )
    record["curves"] = {
        "single stage 1": pr_curve(y, s1, sample_weight=weights),
        "cascade, AND (t1 = t2)": pr_curve(y, and_score, sample_weight=weights),
    }
    return record


ARM_FIGURES = {
    "single": (
        "ap",
        "best_recall_at_95_precision",
        "at_validation_threshold.precision",
        "at_validation_threshold.recall",
    ),
    "cascade": (
        "ap",
        "stage2_ap",
        "best_recall_at_95_precision",
        "best_pair_recall_at_95_precision",
        "at_validation_thresholds.precision",
        "at_validation_thresholds.recall",
    ),
}


def _lookup(record: dict, dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value[part]
    return value


def summarise(runs: list[dict]) -> dict[str, Any]:
    """mean ± sd over seeds of each arm's figures; how many seeds the cascade won."""
    summary: dict[str, Any] = {}
    for arm, names in ARM_FIGURES.items():
        summary[arm] = {
            name: _rare.mean_sd([_lookup(r[arm], name) for r in runs]) for name in names
        }
    summary["train_seconds"] = _rare.mean_sd([r["train_seconds"] for r in runs])
    summary["validation_thresholds_reached"] = sum(
        r["validation"]["thresholds_reached"] for r in runs
    )
    summary["cascade_higher_best_recall_at_95_precision"] = sum(
        r["cascade"]["best_recall_at_95_precision"] > r["single"]["best_recall_at_95_precision"]
        for r in runs
    )
    summary["cascade_higher_recall_at_validation_thresholds"] = sum(
        (r["cascade"]["at_validation_thresholds"]["recall"] or 0.0)
        > (r["single"]["at_validation_threshold"]["recall"] or 0.0)
        for r in runs
    )
    return summary


def strip_curves(runs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "curves"} for r in runs]


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
    runs = _rare.run_parallel(
        [
            functools.partial(
                run_seed,
                splits,
                seed=seed + offset,
                epochs=budget.epochs,
                views=budget.views,
                cbam=True,
                device=device,
            )
            for offset in range(budget.seeds)
        ],
        workers=workers if workers is not None else (1 if quick else FULL_WORKERS),
    )
    path = common.image_name("cascade", quick)
    if plot:  # tests run tiny sizes and leave the documented figures alone
        plot_pr_curves(
            runs[0]["curves"],
            path,
            title=f"classes {','.join(map(str, classes))} at 1% (t10k reweighted), seed {seed}",
        )
    spec = _rare.trunk_spec(views=budget.views, epochs=budget.epochs).resolved()
    return common.rounded(
        {
            "protocol": {
                **splits.describe(),
                "budget": asdict(budget),
                "spec": {k: v for k, v in asdict(spec).items() if k != "weights_dir"},
                "target_precision": common.TARGET_PRECISION,
                "threads": threads,
                "functions": {
                    **_rare.FUNCTIONS,
                    "thresholds": "mlcore.pipeline.evaluate_cascade (inside fit_cascade)",
                    "train_recorded": sorted({r["function"] for r in runs}),
                },
            },
            "summary": summarise(runs),
            "runs": strip_curves(runs),
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu,
            "plot": str(path.relative_to(common.REPO_ROOT)),
        }
    )
