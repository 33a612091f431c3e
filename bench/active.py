"""active: five selection strategies through the app's train / score / select functions, rare task

Protocol 3 of shared/DATA.md, run through the functions the product's jobs call:

- train (the train_cascade job): ``mlcore.pipeline.fit_cascade`` on the app's default preset
  ``cpu_transfer`` (EfficientNet-Lite0 from ImageNet, frozen trunk, last stage + CBAM
  fine-tuned at 112 px, both stages' classifiers started from a logistic probe), fed the cached
  trunk outputs of the labeled pool images with the labels the annotator gave, and the frozen
  validation split; it fits the loss-prediction module on stage 1's frozen features, as the
  job does;
- score (the score job): ``mlcore.pipeline.predict_cascade`` over the unlabeled pool with the
  fitted temperatures and LP module: calibrated p1, p2 and the predicted loss; the score a
  selection ranks is the app's ``Score.score`` = min(p1, p2);
- select (the select job): ``mlcore.selection.select`` with the job's band settings
  (``BandConfig()``: quantiles, top 1% confident, 10% band around 0.5; the select job's
  defaults, a test checks they agree).

The task (bench/_rare.py): positives = ``--positives`` (default Sandal + Bag) at 1% of the pool,
labels given by a simulated annotator with the task's asymmetric noise (fixed per image). Start
from ``--initial`` random labels (the same for every strategy of a seed, and so the same first
model), then ``--rounds`` rounds of ``--per-round`` labels chosen by:

- ``random``; ``entropy`` (uncertainty sampling on the score);
- ``confidence_band``: the job's quantile confidence band alone;
- ``loss``: top-K of the LP module's predicted loss (Yoo & Kweon 2019);
- ``band_union_loss``: what the select job queues: the band and the LP ranking interleaved
  (``select("band_union_loss")``, i.e. ``confidence_band`` ∪ ``loss_top_k``) plus the job's
  random audit (``--audit-share`` of the ranked items, default the job's 5%).

After every round each strategy's model is scored on the test split (t10k, never trained on):
AP and recall at 95% precision at 1% prevalence, for the app's score min(p1, p2) (the headline)
and for stage 1 alone. Reported: mean ± sd over seeds per round, positives found, and the labels
each strategy needs to reach random's final AP and random's best AP (on the mean curves).

Departures from the job: one budget per round (the job takes k_band and k_loss separately and
may queue fewer when the lists overlap; ``select`` keeps going down both lists so every strategy
spends the same labels); the band ∪ LP audit is drawn from the unlabeled pool as the job draws
it from the eligible images. A round whose labels hold a single class cannot train (the job
refuses it too): its AP is recorded as missing and the next round is drawn at random.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from bench import _rare, common
from mlcore.config import resolve_device
from mlcore.pipeline import (
    CascadeFit,
    EncodedImages,
    fit_cascade,
    predict_cascade,
)
from mlcore.selection import BandConfig, select

STRATEGIES = ("random", "entropy", "confidence_band", "loss", "band_union_loss")
NEEDS_LOSS = frozenset({"loss", "band_union_loss"})
# The select job's random audit share (labeling.services.selection.SELECT; a test checks).
AUDIT_SHARE = 0.05
RULE_AUDIT = "random_audit"
RULE_NO_MODEL = "random_no_model"


@dataclass(frozen=True)
class Budget:
    """Sizes of a run. ``epochs`` None: the preset's default."""

    pool: int
    validation: int
    test: int | None
    initial: int
    per_round: int
    rounds: int
    seeds: int
    epochs: int | None
    views: int


