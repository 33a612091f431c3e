"""estimates: coverage and label cost of the score-stratified audit vs uniform random sampling

How good is the model on the whole pool, and how many labels does it take to know? On
Fashion-MNIST with a known truth (DATA.md's rare task: Sandal + Bag positive, at 1% and at 0.1%
of the pool), this benchmark audits a model's scores many times and checks the intervals of
:mod:`mlcore.estimates` against the truth.

The model. The app's probe path on frozen pretrained features, *not* the fine-tuned cascade
(which costs minutes per fit on the shared CPU): EfficientNet-Lite0 embeddings with its offline
ImageNet weights at 112 px (``mlcore.recall.default_embedder``, cached under var/bench-cache
with ``bench recall``'s cache), and ``mlcore.probe.fit_linear_probe`` (the logistic probe the
cold-start job ranks with and every trained version reports as its baseline) fitted on a
labeled set of train-split images at 1% prevalence carrying the task's label noise (10% of
positives labeled negative, 0.5% of negatives labeled positive). Its decision threshold is the
one with the best F1 on a clean validation split at the pool's prevalence (the app, too,
chooses thresholds on its frozen validation split). The statistics do not depend on how good the
model is: a weaker one needs more labels for the same width.

The pool: other train-split images, disjoint from the labeled and validation sets, positives at
the setting's prevalence. Each audit: ``score_strata`` (8 strata and the threshold as a
boundary), then four batches of a quarter of the budget, each allocated by ``audit_allocation``
(Neyman, updated with the labels so far) and drawn by ``audit_draw``; the simulated annotator
answers with the truth; ``estimate_pool`` at the end. Reported per setting over ``--audits``
audits: the coverage of the 95% intervals of prevalence, precision and recall (goal >= 93%),
their mean widths, and the labels uniform random sampling (sample proportions with exact
Clopper-Pearson intervals, the classic estimators) needs for the same mean recall-interval
width, found on a grid of sample sizes and interpolated on a log-log scale (goal: the
stratified audit needs at most 1/5 of them at 1%, 1/20 at 0.1%). The classic interval treats
the sample as drawn from an endless population and stays wide at a census, so the figure is
also given with its widths scaled by sqrt(1 - n/N) (``..._fpc``), which closes at the census.
Quick mode: smaller pools at 56 px, 50 audits.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import precision_recall_curve

from bench import common
from bench.recall import _embed
from mlcore import estimates
from mlcore.metrics import average_precision
from mlcore.probe import fit_linear_probe

POSITIVE_CLASSES = common.RARE_POSITIVE_CLASSES
N_STRATA = 8
BATCHES = 4
CONFIDENCE = 0.95
COVERAGE_GOAL = 0.93
RATIO_GOALS = {0.01: 1 / 5, 0.001: 1 / 20}


@dataclass(frozen=True)
class Budget:
    train_negatives: int
    validation_negatives: int
    pool_negatives: dict[float, int]
    labels: dict[float, int]
    audits: int
    grid_points: int
    draws: int
    embed_size: int = 112


FULL = Budget(
    train_negatives=4000,
    validation_negatives=4000,
    # 20,000 negatives in both pools: embedding is the cost (about 25 images/s on the shared
    # cores), and the 0.1% pool still holds 20 positives.
    pool_negatives={0.01: 20_000, 0.001: 20_000},
    labels={0.01: 1000, 0.001: 2000},
    audits=200,
    grid_points=10,
    draws=2000,
)
# CI's smoke run: few images at 56 px (embedding is the cost), 50 audits; its 0.1% pool holds
# only 3 positives, so its figures say that the code runs, not how well.
QUICK = Budget(
    train_negatives=500,
    validation_negatives=500,
    pool_negatives={0.01: 2500, 0.001: 2500},
    labels={0.01: 300, 0.001: 300},
    audits=50,
    grid_points=5,
    draws=1000,
    embed_size=56,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audits", type=int, default=None, help="audits per setting (full: 200)")
    parser.add_argument(
        "--prior", default=None, help="Beta prior a,b of a cell's rate (default: mlcore's)"
    )
    parser.add_argument("--strata", type=int, default=N_STRATA)
    parser.add_argument(
        "--target",
        default="balanced",
        choices=estimates.TARGETS,
        help="what the allocation favours (default: the audit job's default, balanced)",
    )


def _rows(budget: Budget, seed: int) -> dict[str, Any]:
    """Disjoint train-split rows: labeled set (1% positives), validation (per prevalence),
    pools (per prevalence). The pools at the two prevalences share their negatives."""
    _, classes = common.fashion_mnist("train")
    y = common.to_binary(classes, POSITIVE_CLASSES)
    rng = np.random.default_rng(seed)
    negatives = rng.permutation(np.flatnonzero(y == 0))
    positives = rng.permutation(np.flatnonzero(y == 1))
    take_neg = iter(np.split(negatives, np.cumsum([budget.train_negatives])))
    train_neg = next(take_neg)
    rest_neg = next(take_neg)
    share = common.RARE_PREVALENCE / (1 - common.RARE_PREVALENCE)
    n_train_pos = int(round(len(train_neg) * share))
    train_pos, positives = positives[:n_train_pos], positives[n_train_pos:]
    val_neg, rest_neg = (
        rest_neg[: budget.validation_negatives],
        rest_neg[budget.validation_negatives :],
    )
    rows: dict[str, Any] = {
        "train": np.concatenate([train_neg, train_pos]),
        "validation": {},
        "pool": {},
    }
    for prevalence, n_neg in budget.pool_negatives.items():
        n_val_pos = max(5, int(round(len(val_neg) * prevalence / (1 - prevalence))))
        n_pos = int(round(n_neg * prevalence / (1 - prevalence)))
        val_pos = positives[:n_val_pos]
        pool_pos = positives[n_val_pos : n_val_pos + n_pos]
        rows["validation"][prevalence] = np.concatenate([val_neg, val_pos])
        rows["pool"][prevalence] = np.concatenate([rest_neg[:n_neg], pool_pos])
    return rows


def _f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The validation threshold with the best F1 (the decision rule audited; any rule would
    do: the audit measures whatever the model decides)."""
    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _model(rows: dict[str, Any], seed: int, embed_size: int) -> dict[str, Any]:
    """Embed every row once (cached), fit the probe on the noisy labeled set, score the pools,
    choose the thresholds on the validation splits."""
    _, classes = common.fashion_mnist("train")
    y_all = common.to_binary(classes, POSITIVE_CLASSES)
    every = np.unique(
        np.concatenate([rows["train"], *rows["validation"].values(), *rows["pool"].values()])
    )
    started = time.perf_counter()
    vectors, embedded = _embed(every, embed_size)
    embed_seconds = time.perf_counter() - started
    position = {int(row): i for i, row in enumerate(every)}

    def embedding(selected: np.ndarray) -> np.ndarray:
        return vectors[[position[int(r)] for r in selected]]

    noisy = common.asymmetric_binary_noise(y_all[rows["train"]], seed=seed).labels
    probe = fit_linear_probe(embedding(rows["train"]), noisy, seed=seed)
    settings = {}
    for prevalence, pool_rows in rows["pool"].items():
        val_rows = rows["validation"][prevalence]
        val_scores = probe.predict_proba(embedding(val_rows))
        threshold = _f1_threshold(y_all[val_rows], val_scores)
        scores = probe.predict_proba(embedding(pool_rows))
        settings[prevalence] = {
            "scores": scores,
            "truth": y_all[pool_rows],
            "threshold": float(threshold),
        }
    return {
        "settings": settings,
        "embed_seconds": embed_seconds,
        "embedded_now": embedded,
        "probe": {"C": probe.C, "n_positive": probe.n_positive, "n_negative": probe.n_negative},
    }


