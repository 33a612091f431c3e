"""The scoring pipeline: Image rows -> storage -> decode -> batches -> cascade -> score records.

Per image: stage1 = p1 (stage-1 probability of the positive class), stage2 = p2, score =
min(p1, p2) (the soft AND used for ranking), decision = p1 >= t1 AND p2 >= t2 (the cascade of
METHOD.md), predicted_loss = the loss-prediction module's output on stage 1's features (Yoo &
Kweon 2019) when the version has one, else None.

Everything runs under `torch.inference_mode()`; decoding overlaps the forward passes through the
DataLoader's worker processes (`num_workers`, from settings), which is how the pipeline keeps up
with a bare `model(x)` loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from labeling.ml.cascade import LoadedCascade
from labeling.ml.datasets import ImageRow, scoring_loader
from mlcore.cascade import cascade_decision
from mlcore.pipeline import cascade_batch_scores


@dataclass(frozen=True)
class ScoreRecord:
    image_id: int
    stage1: float
    stage2: float
    score: float
    decision: bool
    predicted_loss: float | None


@dataclass
class ScoringOutcome:
    records: list[ScoreRecord] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (image id, error text)


def cascade_scores(
    cascade: LoadedCascade, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """batch: (N, 3, S, S) normalised, on the cascade's device -> calibrated p1 (N,), p2 (N,)
    and the predicted loss (N,) (None without an LP module), by the pipeline's own function
    (`mlcore.pipeline.cascade_batch_scores`: a shared frozen trunk runs once)."""
    return cascade_batch_scores(
        cascade.stage1,
        cascade.stage2,
        batch,
        temperatures=cascade.temperatures,
        positive_index=cascade.positive_index,
        loss_prediction=cascade.loss_prediction,
    )


def score_rows(
    cascade: LoadedCascade,
    rows: Sequence[ImageRow],
    *,
    batch_size: int,
    num_workers: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> ScoringOutcome:
    """Score `rows` in batches. `on_batch(done, total)` runs after each batch (progress, and
    the place a cancel request raises)."""
    outcome = ScoringOutcome()
    loader = scoring_loader(
        rows,
        input_size=cascade.input_size,
        batch_size=batch_size,
        num_workers=num_workers,
        device=cascade.device,
    )
    done = 0
    non_blocking = cascade.device.type == "cuda"
    for images, image_ids, ok, error_texts in loader:
        ids = image_ids.tolist()
        ok_list = ok.tolist()
        for image_id, good, text in zip(ids, ok_list, error_texts):
            if not good:
                outcome.errors.append((int(image_id), text))
        if any(ok_list):
            keep = ok.nonzero().reshape(-1)
            batch = images.index_select(0, keep) if not all(ok_list) else images
            batch = batch.to(cascade.device, non_blocking=non_blocking)
            p1, p2, loss = cascade_scores(cascade, batch)
            p1_list, p2_list = p1.cpu().tolist(), p2.cpu().tolist()
            loss_list = loss.cpu().tolist() if loss is not None else [None] * len(p1_list)
            kept_ids = [ids[i] for i in keep.tolist()]
            decisions = cascade_decision(
                np.asarray(p1_list), np.asarray(p2_list), thresholds=cascade.thresholds
            ).tolist()
            for image_id, a, b, predicted, decision in zip(
                kept_ids, p1_list, p2_list, loss_list, decisions
            ):
                outcome.records.append(
                    ScoreRecord(
                        image_id=int(image_id),
                        stage1=a,
                        stage2=b,
                        score=min(a, b),
                        decision=bool(decision),
                        predicted_loss=predicted,
                    )
                )
        done += len(ids)
        if on_batch is not None:
            on_batch(done, len(rows))
    return outcome