# Sized for about 30 minutes on two idle cores with two workers (measured CPU time per
# strategy-round: docs/benchmarks.md): every round refits the cascade, scores the unlabeled pool
# and the test split, 1 + 5 x rounds fits per seed.
FULL = Budget(
    pool=3000,
    validation=1000,
    test=1500,
    initial=200,
    per_round=200,
    rounds=4,
    seeds=3,
    epochs=2,
    views=2,
)
FULL_WORKERS = 2
QUICK = Budget(
    pool=600,
    validation=200,
    test=400,
    initial=200,
    per_round=100,
    rounds=1,
    seeds=1,
    epochs=1,
    views=1,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _rare.add_task_arguments(
        parser, pool=FULL.pool, validation=FULL.validation, test=str(FULL.test)
    )
    parser.add_argument("--initial", type=int, default=None, help="random labels to start from")
    parser.add_argument("--per-round", type=int, default=None, help="labels added per round")
    parser.add_argument("--rounds", type=int, default=None, help="selection rounds")
    parser.add_argument(
        "--audit-share",
        type=float,
        default=AUDIT_SHARE,
        help="band ∪ LP: random audit as a share of the ranked items (the select job's)",
    )
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES)
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"processes for the (seed, strategy) rounds (full: {FULL_WORKERS}, quick: 1)",
    )


def ranked_budget(k: int, audit_share: float) -> int:
    """The largest r with r + ceil(audit_share * r) <= k: the job adds an audit of
    ceil(share * ranked) to its ranked items, and the round must spend exactly k."""
    if not 0.0 <= audit_share < 1.0:
        raise ValueError(f"audit_share must be in [0, 1), got {audit_share}")
    r = k
    while r > 0 and r + math.ceil(audit_share * r - 1e-9) > k:
        r -= 1
    return r


def choose(
    strategy: str,
    fit: CascadeFit | None,
    pool_first_view: EncodedImages,
    labeled: np.ndarray,
    *,
    k: int,
    audit_share: float,
    seed: int,
    device: Any,
) -> tuple[np.ndarray, list[str]]:
    """``k`` unlabeled pool indices chosen by ``strategy`` and the rule behind each.

    ``pool_first_view``: the pool's cached trunk outputs (view 0, as the score job sees them);
    ``labeled`` (N,) bool. Without a model (``fit`` None) every strategy draws at random.
    """
    unlabeled = np.flatnonzero(~labeled)
    k = min(k, len(unlabeled))
    if strategy == "random" or fit is None:
        picked = select("random", k=k, n=len(unlabeled), seed=seed).indices
        rule = "random" if strategy == "random" else RULE_NO_MODEL
        return unlabeled[picked], [rule] * len(picked)
    scores = predict_cascade(
        fit.stage1,
        fit.stage2,
        pool_first_view.subset(unlabeled),
        temperatures=fit.temperatures,
        loss_prediction=fit.loss_prediction if strategy in NEEDS_LOSS else None,
        device=device,
    )
    # The app's Score.score, which the select job ranks (labeling.ml.scoring).
    score = np.minimum(scores.stage1, scores.stage2)
    band = BandConfig()
    if strategy == "band_union_loss":
        ranked = select(
            "band_union_loss",
            k=ranked_budget(k, audit_share),
            p_pos=score,
            predicted_loss=scores.predicted_loss,
            band_config=band,
            seed=seed,
        )
        audit = select(
            "random",
            k=k - len(ranked.indices),
            n=len(unlabeled),
            exclude=ranked.indices,
            seed=seed + 1,
        )
        picked = np.concatenate([ranked.indices, audit.indices])
        rules = list(ranked.per_item_rule) + [RULE_AUDIT] * len(audit.indices)
        return unlabeled[picked], rules
    chosen = select(
        strategy,
        k=k,
        p_pos=None if strategy == "loss" else score,
        predicted_loss=scores.predicted_loss if strategy in NEEDS_LOSS else None,
        band_config=band,
        seed=seed,
    )
    return unlabeled[chosen.indices], list(chosen.per_item_rule)


