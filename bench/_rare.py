"""The rare task (DATA.md protocol 2) on the app's pipeline, shared by bench active / cascade /
attention: which Fashion-MNIST rows play pool, validation and test, their labels, and the frozen
trunk's outputs computed once per run.

- **Candidates**: ``n_negative`` negatives of the train split (fixed for the run) plus a
  reservoir of positives; each seed draws its pool's positives (1% of the pool) from the
  reservoir (:func:`draw_pool`). The trunk runs once over all candidates
  (``mlcore.pipeline.encode_images``); its augmented views are seeded per (seed, view, image),
  so sharing one cache across seeds and strategies changes no result.
- **Validation**: clean labels, the app's frozen validation split: train-split images that are
  not candidates, at the pool's 1% prevalence (at least ``MIN_VALIDATION_POSITIVES``
  positives). The pipeline chooses temperatures and thresholds on it, as the train job does.
- **Test**: the t10k split (or a seeded subset), never trained on; metrics reweight its
  negatives to 1% prevalence (``bench.common.rare_metrics``).
- **Label noise**: the task's asymmetric noise (10% of positives labeled negative, 0.5% of
  negatives labeled positive), drawn per seed and fixed per image (``bench.common``).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from bench import common
from mlcore.backbones import build_backbone
from mlcore.config import resolve_device
from mlcore.data import ArrayImageDataset
from mlcore.pipeline import CascadeSpec, EncodedImages, cascade_backbones, encode_images

PREVALENCE = common.RARE_PREVALENCE
MIN_VALIDATION_POSITIVES = 5
# Positives held in reserve per pool positive: each seed draws its 1% from the reservoir.
RESERVOIR_FACTOR = 3
# Pipeline functions these benchmarks call; the train / score / select jobs call the same ones.
FUNCTIONS = {
    "encode": "mlcore.pipeline.encode_images",
    "train": "mlcore.pipeline.fit_cascade",
    "score": "mlcore.pipeline.predict_cascade",
}


def parse_classes(text: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'5,8' -> (5, 8): the Fashion-MNIST classes that are the positive class."""
    if isinstance(text, str):
        parts = [part for part in text.split(",") if part.strip()]
        classes = tuple(sorted({int(part) for part in parts}))
    else:
        classes = tuple(sorted({int(part) for part in text}))
    if not classes or not all(0 <= c < common.NUM_CLASSES for c in classes):
        raise ValueError(f"positive classes must be Fashion-MNIST ids 0-9, got {text!r}")
    if len(classes) == common.NUM_CLASSES:
        raise ValueError("at least one class must stay negative")
    return classes


def add_task_arguments(parser: Any, *, pool: int, validation: int, test: str) -> None:
    """The options every rare-task benchmark takes (help texts give the full-mode defaults)."""
    parser.add_argument(
        "--positives",
        default="5,8",
        help="positive Fashion-MNIST classes, comma-separated (default 5,8: Sandal + Bag)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds (full mode: 3)")
    parser.add_argument("--pool", type=int, default=None, help=f"pool images (full: {pool})")
    parser.add_argument(
        "--validation", type=int, default=None, help=f"validation images (full: {validation})"
    )
    parser.add_argument("--test", type=int, default=None, help=f"t10k images (full: {test})")
    parser.add_argument("--views", type=int, default=None, help="cached views per pool image")
    parser.add_argument("--epochs", type=int, default=None, help="cascade epochs per fit")


@dataclass
class RareSplits:
    """Candidates, validation and test of one run, with their cached trunk outputs.

    ``candidates`` (M,) train-split rows: ``n_negative`` negatives first, then the positive
    reservoir; ``candidate_y`` (M,) their clean labels; ``encoded_candidates`` (views, M, ...),
    ``encoded_validation`` / ``encoded_test`` (1 view, clean labels); ``y_test`` (T,).
    """

    positives: tuple[int, ...]
    pool_size: int
    n_negative: int
    n_positive: int
    candidates: np.ndarray
    candidate_y: np.ndarray
    validation_rows: np.ndarray
    test_rows: np.ndarray
    y_test: np.ndarray
    encoded_candidates: EncodedImages
    encoded_validation: EncodedImages
    encoded_test: EncodedImages
    encode_seconds: float
    encoded_images: int

    def describe(self) -> dict[str, Any]:
        return {
            "positive_classes": list(self.positives),
            "pool": self.pool_size,
            "pool_positives": self.n_positive,
            "prevalence": PREVALENCE,
            "validation": int(len(self.validation_rows)),
            "validation_positives": int(self.encoded_validation.labels.sum()),
            "test": int(len(self.test_rows)),
            "test_positives": int(self.y_test.sum()),
            "noise": {"pos_to_neg": common.RARE_POS_TO_NEG, "neg_to_pos": common.RARE_NEG_TO_POS},
            "views": self.encoded_candidates.views,
            "encode_seconds": self.encode_seconds,
            "encoded_images": self.encoded_images,
        }


def trunk_spec(*, views: int, epochs: int | None, cbam: bool = True, seed: int = 0) -> CascadeSpec:
    """The app's default preset (cpu_transfer) with the benchmark's views, epochs and seed."""
    return CascadeSpec(preset="cpu_transfer", views=views, epochs=epochs, cbam=cbam, seed=seed)


