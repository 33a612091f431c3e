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

The t10k split is halved (seeded): thresholds for 95% precision are chosen on one half (the
single network's with mlcore.metrics.threshold_for_precision, the cascade's pair with
mlcore.cascade.choose_thresholds) and precision and recall are measured on the other half. The
best recall at 95% precision on the test half itself is reported too, but it flatters the cascade:
a search over threshold pairs has more freedom to fit the test set's few hard negatives than a
search over one threshold. Also: average precision (the cascade scored by min(p1, p2), which is
the AND decision with t1 = t2), and precision and recall at the default thresholds (0.5, and
(0.5, 0.5) for the cascade). Departure from
METHOD.md: the production cascade has two different networks (DenseNet161 then ResNet50); on
two CPU cores both stages are the same small CNN.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from bench import common
from mlcore.cascade import (
    CascadeConfig,
    CascadeScores,
    cascade_decision,
    cascade_predict,
    choose_thresholds,
    train_cascade,
)
from mlcore.metrics import (
    average_precision,
    plot_pr_curves,
    pr_curve,
    precision_recall_at,
    prevalence_weights,
    recall_at_precision,
    threshold_for_precision,
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
    validation: common.RareTask
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
    # Half of the test split picks the operating thresholds, the other half measures them.
    halves = np.random.default_rng(seed + 8).permutation(len(test_classes))
    validation_rows, test_rows = np.sort(halves[::2]), np.sort(halves[1::2])
    return RareData(
        pool=pool,
        noisy_labels=noisy.labels,
        validation=common.rare_test(test_images[validation_rows], test_classes[validation_rows]),
        test=common.rare_test(test_images[test_rows], test_classes[test_rows]),
    )


def _at(y: np.ndarray, decision: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Weighted precision and recall of a boolean decision (nan precision: nothing called)."""
    result = precision_recall_at(
        y, decision.astype(np.float64), threshold=0.5, sample_weight=weights
    )
    return {"precision": result.precision, "recall": result.recall}


def _and(scores: CascadeScores, pair: tuple[float, float]) -> np.ndarray:
    # (inf, inf) means no pair reached the target: nothing is called positive.
    return cascade_decision(scores.stage1, scores.stage2, thresholds=pair)


def _cascade_scores(stage1: nn.Module, stage2: nn.Module, split: common.RareTask) -> CascadeScores:
    loader = common.TensorBatches(split.images, None, batch_size=512, shuffle=False, seed=0)
    return cascade_predict(stage1, stage2, loader, device="cpu")


def run_arms(data: RareData, *, epochs: int, seed: int, cbam: bool) -> dict:
    """Train the single network and the cascade on ``data``; score both on its test split.

    Returns ``{"figures": per-arm figures, "curves": PR curves on the test half}``.
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
    p_single_validation = common.predict(single, data.validation.images)[:, 1]

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
    scores = _cascade_scores(stage1, stage2, test)
    validation_scores = _cascade_scores(stage1, stage2, data.validation)
    validation_weights = prevalence_weights(data.validation.y, prevalence=common.RARE_PREVALENCE)

    single_threshold = threshold_for_precision(
        data.validation.y,
        p_single_validation,
        target_precision=common.TARGET_PRECISION,
        sample_weight=validation_weights,
    )
    validation_pair = choose_thresholds(
        validation_scores.stage1,
        validation_scores.stage2,
        data.validation.y,
        target_precision=common.TARGET_PRECISION,
        sample_weight=validation_weights,
    )
    oracle_pair = choose_thresholds(
        scores.stage1,
        scores.stage2,
        y_test,
        target_precision=common.TARGET_PRECISION,
        sample_weight=weights,
    )
    # min(p1, p2) >= t is the AND decision with t1 = t2 = t: a one-number score for AP and curves.
    and_score = np.minimum(scores.stage1, scores.stage2)
    figures = {
        "single": {
            "average_precision": average_precision(y_test, p_single, sample_weight=weights),
            "at_validation_threshold": {
                "threshold": single_threshold,
                **_at(y_test, p_single >= single_threshold, weights),
            },
            "best_recall_at_95_precision_on_test": recall_at_precision(
                y_test,
                p_single,
                precision=common.TARGET_PRECISION,
                prevalence=common.RARE_PREVALENCE,
            ),
            "at_default_threshold": _at(y_test, p_single >= 0.5, weights),
            "train_seconds": single_seconds,
        },
        "cascade": {
            "average_precision_min_score": average_precision(
                y_test, and_score, sample_weight=weights
            ),
            "at_validation_thresholds": {
                "thresholds": list(validation_pair),
                **_at(y_test, _and(scores, validation_pair), weights),
            },
            "best_recall_at_95_precision_on_test": _at(y_test, _and(scores, oracle_pair), weights)[
                "recall"
            ],
            "at_default_thresholds": _at(y_test, scores.decision, weights),
            "stage1_alone_average_precision": average_precision(
                y_test, scores.stage1, sample_weight=weights
            ),
            "stage2_alone_average_precision": average_precision(
                y_test, scores.stage2, sample_weight=weights
            ),
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
            "validation_size": len(data.validation),
            "test_size": len(data.test),
            "epochs": budget.epochs,
            "cascade_batch_a_hard_b": [common.BATCH_SIZE, HARD_B],
            **outcome["figures"],
            "plot": str(path.relative_to(common.REPO_ROOT)),
        }
    )