def _fit(
    pool: EncodedImages,
    labeled: np.ndarray,
    answers: np.ndarray,
    validation: EncodedImages,
    spec: Any,
) -> CascadeFit | None:
    rows = np.flatnonzero(labeled)
    labels = answers[rows]
    if labels.min() == labels.max():
        return None  # one class only: nothing to train (the train job refuses it too)
    return fit_cascade(pool.subset(rows, labels), validation, spec=spec)


def _selected_epoch(fit: CascadeFit | None) -> int | None:
    """The epoch fit_cascade deployed (0: the probe-initialised start), chosen on validation."""
    if fit is None:
        return None
    return fit.metrics.get("epoch_selection", {}).get("selected_epoch")


def _test_metrics(fit: CascadeFit | None, splits: _rare.RareSplits, device: Any) -> dict:
    if fit is None:
        return {"cascade": None, "stage1": None}
    scores = predict_cascade(
        fit.stage1, fit.stage2, splits.encoded_test, temperatures=fit.temperatures, device=device
    )
    return {
        "cascade": common.rare_metrics(splits.y_test, np.minimum(scores.stage1, scores.stage2)),
        "stage1": common.rare_metrics(splits.y_test, scores.stage1),
    }


@dataclass
class SeedStart:
    """What every strategy of one seed starts from: the seed's pool (its cached trunk outputs
    with the annotator's answers, and view 0 as the score job sees it), the initial random
    labels, the first model and its record."""

    seed: int
    pool: _rare.SeedPool
    encoded_pool: EncodedImages
    first_view: EncodedImages
    initial: np.ndarray
    fit0: CascadeFit | None
    first: dict[str, Any]


def start_seed(splits: _rare.RareSplits, budget: Budget, *, seed: int, device: Any) -> SeedStart:
    """Draw the seed's pool and initial labels and train the first model (shared by every
    strategy of the seed, so their curves start at the same point)."""
    pool = _rare.draw_pool(splits, seed=seed)
    encoded_pool = splits.encoded_candidates.subset(pool.members, pool.noisy)
    first_view = EncodedImages(
        encoded_pool.features[:1], encoded_pool.labels, encoded_pool.unreadable
    )
    initial = np.zeros(len(pool.members), dtype=bool)
    initial[select("random", k=budget.initial, n=len(initial), seed=seed + 2).indices] = True
    spec = _rare.trunk_spec(views=budget.views, epochs=budget.epochs, seed=seed)
    began, cpu = time.perf_counter(), time.process_time()
    fit0 = _fit(encoded_pool, initial, pool.noisy, splits.encoded_validation, spec)
    first = {
        "labels": int(initial.sum()),
        "positives_found": int(pool.clean[initial].sum()),
        "positive_answers": int(pool.noisy[initial].sum()),
        "test": _test_metrics(fit0, splits, device),
        "validation_ap": fit0.metrics["stage1"]["ap"] if fit0 else None,
        "selected_epoch": _selected_epoch(fit0),
        "function": fit0.function if fit0 else None,
        "seconds": time.perf_counter() - began,
        "cpu_seconds": time.process_time() - cpu,
        "chosen_by": {},
    }
    return SeedStart(seed, pool, encoded_pool, first_view, initial, fit0, first)


