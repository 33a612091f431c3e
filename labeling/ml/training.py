"""Training the OHEM cascade on a project's labels: Image rows in, networks and metrics out.

The service (`labeling.services.training`) decides WHICH images train and validate; this module
only turns those rows into datasets that read Django storage and calls the pipeline's one
training function, `mlcore.pipeline.fit_cascade` (the function the benchmarks call too): preset
networks, cached frozen-trunk views, OHEM cascade, Mean Teacher when on, temperature scaling and
thresholds on the frozen validation split, the loss-prediction module. No training loop, metric
or dataset variant lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.files.storage import Storage, default_storage

from labeling.ml.datasets import ImageRow
from mlcore.backbones import Classifier
from mlcore.data import ImageDataset, ImageRecord
from mlcore.loss_prediction import LossPredictionModule
from mlcore.pipeline import LP_HIDDEN, POSITIVE_INDEX, fit_cascade, pr_curve_png
from mlcore.pipeline import CascadeSpec as CascadeTrainingSpec
from mlcore.presets import PRESETS
from mlcore.resume import TrainingState, load_training_state, save_training_state

__all__ = [
    "LP_HIDDEN",
    "POSITIVE_INDEX",
    "PRESETS",
    "CascadeTrainingOutcome",
    "CascadeTrainingSpec",
    "LabeledRow",
    "read_training_state",
    "storage_dataset",
    "train_cascade_on_rows",
    "write_training_state",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabeledRow:
    image_id: int
    name: str  # storage name of the file
    label: int  # 1 = the schema's positive class, 0 = any other class


@dataclass
class CascadeTrainingOutcome:
    stage1: Classifier
    stage2: Classifier
    loss_prediction: LossPredictionModule
    thresholds: tuple[float, float]
    temperatures: tuple[float, float]
    metrics: dict[str, Any]
    pr_curve_png: bytes
    history: list[dict[str, float]]
    unreadable: list[int] = field(default_factory=list)  # image ids whose files did not decode
    seconds: float = 0.0


class _StorageReader:
    """A picklable callable returning a stored file's bytes (mlcore decodes it)."""

    def __init__(self, name: str, storage: Storage) -> None:
        self.name = name
        self.storage = storage
        self.description = name

    def __call__(self) -> bytes:
        with self.storage.open(self.name, "rb") as handle:
            return handle.read()


def storage_dataset(
    rows: Sequence[ImageRow], labels: Sequence[int] | None = None, *, storage: Storage | None = None
) -> ImageDataset:
    """A raw mlcore dataset over stored files: item i = (image, label or -1, i)."""
    storage = storage or default_storage
    labels = list(labels) if labels is not None else [None] * len(rows)
    return ImageDataset(
        [
            ImageRecord(source=_StorageReader(row.name, storage), label=label)
            for row, label in zip(rows, labels)
        ]
    )


def _rows_to_json(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "train": [[r.image_id, r.name, r.label] for r in data["train"]],
        "validation": [[r.image_id, r.name, r.label] for r in data["validation"]],
        "unlabeled": [[r.image_id, r.name] for r in data["unlabeled"]],
        "doubtful": sorted(data["doubtful"]),
        "snapshot": data["snapshot"],
    }


def _rows_from_json(saved: dict[str, Any]) -> dict[str, Any]:
    return {
        "train": [LabeledRow(int(i), str(n), int(y)) for i, n, y in saved["train"]],
        "validation": [LabeledRow(int(i), str(n), int(y)) for i, n, y in saved["validation"]],
        "unlabeled": [ImageRow(int(i), str(n)) for i, n in saved["unlabeled"]],
        "doubtful": {int(i) for i in saved["doubtful"]},
        "snapshot": dict(saved["snapshot"]),
    }


def write_training_state(
    path: Path, state: TrainingState, *, params: dict[str, Any], data: dict[str, Any]
) -> None:
    """Save a training job's state after an epoch, with the job's parameters and the rows it
    trains on: a resumed attempt must train on the same rows, not on labels added since."""
    save_training_state(path, state, metadata={"params": params, "data": _rows_to_json(data)})


def read_training_state(
    path: Path, *, params: dict[str, Any]
) -> tuple[TrainingState, dict[str, Any]] | None:
    """(state, training rows) saved by an interrupted attempt of the job with these `params`,
    or None when there is none usable (absent, damaged, or saved for other parameters)."""
    if not path.is_file():
        return None
    try:
        state, metadata = load_training_state(path)
        if metadata.get("params") != params:
            return None
        return state, _rows_from_json(metadata["data"])
    except (ValueError, KeyError, TypeError, OSError) as error:
        logger.warning("training state %s not usable (%s); training from the start", path, error)
        return None


def train_cascade_on_rows(
    *,
    train_rows: Sequence[LabeledRow],
    unlabeled_rows: Sequence[ImageRow],
    validation_rows: Sequence[LabeledRow],
    spec: CascadeTrainingSpec,
    doubtful_ids: set[int] | frozenset[int] = frozenset(),
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_stage: Callable[[str, int, int], None] | None = None,
    title: str = "validation",
    resume: TrainingState | None = None,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
) -> CascadeTrainingOutcome:
    """Train with `mlcore.pipeline.fit_cascade`. `doubtful_ids`: training images whose label is
    under noise review; they train stage 1 but never reach stage 2 as hard examples.

    `on_epoch(epoch, metrics)` runs after each epoch and `on_stage(name, done, total)` while the
    trunk encodes images; an exception either raises (a cancelled job) propagates.
    `on_checkpoint(state)` receives the training state after each epoch and `resume` goes on
    from one (`mlcore.pipeline.fit_cascade`; see `write_training_state`)."""
    train = storage_dataset(
        [ImageRow(r.image_id, r.name) for r in train_rows], [r.label for r in train_rows]
    )
    validation = storage_dataset(
        [ImageRow(r.image_id, r.name) for r in validation_rows],
        [r.label for r in validation_rows],
    )
    unlabeled = storage_dataset(unlabeled_rows) if unlabeled_rows else None
    exclude = [i for i, row in enumerate(train_rows) if row.image_id in doubtful_ids]
    fit = fit_cascade(
        train,
        validation,
        spec=spec,
        unlabeled=unlabeled,
        stage2_exclude=exclude or None,
        on_epoch=on_epoch,
        on_stage=on_stage,
        resume=resume,
        on_checkpoint=on_checkpoint,
    )
    s1, s2, y = fit.validation_scores
    unreadable = sorted(
        {train_rows[i].image_id for i in fit.unreadable_train}
        | {validation_rows[i].image_id for i in fit.unreadable_validation}
    )
    return CascadeTrainingOutcome(
        stage1=fit.stage1,
        stage2=fit.stage2,
        loss_prediction=fit.loss_prediction,
        thresholds=fit.thresholds,
        temperatures=fit.temperatures,
        metrics=fit.metrics,
        pr_curve_png=pr_curve_png(s1, s2, y, title=title),
        history=fit.history,
        unreadable=unreadable,
        seconds=fit.seconds,
    )
