"""O2U-Net noisy-label detection (Huang, Qu, Jia, Zhao: "O2U-Net: A Simple Noisy Label
Detection Approach for Deep Neural Networks", ICCV 2019).

After ordinary pre-training, the learning rate is cycled: each cycle jumps to a high rate (the
network is pushed back towards underfitting) and decays linearly to a low one (it overfits
again). Clean samples are learned early in every cycle; mislabeled ones are only memorised late,
so over the cycles they carry a larger loss. Every sample's loss is recorded in each epoch's
training pass, each epoch's losses are divided by that epoch's mean (so epochs at high and low
learning rates weigh alike), averaged over the epochs, and the samples are ranked by that score,
highest first. The top ``fraction`` are the suspects handed to annotators (METHOD.md: the top 5%
were re-labeled, about 71% truly mislabeled).

Departures from the paper:
- Ranking uses the normalised *mean* loss only. The paper (and METHOD.md) note noisy samples
  also have a larger loss variance; it is not added to the score, because mixing two scales
  needs a weight we have no data to tune.
- The learning rate changes per epoch (linear from ``lr_max`` at a cycle's first epoch to
  ``lr_min`` at its last, then back), and :func:`cyclic_lr` also accepts fractional epochs.
- The caller's pre-trained model is deep-copied and left untouched; the paper's third step
  (retrain from scratch on the cleaned data) belongs to the caller.
- Pre-training is a fixed number of epochs (``O2UConfig.pretrain_epochs``) of
  :func:`mlcore.train.fit`, not "until validation accuracy is stable": the app ranks every label
  it has, so there is no held-out set of the same labels to watch.

:func:`find_label_noise` is the whole detector as the app's ``detect_noise`` job and
``bench/noise.py`` both run it: ordinary pre-training, then either O2U's cyclic phase
(``method="o2u"``) or, as the baseline the cyclic phase must beat, a plain ranking by each
sample's loss under the pre-trained network (``method="loss"``, :func:`rank_by_loss`). On
Fashion-MNIST the two were close (docs/benchmarks.md, section 1), which is why the baseline is
exposed here rather than kept inside the benchmark.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mlcore.config import TrainConfig, resolve_device
from mlcore.data import make_loader
from mlcore.train import fit

__all__ = [
    "NOISE_METHODS",
    "NoiseDetection",
    "NoiseRanking",
    "O2UConfig",
    "cyclic_lr",
    "detect_noise",
    "find_label_noise",
    "rank_by_loss",
    "rank_by_noise",
    "record_cyclic_losses",
    "training_pass_losses",
]

# "o2u": pre-training then the cyclic phase; "loss": pre-training then one pass, no updates.
NOISE_METHODS = ("o2u", "loss")


def cyclic_lr(step: float, *, cycle_length: int, lr_max: float, lr_min: float) -> float:
    """The O2U learning rate at ``step`` (an epoch index, fractional epochs allowed).

    Within each cycle of ``cycle_length`` epochs the rate falls linearly from ``lr_max`` at the
    cycle's first epoch to ``lr_min`` at its last, then jumps back to ``lr_max``. With
    ``cycle_length == 1`` every epoch runs at ``lr_max``.
    """
    if cycle_length < 1:
        raise ValueError(f"cycle_length must be >= 1, got {cycle_length}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0 < lr_min <= lr_max:
        raise ValueError(f"need 0 < lr_min <= lr_max, got lr_min={lr_min}, lr_max={lr_max}")
    if cycle_length == 1:
        return float(lr_max)
    position = math.fmod(step, cycle_length)
    fraction = min(position / (cycle_length - 1), 1.0)
    return float(lr_max - (lr_max - lr_min) * fraction)


@dataclass(frozen=True)
class O2UConfig:
    """Settings of the detector. The defaults are METHOD.md's (top 5% are suspects).

    ``pretrain_epochs`` is used by :func:`find_label_noise` only (ordinary training at
    ``lr_max`` with mlcore.train's cosine schedule); :func:`detect_noise` takes a model that
    is already pre-trained. The cyclic phase runs ``cycle_length * n_cycles`` epochs.
    """

    pretrain_epochs: int = 0
    cycle_length: int = 5
    n_cycles: int = 2
    lr_max: float = 0.05
    lr_min: float = 0.001
    fraction: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be >= 0, got {self.pretrain_epochs}")
        if self.cycle_length < 1 or self.n_cycles < 1:
            raise ValueError("cycle_length and n_cycles must be >= 1")
        if not 0 < self.lr_min <= self.lr_max:
            raise ValueError("need 0 < lr_min <= lr_max")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def n_epochs(self) -> int:
        return self.cycle_length * self.n_cycles


@dataclass(frozen=True)
class NoiseRanking:
    """``order`` (n,) sample indices, most suspicious first; ``scores`` (n,) per sample (indexed
    by sample, not by rank): mean over epochs of loss / epoch mean loss; ``suspects`` (k,) the
    first ``round(fraction * n)`` of ``order``."""

    order: np.ndarray
    scores: np.ndarray
    suspects: np.ndarray


def rank_by_noise(losses: np.ndarray, *, fraction: float = 0.05) -> NoiseRanking:
    """Rank samples by normalised mean loss over the cyclic epochs.

    losses: (n_epochs, n_samples) per-sample training losses. Each row is divided by its mean,
    the rows are averaged, and samples are ordered by that score, descending (ties by index).
    """
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"losses must have shape (n_epochs, n_samples), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("losses contain NaN or infinity (a sample missed in an epoch?)")
    if (values < 0).any():
        raise ValueError("losses must be non-negative")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    epoch_means = values.mean(axis=1, keepdims=True)
    # An epoch with zero mean loss carries no ranking information; leave it at zero.
    normalised = np.divide(values, epoch_means, out=np.zeros_like(values), where=epoch_means > 0)
    scores = normalised.mean(axis=0)
    order = np.argsort(-scores, kind="stable").astype(np.int64)
    n_suspects = int(round(fraction * values.shape[1]))
    return NoiseRanking(order=order, scores=scores, suspects=order[:n_suspects])


def rank_by_loss(losses: np.ndarray, *, fraction: float = 0.05) -> NoiseRanking:
    """Rank samples by one per-sample loss, highest first: the plain baseline O2U must beat.

    losses: (n_samples,) e.g. the cross-entropy of each sample's label under a pre-trained
    network. Scores are the losses divided by their mean (1.0 = an average sample), the same
    scale as :func:`rank_by_noise` (which this is, for a single epoch).
    """
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"losses must have shape (n_samples,), got {values.shape}")
    return rank_by_noise(values[None, :], fraction=fraction)


def record_cyclic_losses(
    model: nn.Module,
    dataset: Dataset,
    *,
    config: O2UConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> np.ndarray:
    """Train a copy of the pre-trained ``model`` with the cyclic learning rate and return every
    sample's training loss in every epoch: an array of shape (n_epochs, len(dataset)).

    dataset: yields ``(image, label, index)`` (mlcore.data's convention); every label must be a
    class index (>= 0). The loss of a sample is its cross-entropy in the training pass (train
    mode, before that batch's update), stored at row ``epoch`` and column ``index``.
    ``on_epoch(epoch, lr)`` is called after each epoch (progress reporting; raising from it
    stops the run). The caller's model is not modified.
    """
    n_samples = len(dataset)  # type: ignore[arg-type]
    if n_samples == 0:
        raise ValueError("dataset is empty")
    device = resolve_device(config.device)
    network = copy.deepcopy(model).to(device)
    network.train()
    optimizer = torch.optim.SGD(
        network.parameters(),
        lr=config.lr_max,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator()
    generator.manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.num_workers,
        generator=generator,
    )
    losses = np.full((config.n_epochs, n_samples), np.nan, dtype=np.float64)
    for epoch in range(config.n_epochs):
        lr = cyclic_lr(
            epoch, cycle_length=config.cycle_length, lr_max=config.lr_max, lr_min=config.lr_min
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        for images, labels, indices in loader:
            labels = torch.as_tensor(labels)
            if (labels < 0).any():
                raise ValueError("O2U needs a label for every sample; found -1 (unlabeled)")
            images, labels = images.to(device), labels.to(device)
            per_sample = F.cross_entropy(network(images), labels, reduction="none")
            losses[epoch, torch.as_tensor(indices).numpy()] = per_sample.detach().cpu().numpy()
            optimizer.zero_grad(set_to_none=True)
            per_sample.mean().backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch, lr)
    if np.isnan(losses).any():
        raise ValueError(
            "some samples got no loss: the dataset's index field must be 0..len(dataset)-1"
        )
    return losses


def detect_noise(
    model: nn.Module,
    dataset: Dataset,
    *,
    config: O2UConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> NoiseRanking:
    """Run the cyclic phase on ``dataset`` from the pre-trained ``model`` and rank its samples
    (:func:`record_cyclic_losses` then :func:`rank_by_noise` with ``config.fraction``)."""
    losses = record_cyclic_losses(model, dataset, config=config, on_epoch=on_epoch)
    return rank_by_noise(losses, fraction=config.fraction)


@torch.no_grad()
def training_pass_losses(model: nn.Module, dataset: Dataset, *, config: O2UConfig) -> np.ndarray:
    """Each sample's cross-entropy as O2U measures it, without training: shape (len(dataset),).

    One pass over shuffled batches of ``config.batch_size`` (seeded by ``config.seed``) of a copy
    of ``model`` with BatchNorm on batch statistics, as in the training passes
    :func:`record_cyclic_losses` records, and dropout off (no update follows, so its noise would
    only blur the ranking). Evaluation mode is not used: after a short pre-training BatchNorm's
    running statistics lag far behind the weights (on the detect_noise job test's 60 images,
    6 epochs, running statistics put the 3 planted flips at ranks 28-30, batch statistics at 1,
    2 and 4).
    The caller's model, running statistics included, is left untouched.
    """
    n_samples = len(dataset)  # type: ignore[arg-type]
    device = resolve_device(config.device)
    network = copy.deepcopy(model).to(device)
    network.train()
    for module in network.modules():
        if isinstance(module, nn.Dropout | nn.Dropout2d | nn.AlphaDropout):
            module.eval()
    loader = make_loader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        num_workers=config.num_workers,
    )
    losses = np.full(n_samples, np.nan, dtype=np.float64)
    for images, labels, indices in loader:
        labels = torch.as_tensor(labels)
        if (labels < 0).any():
            raise ValueError("noise detection needs a label for every sample; found -1")
        per_sample = F.cross_entropy(
            network(images.to(device)), labels.to(device), reduction="none"
        )
        losses[torch.as_tensor(indices).numpy()] = per_sample.cpu().numpy()
    if np.isnan(losses).any():
        raise ValueError(
            "some samples got no loss: the dataset's index field must be 0..len(dataset)-1"
        )
    return losses


@dataclass(frozen=True)
class NoiseDetection:
    """What :func:`find_label_noise` found. ``ranking``: the samples ranked (see
    :class:`NoiseRanking`); ``method``: "o2u" or "loss"; ``pretrain_epochs`` and
    ``cyclic_epochs``: the training it spent (cyclic 0 for "loss"); ``function``: the dotted
    name of the function that ran, which the job and the benchmark both record so a test can
    tell they measure the same code."""

    ranking: NoiseRanking
    method: str
    pretrain_epochs: int
    cyclic_epochs: int
    function: str


def find_label_noise(
    model: nn.Module,
    dataset: Dataset,
    *,
    config: O2UConfig,
    method: str = "o2u",
    on_epoch: Callable[[str, int, int], None] | None = None,
) -> NoiseDetection:
    """Pre-train ``model`` on ``dataset`` and rank its samples by how likely their label is wrong.

    dataset: yields ``(image, label, index)`` (mlcore.data's convention), every label a class
    index, indices 0..len(dataset)-1. ``model`` is a freshly initialised classifier; it is
    trained in place for ``config.pretrain_epochs`` epochs (ordinary SGD at ``config.lr_max``,
    batch ``config.batch_size``, seeded by ``config.seed``). Then:

    - ``method="o2u"``: O2U-Net's cyclic phase on a copy (:func:`detect_noise`), ranked by
      normalised mean loss over its ``cycle_length * n_cycles`` epochs;
    - ``method="loss"``: no cyclic phase; one pass without updates gives each sample's
      cross-entropy as O2U measures it (:func:`training_pass_losses`), ranked by
      :func:`rank_by_loss`. The two methods then differ by exactly the cyclic phase.

    ``on_epoch(stage, epochs done, epochs in all)`` runs after every epoch, stage
    "pre-training" or "cyclic learning rate"; raising from it stops the run (a job's cancel).
    Returns a :class:`NoiseDetection` whose ranking's ``suspects`` are the top
    ``config.fraction``.
    """
    if method not in NOISE_METHODS:
        raise ValueError(f"method must be one of {NOISE_METHODS}, got {method!r}")
    n_samples = len(dataset)  # type: ignore[arg-type]
    if n_samples < 2:
        raise ValueError(f"noise detection needs at least 2 samples, got {n_samples}")
    cyclic_epochs = config.n_epochs if method == "o2u" else 0
    total = config.pretrain_epochs + cyclic_epochs
    if config.pretrain_epochs:

        def pretrain_epoch(epoch: int, _metrics: dict) -> None:
            if on_epoch is not None:
                on_epoch("pre-training", epoch + 1, total)

        fit(
            model,
            make_loader(
                dataset,
                batch_size=config.batch_size,
                shuffle=True,
                seed=config.seed,
                num_workers=config.num_workers,
            ),
            train=TrainConfig(
                epochs=config.pretrain_epochs,
                batch_size=config.batch_size,
                lr=config.lr_max,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
                device=config.device,
                seed=config.seed,
                num_workers=config.num_workers,
            ),
            on_epoch=pretrain_epoch,
        )
    if method == "o2u":

        def cyclic_epoch(epoch: int, _lr: float) -> None:
            if on_epoch is not None:
                on_epoch("cyclic learning rate", config.pretrain_epochs + epoch + 1, total)

        ranking = detect_noise(model, dataset, config=config, on_epoch=cyclic_epoch)
    else:
        losses = training_pass_losses(model, dataset, config=config)
        ranking = rank_by_loss(losses, fraction=config.fraction)
    return NoiseDetection(
        ranking=ranking,
        method=method,
        pretrain_epochs=config.pretrain_epochs,
        cyclic_epochs=cyclic_epochs,
        function=f"{find_label_noise.__module__}.{find_label_noise.__qualname__}",
    )
