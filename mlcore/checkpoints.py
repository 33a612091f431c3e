"""Checkpoints as one safetensors file: tensors plus JSON metadata in the safetensors header.

A checkpoint holds several named state dicts (e.g. ``model``, ``loss_prediction``, ``teacher``),
the config that built them, the class keys in output order and free-form metadata, the shape
torchvision's reference uses (a dict of state_dicts plus the config) without its pickle.

Loading never unpickles: a file that is a pickle, a ``torch.save`` zip archive or anything that is
not a well-formed safetensors file raises :class:`UnsafeCheckpointError` before any tensor is
read. Tensor names are ``"<state dict name>/<parameter name>"``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlcore.backbones import Classifier, build_backbone
from mlcore.config import BackboneConfig, config_from_dict, config_to_dict

__all__ = [
    "FORMAT_NAME",
    "Checkpoint",
    "UnsafeCheckpointError",
    "build_from_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "save_classifier",
]

FORMAT_NAME = "mlcore-checkpoint"
FORMAT_VERSION = "1"
_SEPARATOR = "/"
# A safetensors header is JSON; anything larger than this is not a checkpoint we wrote.
_MAX_HEADER_BYTES = 64 * 1024 * 1024


class UnsafeCheckpointError(ValueError):
    """The file is not a safetensors checkpoint (e.g. a pickle) and was not loaded."""


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` returns. ``config["backbone"]`` builds the model, if saved."""

    state_dicts: dict[str, dict[str, torch.Tensor]]
    config: dict[str, Any]
    class_keys: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | Path,
    *,
    state_dicts: dict[str, dict[str, torch.Tensor]],
    config: dict[str, Any],
    class_keys: list[str],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write one safetensors file; config, class keys and metadata must be JSON-serialisable.

    The file is written to a temporary name and renamed, so a crash never leaves half a
    checkpoint under the final name.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, state_dict in state_dicts.items():
        if not name or _SEPARATOR in name:
            raise ValueError(f"state dict name {name!r} must be non-empty and contain no '/'")
        for key, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name}/{key} is {type(value).__name__}, not a tensor")
            # clone(): safetensors refuses tensors that share storage (tied weights, views).
            tensors[f"{name}{_SEPARATOR}{key}"] = value.detach().cpu().contiguous().clone()
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "state_dict_names": json.dumps(list(state_dicts)),
        "config": json.dumps(config),
        "class_keys": json.dumps(list(class_keys)),
        "metadata": json.dumps(metadata or {}),
    }
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata=header)
    temporary.replace(path)
    return path


def _read_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors header without touching any other byte; refuse anything else."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if prefix[:1] == b"\x80" or prefix[:2] == b"PK":
            kind = "pickle" if prefix[:1] == b"\x80" else "torch.save zip archive (pickle inside)"
            raise UnsafeCheckpointError(
                f"{path} is a {kind}; only safetensors checkpoints are loaded"
            )
        if len(prefix) < 8:
            raise UnsafeCheckpointError(f"{path} is too short to be a safetensors checkpoint")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > min(_MAX_HEADER_BYTES, size - 8):
            raise UnsafeCheckpointError(f"{path} is not a safetensors checkpoint (bad header)")
        raw = handle.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnsafeCheckpointError(f"{path} is not a safetensors checkpoint: {error}") from error
    if not isinstance(header, dict):
        raise UnsafeCheckpointError(f"{path} is not a safetensors checkpoint (header not a map)")
    return header


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only, no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    header = _read_header(path)
    info = header.get("__metadata__") or {}
    if info.get("format") != FORMAT_NAME:
        raise UnsafeCheckpointError(f"{path} is a safetensors file but not an {FORMAT_NAME}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path), device=str(device))
    except SafetensorError as error:
        raise UnsafeCheckpointError(f"{path} is a corrupt safetensors file: {error}") from error
    names = json.loads(info["state_dict_names"])
    state_dicts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    for flat_key, tensor in flat.items():
        name, _, key = flat_key.partition(_SEPARATOR)
        state_dicts.setdefault(name, {})[key] = tensor
    return Checkpoint(
        state_dicts=state_dicts,
        config=json.loads(info["config"]),
        class_keys=json.loads(info["class_keys"]),
        metadata=json.loads(info["metadata"]),
    )


def save_classifier(
    path: str | Path,
    model: Classifier,
    *,
    class_keys: list[str],
    extra_state_dicts: dict[str, dict[str, torch.Tensor]] | None = None,
    extra_config: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` under "model" with its BackboneConfig under config["backbone"]."""
    if len(class_keys) != model.config.num_classes:
        raise ValueError(
            f"{len(class_keys)} class keys for a model with {model.config.num_classes} outputs"
        )
    state_dicts = {"model": model.state_dict(), **(extra_state_dicts or {})}
    config = {"backbone": config_to_dict(model.config), **(extra_config or {})}
    return save_checkpoint(
        path, state_dicts=state_dicts, config=config, class_keys=class_keys, metadata=metadata
    )


def build_from_checkpoint(
    checkpoint: Checkpoint | str | Path,
    *,
    key: str = "model",
    device: str | torch.device = "cpu",
) -> Classifier:
    """Rebuild the Classifier saved under ``key``, in eval mode on ``device``.

    The backbone is built without its ``pretrained_path`` (the checkpoint already holds the
    weights, and the original file may not exist on this machine), then loaded strictly.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    if "backbone" not in checkpoint.config:
        raise ValueError("checkpoint config has no 'backbone' entry to build a model from")
    if key not in checkpoint.state_dicts:
        available = list(checkpoint.state_dicts)
        raise KeyError(f"checkpoint has no state dict {key!r}; it has {available}")
    saved = {**checkpoint.config["backbone"], "pretrained_path": None}
    backbone = config_from_dict(BackboneConfig, saved)
    model: nn.Module = build_backbone(backbone)
    model.load_state_dict(checkpoint.state_dicts[key], strict=True)
    return model.to(device).eval()