def _audit(
    strata: estimates.Strata,
    truth: np.ndarray,
    decision: np.ndarray,
    *,
    labels: int,
    batches: int,
    seed: int,
    prior: tuple[float, float],
    draws: int,
    target: str = "balanced",
) -> estimates.PoolEstimate:
    """One simulated audit: ``batches`` rounds of allocation and drawing, then the estimate.
    The simulated annotator answers with the truth."""
    sample = np.empty(0, dtype=np.int64)
    for step in range(1, batches + 1):
        total = labels * step // batches
        if strata.count == 1:
            wanted = np.array([min(total, strata.pool_size)])
        else:
            wanted = estimates.audit_allocation(
                strata, sample, truth[sample], total=total, decision=decision, target=target
            )
        new = estimates.audit_draw(strata, wanted, already=sample, seed=seed * 100 + step)
        sample = np.concatenate([sample, new])
    return estimates.estimate_pool(
        strata,
        sample,
        truth[sample],
        decisions={"model": decision},
        prior=prior,
        draws=draws,
        seed=seed,
        confidence=CONFIDENCE,
    )


def _exact(successes: int, trials: int) -> estimates.Interval:
    """Clopper-Pearson 95% interval of a proportion (scipy.stats.binomtest); [0, 1] when
    there is no trial."""
    if trials == 0:
        return estimates.Interval(float("nan"), 0.0, 1.0)
    found = stats.binomtest(successes, trials).proportion_ci(
        confidence_level=CONFIDENCE, method="exact"
    )
    return estimates.Interval(successes / trials, float(found.low), float(found.high))


