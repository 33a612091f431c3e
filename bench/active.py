"""Active learning on the rare Sandal+Bag task: AP per round for five selection strategies.

Protocol 3 of shared/DATA.md. Pool: Fashion-MNIST train with Sandal and Bag at 1% (the rare
task), labels answered by a simulated annotator who makes the task's asymmetric mistakes (10% of
positives answered negative, 0.5% of negatives answered positive; fixed per image). Start from 200
random labels (the same 200 for every strategy of a seed), then 10 rounds of +200 chosen by:

- ``random``; ``entropy`` (uncertainty sampling);
- ``confidence_band``: METHOD.md's confidence selection (p >= 0.9, or 0.3 <= p <= 0.6);
- ``loss``: top-K of the loss-prediction module (Yoo & Kweon, CVPR 2019);
- ``band_union_loss``: the two lists interleaved (mlcore.selection.select).

Every strategy trains the same thing each round: a fresh network (bench.common.backbone) with the
loss-prediction module attached (mlcore.loss_prediction.train_with_loss_prediction), for the same
number of SGD steps, whether or not the strategy reads the module's output; positively answered
labels are repeated to about a quarter of the training rows (the same rule for every strategy).
AP on the test split (t10k subset, never trained on) is measured at 1% prevalence after every
round.

Departure: the band strategies may find fewer than 200 items inside their thresholds (early on
the network gives almost every image p < 0.3); the rest of that round's 200 is drawn at random so
every strategy spends the same labels per round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from bench import common
from mlcore.config import TrainConfig
from mlcore.loss_prediction import (
    LossPredictionConfig,
    LossPredictionModule,
    predict_losses,
    train_with_loss_prediction,
)
from mlcore.selection import select
from mlcore.train import predict_proba

STRATEGIES = ("random", "entropy", "confidence_band", "loss", "band_union_loss")
INITIAL = 200
PER_ROUND = 200
ROUND_BATCH = 64


@dataclass(frozen=True)
class Budget:
    pool_size: int
    test_size: int
    rounds: int
    seeds: int
    steps_per_round: int


FULL = Budget(pool_size=5000, test_size=2000, rounds=10, seeds=3, steps_per_round=50)
QUICK = Budget(pool_size=2000, test_size=1500, rounds=3, seeds=1, steps_per_round=30)


def _balanced_rows(labels: np.ndarray) -> np.ndarray:
    """Row indices with the positively answered rows repeated until they are about a quarter of
    the rows (every row appears at least once). Without it a network trained on 200 labels
    holding two positives calls everything negative and every strategy but random stalls."""
    rows = np.arange(len(labels))
    positives = np.flatnonzero(labels == 1)
    if len(positives) == 0:
        return rows
    negatives = len(labels) - len(positives)
    repeats = max(1, int(round(negatives / (3 * len(positives)))))
    return np.concatenate([rows, np.repeat(positives, repeats - 1)])


def _train_round(
    images: np.ndarray, labels: np.ndarray, *, steps: int, seed: int
) -> tuple[object, LossPredictionModule]:
    rows = _balanced_rows(labels)
    images, labels = images[rows], labels[rows]
    model = common.new_network(2, seed=seed)
    lp_module = LossPredictionModule(model.feature_channels, hidden=32)
    loader = common.TensorBatches(
        images, labels, batch_size=ROUND_BATCH, shuffle=True, seed=seed + 1
    )
    epochs = max(1, math.ceil(steps / len(loader)))
    train = TrainConfig(
        epochs=epochs, batch_size=ROUND_BATCH, lr=common.LEARNING_RATE, device="cpu", seed=seed
    )
    train_with_loss_prediction(model, lp_module, loader, config=LossPredictionConfig(), train=train)
    return model, lp_module


def _choose(
    strategy: str,
    model: object,
    lp_module: LossPredictionModule,
    pool_images: np.ndarray,
    labeled: np.ndarray,
    *,
    seed: int,
) -> tuple[np.ndarray, int]:
    """200 new pool indices and how many of them the strategy itself chose (the rest random)."""
    n = len(pool_images)
    if strategy == "random":
        picked = select("random", k=PER_ROUND, n=n, exclude=labeled, seed=seed).indices
        return picked, len(picked)
    loader = common.TensorBatches(pool_images, None, batch_size=512, shuffle=False, seed=0)
    p_pos = predict_proba(model, loader, device="cpu")[:, 1]
    predicted_loss = None
    if strategy in ("loss", "band_union_loss"):
        predicted_loss = predict_losses(model, lp_module, loader, device="cpu")
    picked = select(
        strategy,
        k=PER_ROUND,
        p_pos=p_pos if strategy != "loss" else None,
        predicted_loss=predicted_loss,
        exclude=labeled,
        seed=seed,
    ).indices
    own = len(picked)
    if own < PER_ROUND:
        filler = select(
            "random", k=PER_ROUND - own, n=n, exclude=np.concatenate([labeled, picked]), seed=seed
        ).indices
        picked = np.concatenate([picked, filler])
    return picked, own


def _one_seed(budget: Budget, *, seed: int) -> dict[str, dict[str, list]]:
    train_images, train_classes = common.fashion_mnist("train")
    test_images, test_classes = common.fashion_mnist("test")
    test_rows = common.fixed_subset(len(test_classes), budget.test_size, seed=seed + 7)
    test = common.rare_test(test_images[test_rows], test_classes[test_rows])
    n_negatives = int(round(budget.pool_size * (1 - common.RARE_PREVALENCE)))
    pool = common.rare_pool(train_images, train_classes, n_negatives=n_negatives, seed=seed)
    answers = common.asymmetric_binary_noise(pool.y, seed=seed + 1).labels
    initial = select("random", k=INITIAL, n=len(pool), seed=seed + 2).indices

    def evaluate(model: object) -> float:
        return common.rare_metrics(test.y, common.predict(model, test.images)[:, 1])[
            "average_precision"
        ]

    # Round 0 is the same for every strategy of this seed: train it once.
    model0, lp0 = _train_round(
        pool.images[initial], answers[initial], steps=budget.steps_per_round, seed=seed + 3
    )
    ap0 = evaluate(model0)
    results: dict[str, dict[str, list]] = {}
    for strategy in STRATEGIES:
        labeled = initial.copy()
        model, lp_module = model0, lp0
        history = {
            "labels": [len(labeled)],
            "average_precision": [ap0],
            "positives_labeled": [int(pool.y[labeled].sum())],
            "chosen_by_strategy": [],
        }
        for round_index in range(1, budget.rounds + 1):
            picked, own = _choose(
                strategy, model, lp_module, pool.images, labeled, seed=seed * 100 + round_index
            )
            labeled = np.concatenate([labeled, picked])
            model, lp_module = _train_round(
                pool.images[labeled],
                answers[labeled],
                steps=budget.steps_per_round,
                seed=seed + 3 + round_index,
            )
            history["labels"].append(len(labeled))
            history["average_precision"].append(evaluate(model))
            history["positives_labeled"].append(int(pool.y[labeled].sum()))
            history["chosen_by_strategy"].append(own)
        results[strategy] = history
    return results


def _labels_to_reach(labels: list[int], curve: list[float], target: float) -> int | None:
    for count, value in zip(labels, curve):
        if value >= target - 1e-12:
            return count
    return None


def run(*, quick: bool, seed: int) -> dict:
    threads = common.limit_threads()
    budget = QUICK if quick else FULL
    started = time.perf_counter()
    per_seed = [_one_seed(budget, seed=seed + offset) for offset in range(budget.seeds)]
    labels = per_seed[0]["random"]["labels"]
    summary = {}
    for strategy in STRATEGIES:
        curves = np.array([run_[strategy]["average_precision"] for run_ in per_seed])
        positives = np.array([run_[strategy]["positives_labeled"] for run_ in per_seed])
        summary[strategy] = {
            "mean_average_precision": curves.mean(axis=0).tolist(),
            "std_average_precision": curves.std(axis=0).tolist(),
            "mean_positives_labeled": positives.mean(axis=0).tolist(),
        }
    target = summary["random"]["mean_average_precision"][-1]
    # Random's curve is not monotone (each round retrains from scratch on few positives), so
    # its final AP can sit below earlier rounds; its best round is reported as a second target.
    best_target = max(summary["random"]["mean_average_precision"])
    for strategy in STRATEGIES:
        curve = summary[strategy]["mean_average_precision"]
        needed = _labels_to_reach(labels, curve, target)
        summary[strategy]["labels_to_reach_random_final_ap"] = needed
        summary[strategy]["fraction_of_random_labels"] = (
            None if needed is None else needed / labels[-1]
        )
        needed_best = _labels_to_reach(labels, curve, best_target)
        summary[strategy]["labels_to_reach_random_best_ap"] = needed_best
        summary[strategy]["best_mean_average_precision"] = max(curve)
    path = common.image_name("active", quick)
    common.plot_lines(
        {s: (labels, summary[s]["mean_average_precision"]) for s in STRATEGIES},
        path,
        title=f"Sandal+Bag at 1%: test AP per round (mean of {budget.seeds} seeds)",
        xlabel="labels",
        ylabel="average precision (1% prevalence)",
        hline=(target, "random's final AP"),
    )
    return common.rounded(
        {
            "network": common.backbone(2).__dict__,
            "torch_threads": threads,
            "budget": budget.__dict__,
            "initial_labels": INITIAL,
            "labels_per_round": PER_ROUND,
            "labels": labels,
            "random_final_ap": target,
            "random_best_ap": best_target,
            "strategies": summary,
            "per_seed": per_seed,
            "seconds": time.perf_counter() - started,
            "plot": str(path.relative_to(common.REPO_ROOT)),
        }
    )
