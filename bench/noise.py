"""Noisy-label detection: O2U-Net vs a plain loss ranking vs cleanlab, over seeds, then retraining.

Protocol 1 of shared/DATA.md. A seeded Fashion-MNIST train subset gets exact label noise (20%
symmetric, 40% symmetric, 20% pair-flip c -> c+1 mod 10), plus the rare binary task with its
asymmetric noise (10% of positives labeled negative, 0.5% of negatives labeled positive). Each
detector ranks every sample; the top k = the number of corrupted labels are flagged.

The two loss-based detectors run `mlcore.o2u.find_label_noise`, the function the app's
`detect_noise` job runs (labeling/ml/noise.py), on the same network:

- O2U-Net (``method="o2u"``, Huang et al. ICCV 2019): ``pretrain_epochs`` of ordinary training,
  then the cyclic learning-rate phase; ranked by normalised mean loss over the cyclic epochs.
- plain loss (``method="loss"``): the same ``pretrain_epochs`` of ordinary training (the very
  network O2U starts its cyclic phase from: same seed, same batches), then each sample's loss in
  one evaluation pass. It answers "what does the cyclic phase add?".
- plain loss, equal budget: ``method="loss"`` after ``pretrain + cycle_length * n_cycles``
  epochs of ordinary training, i.e. O2U's whole training budget spent the ordinary way.
- cleanlab (Northcutt et al., "Confident Learning", JAIR 2021): out-of-fold probabilities from
  K-fold cross-validation of the same network at the same budget (K folds x ``fold_epochs`` over
  (K-1)/K of N); "cleanlab@k" takes the k lowest self-confidence scores, "cleanlab own" is the
  set ``find_label_issues`` flags by itself (its own estimate of how many there are).

Per detector: precision of the k flagged (= recall, since k is the number corrupted), precision
of the top 5% (METHOD.md's operating point) and AUROC of the whole ranking against the corrupted
mask. Then networks are trained from scratch with the same epochs on the noisy labels and on
the set minus each detector's flags (O2U, plain loss, cleanlab) and tested on t10k (never
trained on): accuracy (10 classes) or AP and recall at 95% precision at 1% prevalence (rare).

Every figure is repeated over ``--seeds`` (default three) and reported as mean and sample
standard deviation, with the per-seed values in the JSON. Options (``python -m bench noise
--help``): ``--seeds``, ``--noise`` (which settings), ``--train-size``, ``--test-size``,
``--pretrain-epochs``, ``--cycle-length``, ``--n-cycles``, ``--retrain-epochs``, ``--no-retrain``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from bench import common
from mlcore import o2u
from mlcore.data import ArrayImageDataset


@dataclass(frozen=True)
class Budget:
    train_size: int  # 10-class subset size; the rare pool has the same size
    test_size: int | None  # None: the whole t10k split
    pretrain_epochs: int
    cycle_length: int
    n_cycles: int
    folds: int
    retrain_epochs: int  # 0: no retraining

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
    train_size=3000,
    test_size=None,
    pretrain_epochs=2,
    cycle_length=3,
    n_cycles=2,
    folds=3,
    retrain_epochs=5,
)
QUICK = Budget(
    train_size=600,
    test_size=1000,
    pretrain_epochs=1,
    cycle_length=3,
    n_cycles=1,
    folds=3,
    retrain_epochs=2,  # a smoke test of the retraining path, not a measurement
)

SETTINGS = ("symmetric_20", "symmetric_40", "pairflip_20", "rare_asymmetric")
# name in the results: (label in tables and plots)
DETECTORS = {
    "o2u": "O2U-Net",
    "loss": "plain loss (same pre-training)",
    "loss_equal_budget": "plain loss (equal budget)",
    "cleanlab": "cleanlab (out-of-fold)",
}
DEFAULT_SEEDS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's own options (bench/__main__.py passes them to :func:`run`)."""
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help=f"seeds to repeat every setting with (default: {DEFAULT_SEEDS} from --seed on)",
    )
    parser.add_argument("--noise", nargs="+", choices=SETTINGS, help="settings (default: all)")
    parser.add_argument("--train-size", type=int, help="images per setting (rare pool too)")
    parser.add_argument("--test-size", type=int, help="t10k images to test on (0: all)")
    parser.add_argument("--pretrain-epochs", type=int)
    parser.add_argument("--cycle-length", type=int)
    parser.add_argument("--n-cycles", type=int)
    parser.add_argument("--retrain-epochs", type=int, help="0 skips retraining")
    parser.add_argument("--no-retrain", action="store_true", help="same as --retrain-epochs 0")


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


