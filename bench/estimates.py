"""estimates: coverage and label cost of the score-stratified audit vs uniform random sampling

How good is the model on the whole pool, and how many labels does it take to know? On
Fashion-MNIST with a known truth (DATA.md's rare task: Sandal + Bag positive, at 1% and at 0.1%
of the pool), this benchmark audits a model's scores many times and checks the intervals of
:mod:`mlcore.estimates` against the truth.

The model (``--model``). ``cascade`` (the default): the version the app trains, through the
functions the training job calls: ``mlcore.pipeline.fit_cascade`` with the default
``cpu_transfer`` preset (EfficientNet-Lite0 from its offline ImageNet weights, 112 px, CBAM,
OHEM stage 2), on a labeled set at 1% prevalence carrying the task's label noise (10% of
positives labeled negative, 0.5% of negatives labeled positive), its thresholds and temperatures
chosen on a clean validation split; ``predict_cascade`` scores the images. The audited score and
decision are those the app's audit reads (``labeling.services.audit``): the ranking score
``min(stage 1, stage 2)``, the decision the AND of both stages at their thresholds, and the two
thresholds as stratum boundaries. ``probe``: the baseline every trained version reports, the
logistic probe on frozen pretrained features of the same labels (``fit_cascade``'s
``baseline_probe``), its decision the threshold with the best F1 on the validation split. The
statistics do not depend on how good the model is: a weaker one needs more labels for the same
width.

The pool (``--population``). The product audits pools of hundreds of thousands to millions of
images; a pool of 20,000 (what could be embedded here) lets an audit of 1,000-2,000 labels take
a census of the model's positives and lets uniform sampling reach a census, two artefacts of the
small size. So the audited pool is a *bootstrap population*: ``--population`` images (full:
1,000,000) drawn with replacement from real scored images (12,000 negatives and 3,000 positives,
disjoint from the labeled and validation sets), positives at the setting's prevalence. Every
audited item is a real image's score and truth; the population stands for a large pool of the
same kind. ``--population 0`` audits the scored images themselves instead (a pool of the
source negatives and as many source positives as the prevalence asks).

Each audit: ``score_strata`` (8 strata, the decision thresholds as boundaries; the images the
cascade calls negative cut by rank on the logistic probe's second opinion, as the app's audit
does once the project has labels of both classes: ``--negatives-by probe``, the default, the
app's own second opinion: ``mlcore.probe.fit_linear_probe`` on the labeled set's 224 px Lite0
embeddings, what the app's vector store holds, then ``prior_shifted``; ``trunk-probe`` cuts
on the baseline probe of the cascade trunk's 112 px features instead, the stand-in the runs
before 2026-12-02 used), then four batches
of a quarter of the budget, each allocated by ``audit_allocation`` (Neyman, updated with the
labels so far) and drawn by ``audit_draw``; the simulated annotator answers with the truth;
``estimate_pool`` at the end. Reported per setting over ``--audits`` audits: the coverage of the
95% intervals of prevalence, precision and recall (goal >= 93%), their mean widths, and the
labels uniform random sampling (sample proportions with exact Clopper-Pearson intervals, the
classic estimators) needs for the same mean recall-interval width, found on a grid of sample
sizes and interpolated on a log-log scale (goal: the stratified audit needs at most 1/5 of them
at 1%, 1/20 at 0.1%). The classic interval treats the sample as drawn from an endless
population; the figure is also given with its widths scaled by sqrt(1 - n/N) (``..._fpc``),
which closes at the census and matters only when the pool is small.

Beside the measured ratio, each setting reports a *design bound* (``_design_bound``), a
diagnostic with the truth that no design uses: the best ratio any allocation on the audit's
strata, and any design sampling by the second opinion's ranking, could reach. When the bound
itself is above the goal, the strata or the ranking are what falls short, not the allocation
or the estimator (docs/estimates.md, "Results with the second opinion").

The model's scores are cached under var/bench-cache (keyed by the seed and the sizes), so a
second run with other audit options skips encoding and training. Quick mode (CI): small sets,
one epoch, a population of 50,000, 50 audits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import precision_recall_curve

from bench import common
from mlcore import estimates
from mlcore.backbones import build_backbone
from mlcore.config import resolve_device
from mlcore.data import ArrayImageDataset
from mlcore.metrics import average_precision
from mlcore.pipeline import (
    CascadeSpec,
    cascade_backbones,
    encode_images,
    fit_cascade,
    predict_cascade,
    probe_baseline_scores,
)
from mlcore.probe import fit_linear_probe, prior_shifted

POSITIVE_CLASSES = common.RARE_POSITIVE_CLASSES
N_STRATA = 8
BATCHES = 4
CONFIDENCE = 0.95
COVERAGE_GOAL = 0.93
RATIO_GOALS = {0.01: 1 / 5, 0.001: 1 / 20}
MODELS = ("cascade", "probe")
NEGATIVES_BY = ("probe", "trunk-probe", "score")
# The input size of the app's embedder, whose vectors its second opinion reads
# (labeling.ml.recall.INPUT_SIZE; tests/bench/test_estimates_bench.py checks they agree).
SECOND_OPINION_SIZE = 224
CACHE_DIR = common.BENCH_CACHE_DIR


@dataclass(frozen=True)
class Budget:
    train_negatives: int
    validation_negatives: int
    source_negatives: int
    source_positives: int
    population: int
    labels: dict[float, int]
    audits: int
    grid_points: int
    draws: int
    epochs: int


FULL = Budget(
    # The labeled set and the scored images: 20,000 (the labeled pool of issue 7's measurement,
    # docs/transfer.md) + 3,000 + 15,000 train-split images at 112 px, about 38,000 trunk
    # passes (the cost of a run; the scores are cached after).
    train_negatives=20_000,
    validation_negatives=3_000,
    source_negatives=12_000,
    source_positives=3_000,
    population=1_000_000,
    labels={0.01: 1000, 0.001: 2000},
    audits=200,
    grid_points=10,
    draws=2000,
    # The training of issue 7's measurement at this size (docs/transfer.md): one view, 2 epochs.
    epochs=2,
)
# CI's smoke run: small sets, one epoch, 50 audits: its figures say that the code runs, not how
# well (its model has seen 10 positives).
QUICK = Budget(
    train_negatives=1000,
    validation_negatives=500,
    source_negatives=1500,
    source_positives=300,
    population=50_000,
    labels={0.01: 300, 0.001: 300},
    audits=50,
    grid_points=5,
    draws=1000,
    epochs=1,
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
    parser.add_argument(
        "--negatives-by",
        default="probe",
        choices=NEGATIVES_BY,
        help="what the called-negative strata are cut on: the app's second opinion (the probe on "
        "the vector store's 224 px embeddings), as the app's audit does once labels of both "
        "classes exist (default); the baseline probe on the cascade trunk's 112 px features "
        "(trunk-probe, the stand-in of the runs before 2026-12-02 11:40 UTC); or the model's "
        "score",
    )
    parser.add_argument(
        "--model",
        default="cascade",
        choices=MODELS,
        help="the audited model: the cascade the app trains (default) or its baseline probe",
    )
    parser.add_argument(
        "--labeled",
        type=int,
        default=None,
        help="negatives in the labeled set the cascade trains on, positives at 1% (full: 20,000)",
    )
    parser.add_argument(
        "--population",
        type=int,
        default=None,
        help="images in the audited pool, drawn from the scored images (full: 1,000,000; 0: "
        "the scored images themselves)",
    )


def _rows(budget: Budget, seed: int) -> dict[str, np.ndarray]:
    """Disjoint train-split rows: the labeled set and the validation split (1% positives each,
    at least 5 positives), and the scored images the pools are drawn from."""
    _, classes = common.fashion_mnist("train")
    y = common.to_binary(classes, POSITIVE_CLASSES)
    rng = np.random.default_rng(seed)
    negatives = iter(
        np.split(
            rng.permutation(np.flatnonzero(y == 0)),
            np.cumsum(
                [budget.train_negatives, budget.validation_negatives, budget.source_negatives]
            ),
        )
    )
    positives = rng.permutation(np.flatnonzero(y == 1))
    share = common.RARE_PREVALENCE / (1 - common.RARE_PREVALENCE)
    train_neg, val_neg, source_neg = next(negatives), next(negatives), next(negatives)
    n_train = max(5, int(round(len(train_neg) * share)))
    n_val = max(5, int(round(len(val_neg) * share)))
    cuts = np.cumsum([n_train, n_val, budget.source_positives])
    train_pos, val_pos, source_pos, _ = np.split(positives, cuts)
    return {
        "train": np.concatenate([train_neg, train_pos]),
        "validation": np.concatenate([val_neg, val_pos]),
        "source": np.concatenate([source_neg, source_pos]),
    }


def _f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The validation threshold with the best F1 (the probe's decision rule; any rule would
    do: the audit measures whatever the model decides)."""
    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _cache_path(budget: Budget, seed: int):
    key = json.dumps({"budget": asdict(budget), "seed": seed, "v": 2}, sort_keys=True, default=str)
    return CACHE_DIR / f"estimates-scores-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _scored(rows: dict[str, np.ndarray], budget: Budget, seed: int) -> dict[str, Any]:
    """Train the cascade as the app does on the noisy labeled set, then score the source
    images with it and with its baseline probe. Cached: the second run reads the scores."""
    path = _cache_path(budget, seed)
    if path.exists():
        with np.load(path) as saved:
            cached = {key: saved[key] for key in saved.files}
        facts = json.loads(str(cached.pop("facts")))
        return {**cached, **facts, "cached": True}
    x_train, classes = common.fashion_mnist("train")
    y_all = common.to_binary(classes, POSITIVE_CLASSES)
    device = resolve_device("auto")
    spec = CascadeSpec(preset="cpu_transfer", views=1, epochs=budget.epochs, seed=seed)
    trunk_config = cascade_backbones(spec)[0]
    trunk = build_backbone(trunk_config)
    every = np.concatenate([rows["train"], rows["validation"], rows["source"]])
    started = time.perf_counter()
    encoded = encode_images(
        trunk, ArrayImageDataset(x_train[every], y_all[every]), views=1, seed=seed, device=device
    )
    encode_seconds = time.perf_counter() - started
    n_train, n_val = len(rows["train"]), len(rows["validation"])
    noisy = common.asymmetric_binary_noise(y_all[rows["train"]], seed=seed).labels
    train = encoded.subset(np.arange(n_train), noisy)
    validation = encoded.subset(np.arange(n_train, n_train + n_val))
    source = encoded.subset(np.arange(n_train + n_val, len(every)))
    started = time.perf_counter()
    fit = fit_cascade(train, validation, spec=spec)
    train_seconds = time.perf_counter() - started
    scores = predict_cascade(
        fit.stage1,
        fit.stage2,
        source,
        thresholds=fit.thresholds,
        temperatures=fit.temperatures,
        device=device,
    )
    assert fit.baseline_probe is not None
    probe_validation = probe_baseline_scores(fit.baseline_probe, trunk_config, validation)
    probe_threshold = _f1_threshold(y_all[rows["validation"]], probe_validation)
    result = {
        "truth": y_all[rows["source"]].astype(np.int8),
        "cascade_score": np.minimum(scores.stage1, scores.stage2),
        # Both stages as the app's Score rows keep them (stage1, stage2).
        "stage1_score": np.asarray(scores.stage1, dtype=np.float64),
        "stage2_score": np.asarray(scores.stage2, dtype=np.float64),
        "cascade_decision": scores.decision,
        "probe_score": probe_baseline_scores(fit.baseline_probe, trunk_config, source),
    }
    facts = {
        "cascade_cut_points": sorted({float(t) for t in fit.thresholds}),
        "probe_cut_points": [probe_threshold],
        "encode_seconds": encode_seconds,
        "train_seconds": train_seconds,
        "encoded_images": int(len(every)),
        "labeled_positives": int(noisy.sum()),
        "validation_ap": fit.metrics["stage1"]["ap"],
        "thresholds": [float(t) for t in fit.thresholds],
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(path, **result, facts=np.array(json.dumps(facts)))
    return {**result, **facts, "cached": False}


def _second_opinion(rows: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """The app's second opinion on the scored images, as ``labeling.ml.recall.
    probe_second_opinion`` gives it: the logistic probe (``mlcore.probe.fit_linear_probe``) on
    the embeddings the project's vector store holds (Lite0 from its ImageNet weights, 224 px,
    L2-normalised; ``common.lite0_embeddings``, cached), fitted on the labeled set's noisy
    labels, its probabilities moved to the labels' odds of a positive (``predict_rate``)."""
    every = np.concatenate([rows["train"], rows["source"]])
    vectors, _ = common.lite0_embeddings(every, SECOND_OPINION_SIZE)
    _, classes = common.fashion_mnist("train")
    y = common.to_binary(classes, POSITIVE_CLASSES)[rows["train"]]
    noisy = common.asymmetric_binary_noise(y, seed=seed).labels
    labeled = len(rows["train"])
    probe = fit_linear_probe(vectors[:labeled], noisy, seed=seed)
    return probe.predict_rate(vectors[labeled:])


def _population(
    scored: dict[str, Any], model: str, prevalence: float, size: int, seed: int
) -> dict[str, Any]:
    """The audited pool of ``size`` images (0: the scored images themselves) at ``prevalence``:
    (score, decision, truth) triples drawn with replacement from the scored negatives and
    positives."""
    truth = scored["truth"].astype(bool)
    score = np.asarray(scored[f"{model}_score"], dtype=np.float64)
    cut_points = list(scored[f"{model}_cut_points"])
    if model == "cascade":
        decision = np.asarray(scored["cascade_decision"], dtype=bool)
    else:
        decision = score >= cut_points[0]
    negatives, positives = np.flatnonzero(~truth), np.flatnonzero(truth)
    rng = np.random.default_rng(seed + int(round(prevalence * 1e6)))
    if size:
        n_pos = int(round(size * prevalence))
        rows = np.concatenate(
            [
                rng.choice(negatives, size=size - n_pos, replace=True),
                rng.choice(positives, size=n_pos, replace=True),
            ]
        )
    else:
        n_pos = int(round(len(negatives) * prevalence / (1 - prevalence)))
        rows = np.concatenate([negatives, rng.choice(positives, size=n_pos, replace=False)])
    rows = rng.permutation(rows)
    return {
        "scores": score[rows],
        "second_opinion": np.asarray(scored["second_opinion"], dtype=np.float64)[rows],
        "decision": decision[rows],
        "truth": truth[rows].astype(np.int64),
        "cut_points": cut_points,
        "distinct_positives": int(len(np.unique(rows[truth[rows]]))),
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
    pool: dict[str, Any],
    *,
    labels: int,
    budget: Budget,
    prior: tuple[float, float],
    n_strata: int,
    seed: int,
    target: str,
    negatives_by: str = "score",
) -> dict[str, Any]:
    scores, truth, decision = pool["scores"], pool["truth"], pool["decision"]
    tp = int((truth.astype(bool) & decision).sum())
    facts = {
        "prevalence": float(truth.mean()),
        "precision": tp / int(decision.sum()) if decision.any() else float("nan"),
        "recall": tp / int(truth.sum()),
    }
    # As the app's audit does (labeling.services.audit): no stratum straddles the decision.
    strata = estimates.score_strata(
        scores,
        n_strata=n_strata,
        cut_points=pool["cut_points"],
        decision=decision,
        negatives_by=None if negatives_by == "score" else pool["second_opinion"],
    )
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
    ranking = scores if negatives_by == "score" else pool["second_opinion"]
    for row, width in zip(uniform_rows, corrected, strict=True):
        row["recall"]["mean_width_fpc"] = float(width)
    return {
        "pool": int(len(truth)),
        "positives": int(truth.sum()),
        "cut_points": [float(c) for c in pool["cut_points"]],
        "distinct_positives": pool["distinct_positives"],
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
        "design_bound": _design_bound(pool, strata, ranking, labels),
        "seconds": time.perf_counter() - started,
    }


def _design_bound(
    pool: dict[str, Any], strata: estimates.Strata, ranking: np.ndarray, labels: int
) -> dict[str, Any]:
    """What no audit on these strata, or on this ranking, can beat: a diagnostic with the
    truth, never used by any design.

    Recall's variance is at least ``R² Var(FN̂) / T²`` (the true positives known exactly, every
    one of the ``labels`` spent on the called negatives, where the missed positives ``FN`` are).
    Two lower bounds of ``Var(FN̂)``: Neyman's allocation with every stratum's true rate,
    ``(Σ_h N_h S_h)² / n``, on the audit's own strata; and on ``ranking`` alone (the values the
    called negatives are cut on), one stratum per image with the positive rate an isotonic
    regression of the truth on the ranking gives it, ``(Σ_i sqrt(q_i (1 − q_i)))² / n``: the
    best any design that samples by that ranking could do (optimistic, since the regression is
    fitted on the very truth it is judged on). Each is turned into a label ratio against uniform
    sampling's recall variance ``R (1 − R) / (m p)`` at the same Wald approximation, so the two
    sides are compared alike; the measured ratio uses the simulated widths instead, and the
    estimator's prior can take it below these bounds (docs/estimates.md)."""
    truth = pool["truth"].astype(bool)
    decision = pool["decision"]
    positives = int(truth.sum())
    recall = int((truth & decision).sum()) / positives
    prevalence = positives / len(truth)
    negatives = ~decision
    missed = truth & negatives

    def ratio(var_fn: float) -> float | None:
        if recall in (0.0, 1.0):
            return None  # recall's variance is 0 under uniform sampling too
        if var_fn <= 0:
            return 0.0  # the ranking isolates every miss: a census of them costs few labels
        uniform = recall * (1 - recall) * positives**2 / (prevalence * recall**2 * var_fn)
        return labels / uniform

    sizes = np.bincount(strata.index[negatives], minlength=strata.count)
    hits = np.bincount(strata.index[negatives], weights=missed[negatives], minlength=strata.count)
    rates = np.divide(hits, sizes, out=np.zeros(strata.count), where=sizes > 0)
    on_strata = float(np.sum(sizes * np.sqrt(rates * (1 - rates))) ** 2 / labels)
    fitted = IsotonicRegression(out_of_bounds="clip").fit_transform(
        ranking[negatives], missed[negatives].astype(np.float64)
    )
    on_ranking = float(np.sum(np.sqrt(fitted * (1 - fitted))) ** 2 / labels)
    return {
        "missed_positives": int(missed.sum()),
        "missed_per_stratum": [int(h) for h in hits],
        "best_ratio_any_allocation_on_these_strata": ratio(on_strata),
        "best_ratio_any_design_on_this_ranking": ratio(on_ranking),
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
    model: str = "cascade",
    population: int | None = None,
    labeled: int | None = None,
    negatives_by: str = "probe",
) -> dict[str, Any]:
    threads = common.limit_threads()
    budget = QUICK if quick else FULL
    if audits:
        budget = replace(budget, audits=audits)
    if population is not None:
        budget = replace(budget, population=population)
    if labeled is not None:
        budget = replace(budget, train_negatives=labeled)
    beta_prior = tuple(float(v) for v in prior.split(",")) if prior else estimates.DEFAULT_PRIOR
    # The cache key leaves out what only the audits use, so every audit option reuses one fit.
    model_budget = replace(budget, audits=0, population=0, labels={}, grid_points=0, draws=0)
    rows = _rows(model_budget, seed)
    scored = _scored(rows, model_budget, seed)
    # The probe was fitted class-balanced on the labeled set: its odds, times the labeled
    # set's odds of a positive, are those of a rate (mlcore.probe.prior_shifted).
    scored["probe_prior_odds"] = scored["labeled_positives"] / (
        len(rows["train"]) - scored["labeled_positives"]
    )
    if negatives_by == "probe":
        scored["second_opinion"] = _second_opinion(rows, seed)
    else:
        scored["second_opinion"] = prior_shifted(scored["probe_score"], scored["probe_prior_odds"])
    figures: dict[str, Any] = {
        "protocol": {
            "positive_classes": list(POSITIVE_CLASSES),
            "model": model,
            "training": (
                "mlcore.pipeline.fit_cascade, preset cpu_transfer, 1 view, "
                f"{budget.epochs} epoch(s), noisy labels"
            ),
            "labeled_set": budget.train_negatives,
            "validation_negatives": budget.validation_negatives,
            "scored_images": {
                "negatives": budget.source_negatives,
                "positives": budget.source_positives,
            },
            "population": budget.population,
            "decision": (
                "AND of both stages at fit_cascade's thresholds; score min(stage 1, stage 2)"
                if model == "cascade"
                else "probe probability, best F1 on the validation split"
            ),
            "strata": strata,
            "negatives_by": negatives_by,
            "allocation_target": target,
            "batches": BATCHES,
            "audits": budget.audits,
            "confidence": CONFIDENCE,
            "prior": list(beta_prior),
            "draws": budget.draws,
            "torch_threads": threads,
            "functions": {
                "train": "mlcore.pipeline.fit_cascade",
                "score": "mlcore.pipeline.predict_cascade",
                "strata": "mlcore.estimates.score_strata",
                "allocation": "mlcore.estimates.audit_allocation",
                "draw": "mlcore.estimates.audit_draw",
                "estimate": "mlcore.estimates.estimate_pool",
            },
        },
        "model_fit": {
            key: scored[key]
            for key in (
                "cached",
                "encode_seconds",
                "train_seconds",
                "encoded_images",
                "labeled_positives",
                "validation_ap",
                "thresholds",
            )
        },
        "settings": {},
    }
    for prevalence, labels in budget.labels.items():
        key = f"{prevalence:.1%}"
        pool = _population(scored, model, prevalence, budget.population, seed)
        result = _setting(
            pool,
            labels=labels,
            budget=budget,
            prior=beta_prior,
            n_strata=strata,
            seed=seed,
            target=target,
            negatives_by=negatives_by,
        )
        result["ratio_goal"] = RATIO_GOALS[prevalence]
        figures["settings"][key] = result
        s = result["stratified"]
        print(
            f"[{key}] AP {result['average_precision']:.3f}; coverage prevalence "
            f"{s['prevalence']['coverage']:.3f} precision {s['precision']['coverage']:.3f} "
            f"recall {s['recall']['coverage']:.3f}; recall width {s['recall']['mean_width']:.3f} "
            f"with {s['labels']} labels vs uniform {result['uniform_labels_for_same_recall_width']}"
            f" (fpc {result['uniform_labels_for_same_recall_width_fpc']}); ratio "
            f"{result['label_ratio_stratified_to_uniform']}, design bounds "
            f"{result['design_bound']['best_ratio_any_allocation_on_these_strata']} (strata) "
            f"{result['design_bound']['best_ratio_any_design_on_this_ranking']} (ranking)",
            flush=True,
        )
    figures["plot"] = _plot(figures, quick)
    return common.rounded(figures)