def build_splits(
    *,
    positives: tuple[int, ...],
    pool: int,
    validation: int,
    test: int | None,
    views: int,
    seed: int,
) -> RareSplits:
    """Draw the run's rows with ``seed`` and encode them once through the preset's trunk."""
    x_train, c_train = common.fashion_mnist("train")
    x_test, c_test = common.fashion_mnist("test")
    rng = np.random.default_rng(seed)
    y_train = common.to_binary(c_train, positives)
    n_negative = int(round(pool * (1 - PREVALENCE)))
    n_positive = pool - n_negative
    negatives = rng.choice(np.flatnonzero(y_train == 0), size=n_negative, replace=False)
    reservoir_size = min(RESERVOIR_FACTOR * n_positive, int((y_train == 1).sum()) // 2)
    if reservoir_size < n_positive:
        raise ValueError(f"too few images of classes {positives} for a pool of {pool}")
    reservoir = rng.choice(np.flatnonzero(y_train == 1), size=reservoir_size, replace=False)
    candidates = np.concatenate([negatives, reservoir])

    free = np.ones(len(c_train), dtype=bool)
    free[candidates] = False
    n_val_pos = max(MIN_VALIDATION_POSITIVES, int(round(validation * PREVALENCE)))
    val_rows = np.concatenate(
        [
            rng.choice(np.flatnonzero(free & (y_train == 0)), validation - n_val_pos, False),
            rng.choice(np.flatnonzero(free & (y_train == 1)), n_val_pos, False),
        ]
    )
    test_rows = (
        np.arange(len(c_test))
        if test is None or test >= len(c_test)
        else common.fixed_subset(len(c_test), test, seed=seed + 7)
    )
    y_test = common.to_binary(c_test[test_rows], positives)

    device = resolve_device("auto")
    trunk = build_backbone(cascade_backbones(trunk_spec(views=views, epochs=None))[0])
    started = time.perf_counter()
    encoded_candidates = encode_images(
        trunk,
        ArrayImageDataset(x_train[candidates], y_train[candidates]),
        views=views,
        seed=seed,
        device=device,
    )
    encoded_validation = encode_images(
        trunk, ArrayImageDataset(x_train[val_rows], y_train[val_rows]), device=device
    )
    encoded_test = encode_images(trunk, ArrayImageDataset(x_test[test_rows], y_test), device=device)
    return RareSplits(
        positives=positives,
        pool_size=pool,
        n_negative=n_negative,
        n_positive=n_positive,
        candidates=candidates,
        candidate_y=y_train[candidates],
        validation_rows=val_rows,
        test_rows=test_rows,
        y_test=y_test,
        encoded_candidates=encoded_candidates,
        encoded_validation=encoded_validation,
        encoded_test=encoded_test,
        encode_seconds=time.perf_counter() - started,
        encoded_images=len(candidates) * views + len(val_rows) + len(test_rows),
    )


@dataclass(frozen=True)
class SeedPool:
    """One seed's pool: ``members`` (N,) indices into the candidates (shuffled), ``clean``
    (N,) true labels, ``noisy`` (N,) the labels an annotator with the task's noise gives."""

    members: np.ndarray
    clean: np.ndarray
    noisy: np.ndarray


def draw_pool(splits: RareSplits, *, seed: int) -> SeedPool:
    """The seed's pool: every candidate negative and ``n_positive`` reservoir positives."""
    draw = np.random.default_rng(seed + 1000)
    reservoir = len(splits.candidates) - splits.n_negative
    chosen = draw.choice(reservoir, size=splits.n_positive, replace=False) + splits.n_negative
    members = draw.permutation(np.concatenate([np.arange(splits.n_negative), chosen]))
    clean = splits.candidate_y[members]
    noisy = common.asymmetric_binary_noise(clean, seed=seed).labels
    return SeedPool(members=members, clean=clean, noisy=noisy)


def mean_sd(values: list[float | None]) -> dict[str, float | int | None]:
    """mean and sample sd over seeds of the values that exist (``n`` of them)."""
    present = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not present:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": float(np.mean(present)),
        "sd": float(np.std(present, ddof=1)) if len(present) > 1 else 0.0,
        "n": len(present),
    }


T = TypeVar("T")
# The calls forked workers run, set just before the pool starts: fork hands them to the
# children without pickling (they hold models and the shared trunk cache).
_CALLS: list[Callable[[], Any]] = []


def _run_call(index: int) -> Any:
    torch.set_num_threads(1)
    return _CALLS[index]()


def run_parallel(calls: list[Callable[[], T]], *, workers: int) -> list[T]:
    """Results of ``calls`` in order, run in ``workers`` forked processes (1: here, in turn).

    For independent, seeded, single-threaded pieces of a benchmark (seeds, strategies): each is
    deterministic, so running them side by side changes no figure, only the wall time.
    """
    if workers <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    _CALLS[:] = calls
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(
            max_workers=min(workers, len(calls)), mp_context=context
        ) as executor:
            return list(executor.map(_run_call, range(len(calls))))
    finally:
        _CALLS.clear()