def _find(
    images: np.ndarray,
    noisy: np.ndarray,
    *,
    num_classes: int,
    method: str,
    pretrain_epochs: int,
    budget: Budget,
    seed: int,
) -> o2u.NoiseDetection:
    """The app's detector (mlcore.o2u.find_label_noise) on a fresh benchmark network."""
    return o2u.find_label_noise(
        common.new_network(num_classes, seed=seed),
        ArrayImageDataset(images, noisy),
        config=o2u.O2UConfig(
            pretrain_epochs=pretrain_epochs,
            cycle_length=budget.cycle_length,
            n_cycles=budget.n_cycles,
            lr_max=common.LEARNING_RATE,
            lr_min=0.001,
            batch_size=common.BATCH_SIZE,
            device="cpu",
            seed=seed,
        ),
        method=method,
    )


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


def _ranking_quality(scores: np.ndarray, corrupted: np.ndarray, *, k: int) -> dict[str, float]:
    """scores: (N,) higher = more suspicious. Precision of the top k and of the top 5%, AUROC."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    top5 = order[: int(round(0.05 * len(order)))]
    return {
        "precision_at_k": common.flag_quality(order[:k], corrupted)["precision"],
        "precision_top_5_percent": common.flag_quality(top5, corrupted)["precision"],
        "auroc": float(roc_auc_score(corrupted.astype(int), scores)),
    }


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
    figures = {"test_accuracy": common.accuracy(probs, test_labels)}
    if num_classes == 2:
        figures.update(common.rare_metrics(test_labels, probs[:, 1]))
    return figures


def _one_run(setting: str, *, budget: Budget, seed: int) -> dict:
    """One setting, one seed: every detector's quality, and (optionally) retraining."""
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
    corrupted = noisy.corrupted

    scores: dict[str, np.ndarray] = {}
    functions: set[str] = set()
    seconds: dict[str, float] = {}
    for name, method, pretrain in (
        ("o2u", "o2u", budget.pretrain_epochs),
        ("loss", "loss", budget.pretrain_epochs),
        ("loss_equal_budget", "loss", budget.detector_epochs),
    ):
        tick = time.perf_counter()
        found = _find(
            images,
            noisy.labels,
            num_classes=num_classes,
            method=method,
            pretrain_epochs=pretrain,
            budget=budget,
            seed=seed + 2,
        )
        seconds[name] = time.perf_counter() - tick
        scores[name] = found.ranking.scores
        functions.add(found.function)
    tick = time.perf_counter()
    oof = _out_of_fold_probs(
        images, noisy.labels, num_classes=num_classes, budget=budget, seed=seed + 3
    )
    quality = get_label_quality_scores(noisy.labels, oof, method="self_confidence")
    cleanlab_own = find_label_issues(noisy.labels, oof, return_indices_ranked_by="self_confidence")
    seconds["cleanlab"] = time.perf_counter() - tick
    scores["cleanlab"] = -quality  # low label quality = suspicious

    detectors = {name: _ranking_quality(scores[name], corrupted, k=k) for name in DETECTORS}
    run = {
        "seed": seed,
        "train_size": len(clean),
        "corrupted": k,
        "detectors": detectors,
        "cleanlab_own": common.flag_quality(cleanlab_own, corrupted),
        "detector_seconds": seconds,
    }
    if budget.retrain_epochs:
        retrain = {}
        for name in ("noisy", "o2u", "loss", "cleanlab"):
            keep = np.ones(len(noisy.labels), dtype=bool)
            if name != "noisy":
                keep[np.argsort(-scores[name], kind="stable")[:k]] = False
            retrain[name] = _evaluate(
                images[keep],
                noisy.labels[keep],
                test_images,
                test_labels,
                num_classes=num_classes,
                budget=budget,
                seed=seed + 4,
            )
        run["retrain"] = retrain
    run["pipeline_functions"] = sorted(functions)
    run["seconds"] = time.perf_counter() - started
    return run


