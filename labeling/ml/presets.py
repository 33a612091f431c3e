"""The cascade presets as the web app sees them, from their one declaration in `mlcore.presets`.

Torch-free on purpose: the job form and parameter validation run in web processes that never
load PyTorch (mlcore.presets is plain Python).
"""

from __future__ import annotations

from mlcore.presets import DEFAULT_PRESET, PRESETS

__all__ = ["DEFAULT_PRESET", "PRESETS", "preset_defaults"]


def preset_defaults(name: str) -> dict[str, object]:
    """{preset: default of `name`} for a training setting that depends on the preset."""
    return {preset: getattr(defaults, name) for preset, defaults in PRESETS.items()}