def strategy_rounds(
    splits: _rare.RareSplits,
    budget: Budget,
    start: SeedStart,
    strategy: str,
    *,
    audit_share: float,
    device: Any,
) -> list[dict[str, Any]]:
    """The rounds of one strategy from the seed's start: choose, label, fit, test."""
    seed, pool = start.seed, start.pool
    spec = _rare.trunk_spec(views=budget.views, epochs=budget.epochs, seed=seed)
    labeled, fit = start.initial.copy(), start.fit0
    history = [start.first]
    for round_index in range(1, budget.rounds + 1):
        began, cpu = time.perf_counter(), time.process_time()
        picked, rules = choose(
            strategy,
            fit,
            start.first_view,
            labeled,
            k=budget.per_round,
            audit_share=audit_share,
            seed=seed * 1000 + round_index,
            device=device,
        )
        labeled[picked] = True
        fit = _fit(start.encoded_pool, labeled, pool.noisy, splits.encoded_validation, spec)
        test = _test_metrics(fit, splits, device)
        history.append(
            {
                "labels": int(labeled.sum()),
                "positives_found": int(pool.clean[labeled].sum()),
                "positive_answers": int(pool.noisy[labeled].sum()),
                "found_this_round": int(pool.clean[picked].sum()),
                "chosen_by": dict(Counter(rules)),
                "test": test,
                "validation_ap": fit.metrics["stage1"]["ap"] if fit else None,
                "selected_epoch": _selected_epoch(fit),
                "function": fit.function if fit else None,
                "seconds": time.perf_counter() - began,
                "cpu_seconds": time.process_time() - cpu,
            }
        )
        ap = test["cascade"]["average_precision"] if test["cascade"] else float("nan")
        print(
            f"[seed {seed}] {strategy:16s} round {round_index}: {int(labeled.sum())} labels, "
            f"{history[-1]['positives_found']} positives, AP {ap:.3f} "
            f"({history[-1]['seconds']:.0f} s, CPU {history[-1]['cpu_seconds']:.0f} s)",
            flush=True,
        )
    return history


def run_strategies(
    splits: _rare.RareSplits,
    budget: Budget,
    starts: dict[int, SeedStart],
    strategies: list[str],
    *,
    audit_share: float,
    device: Any,
    workers: int,
) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Every (seed, strategy)'s rounds, in ``workers`` processes (``_rare.run_parallel``)."""
    tasks = [(seed, strategy) for seed in starts for strategy in strategies]
    histories = _rare.run_parallel(
        [
            functools.partial(
                strategy_rounds,
                splits,
                budget,
                starts[seed],
                strategy,
                audit_share=audit_share,
                device=device,
            )
            for seed, strategy in tasks
        ],
        workers=workers,
    )
    results: dict[int, dict[str, list[dict[str, Any]]]] = {seed: {} for seed in starts}
    for (seed, strategy), history in zip(tasks, histories, strict=True):
        results[seed][strategy] = history
    return results


def labels_to_reach(labels: list[int], curve: list[float | None], target: float) -> int | None:
    """The first label count whose value reaches ``target`` (None: never)."""
    for count, value in zip(labels, curve, strict=True):
        if value is not None and value >= target - 1e-12:
            return count
    return None


def _curve(runs: list[dict], strategy: str, key: str, score: str) -> list[dict]:
    rounds = len(runs[0]["strategies"][strategy])
    out = []
    for r in range(rounds):
        values = []
        for run_ in runs:
            test = run_["strategies"][strategy][r]["test"][score]
            values.append(None if test is None else test[key])
        out.append(_rare.mean_sd(values))
    return out


