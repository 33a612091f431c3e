"""Noisy-label detection: O2U-Net vs cleanlab on out-of-fold probabilities, then retraining.

Protocol 1 of shared/DATA.md. A fixed Fashion-MNIST train subset gets seeded, exact label noise
(20% symmetric, 40% symmetric, 20% pair-flip c -> c+1 mod 10), plus the rare binary task with its
asymmetric noise (10% of positives labeled negative, 0.5% of negatives labeled positive). Each
detector flags k = the number of corrupted labels:

- O2U-Net (mlcore.o2u, Huang et al. ICCV 2019): ordinary training for ``pretrain_epochs``, then
  the cyclic learning-rate phase; samples ranked by normalised mean loss, top k flagged.
- cleanlab (Northcutt et al., "Confident Learning", JAIR 2021): out-of-fold predicted
  probabilities from K-fold cross-validation of the same network; its ``find_label_issues``
  ranks by self-confidence. "cleanlab@k" takes the k lowest label-quality scores (the order
  ``find_label_issues`` returns its issues in); "cleanlab own" is the set ``find_label_issues``
  flags by itself (its own estimate of how many there are), reported for information.

Equal budget: both detectors get the same number of sample-epochs of training of the same network
(O2U: ``pretrain + cycle_length * n_cycles`` epochs over N; cleanlab: K folds x ``fold_epochs``
over (K-1)/K of N). Then three networks are trained from scratch with the same epochs: on the
noisy labels, on the set minus O2U's flags, on the set minus cleanlab@k's flags; the test split
(t10k, never trained on) gives their accuracy (10 classes) or AP and recall at 95% precision at 1%
prevalence (rare task).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.model_selection import StratifiedKFold

from bench import common
from mlcore.o2u import O2UConfig, detect_noise
from mlcore.train import fit


@dataclass(frozen=True)
class Budget:
    train_size: int  # 10-class subset size; the rare pool has the same size
    test_size: int | None  # None: the whole t10k split
    pretrain_epochs: int
    cycle_length: int
    n_cycles: int
    folds: int
    retrain_epochs: int

    @property
    def detector_epochs(self) -> int:
        return self.pretrain_epochs + self.cycle_length * self.n_cycles

    @property
    def fold_epochs(self) -> int:
        # K folds of (K-1)/K N each for e epochs cost (K-1) e N-epochs; match O2U's budget.
        epochs, remainder = divmod(self.detector_epochs, self.folds - 1)
        if remainder:
            raise ValueError("detector epochs must divide evenly by folds - 1 (equal budget)")
        return epochs


FULL = Budget(
    train_size=4000,
    test_size=None,
    pretrain_epochs=2,
    cycle_length=3,
    n_cycles=2,
    folds=3,
    retrain_epochs=5,
)
QUICK = Budget(
    train_size=1200,
    test_size=2000,
    pretrain_epochs=1,
    cycle_length=3,
    n_cycles=1,
    folds=3,
    retrain_epochs=3,
)

SETTINGS = ("symmetric_20", "symmetric_40", "pairflip_20", "rare_asymmetric")


def _corrupt(setting: str, labels: np.ndarray, *, seed: int) -> common.NoisyLabels:
    if setting == "symmetric_20":
        return common.symmetric_noise(labels, rate=0.2, seed=seed)
    if setting == "symmetric_40":
        return common.symmetric_noise(labels, rate=0.4, seed=seed)
    if setting == "pairflip_20":
        return common.pair_flip_noise(labels, rate=0.2, seed=seed)
    if setting == "rare_asymmetric":
        return common.asymmetric_binary_noise(labels, seed=seed)
    raise ValueError(f"unknown noise setting {setting!r}")


def _o2u_ranking(
    images: np.ndarray, noisy: np.ndarray, *, num_classes: int, budget: Budget, seed: int
) -> np.ndarray:
    """O2U order of the samples, most suspicious first."""
    model = common.new_network(num_classes, seed=seed)
    loader = common.array_loader(images, noisy, shuffle=True, seed=seed)
    fit(model, loader, train=common.train_config(epochs=budget.pretrain_epochs, seed=seed))
    config = O2UConfig(
        cycle_length=budget.cycle_length,
        n_cycles=budget.n_cycles,
        lr_max=common.LEARNING_RATE,
        lr_min=0.001,
        batch_size=common.BATCH_SIZE,
        device="cpu",
        seed=seed,
    )
    dataset = loader.dataset
    ranking = detect_noise(model, dataset, config=config)
    return ranking.order


def _out_of_fold_probs(
    images: np.ndarray, noisy: np.ndarray, *, num_classes: int, budget: Budget, seed: int
) -> np.ndarray:
    probs = np.zeros((len(noisy), num_classes), dtype=np.float64)
    folds = StratifiedKFold(n_splits=budget.folds, shuffle=True, random_state=seed)
    for fold, (train_rows, held_rows) in enumerate(folds.split(images, noisy)):
        model = common.train_network(
            images[train_rows],
            noisy[train_rows],
            num_classes=num_classes,
            epochs=budget.fold_epochs,
            seed=seed + 101 * (fold + 1),
        )
        probs[held_rows] = common.predict(model, images[held_rows])
    return probs


def _evaluate(
    images: np.ndarray,
    labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    budget: Budget,
    seed: int,
) -> dict[str, float]:
    model = common.train_network(
        images, labels, num_classes=num_classes, epochs=budget.retrain_epochs, seed=seed
    )
    probs = common.predict(model, test_images)
    figures = {"test_accuracy": common.accuracy(probs, test_labels), "train_size": len(labels)}
    if num_classes == 2:
        figures.update(common.rare_metrics(test_labels, probs[:, 1]))
    return figures


def _one_setting(setting: str, *, budget: Budget, seed: int) -> dict:
    started = time.perf_counter()
    train_images, train_classes = common.fashion_mnist("train")
    test_images, test_classes = common.fashion_mnist("test")
    if budget.test_size is not None:
        test_rows = common.fixed_subset(len(test_classes), budget.test_size, seed=seed + 7)
        test_images, test_classes = test_images[test_rows], test_classes[test_rows]
    if setting == "rare_asymmetric":
        n_negatives = int(round(budget.train_size * (1 - common.RARE_PREVALENCE)))
        pool = common.rare_pool(train_images, train_classes, n_negatives=n_negatives, seed=seed)
        images, clean = pool.images, pool.y
        test_labels = common.to_binary(test_classes)
        num_classes = 2
    else:
        rows = common.fixed_subset(len(train_classes), budget.train_size, seed=seed)
        images, clean = train_images[rows], train_classes[rows]
        test_labels = test_classes
        num_classes = common.NUM_CLASSES
    noisy = _corrupt(setting, clean, seed=seed + 1)
    k = noisy.n_corrupted

    o2u_order = _o2u_ranking(
        images, noisy.labels, num_classes=num_classes, budget=budget, seed=seed + 2
    )
    o2u_flags = o2u_order[:k]
    oof = _out_of_fold_probs(
        images, noisy.labels, num_classes=num_classes, budget=budget, seed=seed + 3
    )
    quality = get_label_quality_scores(noisy.labels, oof, method="self_confidence")
    cleanlab_flags = np.argsort(quality, kind="stable")[:k]
    cleanlab_own = find_label_issues(noisy.labels, oof, return_indices_ranked_by="self_confidence")
    top5 = o2u_order[: int(round(0.05 * len(o2u_order)))]

    retrain = {}
    for name, drop in (
        ("noisy", None),
        ("o2u_cleaned", o2u_flags),
        ("cleanlab_cleaned", cleanlab_flags),
    ):
        keep = np.ones(len(noisy.labels), dtype=bool)
        if drop is not None:
            keep[drop] = False
        retrain[name] = _evaluate(
            images[keep],
            noisy.labels[keep],
            test_images,
            test_labels,
            num_classes=num_classes,
            budget=budget,
            seed=seed + 4,
        )
    return {
        "train_size": len(clean),
        "corrupted": k,
        "detector_budget_sample_epochs": budget.detector_epochs * len(clean),
        "o2u_at_k": common.flag_quality(o2u_flags, noisy.corrupted),
        "o2u_top_5_percent": common.flag_quality(top5, noisy.corrupted),
        "cleanlab_at_k": common.flag_quality(cleanlab_flags, noisy.corrupted),
        "cleanlab_own": common.flag_quality(cleanlab_own, noisy.corrupted),
        "retrain": retrain,
        "seconds": time.perf_counter() - started,
    }


def _plot(results: dict, *, quick: bool) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    names = list(results)
    x = np.arange(len(names))
    for offset, (key, label) in zip(
        (-0.2, 0.2), (("o2u_at_k", "O2U-Net"), ("cleanlab_at_k", "cleanlab (out-of-fold)"))
    ):
        axes.bar(x + offset, [results[n][key]["precision"] for n in names], 0.4, label=label)
    axes.set_xticks(x, names)
    axes.set_ylabel("precision of the k flagged (k = # corrupted)")
    axes.set_ylim(0, 1.15)
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper center", ncols=2)
    axes.set_title("Noisy-label detection, Fashion-MNIST, equal training budget")
    path = common.image_name("noise", quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return str(path.relative_to(common.REPO_ROOT))


def run(*, quick: bool, seed: int) -> dict:
    threads = common.limit_threads()
    budget = QUICK if quick else FULL
    results = {setting: _one_setting(setting, budget=budget, seed=seed) for setting in SETTINGS}
    return common.rounded(
        {
            "network": common.backbone(common.NUM_CLASSES).__dict__,
            "torch_threads": threads,
            "budget": budget.__dict__ | {"fold_epochs": budget.fold_epochs},
            "settings": results,
            "plot": _plot(results, quick=quick),
        }
    )
