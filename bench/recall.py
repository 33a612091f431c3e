"""Few-shot recall on frozen Lite0 embeddings: max vs mean vs soft-max over seeds, and the probe.

What the cold-start job does, on Fashion-MNIST: the pool is ``pool_size`` train images with the
rare task's positives (Sandal and Bag) at 2%, embedded once with EfficientNet-Lite0's offline
ImageNet weights (``mlcore.recall.default_embedder``, L2-normalised, 112 px instead of the app's
224 to fit two cores: the network is fully convolutional). Each repetition ("draw") then:

- picks 5 random positives as seed images and ranks the pool with
  ``mlcore.recall.nearest_neighbours`` under each aggregation over the seeds: ``max`` (the old
  rule), ``mean`` and ``softmax`` (the default; temperature
  ``mlcore.recall.DEFAULT_TEMPERATURE`` unless ``--temperature``);
- labels 20 other positives and 200 negatives at random and ranks the pool with the logistic
  probe the job switches to once labels exist (``mlcore.probe.fit_linear_probe`` on the labeled
  images with the seeds as extra positives, ``mlcore.probe.probe_rank``).

Every method ranks the same eligible items: the pool minus the seeds and the 220 labeled images.
Reported per method, mean and sd over the draws: precision@100 (the share of positives in the
100 images the job would queue), recall@100 (of the eligible positives) and AP of the whole
ranking; ``ceiling_p_at_100`` is the best precision@100 possible (eligible positives / 100,
capped at 1). Quick: 3,000 images, 5 draws; full: 12,000 images, 10 draws. Embeddings are
cached per train image under var/bench-cache (``embedded_now`` says how many a run computed).
The positive classes, prevalence, pool size and number of draws are options
(``python -m bench recall --positive-classes 6 --pool-size 6000 --draws 5``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np

from bench import common
from mlcore.metrics import average_precision
from mlcore.probe import fit_linear_probe, probe_rank
from mlcore.recall import (
    AGGREGATES,
    DEFAULT_TEMPERATURE,
    nearest_neighbours,
)

POSITIVE_CLASSES = (5, 8)  # Sandal, Bag: the rare task of DATA.md
PREVALENCE = 0.02
N_SEEDS = 5
LABELED_POSITIVES = 20
LABELED_NEGATIVES = 200
TOP = 100
EMBED_SIZE = 112
METHODS = (*(f"similarity_{name}" for name in AGGREGATES), "probe")


@dataclass(frozen=True)
class Budget:
    pool_size: int
    draws: int
    positive_classes: tuple[int, ...] = POSITIVE_CLASSES
    prevalence: float = PREVALENCE
    embed_size: int = EMBED_SIZE


FULL = Budget(pool_size=12_000, draws=10)
QUICK = Budget(pool_size=3_000, draws=5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m bench recall`; unset ones keep the mode's budget."""
    parser.add_argument("--positive-classes", type=int, nargs="+", default=None)
    parser.add_argument("--prevalence", type=float, default=None)
    parser.add_argument("--pool-size", type=int, default=None)
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--embed-size", type=int, default=None, help="pixels (the app: 224)")
    parser.add_argument(
        "--temperature", type=float, default=None, help="soft-max temperature (default: mlcore's)"
    )


