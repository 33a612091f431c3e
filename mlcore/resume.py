"""Training state at an epoch boundary, saved so that a killed training run resumes there.

A training job whose worker dies (kill -9, a lost machine) is delivered again; without this it
would train from the first epoch. :func:`mlcore.cascade.train_cascade` hands a
:class:`TrainingState` to its ``on_checkpoint`` callback after every epoch and accepts one back
as ``resume``: the networks, both optimizers and learning-rate schedules, the random number
generators (the global one, which draws the cached views, and the loader's, which shuffles) and
the history. Resuming from it gives the same networks as a run that was never interrupted.

The file is the project's safetensors checkpoint format (:mod:`mlcore.checkpoints`): tensors
plus JSON, written to a temporary name and renamed, and loaded without unpickling anything.
Optimizer states are split into their tensors (momentum buffers) and the JSON rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mlcore.checkpoints import load_checkpoint, save_checkpoint

__all__ = ["TrainingState", "load_training_state", "save_training_state"]

_KIND = "mlcore-training-state"


@dataclass
class TrainingState:
    """Everything a training loop needs to go on after ``epochs_done`` epochs.

    ``modules``: state dicts by name (e.g. stage1, stage2); ``optimizers`` / ``schedulers``:
    their ``state_dict()`` by name; ``rng``: generator states (uint8 tensors) by name;
    ``history``: the per-epoch metrics so far; ``extra``: JSON-serialisable values the caller
    keeps with the state (e.g. the epoch selection of :func:`mlcore.pipeline.fit_cascade`).
    """

    epochs_done: int
    modules: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedulers: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state_dict -> (its tensors by "param.key", the JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for param, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}.{key}"] = value
            else:
                plain.setdefault(str(param), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        param, key = name.split(".", 1)
        state.setdefault(int(param), {})[key] = value
    for param, values in rest["plain"].items():
        state.setdefault(int(param), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_training_state(
    path: str | Path, state: TrainingState, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``state`` (and JSON ``metadata``, e.g. what the state was trained on) atomically."""
    state_dicts: dict[str, dict[str, torch.Tensor]] = {}
    for name, module_state in state.modules.items():
        state_dicts[f"module.{name}"] = module_state
    optimizer_rest: dict[str, Any] = {}
    for name, optimizer_state in state.optimizers.items():
        tensors, rest = _split_optimizer(optimizer_state)
        state_dicts[f"optimizer.{name}"] = tensors
        optimizer_rest[name] = rest
    state_dicts["rng"] = dict(state.rng)
    config = {
        "kind": _KIND,
        "epochs_done": state.epochs_done,
        "optimizers": optimizer_rest,
        "schedulers": state.schedulers,
        "history": state.history,
        "extra": state.extra,
    }
    return save_checkpoint(
        path, state_dicts=state_dicts, config=config, class_keys=[], metadata=metadata
    )


def load_training_state(path: str | Path) -> tuple[TrainingState, dict[str, Any]]:
    """Read a state written by :func:`save_training_state`: (state, metadata). Raises
    ``ValueError`` for a file that is not one (``UnsafeCheckpointError`` for a pickle)."""
    loaded = load_checkpoint(path)
    config = loaded.config
    if config.get("kind") != _KIND:
        raise ValueError(f"{path} is not a training state")
    modules: dict[str, dict[str, torch.Tensor]] = {}
    optimizer_tensors: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensors in loaded.state_dicts.items():
        if name.startswith("module."):
            modules[name.removeprefix("module.")] = tensors
        elif name.startswith("optimizer."):
            optimizer_tensors[name.removeprefix("optimizer.")] = tensors
    optimizers = {
        name: _join_optimizer(optimizer_tensors.get(name, {}), rest)
        for name, rest in config["optimizers"].items()
    }
    state = TrainingState(
        epochs_done=int(config["epochs_done"]),
        modules=modules,
        optimizers=optimizers,
        schedulers=config["schedulers"],
        rng=loaded.state_dicts.get("rng", {}),
        history=config["history"],
        extra=config["extra"],
    )
    return state, loaded.metadata
