"""The cascade checkpoint format, and ModelVersion <-> loaded networks.

A cascade checkpoint is one safetensors file written by `mlcore.checkpoints.save_checkpoint`
(tensors plus JSON config in the header; loading never unpickles anything):

    state_dicts = {
        "stage1": <state dict of the stage-1 Classifier>,
        "stage2": <state dict of the stage-2 Classifier>,
        "loss_prediction": <state dict of the LossPredictionModule>,   # optional
    }
    config = {
        "format": "imageclean.cascade/1",
        "stage1": <BackboneConfig as a dict>,      # rebuilt with mlcore.config.config_from_dict
        "stage2": <BackboneConfig as a dict>,
        "loss_prediction": {"hidden": 128} | None, # LP module options; taps stage 1's features
        "input_size": 32,                          # pixels, square; both stages see the same view
        "thresholds": [t1, t2],                    # positive when p1 >= t1 AND p2 >= t2
        "temperatures": [T1, T2],                  # p = softmax(logits / T) (calibration)
        "positive_index": 1,                       # column of the positive class in the logits
    }
    class_keys = ["normal", "disgusting"]          # the project's class keys, in logit order
    metadata = {...}                               # free-form: training figures, data snapshot

The file lives in Django storage (ModelVersion.checkpoint), so S3 works the same as local disk:
a local copy is made when the storage has no local path.

Scoring follows the cascade of METHOD.md: stage 1 recalls, stage 2 re-checks; the decision is
stage1 AND stage2, and the ranking score is min(p1, p2) (the AND of two probabilities, soft).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from torch import nn

from labeling.models import ModelVersion, Project
from mlcore import checkpoints as mlcore_checkpoints
from mlcore.backbones import Classifier, build_backbone
from mlcore.config import BackboneConfig, config_from_dict, config_to_dict, resolve_device

CASCADE_FORMAT = "imageclean.cascade/1"


class CheckpointError(ValueError):
    """A model version whose checkpoint is missing, unreadable or not a cascade."""


@dataclass
class LoadedCascade:
    """Both stages (and the LP module when the version has one), in eval mode on `device`."""

    stage1: Classifier
    stage2: Classifier
    loss_prediction: nn.Module | None
    input_size: int
    thresholds: tuple[float, float]
    positive_index: int
    class_keys: list[str]
    device: torch.device
    model_version_id: int | None = None
    temperatures: tuple[float, float] = (1.0, 1.0)


def _build_loss_prediction(stage1: Classifier, options: Mapping[str, Any]) -> nn.Module:
    from mlcore.loss_prediction import LossPredictionModule

    return LossPredictionModule(list(stage1.feature_channels), **dict(options))


def cascade_config(
    *,
    stage1: BackboneConfig,
    stage2: BackboneConfig,
    thresholds: Sequence[float],
    positive_index: int,
    loss_prediction: Mapping[str, Any] | None = None,
    temperatures: Sequence[float] = (1.0, 1.0),
) -> dict:
    """The `config` part of a cascade checkpoint (see the module docstring)."""
    if len(thresholds) != 2 or not all(0.0 <= float(t) <= 1.0 for t in thresholds):
        raise ValueError(f"thresholds must be two probabilities, got {thresholds!r}")
    if stage1.input_size != stage2.input_size:
        raise ValueError("both stages must take the same input size")
    return {
        "format": CASCADE_FORMAT,
        "stage1": config_to_dict(stage1),
        "stage2": config_to_dict(stage2),
        "loss_prediction": dict(loss_prediction) if loss_prediction is not None else None,
        "input_size": int(stage1.input_size),
        "thresholds": [float(t) for t in thresholds],
        "temperatures": [float(t) for t in temperatures],
        "positive_index": int(positive_index),
    }


def save_cascade(
    *,
    project: Project,
    name: str,
    stage1: Classifier,
    stage2: Classifier,
    thresholds: Sequence[float],
    positive_index: int,
    temperatures: Sequence[float] = (1.0, 1.0),
    loss_prediction: nn.Module | None = None,
    loss_prediction_options: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    created_by=None,
    status: str = ModelVersion.Status.READY,
    data_snapshot: Mapping[str, Any] | None = None,
    training_seconds: float | None = None,
    pr_curve_png: bytes | None = None,
    on_saved: Callable[[ModelVersion], None] | None = None,
) -> ModelVersion:
    """Write the cascade checkpoint into storage and record it as a ModelVersion.

    The row is inserted once, complete: with its data snapshot (which names the job that made
    it, so a retried job finds it), training time and PR curve, and `on_saved(version)` runs in
    the same transaction (the training job links itself to the version there). A worker killed
    at any point leaves either no version or a whole one, never a READY version its job cannot
    find (issue 8, item 9)."""
    if loss_prediction is not None and loss_prediction_options is None:
        loss_prediction_options = {}
    config = cascade_config(
        stage1=stage1.config,
        stage2=stage2.config,
        thresholds=thresholds,
        positive_index=positive_index,
        loss_prediction=loss_prediction_options if loss_prediction is not None else None,
        temperatures=temperatures,
    )
    state_dicts = {"stage1": stage1.state_dict(), "stage2": stage2.state_dict()}
    if loss_prediction is not None:
        state_dicts["loss_prediction"] = loss_prediction.state_dict()
    class_keys = list(project.class_keys)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cascade.safetensors"
        mlcore_checkpoints.save_checkpoint(
            path,
            state_dicts=state_dicts,
            config=config,
            class_keys=class_keys,
            metadata=dict(metadata or {}),
        )
        with transaction.atomic():
            version = ModelVersion(
                project=project,
                name=name,
                status=status,
                config=config,
                class_keys=class_keys,
                metrics=dict(metrics or {}),
                created_by=created_by,
                data_snapshot=dict(data_snapshot or {}),
                training_seconds=training_seconds,
            )
            version.full_clean(exclude=["checkpoint", "pr_curve"])
            with path.open("rb") as handle:
                version.checkpoint.save(f"{name}-cascade.safetensors", File(handle), save=False)
            if pr_curve_png is not None:
                version.pr_curve.save(f"{name}-pr.png", ContentFile(pr_curve_png), save=False)
            version.save()
            if on_saved is not None:
                on_saved(version)
    return version


def _local_path(name: str, tmp: str) -> Path:
    """A local filesystem path for a storage name (a copy when the storage is remote)."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        local = Path(tmp) / Path(name).name
        with default_storage.open(name, "rb") as source, local.open("wb") as target:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                target.write(chunk)
        return local


