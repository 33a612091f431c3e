"""Frozen configuration dataclasses, presets, device resolution and seeding.

Configs are plain frozen dataclasses passed explicitly (the torchvision training reference passes
an argparse namespace through its loop; we do not, so a config can be stored with a model version
and rebuilt exactly). Nothing here reads global state: seeds and devices are explicit arguments.

Presets follow METHOD.md: stage 1 of the OHEM cascade is DenseNet161 and stage 2 is ResNet50 at
224 px; the CPU presets shrink both to 32 px networks so benchmarks run on two cores, and
``cpu_cold_start`` is the light MobileNetV2 of the cold start.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "BackboneConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "embedding_config",
    "cpu_cold_start",
    "cpu_small_stage1",
    "cpu_small_stage2",
    "full_stage1",
    "full_stage2",
    "resolve_device",
    "seed_everything",
]


def resolve_device(device: str = "auto") -> torch.device:
    """Turn "auto" into cuda when a GPU is present (else cpu); pass any other name through.

    Raises ValueError for a CUDA device requested on a machine without one, rather than failing
    later inside the first forward pass.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a torch.Generator seeded with ``seed``.

    Prefer passing the returned generator (or ``seed``) explicitly to loaders and samplers; the
    global seeding only makes weight initialisation of freshly built modules reproducible.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@dataclass(frozen=True)
class BackboneConfig:
    """Which network to build (a key of ``mlcore.backbones.BACKBONES``) and how.

    ``cbam`` toggles the CBAM blocks, so the attention ablation is one config change.
    ``pretrained_path`` is a local weights file (safetensors or a weights-only torch state dict);
    nothing is ever downloaded.
    ``frozen_stages``: how many leading stages form a frozen pretrained trunk (kept in eval mode,
    no gradients); the rest, the "head", is fine-tuned. Training can then run the trunk once per
    image and view and train the head on its cached outputs (``mlcore.pipeline``,
    docs/transfer.md). 0 trains the whole network.
    """

    name: str = "mobilenet_v2"
    num_classes: int = 2
    cbam: bool = True
    in_channels: int = 3
    input_size: int = 32
    width_mult: float = 1.0
    pretrained_path: str | None = None
    frozen_stages: int = 0

    def __post_init__(self) -> None:
        if self.frozen_stages < 0:
            raise ValueError(f"frozen_stages must be >= 0, got {self.frozen_stages}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8 pixels, got {self.input_size}")
        if self.width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {self.width_mult}")


@dataclass(frozen=True)
class TrainConfig:
    """SGD training settings (torchvision reference defaults scaled to small data)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


# Measured on the shared 2-core machine (one torch thread, 32 px Fashion-MNIST, strong
# augmentation, batch 64): small_cnn x1.0 about 180 training images/s, x0.5 about 210,
# mobilenet_v2 x0.5 about 70. The CPU cascade therefore uses the small CNN at two widths.


def cpu_small_stage1(num_classes: int = 2, *, cbam: bool = True) -> BackboneConfig:
    """Stage 1 for CPU benchmarks: the small CNN at full width, 32 px (stands in for DenseNet)."""
    return BackboneConfig(name="small_cnn", num_classes=num_classes, cbam=cbam, input_size=32)


def cpu_small_stage2(num_classes: int = 2, *, cbam: bool = True) -> BackboneConfig:
    """Stage 2 for CPU benchmarks: the small CNN at half width (stands in for ResNet50)."""
    return BackboneConfig(
        name="small_cnn", num_classes=num_classes, cbam=cbam, input_size=32, width_mult=0.5
    )


def cpu_cold_start(num_classes: int = 2, *, cbam: bool = True) -> BackboneConfig:
    """The light cold-start network of METHOD.md on CPU: MobileNetV2 at half width, 32 px."""
    return BackboneConfig(
        name="mobilenet_v2", num_classes=num_classes, cbam=cbam, input_size=32, width_mult=0.5
    )


def embedding_config() -> BackboneConfig:
    """EfficientNet-Lite0 with its offline ImageNet weights at 224 px, for recall embeddings.

    ``cbam=False``: an untrained attention block would perturb the pretrained features.
    """
    return BackboneConfig(
        name="efficientnet_lite0", cbam=False, input_size=224, pretrained_path="imagenet"
    )


def full_stage1(num_classes: int = 2, *, cbam: bool = True) -> BackboneConfig:
    """Stage 1 of the production cascade: DenseNet161 at 224 px (METHOD.md, OHEM + cascade)."""
    return BackboneConfig(name="densenet161", num_classes=num_classes, cbam=cbam, input_size=224)


def full_stage2(num_classes: int = 2, *, cbam: bool = True) -> BackboneConfig:
    """Stage 2 of the production cascade: ResNet50 at 224 px, trained on stage 1's hard cases."""
    return BackboneConfig(name="resnet50", num_classes=num_classes, cbam=cbam, input_size=224)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (for checkpoints and model versions)."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild ``cls`` from ``values``, ignoring unknown keys so old checkpoints still load."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})