def _uniform_audit(
    truth: np.ndarray, decision: np.ndarray, *, labels: int, seed: int
) -> dict[str, estimates.Interval]:
    """The baseline: a uniform random sample of ``labels`` images and the classic estimators
    (sample proportions with Clopper-Pearson intervals): prevalence over the sample, precision
    over the sampled images the model calls positive, recall over the sampled positives."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(truth), size=min(labels, len(truth)), replace=False)
    y, d = truth[sample].astype(bool), decision[sample]
    return {
        "prevalence": _exact(int(y.sum()), len(y)),
        "precision": _exact(int((y & d).sum()), int(d.sum())),
        "recall": _exact(int((y & d).sum()), int(y.sum())),
    }


def _summarise(results: list, truth: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"audits": len(results)}
    if results and isinstance(results[0], dict):
        parts = {name: [r[name] for r in results] for name in ("prevalence", "precision", "recall")}
    else:
        parts = {
            "prevalence": [r.prevalence for r in results],
            "precision": [r.decisions["model"].precision for r in results],
            "recall": [r.decisions["model"].recall for r in results],
        }
    for name, intervals in parts.items():
        widths = np.array([i.width for i in intervals])
        points = np.array([i.estimate for i in intervals])
        out[name] = {
            "truth": truth[name],
            "coverage": float(np.mean([i.contains(truth[name]) for i in intervals])),
            "mean_width": float(np.nanmean(widths)),
            "mean_estimate": float(np.nanmean(points)),
            "undefined": int(np.sum(~np.isfinite(points))),
        }
    return out


def _setting(
    scores: np.ndarray,
    truth: np.ndarray,
    threshold: float,
    *,
    labels: int,
    budget: Budget,
    prior: tuple[float, float],
    n_strata: int,
    seed: int,
    target: str,
) -> dict[str, Any]:
    decision = scores >= threshold
    tp = int((truth.astype(bool) & decision).sum())
    facts = {
        "prevalence": float(truth.mean()),
        "precision": tp / int(decision.sum()) if decision.any() else float("nan"),
        "recall": tp / int(truth.sum()),
    }
    strata = estimates.score_strata(scores, n_strata=n_strata, cut_points=[threshold])
    started = time.perf_counter()
    stratified = [
        _audit(
            strata,
            truth,
            decision,
            labels=labels,
            batches=BATCHES,
            seed=seed * 10_000 + r,
            prior=prior,
            draws=budget.draws,
            target=target,
        )
        for r in range(budget.audits)
    ]
    stratified_summary = _summarise(stratified, facts)
    target_width = stratified_summary["recall"]["mean_width"]
    # Uniform random sampling on a grid from the stratified budget to the whole pool.
    grid = np.unique(
        np.round(np.geomspace(labels, len(truth), budget.grid_points)).astype(np.int64)
    )
    uniform_rows = []
    for n in grid:
        runs = [
            _uniform_audit(truth, decision, labels=int(n), seed=seed * 20_000 + r)
            for r in range(budget.audits)
        ]
        summary = _summarise(runs, facts)
        uniform_rows.append({"labels": int(n), **summary})
    widths = np.array([row["recall"]["mean_width"] for row in uniform_rows])
    needed, extrapolated = _labels_for(grid, widths, target_width)
    ratio = labels / needed if needed else None
    # The classic interval treats the sample as drawn from an endless population, so it stays
    # wide at a census; scaled by the finite-population correction sqrt(1 - n/N) (an
    # approximation for a proportion among the sampled positives) it closes at the census.
    corrected = widths * np.sqrt(np.maximum(0.0, 1.0 - grid / len(truth)))
    needed_fpc = _labels_for_fpc(grid, corrected, target_width)
    for row, width in zip(uniform_rows, corrected, strict=True):
        row["recall"]["mean_width_fpc"] = float(width)
    return {
        "pool": int(len(truth)),
        "positives": int(truth.sum()),
        "threshold": threshold,
        "predicted_positive": int(decision.sum()),
        "average_precision": float(average_precision(truth, scores)),
        "truth": facts,
        "strata": {
            "edges": [float(e) for e in strata.edges[1:-1]],
            "sizes": [int(s) for s in strata.sizes],
        },
        "stratified": {
            "labels": labels,
            **stratified_summary,
            "mean_labels_per_stratum": [
                float(v) for v in np.mean([r.labels_per_stratum for r in stratified], axis=0)
            ],
        },
        "uniform": uniform_rows,
        "uniform_labels_for_same_recall_width": needed,
        "uniform_extrapolated_beyond_pool": extrapolated,
        "label_ratio_stratified_to_uniform": ratio,
        "uniform_labels_for_same_recall_width_fpc": needed_fpc,
        "label_ratio_stratified_to_uniform_fpc": labels / needed_fpc if needed_fpc else None,
        "ratio_goal": RATIO_GOALS.get(round(facts["prevalence"], 3)),
        "seconds": time.perf_counter() - started,
    }


def _labels_for(grid: np.ndarray, widths: np.ndarray, target: float) -> tuple[float, bool]:
    """Labels at which the uniform design's mean width reaches ``target``, by log-log
    interpolation between the grid points around it (the smallest grid point when it is already
    narrower there: an upper bound). When even the whole pool is wider (the classic interval
    treats the sample as drawn from an endless population), the last two grid points' log-log
    slope extrapolates, and the second value says so."""
    below = np.flatnonzero(widths <= target)
    if len(below) and below[0] == 0:
        return float(grid[0]), False
    if len(below):
        first = int(below[0])
        x0, x1 = np.log(grid[first - 1]), np.log(grid[first])
        y0, y1 = np.log(widths[first - 1]), np.log(widths[first])
        extrapolated = False
    else:
        x0, x1 = np.log(grid[-2]), np.log(grid[-1])
        y0, y1 = np.log(widths[-2]), np.log(widths[-1])
        extrapolated = True
    if y1 == y0:
        return float("inf"), extrapolated
    return float(np.exp(x0 + (np.log(target) - y0) / (y1 - y0) * (x1 - x0))), extrapolated


def _labels_for_fpc(grid: np.ndarray, widths: np.ndarray, target: float) -> float | None:
    """As :func:`_labels_for` on finite-population-corrected widths, which reach 0 at the
    census (the last grid point): linear in labels on the last step, never extrapolated."""
    below = np.flatnonzero(widths <= target)
    if len(below) == 0:
        return None
    first = int(below[0])
    if first == 0:
        return float(grid[0])
    if widths[first] <= 0:
        fraction = (widths[first - 1] - target) / (widths[first - 1] - widths[first])
        return float(grid[first - 1] + fraction * (grid[first] - grid[first - 1]))
    needed, _ = _labels_for(grid[first - 1 : first + 1], widths[first - 1 : first + 1], target)
    return needed


def _plot(figures: dict[str, Any], quick: bool) -> str:
    series = {}
    for key, setting in figures["settings"].items():
        rows = setting["uniform"]
        series[f"uniform, {key}"] = (
            [row["labels"] for row in rows],
            [row["recall"]["mean_width"] for row in rows],
        )
        series[f"uniform x sqrt(1 - n/N), {key}"] = (
            [row["labels"] for row in rows],
            [row["recall"]["mean_width_fpc"] for row in rows],
        )
        series[f"stratified, {key}"] = (
            [setting["stratified"]["labels"]],
            [setting["stratified"]["recall"]["mean_width"]],
        )
    path = common.image_name("estimates", quick)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for name, (xs, ys) in series.items():
        style = (
            {"marker": "o", "markersize": 3}
            if name.startswith("uniform")
            else {"marker": "*", "markersize": 12, "linestyle": "none"}
        )
        axes.plot(xs, ys, label=name, **style)
    axes.set_xscale("log")
    axes.set_xlabel("audit labels")
    axes.set_ylabel("mean width of the 95% recall interval")
    axes.set_title("Recall interval width: stratified audit vs uniform random")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return str(path.relative_to(common.REPO_ROOT))


def run(
    *,
    quick: bool,
    seed: int,
    audits: int | None = None,
    prior: str | None = None,
    strata: int = N_STRATA,
    target: str = "balanced",
) -> dict[str, Any]:
    threads = common.limit_threads()
    budget = QUICK if quick else FULL
    if audits:
        budget = replace(budget, audits=audits)
    beta_prior = tuple(float(v) for v in prior.split(",")) if prior else estimates.DEFAULT_PRIOR
    rows = _rows(budget, seed)
    model = _model(rows, seed, budget.embed_size)
    figures: dict[str, Any] = {
        "protocol": {
            "positive_classes": list(POSITIVE_CLASSES),
            "model": "mlcore.probe.fit_linear_probe on Lite0 embeddings (112 px), noisy labels",
            "labeled_set": int(len(rows["train"])),
            "threshold_rule": "best F1 on the validation split",
            "embed_size_px": budget.embed_size,
            "strata": strata,
            "allocation_target": target,
            "batches": BATCHES,
            "audits": budget.audits,
            "confidence": CONFIDENCE,
            "prior": list(beta_prior),
            "draws": budget.draws,
            "torch_threads": threads,
            "functions": {
                "strata": "mlcore.estimates.score_strata",
                "allocation": "mlcore.estimates.audit_allocation",
                "draw": "mlcore.estimates.audit_draw",
                "estimate": "mlcore.estimates.estimate_pool",
            },
        },
        "embed_seconds": round(model["embed_seconds"], 1),
        "embedded_now": model["embedded_now"],
        "probe": model["probe"],
        "settings": {},
    }
    for prevalence, setting in model["settings"].items():
        key = f"{prevalence:.1%}"
        result = _setting(
            setting["scores"],
            setting["truth"],
            setting["threshold"],
            labels=budget.labels[prevalence],
            budget=budget,
            prior=beta_prior,
            n_strata=strata,
            seed=seed,
            target=target,
        )
        result["ratio_goal"] = RATIO_GOALS[prevalence]
        figures["settings"][key] = result
        s = result["stratified"]
        print(
            f"[{key}] coverage prevalence {s['prevalence']['coverage']:.3f} precision "
            f"{s['precision']['coverage']:.3f} recall {s['recall']['coverage']:.3f}; recall "
            f"width {s['recall']['mean_width']:.3f} with {s['labels']} labels vs uniform "
            f"{result['uniform_labels_for_same_recall_width']}",
            flush=True,
        )
    figures["plot"] = _plot(figures, quick)
    return common.rounded(figures)
