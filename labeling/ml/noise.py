"""Noisy-label detection over a project's labels: Image rows in, a ranking of suspects out.

O2U-Net (Huang, Qu, Jia, Zhao, ICCV 2019; `mlcore.o2u`): pre-train a network normally on the
labeled pool, then cycle the learning rate and record every sample's loss in every epoch;
samples whose normalised mean loss is highest are the suspects a lead re-reviews (METHOD.md:
the top 5%, about 71% of which were truly mislabeled).

The ranking itself is `mlcore.o2u.find_label_noise`, the function bench/noise.py measures;
this module only decodes the images and builds the network. `NoiseSpec.method` "loss" ranks by
the plain loss after pre-training instead (no cyclic phase): on Fashion-MNIST, given O2U's
whole training budget as ordinary pre-training, it ranked as well as O2U (docs/benchmarks.md,
section 1).

Departures, and why:
- All classes of the schema are learned (a multi-class network over the project's class keys),
  not "positive vs rest": a label confused between two negative classes is as much a labeling
  error as a missed positive, and with two classes (the usual schema) both readings coincide.
- A small CPU network (`small_cnn` at 32 px by default) instead of the production backbone:
  the ranking needs a network that can memorise the labels within the cyclic phase, not the
  best classifier, and the job must fit on a CPU worker. The backbone is a parameter.
- Pre-training is a fixed number of epochs (`pretrain_epochs`) rather than "until validation
  accuracy is stable": the labeled pool is all there is here (the frozen validation split must
  never be trained on), so there is no held-out set to watch.
- Images are decoded once into memory at `input_size` (no augmentation): O2U compares the same
  sample's loss across epochs, and a fixed view keeps that comparison about the label, not the
  crop. Memory: n x 3 x size^2 floats (12 kB per image at 32 px).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from django.core.files.storage import Storage, default_storage
from torch.utils.data import Dataset

from mlcore.augment import eval_transform
from mlcore.backbones import BACKBONES, build_backbone
from mlcore.config import BackboneConfig, seed_everything
from mlcore.data import ImageDecodeError, decode_image
from mlcore.o2u import NOISE_METHODS, O2UConfig, find_label_noise

# on_epoch(stage, epochs done, epochs in all): progress for the job.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class NoiseSample:
    image_id: int
    name: str  # storage name of the file
    label: int  # index of the current label's value in the project's class keys


@dataclass(frozen=True)
class NoiseSpec:
    backbone: str = "small_cnn"
    input_size: int = 32
    pretrain_epochs: int = 5
    cycle_length: int = 5
    n_cycles: int = 2
    fraction: float = 0.05
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    device: str = "auto"
    method: str = "o2u"  # or "loss": mlcore.o2u.NOISE_METHODS

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {sorted(BACKBONES)}")
        if self.method not in NOISE_METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {NOISE_METHODS}")

    @property
    def total_epochs(self) -> int:
        cyclic = self.cycle_length * self.n_cycles if self.method == "o2u" else 0
        return self.pretrain_epochs + cyclic


@dataclass(frozen=True)
class Suspect:
    image_id: int
    rank: int  # 1 = most suspicious
    score: float  # normalised mean loss over the cyclic epochs (1.0 = an average sample)


@dataclass
class NoiseOutcome:
    samples: int
    suspects: list[Suspect]
    unreadable: list[int] = field(default_factory=list)  # image ids that did not decode
    score_mean: float = 0.0
    method: str = "o2u"
    function: str = ""  # the mlcore function that ranked (recorded on the job)


class _InMemoryDataset(Dataset):
    """Item i: (image tensor, label, i): mlcore's (input, label, index) convention."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.images[index], int(self.labels[index]), index


def _decode_all(
    samples: Sequence[NoiseSample], *, input_size: int, storage: Storage
) -> tuple[list[torch.Tensor], list[int], list[int]]:
    transform = eval_transform(input_size)
    tensors: list[torch.Tensor] = []
    kept: list[int] = []
    unreadable: list[int] = []
    for position, sample in enumerate(samples):
        try:
            with storage.open(sample.name, "rb") as handle:
                tensors.append(transform(decode_image(handle.read())))
            kept.append(position)
        except (ImageDecodeError, OSError, ValueError):
            unreadable.append(sample.image_id)
    return tensors, kept, unreadable


def detect_noise_on_samples(
    samples: Sequence[NoiseSample],
    *,
    num_classes: int,
    spec: NoiseSpec,
    on_epoch: ProgressCallback | None = None,
    storage: Storage | None = None,
) -> NoiseOutcome:
    """Rank the samples with `mlcore.o2u.find_label_noise` on a fresh `spec.backbone` (pre-training,
    then O2U's cyclic phase or the plain loss ranking, `spec.method`), and return the top
    `spec.fraction` as suspects (most suspicious first). Files that do not decode are left
    out and listed in `unreadable`. `on_epoch` may raise to stop (the job's cancel)."""
    tensors, kept, unreadable = _decode_all(
        samples, input_size=spec.input_size, storage=storage or default_storage
    )
    if len(kept) < 2:
        raise ValueError(f"O2U needs at least 2 readable labeled images, got {len(kept)}")
    labels = np.asarray([samples[i].label for i in kept], dtype=np.int64)
    dataset = _InMemoryDataset(torch.stack(tensors), labels)
    seed_everything(spec.seed)
    model = build_backbone(
        BackboneConfig(
            name=spec.backbone,
            num_classes=num_classes,
            cbam=False,  # attention changes nothing about which labels are hard to memorise
            input_size=spec.input_size,
        )
    )
    # The one detector the benchmark measures too (bench/noise.py): pre-training, then O2U's
    # cyclic phase or the plain loss ranking.
    detection = find_label_noise(
        model,
        dataset,
        config=O2UConfig(
            pretrain_epochs=spec.pretrain_epochs,
            cycle_length=spec.cycle_length,
            n_cycles=spec.n_cycles,
            lr_max=spec.lr,
            lr_min=min(spec.lr, 0.001),
            fraction=spec.fraction,
            batch_size=spec.batch_size,
            device=spec.device,
            seed=spec.seed,
        ),
        method=spec.method,
        on_epoch=on_epoch,
    )
    ranking = detection.ranking
    suspects = [
        Suspect(
            image_id=samples[kept[int(index)]].image_id,
            rank=rank,
            score=float(ranking.scores[int(index)]),
        )
        for rank, index in enumerate(ranking.suspects, start=1)
    ]
    return NoiseOutcome(
        samples=len(kept),
        suspects=suspects,
        unreadable=unreadable,
        score_mean=float(np.mean(ranking.scores)),
        method=detection.method,
        function=detection.function,
    )
