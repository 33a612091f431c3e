"""OHEM cascade with the AND decision vs the single stage-1 network, rare Sandal+Bag task.

Protocol 5 of shared/DATA.md. Training pool: Fashion-MNIST train with Sandal and Bag as the
positives at 1% of the pool, labels carrying the task's asymmetric noise (10% of positives
labeled negative, 0.5% of negatives labeled positive). Test: the whole t10k split, never trained
on, its negatives reweighted so positives are 1% (mlcore.metrics.prevalence_weights).

Arms, same network (bench.common.backbone) for every stage, same epochs and batches:
- single: stage 1 alone (mlcore.train.fit);
- cascade: mlcore.cascade.train_cascade, stage 1 on whole batches of A = 128, stage 2 on the
  B = 32 of each batch with the largest stage-1 loss (OHEM); an item is positive only when both
  stages say so.

Figures: average precision; recall at 95% precision (the single network's best threshold on the
test set; for the cascade the best threshold pair from mlcore.cascade.choose_thresholds on the
same test set: both are the best the scores allow, so they compare like with like); precision
and recall at the default thresholds (0.5, and (0.5, 0.5) for the cascade). Departure from
METHOD.md: the production cascade has two different networks (DenseNet161 then ResNet50); on
two CPU cores both stages are the same small CNN.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from bench import common
from mlcore.cascade import CascadeConfig, cascade_predict, choose_thresholds, train_cascade
from mlcore.metrics import (
    average_precision,
    plot_pr_curves,
    pr_curve,
    precision_recall_at,
    prevalence_weights,
)
from mlcore.train import fit

HARD_B = 32


@dataclass(frozen=True)
class Budget:
    pool_size: int
    epochs: int
    test_size: int | None


FULL = Budget(pool_size=20000, epochs=6, test_size=None)
QUICK = Budget(pool_size=3000, epochs=4, test_size=3000)


@dataclass(frozen=True)
class RareData:
    pool: common.RareTask
    noisy_labels: np.ndarray
    test: common.RareTask


def rare_data(budget: Budget, *, seed: int) -> RareData:
    """The task-2 pool (with its label noise) and test split used by cascade and attention."""
    train_images, train_classes = common.fashion_mnist("train")
    test_images, test_classes = common.fashion_mnist("test")
    if budget.test_size is not None:
        rows = common.fixed_subset(len(test_classes), budget.test_size, seed=seed + 7)
        test_images, test_classes = test_images[rows], test_classes[rows]
    n_negatives = int(round(budget.pool_size * (1 - common.RARE_PREVALENCE)))
    pool = common.rare_pool(train_images, train_classes, n_negatives=n_negatives, seed=seed)
    noisy = common.asymmetric_binary_noise(pool.y, seed=seed + 1)
    return RareData(
        pool=pool, noisy_labels=noisy.labels, test=common.rare_test(test_images, test_classes)
    )


def _at(y: np.ndarray, decision: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    scores = decision.astype(np.float64)
    result = precision_recall_at(y, scores, threshold=0.5, sample_weight=weights)
    return {"precision": result.precision, "recall": result.recall}


def run_arms(data: RareData, *, epochs: int, seed: int, cbam: bool) -> dict:
    """Train the single network and the cascade on ``data``; score both on its test split.

    Returns the figures per arm plus the raw test scores (key ``scores``) for plots.
    """
    pool, test = data.pool, data.test
    y_test = test.y
    weights = prevalence_weights(y_test, prevalence=common.RARE_PREVALENCE)
    train = common.train_config(epochs=epochs, seed=seed)

    started = time.perf_counter()
    single = common.new_network(2, seed=seed + 1, cbam=cbam)
    fit(
        single,
        common.TensorBatches(
            pool.images,
            data.noisy_labels,
            batch_size=common.BATCH_SIZE,
            shuffle=True,
            seed=seed + 2,
        ),
        train=train,
    )
    single_seconds = time.perf_counter() - started
    p_single = common.predict(single, test.images)[:, 1]

    started = time.perf_counter()
    stage1 = common.new_network(2, seed=seed + 1, cbam=cbam)
    stage2 = common.new_network(2, seed=seed + 3, cbam=cbam)
    train_cascade(
        stage1,
        stage2,
        common.TensorBatches(
            pool.images,
            data.noisy_labels,
            batch_size=common.BATCH_SIZE,
            shuffle=True,
            seed=seed + 2,
        ),
        config=CascadeConfig(batch_a=common.BATCH_SIZE, hard_b=HARD_B),
        train=train,
    )
    cascade_seconds = time.perf_counter() - started
    test_loader = common.TensorBatches(test.images, None, batch_size=512, shuffle=False, seed=0)
    scores = cascade_predict(stage1, stage2, test_loader, device="cpu")

    best_pair = choose_thresholds(
        scores.stage1,
        scores.stage2,
        y_test,
        target_precision=common.TARGET_PRECISION,
        sample_weight=weights,
    )
    if math.isinf(best_pair[0]):
        cascade_recall_95 = 0.0
    else:
        best = scores.stage1 >= best_pair[0]
        best &= scores.stage2 >= best_pair[1]
        cascade_recall_95 = _at(y_test, best, weights)["recall"]
    # min(p1, p2) >= t is the AND decision with t1 = t2 = t: a one-number score for AP and curves.
    and_score = np.minimum(scores.stage1, scores.stage2)
    figures = {
        "single": {
            **common.rare_metrics(y_test, p_single),
            "at_default_threshold": _at(y_test, p_single >= 0.5, weights),
            "train_seconds": single_seconds,
        },
        "cascade": {
            "average_precision_min_score": average_precision(
                y_test, and_score, sample_weight=weights
            ),
            "recall_at_95_precision": cascade_recall_95,
            "thresholds_at_95_precision": list(best_pair),
            "at_default_thresholds": _at(y_test, scores.decision, weights),
            "stage1_alone": common.rare_metrics(y_test, scores.stage1),
            "stage2_alone": common.rare_metrics(y_test, scores.stage2),
            "train_seconds": cascade_seconds,
        },
    }
    curves = {
        "single stage 1": pr_curve(y_test, p_single, sample_weight=weights),
        "cascade, AND (t1 = t2)": pr_curve(y_test, and_score, sample_weight=weights),
    }
    return {"figures": figures, "curves": curves}


def run(*, quick: bool, seed: int) -> dict:
    threads = common.limit_threads()
    budget = QUICK if quick else FULL
    data = rare_data(budget, seed=seed)
    outcome = run_arms(data, epochs=budget.epochs, seed=seed, cbam=False)
    path = common.image_name("cascade", quick)
    plot_pr_curves(
        outcome["curves"],
        path,
        title="Sandal+Bag at 1% prevalence (t10k, reweighted)",
    )
    return common.rounded(
        {
            "network": common.backbone(2).__dict__,
            "torch_threads": threads,
            "pool_size": len(data.pool),
            "pool_positives": int(data.pool.y.sum()),
            "label_noise_flips": int((data.noisy_labels != data.pool.y).sum()),
            "test_size": len(data.test),
            "epochs": budget.epochs,
            "cascade_batch_a_hard_b": [common.BATCH_SIZE, HARD_B],
            **outcome["figures"],
            "plot": str(path.relative_to(common.REPO_ROOT)),
        }
    )