def summarise(runs: list[dict], strategies: list[str]) -> dict[str, Any]:
    """Mean ± sd curves per strategy and the labels each needs to reach random's final / best
    AP (on the mean curves of the app's score, and of stage 1)."""
    labels = [step["labels"] for step in runs[0]["strategies"][strategies[0]]]
    summary: dict[str, Any] = {"labels": labels, "strategies": {}}
    for strategy in strategies:
        found = [
            float(np.mean([run_["strategies"][strategy][r]["positives_found"] for run_ in runs]))
            for r in range(len(labels))
        ]
        summary["strategies"][strategy] = {
            "ap": _curve(runs, strategy, "average_precision", "cascade"),
            "recall_at_95_precision": _curve(runs, strategy, "recall_at_95_precision", "cascade"),
            "stage1_ap": _curve(runs, strategy, "average_precision", "stage1"),
            "positives_found": found,
        }
    if "random" not in strategies:
        return summary
    for score_key in ("ap", "stage1_ap"):
        random_curve = [p["mean"] for p in summary["strategies"]["random"][score_key]]
        present = [v for v in random_curve if v is not None]
        if not present:
            continue
        final, best = random_curve[-1], max(present)
        best_at = labels[random_curve.index(best)]
        targets = {"random_final": final, "random_best": best, "random_best_at_labels": best_at}
        summary.setdefault("targets", {})[score_key] = targets
        for strategy in strategies:
            curve = [p["mean"] for p in summary["strategies"][strategy][score_key]]
            reach: dict[str, Any] = {}
            for name, target, random_labels in (
                ("random_final", final, labels[-1]),
                ("random_best", best, best_at),
            ):
                needed = None if target is None else labels_to_reach(labels, curve, target)
                reach[name] = {
                    "labels": needed,
                    "fraction_of_random_labels": None if needed is None else needed / random_labels,
                }
            summary["strategies"][strategy][f"{score_key}_labels_to_reach"] = reach
    return summary


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
    initial: int | None = None,
    per_round: int | None = None,
    rounds: int | None = None,
    audit_share: float = AUDIT_SHARE,
    strategies: list[str] | None = None,
    workers: int | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    threads = common.limit_threads()
    device = resolve_device("auto")
    base = QUICK if quick else FULL
    given = {
        "pool": pool,
        "validation": validation,
        "test": test,
        "views": views,
        "epochs": epochs,
        "initial": initial,
        "per_round": per_round,
        "rounds": rounds,
        "seeds": seeds,
    }
    budget = replace(base, **{key: value for key, value in given.items() if value is not None})
    strategies = [s for s in STRATEGIES if s in (strategies or STRATEGIES)]
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
    print(f"encoded {splits.encoded_images} images in {splits.encode_seconds:.0f} s", flush=True)
    starts = {
        seed + offset: start_seed(splits, budget, seed=seed + offset, device=device)
        for offset in range(budget.seeds)
    }
    histories = run_strategies(
        splits,
        budget,
        starts,
        strategies,
        audit_share=audit_share,
        device=device,
        workers=workers if workers is not None else (1 if quick else FULL_WORKERS),
    )
    runs = [
        {
            "seed": run_seed,
            "pool_positives": int(start.pool.clean.sum()),
            "label_noise_flips": int((start.pool.clean != start.pool.noisy).sum()),
            "strategies": histories[run_seed],
        }
        for run_seed, start in starts.items()
    ]
    recorded = {
        step["function"]
        for run_ in runs
        for history in run_["strategies"].values()
        for step in history
        if step["function"]
    }
    summary = summarise(runs, strategies)
    path = common.image_name("active", quick)
    if plot:  # tests run tiny sizes and leave the documented figures alone
        labels = summary["labels"]
        target = summary.get("targets", {}).get("ap", {}).get("random_final")
        common.plot_lines(
            {s: (labels, [p["mean"] for p in summary["strategies"][s]["ap"]]) for s in strategies},
            path,
            title=(
                f"classes {','.join(map(str, classes))} at 1%: test AP of min(p1, p2) per round "
                f"(mean of {budget.seeds} seeds)"
            ),
            xlabel="labels",
            ylabel="average precision (1% prevalence)",
            hline=(target, "random's final AP") if target is not None else None,
        )
    spec = _rare.trunk_spec(views=budget.views, epochs=budget.epochs).resolved()
    return common.rounded(
        {
            "protocol": {
                **splits.describe(),
                "budget": asdict(budget),
                "strategies": strategies,
                "audit_share": audit_share,
                "band_config": asdict(BandConfig()),
                "score_ranked": "min(p1, p2) (the app's Score.score)",
                "spec": {k: v for k, v in asdict(spec).items() if k != "weights_dir"},
                "threads": threads,
                "functions": {
                    **_rare.FUNCTIONS,
                    "select": "mlcore.selection.select",
                    "train_recorded": sorted(recorded),
                },
            },
            "summary": summary,
            "runs": runs,
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu,
            "plot": str(path.relative_to(common.REPO_ROOT)),
        }
    )