def _mean_sd(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "sd": float(array.std(ddof=1)) if len(array) > 1 else None,  # one seed: no spread
        "n": len(array),
    }


def _summarise(runs: list[dict]) -> dict:
    """Mean and sample sd over the seeds of every detector metric and retraining figure."""
    summary: dict = {"corrupted": _mean_sd([r["corrupted"] for r in runs])}
    summary["detectors"] = {
        name: {
            metric: _mean_sd([r["detectors"][name][metric] for r in runs])
            for metric in runs[0]["detectors"][name]
        }
        for name in DETECTORS
    }
    summary["cleanlab_own"] = {
        metric: _mean_sd([r["cleanlab_own"][metric] for r in runs])
        for metric in ("flagged", "precision", "recall")
    }
    if "retrain" in runs[0]:
        summary["retrain"] = {
            name: {
                metric: _mean_sd([r["retrain"][name][metric] for r in runs])
                for metric in runs[0]["retrain"][name]
            }
            for name in runs[0]["retrain"]
        }
    return summary


def _plot(summaries: dict, *, quick: bool, seeds: list[int]) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    names = list(summaries)
    x = np.arange(len(names))
    width = 0.8 / len(DETECTORS)
    for n, (key, label) in enumerate(DETECTORS.items()):
        stats = [summaries[s]["detectors"][key]["precision_at_k"] for s in names]
        axes.bar(
            x + (n - (len(DETECTORS) - 1) / 2) * width,
            [v["mean"] for v in stats],
            width,
            yerr=[v["sd"] or 0.0 for v in stats],
            capsize=2,
            label=label,
        )
    axes.set_xticks(x, names)
    axes.set_ylabel("precision of the k flagged (k = # corrupted)")
    axes.set_ylim(0, 1.2)
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper center", ncols=2, fontsize="small")
    axes.set_title(f"Noisy-label detection, Fashion-MNIST, mean ± sd over {len(seeds)} seed(s)")
    path = common.image_name("noise", quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return str(path.relative_to(common.REPO_ROOT))


def run(
    *,
    quick: bool,
    seed: int,
    seeds: list[int] | None = None,
    noise: list[str] | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    pretrain_epochs: int | None = None,
    cycle_length: int | None = None,
    n_cycles: int | None = None,
    retrain_epochs: int | None = None,
    no_retrain: bool = False,
) -> dict:
    threads = common.limit_threads()
    budget = QUICK if quick else FULL
    overrides = {
        "train_size": train_size,
        "pretrain_epochs": pretrain_epochs,
        "cycle_length": cycle_length,
        "n_cycles": n_cycles,
        "retrain_epochs": 0 if no_retrain else retrain_epochs,
    }
    budget = dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    if test_size is not None:
        budget = dataclasses.replace(budget, test_size=test_size or None)
    budget.fold_epochs  # noqa: B018 - refuse an unequal budget before any training
    seeds = list(seeds) if seeds else [seed + n for n in range(DEFAULT_SEEDS)]
    settings = list(noise) if noise else list(SETTINGS)
    per_seed = {s: [_one_run(s, budget=budget, seed=value) for value in seeds] for s in settings}
    summaries = {s: _summarise(runs) for s, runs in per_seed.items()}
    functions = sorted(
        {name for runs in per_seed.values() for r in runs for name in r["pipeline_functions"]}
    )
    return common.rounded(
        {
            "network": common.backbone(common.NUM_CLASSES).__dict__,
            "torch_threads": threads,
            "budget": budget.__dict__ | {"fold_epochs": budget.fold_epochs},
            "seeds": seeds,
            "pipeline_functions": functions,
            "settings": summaries,
            "runs": per_seed,
            "plot": _plot(summaries, quick=quick, seeds=seeds),
        }
    )
