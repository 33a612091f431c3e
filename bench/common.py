"""Shared protocol code for the Fashion-MNIST benchmarks (the protocols of shared/DATA.md).

Everything a benchmark must do the same way as its baseline lives here, so a method and its
baseline cannot drift apart: the data (Fashion-MNIST only, so no colour, size or background
shortcut gives an answer away), the seeded label noise, the rare binary task, the one small
network every benchmark trains (``small_cnn`` on 28 px grayscale), its training loop (mlcore's),
and the metrics (mlcore's, at the pool's 1% prevalence).

Noise injection is exact: a rate r on n labels corrupts exactly ``round(r * n)`` of them, each to a
class different from its true one, so "flag k = the number corrupted" is known without sampling
error. The network is deliberately small (``WIDTH_MULT`` of small_cnn's 32/64/128 channels) because
every benchmark must run on two shared CPU cores; methods and baselines always get the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mlcore.backbones import build_backbone
from mlcore.config import BackboneConfig, TrainConfig, seed_everything
from mlcore.data import ArrayImageDataset, load_fashion_mnist, make_loader
from mlcore.metrics import average_precision, prevalence_weights, recall_at_precision
from mlcore.recall import default_embedder, embed_images, embedder_transform
from mlcore.train import fit, predict_proba

NUM_CLASSES = 10
# Sandal and Bag: two unlike looks, as the product's real positives are (DATA.md, protocol 2).
RARE_POSITIVE_CLASSES: tuple[int, ...] = (5, 8)
RARE_PREVALENCE = 0.01
TARGET_PRECISION = 0.95
# Asymmetric noise of the rare task: missed positives are common, false alarms rare.
RARE_POS_TO_NEG = 0.10
RARE_NEG_TO_POS = 0.005

INPUT_SIZE = 28
WIDTH_MULT = 0.25
# One thread: on two cores shared with other jobs, two threads spent more time waiting on each
# other than computing (measured 828 vs 101 samples/s at batch 128 under load).
MAX_THREADS = 1
BATCH_SIZE = 128
LEARNING_RATE = 0.05

REPO_ROOT = Path(__file__).resolve().parent.parent
IMG_DIR = REPO_ROOT / "docs" / "img"


def limit_threads(threads: int = MAX_THREADS) -> int:
    """Cap torch's intra-op threads (the CPU is shared); returns the count in force."""
    torch.set_num_threads(max(1, min(threads, MAX_THREADS)))
    return torch.get_num_threads()


