"""The cascade presets: what each one builds, its default training settings, and the weight files.

Plain Python, no torch import, so the web process can validate a job's parameters (through
``labeling.ml.presets``) without loading PyTorch. :mod:`mlcore.pipeline` turns a preset into
networks.

- ``cpu_transfer`` (the default): both stages are EfficientNet-Lite0 started from its offline
  ImageNet weights, the first three stages frozen (a trunk run once per image and view, its
  output cached) and the last stage with CBAM fine-tuned, at 112 px. Minutes on two CPU cores.
  Why these choices: docs/transfer.md.
- ``cpu_small`` / ``cpu_tiny``: small CNNs trained from scratch at 32 / 24 px. They learn little
  from a few dozen positives (docs/transfer.md); kept for fast tests and as the comparison.
- ``full``: the production cascade of METHOD.md, DenseNet161 (stage 1) + ResNet50 (stage 2) at
  224 px, fine-tuned whole from torchvision's ImageNet weight files, which the user places in
  the weights folder (see :data:`FULL_WEIGHT_FILES`; checked by hash, never downloaded). When
  they are absent the job falls back to ``cpu_transfer``'s networks at 224 px and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_PRESET",
    "FULL_WEIGHT_FILES",
    "PRESETS",
    "PresetDefaults",
    "WEIGHTS_DIR_ENV",
]


@dataclass(frozen=True)
class PresetDefaults:
    """Training defaults of one preset (every value can be overridden per job)."""

    input_size: int
    epochs: int
    lr: float
    mean_teacher: bool
    pretrained: bool


PRESETS: dict[str, PresetDefaults] = {
    # Mean Teacher is off by default where the semi-supervised benchmark did not show a gain
    # (docs/benchmarks.md, "semisup"); it stays one parameter away.
    "cpu_transfer": PresetDefaults(
        input_size=112, epochs=6, lr=0.01, mean_teacher=False, pretrained=True
    ),
    "cpu_small": PresetDefaults(
        input_size=32, epochs=3, lr=0.05, mean_teacher=True, pretrained=False
    ),
    "cpu_tiny": PresetDefaults(
        input_size=24, epochs=3, lr=0.05, mean_teacher=True, pretrained=False
    ),
    "full": PresetDefaults(input_size=224, epochs=10, lr=0.01, mean_teacher=True, pretrained=True),
}
DEFAULT_PRESET = "cpu_transfer"

# torchvision's ImageNet files for the full preset: name -> (file name, SHA-256 prefix). The
# prefix is the one torchvision puts in the file name, the first 8 hex digits of the file's
# SHA-256, so a truncated or substituted file is refused.
FULL_WEIGHT_FILES: dict[str, tuple[str, str]] = {
    "densenet161": ("densenet161-8d451a50.pth", "8d451a50"),
    "resnet50": ("resnet50-0676ba61.pth", "0676ba61"),
}
# Where the full preset looks for those files when the caller gives no folder.
WEIGHTS_DIR_ENV = "IMAGECLEAN_WEIGHTS_DIR"