def _pool(budget: Budget, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train-split indices (N,) and binary labels (N,) with positives at the budget's
    prevalence."""
    images, classes = common.fashion_mnist("train")
    rng = np.random.default_rng(seed)
    positive = np.isin(classes, budget.positive_classes)
    n_pos = int(round(budget.pool_size * budget.prevalence))
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(positive), size=n_pos, replace=False),
            rng.choice(np.flatnonzero(~positive), size=budget.pool_size - n_pos, replace=False),
        ]
    )
    chosen.sort()
    return chosen, positive[chosen].astype(np.int64)


def _metrics(ranked: np.ndarray, eligible: np.ndarray, y: np.ndarray, scores: np.ndarray):
    """ranked: the top-TOP eligible indices; scores (N,) over the whole pool for AP."""
    top = ranked[:TOP]
    positives = int(y[eligible].sum())
    return {
        "p_at_100": float(y[top].mean()),
        "recall_at_100": float(y[top].sum() / positives),
        "ap": float(average_precision(y[eligible], scores[eligible])),
    }


def _similarity_scores(
    embeddings: np.ndarray, seeds: np.ndarray, aggregate: str, temperature: float
) -> np.ndarray:
    """Aggregated scores of every pool item (for AP), through the same search with k = N."""
    found = nearest_neighbours(
        embeddings,
        embeddings[seeds],
        k=len(embeddings),
        aggregate=aggregate,
        temperature=temperature,
    )
    scores = np.empty(len(embeddings), dtype=np.float64)
    scores[found.indices] = found.scores
    return scores


def _one_draw(
    embeddings: np.ndarray, y: np.ndarray, *, seed: int, temperature: float = DEFAULT_TEMPERATURE
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """One draw's metrics per method, and the mlcore functions that ranked (as the cold-start
    job records them)."""
    rng = np.random.default_rng(seed)
    positives = rng.permutation(np.flatnonzero(y == 1))
    seeds = positives[:N_SEEDS]
    labeled_pos = positives[N_SEEDS : N_SEEDS + LABELED_POSITIVES]
    labeled_neg = rng.choice(np.flatnonzero(y == 0), size=LABELED_NEGATIVES, replace=False)
    excluded = np.concatenate([seeds, labeled_pos, labeled_neg])
    eligible = np.setdiff1d(np.arange(len(y)), excluded)
    results: dict[str, dict[str, float]] = {}
    for aggregate in AGGREGATES:
        found = nearest_neighbours(
            embeddings,
            embeddings[seeds],
            k=TOP,
            exclude=excluded,
            aggregate=aggregate,
            temperature=temperature,
        )
        scores = _similarity_scores(embeddings, seeds, aggregate, temperature)
        results[f"similarity_{aggregate}"] = _metrics(found.indices, eligible, y, scores)
    # The probe as the cold-start job trains it: labeled images, seeds as extra positives.
    train = np.concatenate([seeds, labeled_pos, labeled_neg])
    probe = fit_linear_probe(embeddings[train], y[train], seed=seed)
    ranking = probe_rank(probe, embeddings, k=TOP, exclude=excluded)
    results["probe"] = _metrics(ranking.indices, eligible, y, probe.predict_proba(embeddings))
    results["probe"]["C"] = probe.C
    results["ceiling_p_at_100"] = {"value": min(1.0, int(y[eligible].sum()) / TOP)}
    functions = {
        "similarity": found.function,
        "probe": ranking.function,
        "probe_fit": probe.function,
    }
    return results, functions


def _summary(draws: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for method in METHODS:
        summary[method] = {}
        for metric in ("p_at_100", "recall_at_100", "ap"):
            values = np.asarray([draw[method][metric] for draw in draws])
            summary[method][f"{metric}_mean"] = common.rounded(values.mean())
            summary[method][f"{metric}_sd"] = common.rounded(values.std(ddof=1))
    return summary


def run(
    *,
    quick: bool,
    seed: int,
    positive_classes: list[int] | None = None,
    prevalence: float | None = None,
    pool_size: int | None = None,
    draws: int | None = None,
    temperature: float | None = None,
    embed_size: int | None = None,
) -> dict:
    threads = common.limit_threads()
    temperature = temperature or DEFAULT_TEMPERATURE
    budget = QUICK if quick else FULL
    given = {
        "positive_classes": tuple(positive_classes) if positive_classes else None,
        "prevalence": prevalence,
        "pool_size": pool_size,
        "draws": draws,
        "embed_size": embed_size,
    }
    budget = replace(budget, **{name: value for name, value in given.items() if value})
    if budget.draws < 2:
        raise ValueError("draws must be >= 2 (the summary reports a standard deviation)")
    started = time.perf_counter()
    indices, y = _pool(budget, seed)
    embeddings, embedded = common.lite0_embeddings(indices, budget.embed_size)
    embed_seconds = time.perf_counter() - started
    outcomes = [
        _one_draw(embeddings, y, seed=seed * 1000 + draw, temperature=temperature)
        for draw in range(budget.draws)
    ]
    draws = [results for results, _ in outcomes]
    return {
        "functions": outcomes[0][1],
        "pool_size": budget.pool_size,
        "positives": int(y.sum()),
        "positive_classes": list(budget.positive_classes),
        "prevalence": budget.prevalence,
        "seed_images": N_SEEDS,
        "labeled_for_probe": {"positives": LABELED_POSITIVES, "negatives": LABELED_NEGATIVES},
        "draws": budget.draws,
        "embed_size_px": budget.embed_size,
        "softmax_temperature": temperature,
        "torch_threads": threads,
        "embed_seconds": round(embed_seconds, 1),
        "embedded_now": embedded,
        "embeddings_from_cache": len(indices) - embedded,
        "ceiling_p_at_100": common.rounded(
            float(np.mean([draw["ceiling_p_at_100"]["value"] for draw in draws]))
        ),
        "summary": _summary(draws),
        "per_draw": [
            {method: {k: common.rounded(v) for k, v in draw[method].items()} for method in METHODS}
            for draw in draws
        ],
    }