@lru_cache(maxsize=2)
def _fashion_mnist_cached(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_fashion_mnist(split=split)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` ("train" or "test"): images (N, 28, 28) uint8, labels (N,) int64.

    Read once per process; the arrays are read-only so no benchmark can corrupt another's copy.
    """
    return _fashion_mnist_cached("test" if split == "t10k" else split)


def fixed_subset(n_total: int, size: int, *, seed: int) -> np.ndarray:
    """``size`` distinct indices of ``range(n_total)`` drawn with ``seed``, sorted ascending."""
    if not 0 < size <= n_total:
        raise ValueError(f"size must be in [1, {n_total}], got {size}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=size, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class NoisyLabels:
    """``labels`` (N,) after corruption; ``corrupted`` (N,) bool, True where the label changed."""

    labels: np.ndarray
    corrupted: np.ndarray

    @property
    def n_corrupted(self) -> int:
        return int(self.corrupted.sum())


def _exact_choice(candidates: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    count = int(round(rate * len(candidates)))
    return np.sort(rng.choice(candidates, size=count, replace=False))


def symmetric_noise(
    labels: np.ndarray, *, rate: float, num_classes: int = NUM_CLASSES, seed: int
) -> NoisyLabels:
    """Corrupt exactly ``round(rate * N)`` labels, each to one of the *other* classes, uniformly.

    Departure from the "symmetric" of some papers, which draw the new label from all classes
    (so about 1/C of the "corrupted" labels stay correct): here every flipped label is wrong,
    so the noise rate is the true fraction of wrong labels.
    """
    clean = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = _exact_choice(np.arange(len(clean)), rate, rng)
    # An offset in 1..C-1 added mod C gives a different class, uniform over the other C-1.
    offsets = rng.integers(1, num_classes, size=len(chosen))
    noisy = clean.copy()
    noisy[chosen] = (clean[chosen] + offsets) % num_classes
    return NoisyLabels(labels=noisy, corrupted=noisy != clean)


def pair_flip_noise(
    labels: np.ndarray, *, rate: float, num_classes: int = NUM_CLASSES, seed: int
) -> NoisyLabels:
    """Corrupt exactly ``round(rate * N)`` labels by class c -> (c + 1) mod C (DATA.md)."""
    clean = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = _exact_choice(np.arange(len(clean)), rate, rng)
    noisy = clean.copy()
    noisy[chosen] = (clean[chosen] + 1) % num_classes
    return NoisyLabels(labels=noisy, corrupted=noisy != clean)


def asymmetric_binary_noise(
    y: np.ndarray,
    *,
    pos_to_neg: float = RARE_POS_TO_NEG,
    neg_to_pos: float = RARE_NEG_TO_POS,
    seed: int,
) -> NoisyLabels:
    """The rare task's noise: exactly ``round(pos_to_neg * P)`` positives labeled 0 and exactly
    ``round(neg_to_pos * M)`` negatives labeled 1 (P positives, M negatives in ``y``)."""
    clean = np.asarray(y, dtype=np.int64)
    if not np.isin(clean, (0, 1)).all():
        raise ValueError("y must be binary 0/1")
    rng = np.random.default_rng(seed)
    flip_pos = _exact_choice(np.flatnonzero(clean == 1), pos_to_neg, rng)
    flip_neg = _exact_choice(np.flatnonzero(clean == 0), neg_to_pos, rng)
    noisy = clean.copy()
    noisy[flip_pos] = 0
    noisy[flip_neg] = 1
    return NoisyLabels(labels=noisy, corrupted=noisy != clean)


@dataclass(frozen=True)
class RareTask:
    """A binary split of the rare task: ``images`` (N, 28, 28) uint8, ``y`` (N,) 1 = positive,
    ``classes`` (N,) the original Fashion-MNIST class, ``source_index`` (N,) row in the split."""

    images: np.ndarray
    y: np.ndarray
    classes: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def prevalence(self) -> float:
        return float(self.y.mean())


def to_binary(
    classes: np.ndarray, positives: tuple[int, ...] = RARE_POSITIVE_CLASSES
) -> np.ndarray:
    """1 for the ``positives`` classes (DATA.md: Sandal and Bag), 0 for the others; int64."""
    return np.isin(np.asarray(classes), positives).astype(np.int64)


def rare_pool(
    images: np.ndarray,
    classes: np.ndarray,
    *,
    n_negatives: int | None,
    prevalence: float = RARE_PREVALENCE,
    seed: int,
    positives: tuple[int, ...] = RARE_POSITIVE_CLASSES,
) -> RareTask:
    """The rare task's training pool: ``n_negatives`` negatives (all of them when None) drawn
    with ``seed`` plus ``round(prevalence / (1 - prevalence) * n_negatives)`` positives, so
    positives are ``prevalence`` of the pool; rows are shuffled together."""
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    y_all = to_binary(classes, positives)
    rng = np.random.default_rng(seed)
    negatives = np.flatnonzero(y_all == 0)
    positives = np.flatnonzero(y_all == 1)
    if n_negatives is not None:
        if not 0 < n_negatives <= len(negatives):
            raise ValueError(f"n_negatives must be in [1, {len(negatives)}], got {n_negatives}")
        negatives = rng.choice(negatives, size=n_negatives, replace=False)
    n_positive = int(round(prevalence / (1.0 - prevalence) * len(negatives)))
    if not 0 < n_positive <= len(positives):
        raise ValueError(f"cannot draw {n_positive} positives from {len(positives)}")
    chosen = np.concatenate([negatives, rng.choice(positives, size=n_positive, replace=False)])
    chosen = rng.permutation(chosen)
    return RareTask(
        images=images[chosen],
        y=y_all[chosen],
        classes=np.asarray(classes)[chosen].astype(np.int64),
        source_index=chosen.astype(np.int64),
    )


def rare_test(
    images: np.ndarray, classes: np.ndarray, positives: tuple[int, ...] = RARE_POSITIVE_CLASSES
) -> RareTask:
    """The whole t10k split as the rare task (20% positives; metrics reweight it to 1%)."""
    return RareTask(
        images=images,
        y=to_binary(classes, positives),
        classes=np.asarray(classes, dtype=np.int64),
        source_index=np.arange(len(classes), dtype=np.int64),
    )


def rare_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Average precision and recall at 95% precision, both at the pool's 1% prevalence
    (test negatives reweighted, mlcore.metrics.prevalence_weights)."""
    weights = prevalence_weights(y_true, prevalence=RARE_PREVALENCE)
    return {
        "average_precision": average_precision(y_true, scores, sample_weight=weights),
        "recall_at_95_precision": recall_at_precision(
            y_true, scores, precision=TARGET_PRECISION, prevalence=RARE_PREVALENCE
        ),
    }


def flag_quality(flagged: np.ndarray, corrupted: np.ndarray) -> dict[str, float]:
    """Precision and recall of a flagged index set against the truly corrupted mask (N,)."""
    flagged = np.unique(np.asarray(flagged, dtype=np.int64))
    corrupted = np.asarray(corrupted, dtype=bool)
    hits = int(corrupted[flagged].sum())
    return {
        "flagged": len(flagged),
        "precision": hits / len(flagged) if len(flagged) else float("nan"),
        "recall": hits / int(corrupted.sum()) if corrupted.any() else float("nan"),
    }


def backbone(num_classes: int, *, cbam: bool = False) -> BackboneConfig:
    """The one benchmark network: small_cnn, 1 grey channel, 28 px, ``WIDTH_MULT`` wide."""
    return BackboneConfig(
        name="small_cnn",
        num_classes=num_classes,
        cbam=cbam,
        in_channels=1,
        input_size=INPUT_SIZE,
        width_mult=WIDTH_MULT,
    )


def new_network(num_classes: int, *, seed: int, cbam: bool = False) -> nn.Module:
    """A freshly initialised benchmark network; ``seed`` fixes its initial weights."""
    seed_everything(seed)
    return build_backbone(backbone(num_classes, cbam=cbam))


def train_config(*, epochs: int, seed: int, lr: float = LEARNING_RATE) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=lr, device="cpu", seed=seed)


class TensorBatches:
    """A loader over uint8 arrays that slices whole batches instead of collating items.

    Yields ``(x, y, index)`` like mlcore's loaders (``y`` = -1 for unlabeled rows), with ``x``
    float (B, 1, H, W) in [0, 1], or ``view(x)`` for one callable, or a tuple of views for
    several (Mean Teacher's ``(student_view, teacher_view)``). Each view receives the batch and
    a torch.Generator seeded from ``seed`` and the pass number, so augmentation is reproducible.
    Per-item DataLoader collation costs more than the tiny network's forward pass on two cores,
    which is why the benchmarks use this rather than ``mlcore.data.make_loader``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        views: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
        | tuple[Callable[[torch.Tensor, torch.Generator], torch.Tensor], ...]
        | None = None,
        drop_last: bool = False,
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
        n = len(images)
        if labels is None:
            labels = np.full(n, -1, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        # A private copy: the cached split is read-only and torch wants writable memory.
        self.images = torch.from_numpy(np.array(images, copy=True)).unsqueeze(1)
        self.labels = torch.from_numpy(labels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.views = views
        self.drop_last = drop_last
        self._passes = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1000003 + self._passes)
        self._passes += 1
        n = len(self.labels)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start : start + self.batch_size]
            x = self.images[rows].float().div_(255.0)
            if self.views is None:
                inputs: Any = x
            elif callable(self.views):
                inputs = self.views(x, generator)
            else:
                inputs = tuple(view(x, generator) for view in self.views)
            yield inputs, self.labels[rows], rows


def array_loader(
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    shuffle: bool,
    seed: int,
    batch_size: int = BATCH_SIZE,
    transform: Callable[[Any], Any] | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of ``(x, y, index)`` over uint8 arrays (mlcore.data); x in [0, 1] without
    ``transform``. For datasets that mlcore code must iterate itself (O2U)."""
    dataset = ArrayImageDataset(images, labels, transform)
    return make_loader(
        dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last
    )


def train_network(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    epochs: int,
    seed: int,
    cbam: bool = False,
) -> nn.Module:
    """Train a fresh benchmark network with mlcore.train.fit (SGD, cosine schedule)."""
    model = new_network(num_classes, seed=seed, cbam=cbam)
    loader = TensorBatches(images, labels, batch_size=BATCH_SIZE, shuffle=True, seed=seed)
    fit(model, loader, train=train_config(epochs=epochs, seed=seed))
    return model


def predict(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, C) in row order."""
    loader = TensorBatches(images, None, batch_size=512, shuffle=False, seed=0)
    return predict_proba(model, loader, device="cpu")


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(probs).argmax(axis=1) == np.asarray(labels)).mean())


def plot_lines(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: tuple[float, str] | None = None,
) -> Path:
    """A PNG of named (x, y) lines, through an explicit Agg figure (no pyplot global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for name, (xs, ys) in series.items():
        axes.plot(list(xs), list(ys), marker="o", markersize=3, label=name)
    if hline is not None:
        axes.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="best", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def image_name(benchmark: str, quick: bool, suffix: str = "") -> Path:
    """docs/img/bench-<benchmark>[-suffix][-quick].png"""
    parts = [f"bench-{benchmark}"] + ([suffix] if suffix else []) + (["quick"] if quick else [])
    return IMG_DIR / ("-".join(parts) + ".png")


def rounded(value: Any, digits: int = 4) -> Any:
    """Round floats (recursively through dicts and lists) for readable results JSON."""
    if isinstance(value, float | np.floating):
        return round(float(value), digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item, digits) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


# Caches of the benchmarks (git-ignored) and the Lite0 embeddings of Fashion-MNIST that recall and
# estimates share.
BENCH_CACHE_DIR = REPO_ROOT / "var" / "bench-cache"
LITE0_EMBEDDING_DIM = 1280


def lite0_embeddings(indices: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Lite0 embeddings (N, 1280) of Fashion-MNIST train images ``indices`` at ``size`` px, as
    the app's embedder makes them (``mlcore.recall.default_embedder``, L2-normalised), and how
    many were computed.

    An embedding depends only on the image and the frozen network, so vectors are kept in a
    memory-mapped file under var/ (git-ignored), one row per train image, and a later run
    (another positive class, another pool size) embeds only the images it has not seen."""
    images, _ = fashion_mnist("train")
    BENCH_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    vectors_path = BENCH_CACHE_DIR / f"fashion-train-lite0-{size}.f32"
    done_path = BENCH_CACHE_DIR / f"fashion-train-lite0-{size}.done.npy"
    shape = (len(images), LITE0_EMBEDDING_DIM)
    vectors = np.memmap(
        vectors_path, dtype=np.float32, mode="r+" if vectors_path.exists() else "w+", shape=shape
    )
    done = np.load(done_path) if done_path.exists() else np.zeros(len(images), dtype=bool)
    missing = indices[~done[indices]]
    if len(missing):
        dataset = ArrayImageDataset(images[missing], transform=embedder_transform(size))
        loader = make_loader(dataset, batch_size=64, shuffle=False, seed=0)
        vectors[missing] = embed_images(default_embedder(device="cpu"), loader, device="cpu")
        vectors.flush()
        done[missing] = True
        np.save(done_path, done)
    return np.asarray(vectors[indices]), len(missing)