def _read_checkpoint(path: Path) -> tuple[dict, dict, list[str]]:
    loaded = mlcore_checkpoints.load_checkpoint(path)
    return loaded.state_dicts, loaded.config, list(loaded.class_keys)


def load_cascade(model_version: ModelVersion, *, device: str = "auto") -> LoadedCascade:
    """Rebuild the networks of `model_version` from its checkpoint, weights only, in eval mode."""
    if not model_version.checkpoint:
        raise CheckpointError(f"model version {model_version.pk} has no checkpoint file")
    resolved = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _local_path(model_version.checkpoint.name, tmp)
            state_dicts, config, class_keys = _read_checkpoint(path)
        except (OSError, KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"cannot read the checkpoint of model version {model_version.pk}: {error}"
            ) from error
    if config.get("format") != CASCADE_FORMAT:
        raise CheckpointError(
            f"model version {model_version.pk} is not a cascade checkpoint "
            f"(format {config.get('format')!r}, expected {CASCADE_FORMAT!r})"
        )
    # Built without `pretrained_path`: the checkpoint holds the weights, and the original file
    # may not exist on this machine.
    stage1 = build_backbone(
        config_from_dict(BackboneConfig, {**config["stage1"], "pretrained_path": None})
    )
    stage2 = build_backbone(
        config_from_dict(BackboneConfig, {**config["stage2"], "pretrained_path": None})
    )
    stage1.load_state_dict(state_dicts["stage1"])
    stage2.load_state_dict(state_dicts["stage2"])
    loss_prediction = None
    if "loss_prediction" in state_dicts:
        loss_prediction = _build_loss_prediction(stage1, config.get("loss_prediction") or {})
        loss_prediction.load_state_dict(state_dicts["loss_prediction"])
        loss_prediction.to(resolved).eval()
    t1, t2 = (float(t) for t in config["thresholds"])
    # Versions saved before calibration existed carry no temperatures: 1.0 leaves them as they were.
    temp1, temp2 = (float(t) for t in config.get("temperatures") or (1.0, 1.0))
    return LoadedCascade(
        stage1=stage1.to(resolved).eval(),
        stage2=stage2.to(resolved).eval(),
        loss_prediction=loss_prediction,
        input_size=int(config["input_size"]),
        thresholds=(t1, t2),
        positive_index=int(config["positive_index"]),
        class_keys=class_keys or list(model_version.class_keys),
        device=resolved,
        model_version_id=model_version.pk,
        temperatures=(temp1, temp2),
    )


_CACHE: dict[tuple[int, str, str], LoadedCascade] = {}


def load_cascade_cached(model_version: ModelVersion, *, device: str = "auto") -> LoadedCascade:
    """`load_cascade`, keeping the last version loaded in this process: every shard of a
    scoring job uses the same networks, and a DenseNet takes seconds to rebuild."""
    key = (model_version.pk, model_version.checkpoint.name, str(resolve_device(device)))
    if key not in _CACHE:
        _CACHE.clear()  # one version at a time: a worker's memory holds one cascade
        _CACHE[key] = load_cascade(model_version, device=device)
    return _CACHE[key]
