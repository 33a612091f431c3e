"""One image's bytes in, the active cascade's per-stage scores and decision out.

The prediction endpoint calls this after the import validation has accepted the bytes; the
networks come from `load_cascade_cached` (one version kept per process), so a stream of requests
does not rebuild them each time. Same arithmetic as pool scoring (`labeling.ml.scoring`):
p1, p2 are the stages' positive-class probabilities, score = min(p1, p2), decision = p1 >= t1
AND p2 >= t2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labeling.ml.cascade import load_cascade_cached
from labeling.ml.scoring import cascade_scores
from labeling.models import ModelVersion
from mlcore.augment import eval_transform
from mlcore.data import decode_image


@dataclass(frozen=True)
class Prediction:
    model_version_id: int
    stage1: float
    stage2: float
    score: float
    decision: bool
    thresholds: tuple[float, float]
    positive_class: str


def predict_image(
    *, model_version: ModelVersion, content: bytes, positive_class: str, device: str = "auto"
) -> Prediction:
    cascade = load_cascade_cached(model_version, device=device)
    tensor = eval_transform(cascade.input_size)(decode_image(content)).unsqueeze(0)
    with torch.inference_mode():
        p1, p2, _ = cascade_scores(cascade, tensor.to(cascade.device))
    s1, s2 = float(p1[0]), float(p2[0])
    t1, t2 = cascade.thresholds
    return Prediction(
        model_version_id=model_version.pk,
        stage1=s1,
        stage2=s2,
        score=min(s1, s2),
        decision=bool(s1 >= t1 and s2 >= t2),
        thresholds=(t1, t2),
        positive_class=positive_class,
    )
