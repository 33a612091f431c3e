"""Semi-supervised on the pretrained preset: Mean Teacher on vs off in the app's fit_cascade.

Issue 7's check "Mean Teacher (two-head) vs supervised at 5% labels on the pretrained preset":
the rare task of DATA.md (``--positives``, default Sandal + Bag, at 1% of a pool of ``--pool``
Fashion-MNIST train images) where only ``--labeled-fraction`` (5%) of the pool is labeled, with
the task's asymmetric label noise (``--clean`` for none), and the rest is unlabeled. Both arms
call ``mlcore.pipeline.fit_cascade``, the function the train_cascade job runs, on the
``cpu_transfer`` preset (EfficientNet-Lite0 from ImageNet, frozen trunk, last stage + CBAM
fine-tuned) with the same labels, validation split, seed and epochs; they differ only in
``CascadeSpec.mean_teacher``:

- ``supervised``: ``mean_teacher=False``;
- ``mean_teacher``: ``mean_teacher=True`` with a seeded sample of ``--unlabeled`` unlabeled pool
  images (default 2,000: the job's ``unlabeled_max``), each with two cached views, as the job
  passes them; Mean Teacher runs with the pipeline's own configuration (two heads).

Validation: clean labels, drawn from train images outside the pool at 1% prevalence (the app's
frozen validation split: temperatures and thresholds come from it). Test: t10k (or
``--test`` of it), never trained on, negatives reweighted to 1% prevalence. Per arm: AP and
recall at 95% precision of stage 1 and of the cascade's min(p1, p2), the validation AP the
pipeline reports, and training seconds; mean and sample sd over ``--seeds``. The frozen trunk
runs once per image and view (``mlcore.pipeline.encode_images``), shared by both arms.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench import common
from mlcore.backbones import build_backbone
from mlcore.config import resolve_device
from mlcore.data import ArrayImageDataset
from mlcore.pipeline import (
    CascadeSpec,
    EncodedImages,
    cascade_backbones,
    encode_images,
    fit_cascade,
    predict_cascade,
)

PRESET = "cpu_transfer"
ARMS = {"supervised": False, "mean_teacher": True}
DEFAULT_SEEDS = 3
# The train_cascade job's default unlabeled_max (labeling/services/training.py).
APP_UNLABELED_MAX = 2000
FULL = {"pool": 40_000, "validation": 3000, "test": None, "unlabeled": APP_UNLABELED_MAX}
QUICK = {"pool": 6000, "validation": 600, "test": 1000, "unlabeled": 600, "epochs": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--positives", default="5,8", help="positive classes (default 5,8)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"default: {DEFAULT_SEEDS} seeds")
    parser.add_argument("--pool", type=int, help="pool images (full: 40,000)")
    parser.add_argument("--labeled-fraction", type=float, default=0.05)
    parser.add_argument("--unlabeled", type=int, help="unlabeled images for Mean Teacher")
    parser.add_argument("--validation", type=int, help="validation images (full: 3,000)")
    parser.add_argument("--test", type=int, help="t10k images (full: all)")
    parser.add_argument("--views", type=int, default=2, help="cached views per labeled image")
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--clean", action="store_true", help="no label noise")


def _positives(text: str) -> tuple[int, ...]:
    classes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    if not classes or not all(0 <= c < common.NUM_CLASSES for c in classes):
        raise ValueError(f"positive classes must be Fashion-MNIST ids 0-9, got {text!r}")
    return classes


def _draw(y: np.ndarray, *, n: int, rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    """``n`` rows at 1% prevalence (at least one positive) among ``allowed``, shuffled."""
    n_positive = max(1, int(round(n * common.RARE_PREVALENCE)))
    rows = np.concatenate(
        [
            rng.choice(np.flatnonzero(allowed & (y == 0)), n - n_positive, replace=False),
            rng.choice(np.flatnonzero(allowed & (y == 1)), n_positive, replace=False),
        ]
    )
    return rng.permutation(rows)


def _mean_sd(values: list[float]) -> dict[str, float | int | None]:
    present = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not present:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": float(np.mean(present)),
        "sd": float(np.std(present, ddof=1)) if len(present) > 1 else None,
        "n": len(present),
    }


def _one_seed(
    *,
    seed: int,
    positives: tuple[int, ...],
    sizes: dict[str, Any],
    labeled_fraction: float,
    views: int,
    epochs: int | None,
    clean: bool,
    trunk: Any,
    validation: EncodedImages,
    test: EncodedImages,
    y_test: np.ndarray,
    excluded: np.ndarray,
) -> dict[str, Any]:
    x_train, c_train = common.fashion_mnist("train")
    y_train = common.to_binary(c_train, positives)
    rng = np.random.default_rng(seed)
    allowed = np.ones(len(y_train), dtype=bool)
    allowed[excluded] = False
    pool = _draw(y_train, n=sizes["pool"], rng=rng, allowed=allowed)
    n_labeled = int(round(labeled_fraction * len(pool)))
    labeled_rows, rest = pool[:n_labeled], pool[n_labeled:]
    unlabeled_rows = rng.choice(rest, size=min(sizes["unlabeled"], len(rest)), replace=False)
    clean_labels = y_train[labeled_rows]
    labels = (
        clean_labels if clean else common.asymmetric_binary_noise(clean_labels, seed=seed).labels
    )
    if not (labels == 1).any():
        raise ValueError(f"seed {seed}: no labeled positive; raise --pool or --labeled-fraction")
    device = resolve_device("auto")
    started = time.perf_counter()
    encoded_labeled = encode_images(
        trunk,
        ArrayImageDataset(x_train[labeled_rows], labels),
        views=views,
        seed=seed,
        device=device,
    )
    encoded_unlabeled = encode_images(
        trunk,
        ArrayImageDataset(x_train[unlabeled_rows], np.full(len(unlabeled_rows), -1, np.int64)),
        views=2,
        seed=seed + 1,
        device=device,
    )
    record: dict[str, Any] = {
        "seed": seed,
        "labeled": int(n_labeled),
        "labeled_positives": int(labels.sum()),
        "labeled_true_positives": int(clean_labels.sum()),
        "unlabeled": int(len(unlabeled_rows)),
        "encode_seconds": time.perf_counter() - started,
        "arms": {},
    }
    for arm, mean_teacher in ARMS.items():
        began = time.perf_counter()
        fit = fit_cascade(
            encoded_labeled,
            validation,
            spec=CascadeSpec(
                preset=PRESET, views=views, epochs=epochs, seed=seed, mean_teacher=mean_teacher
            ),
            unlabeled=encoded_unlabeled if mean_teacher else None,
        )
        seconds = time.perf_counter() - began
        scores = predict_cascade(
            fit.stage1, fit.stage2, test, temperatures=fit.temperatures, device=device
        )
        last = fit.history[-1] if fit.history else {}
        record["arms"][arm] = {
            "function": fit.function,
            "mean_teacher_used": bool(fit.metrics["mean_teacher"]),
            "stage1": common.rare_metrics(y_test, scores.stage1),
            "cascade": common.rare_metrics(y_test, np.minimum(scores.stage1, scores.stage2)),
            "validation_ap_stage1": fit.metrics["stage1"]["ap"],
            "train_seconds": seconds,
            "consistency_weight": last.get("consistency_weight"),
            "epochs": len(fit.history),
            # The pipeline deploys the epoch with the best validation AP (0 = the probe start,
            # the same for both arms): which one it picked says whether training mattered.
            "epoch_selection": fit.metrics.get("epoch_selection"),
        }
        print(
            f"[seed {seed}] {arm}: stage-1 test AP "
            f"{record['arms'][arm]['stage1']['average_precision']:.3f}, "
            f"validation AP {record['arms'][arm]['validation_ap_stage1']}, {seconds:.0f} s",
            flush=True,
        )
    return record


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for arm in ARMS:
        records = [run["arms"][arm] for run in runs]
        summary[arm] = {
            f"{part}_{metric}": _mean_sd([r[part][metric] for r in records])
            for part in ("stage1", "cascade")
            for metric in ("average_precision", "recall_at_95_precision")
        }
        summary[arm]["validation_ap_stage1"] = _mean_sd(
            [r["validation_ap_stage1"] for r in records]
        )
        summary[arm]["train_seconds"] = _mean_sd([r["train_seconds"] for r in records])
    differences = [
        run["arms"]["mean_teacher"]["stage1"]["average_precision"]
        - run["arms"]["supervised"]["stage1"]["average_precision"]
        for run in runs
    ]
    summary["mean_teacher_minus_supervised_stage1_ap"] = _mean_sd(differences)
    summary["seeds_mean_teacher_better"] = int(sum(d > 0 for d in differences))
    return summary


def run(
    *,
    quick: bool,
    seed: int,
    positives: str = "5,8",
    seeds: list[int] | None = None,
    pool: int | None = None,
    labeled_fraction: float = 0.05,
    unlabeled: int | None = None,
    validation: int | None = None,
    test: int | None = None,
    views: int = 2,
    epochs: int | None = None,
    clean: bool = False,
) -> dict[str, Any]:
    threads = common.limit_threads(2)
    classes = _positives(positives)
    sizes: dict[str, Any] = dict(QUICK if quick else FULL)
    for key, value in (("pool", pool), ("unlabeled", unlabeled), ("validation", validation)):
        if value is not None:
            sizes[key] = value
    if test is not None:
        sizes["test"] = test or None
    epochs = epochs if epochs is not None else sizes.get("epochs")
    seeds = list(seeds) if seeds else ([seed] if quick else [seed + n for n in range(3)])
    device = resolve_device("auto")
    trunk = build_backbone(cascade_backbones(CascadeSpec(preset=PRESET))[0])

    x_train, c_train = common.fashion_mnist("train")
    x_test, c_test = common.fashion_mnist("test")
    y_train = common.to_binary(c_train, classes)
    # The validation split is fixed for the run and kept out of every seed's pool.
    validation_rows = _draw(
        y_train,
        n=sizes["validation"],
        rng=np.random.default_rng(seed + 500),
        allowed=np.ones(len(y_train), dtype=bool),
    )
    test_rows = (
        np.arange(len(c_test))
        if sizes["test"] is None
        else common.fixed_subset(len(c_test), sizes["test"], seed=seed + 7)
    )
    y_test = common.to_binary(c_test[test_rows], classes)
    started = time.perf_counter()
    encoded_validation = encode_images(
        trunk,
        ArrayImageDataset(x_train[validation_rows], y_train[validation_rows]),
        device=device,
    )
    encoded_test = encode_images(trunk, ArrayImageDataset(x_test[test_rows], y_test), device=device)
    shared_encode_seconds = time.perf_counter() - started
    runs = [
        _one_seed(
            seed=value,
            positives=classes,
            sizes=sizes,
            labeled_fraction=labeled_fraction,
            views=views,
            epochs=epochs,
            clean=clean,
            trunk=trunk,
            validation=encoded_validation,
            test=encoded_test,
            y_test=y_test,
            excluded=validation_rows,
        )
        for value in seeds
    ]
    return common.rounded(
        {
            "preset": CascadeSpec(preset=PRESET, views=views, epochs=epochs).resolved().__dict__,
            "torch_threads": threads,
            "positive_classes": list(classes),
            "sizes": sizes,
            "labeled_fraction": labeled_fraction,
            "label_noise": None
            if clean
            else {"pos_to_neg": common.RARE_POS_TO_NEG, "neg_to_pos": common.RARE_NEG_TO_POS},
            "validation_positives": int(y_train[validation_rows].sum()),
            "test_size": int(len(test_rows)),
            "test_positives": int(y_test.sum()),
            "seeds": seeds,
            "shared_encode_seconds": shared_encode_seconds,
            "pipeline_functions": sorted(
                {arm["function"] for r in runs for arm in r["arms"].values()}
            ),
            "summary": _summarise(runs),
            "runs": runs,
        }
    )
