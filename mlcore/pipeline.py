"""The operations the loop performs, one function each, shared by the jobs and the benchmarks.

The Celery jobs reach these through ``labeling.ml`` (which only turns database rows and storage
into datasets) and every benchmark under ``bench/`` calls the same functions, so a figure in
docs/benchmarks.md measures what the product runs. Each result records the function that
produced it (``function``), and a test checks that a job and its benchmark name the same one.

Datasets given to these functions are *raw*: item ``i`` is ``(image, label, i)`` with the image
as a Pillow image or a uint8/float tensor (C, H, W), label 1 (the positive class), 0 (any other)
or -1 (unlabeled), and no transform: the pipeline applies the preset's views itself. An item
whose image cannot be decoded (``ImageDecodeError``, ``OSError``) is dropped from training and
evaluation and reported in the result's ``unreadable`` indices; one bad file never stops a job.

Frozen-trunk presets (``cpu_transfer``; docs/transfer.md): the trunk of an ImageNet-pretrained
network runs ONCE per image and view (:func:`encode_images`), and the heads of both cascade
stages train on those cached outputs with the method unchanged: OHEM passes the hardest B of
each batch of A to stage 2, Mean Teacher (when on) gives student and teacher two different
cached views. Views are random crops, flips and colour distortions drawn from a generator
seeded by (seed, view, image index), so a cache can be shared by several fits of the same images
(the benchmarks' seeds) without changing any result.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mlcore.augment import eval_transform, strong_transform, view_transform, weak_transform
from mlcore.backbones import IMAGENET_WEIGHTS, Classifier, HeadOnly, build_backbone
from mlcore.calibration import apply_temperature, fit_temperature
from mlcore.cascade import CascadeConfig, cascade_decision, choose_thresholds, train_cascade
from mlcore.config import (
    BackboneConfig,
    TrainConfig,
    config_to_dict,
    resolve_device,
    seed_everything,
)
from mlcore.data import ImageDecodeError, TwoViews, make_loader
from mlcore.evaluation import (
    DEFAULT_CONFIDENCE,
    DEFAULT_FOLDS,
    INTERVAL_METHOD,
    crossfit_cascade,
    rates_with_intervals,
)
from mlcore.loss_prediction import LossPredictionModule, margin_ranking_loss
from mlcore.mean_teacher import MeanTeacherConfig, make_teacher
from mlcore.metrics import (
    average_precision,
    plot_pr_curves,
    pr_curve,
    threshold_for_precision,
)
from mlcore.presets import DEFAULT_PRESET, FULL_WEIGHT_FILES, PRESETS, WEIGHTS_DIR_ENV
from mlcore.resume import TrainingState

if TYPE_CHECKING:
    from mlcore.probe import LinearProbe

__all__ = [
    "CascadeFit",
    "CascadeSpec",
    "EncodedImages",
    "cascade_backbones",
    "cascade_batch_scores",
    "encode_images",
    "evaluate_cascade",
    "fit_cascade",
    "fit_loss_prediction",
    "fit_probe_baseline",
    "initialise_from_probe",
    "predict_cascade",
    "pretrained_embeddings",
    "probe_baseline",
    "probe_baseline_scores",
]

POSITIVE_INDEX = 1
LP_HIDDEN = 64
FALLBACK_THRESHOLDS = (0.5, 0.5)
# Lite0 at 112 px: stem + blocks up to stride 16 frozen, the stride-32 stage (with CBAM after
# the head convolution) fine-tuned. docs/transfer.md has the measurements behind the choice.
TRANSFER_FROZEN_STAGES = 3


def _records_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """Stamp the result with the dotted name of the function that really ran (``function``,
    and ``metrics["pipeline"]`` when the result has metrics): jobs store it, benchmarks write
    it into their results, and a test checks that both name the same function."""
    name = f"{function.__module__}.{function.__qualname__}"

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        result.function = name
        if isinstance(getattr(result, "metrics", None), dict):
            result.metrics["pipeline"] = name
        return result

    return wrapper


# --------------------------------------------------------------------------------------------
# What to build
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CascadeSpec:
    """A cascade training run: the preset and its overrides (None = the preset's default).

    ``views``: cached augmented views per labeled image on frozen-trunk presets (view 0 is the
    plain resize); ``weights_dir``: where the full preset finds its ImageNet files (default: the
    ``IMAGECLEAN_WEIGHTS_DIR`` environment variable).
    """

    preset: str = DEFAULT_PRESET
    input_size: int | None = None
    cbam: bool = True
    epochs: int | None = None
    batch_a: int = 32
    hard_b: int = 8
    lr: float | None = None
    mean_teacher: bool | None = None
    target_precision: float = 0.95
    lp_epochs: int = 3
    seed: int = 0
    device: str = "auto"
    views: int = 4
    weights_dir: str | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        if not 1 <= self.hard_b <= self.batch_a:
            raise ValueError("need 1 <= hard_b <= batch_a")
        if self.views < 1:
            raise ValueError("views must be >= 1")

    def resolved(self) -> CascadeSpec:
        """This spec with every None replaced by the preset's default."""
        defaults = PRESETS[self.preset]
        return replace(
            self,
            input_size=self.input_size or defaults.input_size,
            epochs=self.epochs if self.epochs is not None else defaults.epochs,
            lr=self.lr if self.lr is not None else defaults.lr,
            mean_teacher=(
                self.mean_teacher if self.mean_teacher is not None else defaults.mean_teacher
            ),
        )


def _transfer_configs(size: int, cbam: bool) -> tuple[BackboneConfig, BackboneConfig]:
    stage = BackboneConfig(
        name="efficientnet_lite0",
        num_classes=2,
        cbam=cbam,
        input_size=size,
        pretrained_path=IMAGENET_WEIGHTS,
        frozen_stages=TRANSFER_FROZEN_STAGES,
    )
    return stage, stage


def _checked_weight_file(folder: Path, name: str) -> tuple[Path | None, str]:
    """(path, "") when the torchvision file for ``name`` is there with the right hash, else
    (None, why)."""
    import hashlib

    filename, prefix = FULL_WEIGHT_FILES[name]
    path = folder / filename
    if not path.is_file():
        return None, f"{filename} not found in {folder}"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        return None, f"{filename} in {folder} does not match its SHA-256 prefix {prefix}"
    return path, ""


def cascade_backbones(spec: CascadeSpec) -> tuple[BackboneConfig, BackboneConfig, dict[str, Any]]:
    """The two stages' configs for ``spec`` and a description of what they start from.

    The full preset needs torchvision's ImageNet files for DenseNet161 and ResNet50 in the
    weights folder; without them (or with a file whose hash is wrong) it falls back to the
    transfer preset's EfficientNet-Lite0 networks at the same input size, and the description
    says why. Nothing is ever downloaded.
    """
    spec = spec.resolved()
    size = int(spec.input_size)  # type: ignore[arg-type]
    if spec.preset == "cpu_transfer":
        first, second = _transfer_configs(size, spec.cbam)
        origin = {
            "stage1": "EfficientNet-Lite0, ImageNet weights (offline package), trunk frozen",
            "stage2": "EfficientNet-Lite0, ImageNet weights (offline package), trunk frozen",
            "fallback": None,
        }
        return first, second, origin
    if spec.preset == "full":
        folder = Path(spec.weights_dir or os.environ.get(WEIGHTS_DIR_ENV, "var/weights"))
        paths, problems = {}, []
        for name in ("densenet161", "resnet50"):
            path, why = _checked_weight_file(folder, name)
            paths[name] = path
            if why:
                problems.append(why)
        if not problems:
            first = BackboneConfig(
                name="densenet161",
                cbam=spec.cbam,
                input_size=size,
                pretrained_path=str(paths["densenet161"]),
            )
            second = BackboneConfig(
                name="resnet50",
                cbam=spec.cbam,
                input_size=size,
                pretrained_path=str(paths["resnet50"]),
            )
            origin = {
                "stage1": f"DenseNet161, ImageNet weights from {paths['densenet161']}",
                "stage2": f"ResNet50, ImageNet weights from {paths['resnet50']}",
                "fallback": None,
            }
            return first, second, origin
        first, second = _transfer_configs(size, spec.cbam)
        origin = {
            "stage1": "EfficientNet-Lite0, ImageNet weights (offline package), trunk frozen",
            "stage2": "EfficientNet-Lite0, ImageNet weights (offline package), trunk frozen",
            "fallback": "full preset without its weight files: " + "; ".join(problems),
        }
        return first, second, origin
    width = (1.0, 0.5) if spec.preset == "cpu_small" else (0.5, 0.25)
    first = BackboneConfig(name="small_cnn", cbam=spec.cbam, input_size=size, width_mult=width[0])
    second = BackboneConfig(name="small_cnn", cbam=spec.cbam, input_size=size, width_mult=width[1])
    origin = {
        "stage1": f"small CNN x{width[0]}, random initialisation (from scratch)",
        "stage2": f"small CNN x{width[1]}, random initialisation (from scratch)",
        "fallback": None,
    }
    return first, second, origin


def _shares_trunk(first: Classifier, second: Classifier) -> bool:
    """Both stages have the same frozen, pretrained trunk, so its output can be computed once."""
    a, b = first.config, second.config
    return (
        a.frozen_stages > 0
        and a.frozen_stages == b.frozen_stages
        and (a.name, a.input_size, a.in_channels, a.pretrained_path)
        == (b.name, b.input_size, b.in_channels, b.pretrained_path)
    )


# --------------------------------------------------------------------------------------------
# Views of raw datasets
# --------------------------------------------------------------------------------------------


class _Viewed(Dataset):
    """A raw dataset seen through ``transform``; undecodable items become blank, label -1.

    ``item_seed(i)`` (optional) seeds torch's generator before the transform of item ``i``, so
    augmented views are a function of the item, not of the order items are read in.
    """

    def __init__(
        self,
        raw: Dataset,
        transform: Callable[[Any], Any],
        *,
        size: int,
        two_views: bool = False,
        item_seed: Callable[[int], int] | None = None,
    ) -> None:
        self.raw = raw
        self.transform = transform
        self.size = size
        self.two_views = two_views
        self.item_seed = item_seed
        self.unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.raw)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        try:
            image, label, _ = self.raw[index]
            if self.item_seed is not None:
                torch.manual_seed(self.item_seed(index))
            return self.transform(image), int(label), index
        except (ImageDecodeError, OSError) as error:
            del error  # recorded by index; the caller reports it
            self.unreadable.add(index)
            blank = torch.zeros(3, self.size, self.size)
            return ((blank, blank.clone()) if self.two_views else blank), -1, index


def _raw_labels(raw: Dataset) -> np.ndarray:
    labels = getattr(raw, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return np.array([int(raw[i][1]) for i in range(len(raw))], dtype=np.int64)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Cached trunk outputs
# --------------------------------------------------------------------------------------------


@dataclass
class EncodedImages:
    """Trunk outputs of N images under V views: ``features`` (V, N, C, h, w) float16,
    ``labels`` (N,) int64 (-1 unlabeled or unreadable), ``unreadable`` (N,) bool."""

    features: torch.Tensor
    labels: np.ndarray
    unreadable: np.ndarray
    # Pooled features of the untouched pretrained network (view 0), by network config: they
    # depend only on the image, so :func:`pretrained_embeddings` computes them once per cache and
    # subsets keep their rows (the benchmarks' seeds share them; a job computes them once).
    pretrained_pooled: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.features.shape[1])

    @property
    def views(self) -> int:
        return int(self.features.shape[0])

    def subset(self, indices: np.ndarray, labels: np.ndarray | None = None) -> EncodedImages:
        """The rows ``indices`` (and optionally new labels for them), sharing no memory."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        new_labels = self.labels[indices] if labels is None else np.asarray(labels, np.int64)
        unreadable = self.unreadable[indices]
        new_labels = np.where(unreadable, -1, new_labels)
        pooled = {key: value[indices] for key, value in self.pretrained_pooled.items()}
        return EncodedImages(self.features[:, index], new_labels, unreadable, pooled)

    def relabel(self, labels: np.ndarray) -> EncodedImages:
        labels = np.where(self.unreadable, -1, np.asarray(labels, dtype=np.int64))
        return EncodedImages(self.features, labels, self.unreadable, self.pretrained_pooled)


def _view_seed(seed: int, view: int) -> Callable[[int], int]:
    return lambda index: (seed * 1_000_003 + view * 7_919 + index * 31) % (2**63 - 1)


@torch.inference_mode()
def encode_images(
    classifier: Classifier,
    images: Dataset,
    *,
    views: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
) -> EncodedImages:
    """Run ``classifier``'s frozen trunk over a raw dataset under ``views`` views.

    View 0 is the evaluation view (resize only); views 1.. are ``augment.view_transform``
    (crop, flip, colour distortion) seeded per (seed, view, index). Returns float16 features
    of shape (views, N, C, h, w): 11 kB per image and view for Lite0 at 112 px.
    ``on_batch(done, total)`` reports progress in images.
    """
    if classifier.frozen_stages == 0:
        raise ValueError("encode_images needs a classifier with a frozen trunk (frozen_stages > 0)")
    device = torch.device(device)
    size = classifier.config.input_size
    classifier.to(device).eval()
    total = len(images) * views  # type: ignore[arg-type]
    done = 0
    per_view: list[torch.Tensor] = []
    unreadable = np.zeros(len(images), dtype=bool)  # type: ignore[arg-type]
    for view in range(views):
        transform = eval_transform(size) if view == 0 else view_transform(size)
        viewed = _Viewed(
            images, transform, size=size, item_seed=None if view == 0 else _view_seed(seed, view)
        )
        loader = make_loader(viewed, batch_size=batch_size, shuffle=False, seed=seed)
        chunks = []
        for batch, _, _ in loader:
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            chunks.append(classifier.forward_trunk(batch).to("cpu", torch.float16))
            done += len(batch)
            if on_batch is not None:
                on_batch(done, total)
        per_view.append(torch.cat(chunks))
        unreadable[sorted(viewed.unreadable)] = True
    labels = np.where(unreadable, -1, _raw_labels(images))
    return EncodedImages(torch.stack(per_view), labels, unreadable)


class _EncodedViews(Dataset):
    """Training items from cached trunk outputs: a random view per item and epoch (two
    different ones with ``two_views``, for Mean Teacher's student and teacher)."""

    def __init__(self, encoded: EncodedImages, *, two_views: bool) -> None:
        self.encoded = encoded
        self.two_views = two_views

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int):
        views = self.encoded.views
        features = self.encoded.features
        label = int(self.encoded.labels[index])
        if self.two_views:
            first = int(torch.randint(views, ()))
            second = (first + 1 + int(torch.randint(max(1, views - 1), ()))) % views
            pair = (features[first, index].float(), features[second, index].float())
            return pair, label, index
        return features[int(torch.randint(views, ())), index].float(), label, index


class _EncodedFirstView(Dataset):
    def __init__(self, encoded: EncodedImages) -> None:
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int):
        return self.encoded.features[0, index].float(), int(self.encoded.labels[index]), index


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def cascade_batch_scores(
    stage1: Classifier,
    stage2: Classifier,
    batch: torch.Tensor,
    *,
    temperatures: Sequence[float] = (1.0, 1.0),
    positive_index: int = POSITIVE_INDEX,
    loss_prediction: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """batch (N, 3, S, S) normalised -> calibrated p1 (N,), p2 (N,), predicted loss (N,) or None.

    A shared frozen trunk runs once for both stages.
    """
    if _shares_trunk(stage1, stage2):
        trunk = stage1.forward_trunk(batch)
        logits1, features = stage1.forward_head_with_features(trunk)
        logits2 = stage2.forward_head(trunk)
    else:
        logits1, features = stage1.forward_with_features(batch)
        logits2 = stage2(batch)
    # Temperature scaling (mlcore.calibration): softmax(logits / T), on tensors here.
    p1 = torch.softmax(logits1.float() / temperatures[0], dim=1)[:, positive_index]
    p2 = torch.softmax(logits2.float() / temperatures[1], dim=1)[:, positive_index]
    predicted = None
    if loss_prediction is not None:
        predicted = loss_prediction(features).float().reshape(-1)
    return p1, p2, predicted


@torch.inference_mode()
def _logits(model: nn.Module, loader, device: torch.device) -> np.ndarray:
    model.eval()
    chunks, order = [], []
    for inputs, _, indices in loader:
        chunks.append(model(inputs.to(device)).float().cpu())
        order.append(torch.as_tensor(indices))
    logits = torch.cat(chunks).numpy()
    return logits[np.argsort(torch.cat(order).numpy(), kind="stable")]


def _positive_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    return apply_temperature(logits, temperature=temperature)[:, POSITIVE_INDEX]


@dataclass
class CascadeScores:
    """Calibrated positive probabilities ``stage1``, ``stage2`` (N,), the AND ``decision`` (N,),
    ``unreadable`` (N,) bool (their scores are NaN), the loss-prediction module's output
    ``predicted_loss`` (N,) when one was given, and the function that produced them."""

    stage1: np.ndarray
    stage2: np.ndarray
    decision: np.ndarray
    unreadable: np.ndarray
    predicted_loss: np.ndarray | None = None
    function: str = ""


@torch.inference_mode()
def _predicted_losses(model: nn.Module, module: nn.Module, loader, device) -> np.ndarray:
    model.eval()
    module.to(device).eval()
    chunks, order = [], []
    for inputs, _, indices in loader:
        _, features = model.forward_with_features(inputs.to(device))
        chunks.append(module(features).float().cpu())
        order.append(torch.as_tensor(indices))
    values = torch.cat(chunks).numpy()
    return values[np.argsort(torch.cat(order).numpy(), kind="stable")]


@_records_function
def predict_cascade(
    stage1: Classifier,
    stage2: Classifier,
    images: Dataset | EncodedImages,
    *,
    thresholds: tuple[float, float] = FALLBACK_THRESHOLDS,
    temperatures: Sequence[float] = (1.0, 1.0),
    device: str | torch.device = "auto",
    batch_size: int = 128,
    loss_prediction: nn.Module | None = None,
) -> CascadeScores:
    """Score a raw dataset (or cached trunk outputs of the stages' shared trunk); with a
    ``loss_prediction`` module, also each item's predicted loss (for selection)."""
    device = resolve_device(str(device)) if isinstance(device, str) else device
    stage1.to(device).eval()
    stage2.to(device).eval()
    if isinstance(images, EncodedImages):
        loader = make_loader(
            _EncodedFirstView(images), batch_size=batch_size, shuffle=False, seed=0
        )
        first: nn.Module = HeadOnly(stage1)
        logits1 = _logits(first, loader, device)
        logits2 = _logits(HeadOnly(stage2), loader, device)
        unreadable = images.unreadable
    else:
        first = stage1
        viewed = _Viewed(
            images, eval_transform(stage1.config.input_size), size=stage1.config.input_size
        )
        loader = make_loader(viewed, batch_size=batch_size, shuffle=False, seed=0)
        logits1 = _logits(stage1, loader, device)
        logits2 = _logits(stage2, loader, device)
        unreadable = np.zeros(len(viewed), dtype=bool)
        unreadable[sorted(viewed.unreadable)] = True
    s1 = _positive_probability(logits1, temperatures[0])
    s2 = _positive_probability(logits2, temperatures[1])
    s1[unreadable] = np.nan
    s2[unreadable] = np.nan
    decision = cascade_decision(np.nan_to_num(s1), np.nan_to_num(s2), thresholds=thresholds)
    predicted = None
    if loss_prediction is not None:
        predicted = _predicted_losses(first, loss_prediction, loader, device)
        predicted[unreadable] = np.nan
    return CascadeScores(s1, s2, decision & ~unreadable, unreadable, predicted)


# --------------------------------------------------------------------------------------------
# Metrics on the validation split
# --------------------------------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    """JSON-safe: NaN / infinity become None (PostgreSQL's JSON has no NaN)."""
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 6)


def _counts(y: np.ndarray, decision: np.ndarray) -> tuple[int, int, int]:
    decision = decision.astype(bool)
    return int((decision & y).sum()), int((decision & ~y).sum()), int((~decision & y).sum())


def evaluate_cascade(
    s1: np.ndarray,
    s2: np.ndarray,
    y: np.ndarray,
    *,
    target_precision: float,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[tuple[float, float], dict[str, Any]]:
    """The deployed thresholds, chosen on the whole validation split, and metrics that were not
    graded on their own answers (mlcore.evaluation): each stage's, the cascade's and stage 1
    alone's precision and recall come from K-fold cross-fitting (every image decided by
    thresholds chosen on the other folds), with their counts and a Wilson interval. AP needs no
    threshold and is computed on the whole split.

    s1, s2: (N,) calibrated positive-class probabilities; y: (N,) bool. Returns
    ((t1, t2), metrics). When no pair reaches the target precision on the whole split the
    thresholds fall back to 0.5 / 0.5 and ``thresholds.found`` is false. ``target.reached`` is
    true only when the lower bound of the cascade's precision interval is at or above the
    target.
    """
    t1, t2 = choose_thresholds(s1, s2, y, target_precision=target_precision)
    found = not (math.isinf(t1) or math.isinf(t2))
    if found:
        rule = (
            f"chosen on the whole validation split: among (t1, t2) pairs whose cascade "
            f"precision reaches {target_precision} there, the one with the highest recall "
            f"(mlcore.cascade.choose_thresholds, on temperature-scaled probabilities); the "
            f"precision and recall shown are cross-fitted, not measured where they were chosen"
        )
    else:
        t1, t2 = FALLBACK_THRESHOLDS
        rule = (
            f"no threshold pair reaches precision {target_precision} on the validation split; "
            f"fallback {FALLBACK_THRESHOLDS[0]} / {FALLBACK_THRESHOLDS[1]}"
        )
    single_t = threshold_for_precision(y, s1, target_precision=target_precision)
    deployed = cascade_decision(s1, s2, thresholds=(t1, t2))
    crossed = crossfit_cascade(
        s1,
        s2,
        y,
        target_precision=target_precision,
        folds=folds,
        seed=seed,
        fallback=FALLBACK_THRESHOLDS,
    )
    cascade = rates_with_intervals(y, crossed.cascade, confidence=confidence)
    lower = (cascade["precision_ci"] or [None])[0]
    reached = lower is not None and lower >= target_precision - 1e-12
    metrics = {
        "task": "positive class vs the rest (binary)",
        "target_precision": target_precision,
        "thresholds": {
            "stage1": _finite(t1),
            "stage2": _finite(t2),
            "found": found,
            "rule": rule,
            # What the deployed pair does on the images that chose it: kept to show how far
            # the in-sample view flatters (and to check a stored checkpoint), never reported.
            "in_sample_counts": dict(zip(("tp", "fp", "fn"), _counts(y, deployed), strict=True)),
        },
        "stage1": {
            "ap": _finite(average_precision(y, s1)),
            "threshold": _finite(t1),
            **rates_with_intervals(y, crossed.stage1, confidence=confidence),
        },
        "stage2": {
            "ap": _finite(average_precision(y, s2)),
            "threshold": _finite(t2),
            **rates_with_intervals(y, crossed.stage2, confidence=confidence),
        },
        "cascade": {
            "ap": _finite(average_precision(y, np.minimum(s1, s2))),
            "score": "min(p1, p2)",
            **cascade,
        },
        # The baseline the method compares against: stage 1 alone at the target precision.
        "stage1_alone_at_target": {
            "threshold": _finite(single_t),
            **rates_with_intervals(y, crossed.single, confidence=confidence),
        },
        # Said once, where people read "target reached": only when the interval supports it.
        "target": {
            "precision": target_precision,
            "reached": reached,
            "precision_lower": lower,
            "confidence": confidence,
            "rule": (
                f"reached when the lower bound of the cascade's {confidence:.0%} precision "
                f"interval is at least the target"
            ),
        },
        "evaluation": {
            "method": (
                f"{folds}-fold cross-fitting, stratified by class (mlcore.evaluation."
                f"crossfit_cascade): each validation image is decided by thresholds chosen "
                f"on the other folds; counts summed over the folds"
            ),
            "interval": INTERVAL_METHOD,
            "confidence": confidence,
            "folds": crossed.per_fold,
        },
    }
    return (float(t1), float(t2)), metrics


def pr_curve_png(s1: np.ndarray, s2: np.ndarray, y: np.ndarray, *, title: str) -> bytes:
    """PNG bytes of the precision-recall curves of stage 1, stage 2 and the cascade."""
    import tempfile

    curves = {
        "stage 1": pr_curve(y, s1),
        "stage 2": pr_curve(y, s2),
        "cascade min(p1, p2)": pr_curve(y, np.minimum(s1, s2)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        return plot_pr_curves(curves, Path(tmp) / "pr.png", title=title).read_bytes()


# --------------------------------------------------------------------------------------------
# Loss prediction
# --------------------------------------------------------------------------------------------


def fit_loss_prediction(
    stage1: nn.Module,
    loader,
    *,
    epochs: int,
    lr: float = 0.01,
    device: torch.device,
    seed: int,
    hidden: int = LP_HIDDEN,
) -> LossPredictionModule:
    """The loss-prediction module (Yoo & Kweon 2019) on stage 1's frozen features.

    ``stage1`` has ``forward_with_features`` and ``feature_channels`` (a Classifier, or a
    HeadOnly over cached trunk outputs); ``loader`` yields (inputs, labels, indices).
    Departure from the paper, which trains the module jointly with the target network: it is
    fitted after the cascade, with the margin ranking loss against stage 1's per-sample
    cross-entropy, so the cascade's training stays exactly the method's and the module costs a
    few cheap epochs over frozen features.

    Stage 1 is frozen here and the loader's inputs are deterministic (the plain view), so each
    item's pooled taps and target loss are computed on its first appearance and looked up after:
    one forward pass over the training set instead of one per epoch (the module pools each map
    first, so it sees the same numbers).
    """
    seed_everything(seed)
    module = LossPredictionModule(list(stage1.feature_channels), hidden=hidden).to(device)
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    stage1.eval()
    taps = len(stage1.feature_channels)
    memo: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}
    for _ in range(epochs):
        module.train()
        for inputs, labels, indices in loader:
            labels = torch.as_tensor(labels)
            kept = [int(index) for index, label in zip(indices, labels.tolist()) if label >= 0]
            rows = [i for i, label in enumerate(labels.tolist()) if label >= 0]
            if len(kept) < 2:
                continue
            new = [(row, index) for row, index in zip(rows, kept) if index not in memo]
            if new:
                with torch.no_grad():
                    chosen = torch.as_tensor([row for row, _ in new])
                    logits, maps = stage1.forward_with_features(inputs[chosen].to(device))
                    losses = F.cross_entropy(logits, labels[chosen].to(device), reduction="none")
                    pooled = [m.mean(dim=(2, 3)) if m.ndim == 4 else m for m in maps]
                for j, (_, index) in enumerate(new):
                    memo[index] = ([p[j] for p in pooled], losses[j])
            features = [torch.stack([memo[k][0][t] for k in kept]) for t in range(taps)]
            targets = torch.stack([memo[k][1] for k in kept])
            loss = margin_ranking_loss(module(features), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return module.eval()


# --------------------------------------------------------------------------------------------
# The baseline every trained version is compared with
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def pretrained_embeddings(
    config: BackboneConfig, encoded: EncodedImages, *, device: str | torch.device = "cpu"
) -> np.ndarray:
    """(N, D) pooled features of the untouched pretrained network (no CBAM, no fine-tuning)
    from cached trunk outputs (view 0): what the logistic probe baseline sees. Computed once
    per cache and network (``EncodedImages.pretrained_pooled``)."""
    plain = replace(config, cbam=False)
    key = repr(plain)
    cached = encoded.pretrained_pooled.get(key)
    if cached is not None:
        return cached
    network = build_backbone(plain).to(device).eval()
    head = HeadOnly(network)
    loader = make_loader(_EncodedFirstView(encoded), batch_size=256, shuffle=False, seed=0)
    chunks = [head.forward_embedding(inputs.to(device)).float().cpu() for inputs, _, _ in loader]
    pooled = torch.cat(chunks).numpy()
    encoded.pretrained_pooled[key] = pooled
    return pooled


def fit_probe_baseline(
    config: BackboneConfig, train: EncodedImages, *, seed: int, device: str | torch.device = "cpu"
) -> LinearProbe:
    """The logistic probe (``mlcore.probe.fit_linear_probe``) on frozen pretrained features of
    ``train``'s labeled, readable items: the simple strong baseline a fine-tuned cascade has to
    beat, on the same labels. Score other images with :func:`probe_baseline_scores`."""
    from mlcore.probe import fit_linear_probe

    keep = (train.labels >= 0) & ~train.unreadable
    return fit_linear_probe(
        pretrained_embeddings(config, train, device=device)[keep], train.labels[keep], seed=seed
    )


def probe_baseline_scores(
    probe: LinearProbe,
    config: BackboneConfig,
    evaluate: EncodedImages,
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Positive probabilities (N_eval,) of a baseline probe on ``evaluate``'s images."""
    return probe.predict_proba(pretrained_embeddings(config, evaluate, device=device))


def probe_baseline(
    config: BackboneConfig,
    train: EncodedImages,
    evaluate: EncodedImages,
    *,
    seed: int,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Positive probabilities (N_eval,) of the logistic probe on frozen pretrained features
    (:func:`fit_probe_baseline`) trained on ``train``'s labeled, readable items."""
    probe = fit_probe_baseline(config, train, seed=seed, device=device)
    return probe_baseline_scores(probe, config, evaluate, device=device)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def _head_embeddings(head: HeadOnly, encoded: EncodedImages, device: torch.device) -> np.ndarray:
    head.eval()
    loader = make_loader(_EncodedFirstView(encoded), batch_size=256, shuffle=False, seed=0)
    return torch.cat(
        [head.forward_embedding(inputs.to(device)).float().cpu() for inputs, _, _ in loader]
    ).numpy()


def initialise_from_probe(
    head: HeadOnly, encoded: EncodedImages, *, seed: int, device: torch.device
) -> None:
    """Set the head's linear classifier to a logistic probe fitted on its own starting features.

    Linear probing then fine-tuning (LP-FT; Kumar et al., "Fine-Tuning can Distort Pretrained
    Features and Underperform Out-of-Distribution", ICLR 2022): fine-tuning from a random
    classifier first pushes large, random gradients into the pretrained layers; starting from
    the probe's solution, fine-tuning begins where the strong baseline ends and only improves
    the features. The probe (``mlcore.probe.fit_linear_probe``, class-balanced, C = 1) sees
    the head's pooled features of view 0, un-normalised, exactly what the classifier sees; a
    2-class softmax with logits (-z/2, z/2) equals the logistic z.
    """
    from mlcore.probe import ProbeConfig, fit_linear_probe

    keep = (encoded.labels >= 0) & ~encoded.unreadable
    features = _head_embeddings(head, encoded, device)[keep]
    # One fit at C = 1 rather than a cross-validated grid: fine-tuning moves the classifier
    # anyway, and the grid costs minutes on a large labeled pool.
    probe = fit_linear_probe(
        features,
        encoded.labels[keep],
        seed=seed,
        config=ProbeConfig(normalize=False, cross_validate=False),
    )
    weight = torch.as_tensor(probe.model.coef_.reshape(-1), dtype=torch.float32)
    bias = float(np.asarray(probe.model.intercept_).reshape(-1)[0])
    fc = head.classifier.fc
    if fc.out_features != 2:
        raise ValueError("probe initialisation is for the binary task (2 outputs)")
    with torch.no_grad():
        fc.weight.copy_(torch.stack([-weight / 2, weight / 2]).to(fc.weight.device))
        fc.bias.copy_(torch.tensor([-bias / 2, bias / 2], device=fc.bias.device))


@dataclass
class CascadeFit:
    """What :func:`fit_cascade` produced: both stages (full Classifiers, on the CPU, eval mode),
    the LP module, thresholds and temperatures chosen on validation, the metrics, the validation
    scores (s1, s2: calibrated (N,), y: (N,) bool; readable items only), the training history,
    the indices of undecodable training / validation items, wall seconds, the resolved spec,
    what the networks started from, the function that ran, and the baseline probe fitted on the
    same labels (cached presets; score other images with :func:`probe_baseline_scores`)."""

    stage1: Classifier
    stage2: Classifier
    loss_prediction: LossPredictionModule
    thresholds: tuple[float, float]
    temperatures: tuple[float, float]
    metrics: dict[str, Any]
    validation_scores: tuple[np.ndarray, np.ndarray, np.ndarray]
    history: list[dict[str, float]]
    unreadable_train: list[int] = field(default_factory=list)
    unreadable_validation: list[int] = field(default_factory=list)
    seconds: float = 0.0
    spec: CascadeSpec | None = None
    started_from: dict[str, Any] = field(default_factory=dict)
    function: str = ""
    baseline_probe: LinearProbe | None = None


def _encoded_or_none(value: Any) -> EncodedImages | None:
    return value if isinstance(value, EncodedImages) else None


@_records_function
def fit_cascade(
    train: Dataset | EncodedImages,
    validation: Dataset | EncodedImages,
    *,
    spec: CascadeSpec,
    unlabeled: Dataset | EncodedImages | None = None,
    stage2_exclude: np.ndarray | None = None,
    on_epoch: Callable[[int, dict[str, float]], Any] | None = None,
    on_stage: Callable[[str, int, int], None] | None = None,
    title: str = "validation",
    resume: TrainingState | None = None,
    on_checkpoint: Callable[[TrainingState], Any] | None = None,
) -> CascadeFit:
    """Train the OHEM cascade on labeled ``train`` (labels 0/1; -1 ignored), choose its
    thresholds on ``validation``, fit the loss-prediction module.

    ``unlabeled``: pool images for Mean Teacher (used when the spec turns it on).
    ``stage2_exclude``: indices of training items whose label is in doubt (under noise review
    or flagged by O2U): they never reach stage 2 as hard examples.
    ``train``/``validation``/``unlabeled`` may be :class:`EncodedImages` computed beforehand
    with :func:`encode_images` for the preset's trunk (the benchmarks share one cache across
    seeds); otherwise the trunk is run here. ``on_epoch(epoch, metrics)`` after each epoch (an
    exception it raises, e.g. a cancelled job, propagates); ``on_stage(name, done, total)``
    reports the encoding progress.

    ``on_checkpoint(state)`` receives the training state after every epoch (a
    :class:`mlcore.resume.TrainingState`, the epoch selection included); a fit given it back as
    ``resume``, with the same data and spec, skips the probe initialisation and the epochs
    already done and ends where the uninterrupted fit would have. Mean Teacher fits make no
    checkpoints (the unlabeled stream's position is not saved) and refuse ``resume``.
    """
    started = time.perf_counter()
    spec = spec.resolved()
    device = resolve_device(spec.device)
    seed_everything(spec.seed)
    config1, config2, origin = cascade_backbones(spec)
    stage1, stage2 = build_backbone(config1), build_backbone(config2)
    use_teacher = bool(spec.mean_teacher) and unlabeled is not None and len(unlabeled) > 0  # type: ignore[arg-type]
    cached = _shares_trunk(stage1, stage2)
    size = int(spec.input_size)  # type: ignore[arg-type]

    def progress(name: str) -> Callable[[int, int], None] | None:
        if on_stage is None:
            return None
        return lambda done, total: on_stage(name, done, total)

    if cached:

        def encoded(raw: Dataset | EncodedImages, views: int, name: str) -> EncodedImages:
            if isinstance(raw, EncodedImages):
                if raw.views < min(views, 1):
                    raise ValueError(f"{name}: the cache has no views")
                return raw
            return encode_images(
                stage1, raw, views=views, seed=spec.seed, device=device, on_batch=progress(name)
            )

        train_encoded = encoded(train, spec.views, "encode training images")
        validation_encoded = encoded(validation, 1, "encode validation images")
        unlabeled_encoded = (
            encoded(unlabeled, 2, "encode unlabeled images") if use_teacher else None
        )  # type: ignore[arg-type]
        train_labels = train_encoded.labels
        student1, student2 = HeadOnly(stage1), HeadOnly(stage2)
        stage1.to(device)
        stage2.to(device)
        if resume is None:  # a resumed fit loads its trained weights instead
            for student in (student1, student2):
                initialise_from_probe(student, train_encoded, seed=spec.seed, device=device)
        train_set: Dataset = _EncodedViews(train_encoded, two_views=use_teacher)
        unlabeled_set = (
            _EncodedViews(unlabeled_encoded, two_views=True)
            if unlabeled_encoded is not None
            else None
        )
        unreadable_train = np.flatnonzero(train_encoded.unreadable).tolist()
    else:
        if isinstance(train, EncodedImages) or isinstance(validation, EncodedImages):
            raise ValueError(f"preset {spec.preset!r} trains whole networks: pass raw datasets")
        views = TwoViews(strong_transform(size), weak_transform(size)) if use_teacher else None
        train_set = _Viewed(
            train, views or strong_transform(size), size=size, two_views=use_teacher
        )
        unlabeled_set = (
            _Viewed(unlabeled, views, size=size, two_views=True) if use_teacher else None  # type: ignore[arg-type]
        )
        train_labels = _raw_labels(train)
        student1, student2 = stage1, stage2
        unreadable_train = []

    if not ((train_labels == 1).any() and (train_labels == 0).any()):
        raise ValueError("the training images must include both classes")
    # A last batch of one sample would break BatchNorm; drop it when there is more than a batch.
    loader = make_loader(
        train_set,
        batch_size=spec.batch_a,
        shuffle=True,
        seed=spec.seed,
        drop_last=len(train_set) > spec.batch_a,  # type: ignore[arg-type]
    )
    train_kwargs: dict[str, Any] = {}
    if use_teacher:
        assert unlabeled_set is not None
        train_kwargs = {
            "unlabeled_loader": make_loader(
                unlabeled_set,
                batch_size=spec.batch_a,
                shuffle=True,
                seed=spec.seed + 1,
                drop_last=len(unlabeled_set) > spec.batch_a,  # type: ignore[arg-type]
            ),
            "mean_teacher": MeanTeacherConfig(rampup_epochs=max(1.0, spec.epochs / 2)),  # type: ignore[operator]
            "stage1_teacher": make_teacher(student1),
        }
    if stage2_exclude is not None and len(stage2_exclude):
        train_kwargs["stage2_exclude"] = np.asarray(stage2_exclude, dtype=np.int64)
    # Epoch selection (cached presets): after each epoch, stage 1's validation AP; the epoch
    # with the best one is deployed, "epoch 0" being the probe-initialised start. On a few dozen
    # positives fine-tuning can move away from the probe's solution; this keeps the deployed
    # version at least as good as its start on the project's own validation split. The cost:
    # that split chose the epoch, so its figures are slightly optimistic (the benchmarks
    # measure on a test split nothing was chosen on).
    selection: dict[str, Any] | None = None
    if cached:
        select_loader = make_loader(
            _EncodedFirstView(validation_encoded), batch_size=256, shuffle=False, seed=0
        )
        select_ok = (validation_encoded.labels >= 0) & ~validation_encoded.unreadable
        select_y = validation_encoded.labels[select_ok] == 1
        if select_y.any() and not select_y.all():
            deployed = train_kwargs.get("stage1_teacher", student1)

            def validation_ap() -> float:
                logits = _logits(deployed, select_loader, device)[select_ok]
                return float(average_precision(select_y, logits[:, 1] - logits[:, 0]))

            def snapshot() -> tuple[dict, dict]:
                return (
                    copy.deepcopy(deployed.state_dict()),
                    copy.deepcopy(student2.state_dict()),
                )

            if resume is not None and "selection" in resume.extra:
                kept = resume.extra["selection"]
                selection = {
                    "epoch": kept["epoch"],
                    "ap": kept["ap"],
                    "by_epoch": list(kept["by_epoch"]),
                    "state": (resume.modules["best_stage1"], resume.modules["best_stage2"]),
                }
            else:
                start = validation_ap()
                selection = {"epoch": 0, "ap": start, "by_epoch": [start], "state": snapshot()}

    def on_epoch_selecting(epoch: int, metrics: dict[str, float]) -> Any:
        if selection is not None:
            ap = validation_ap()
            metrics["validation_ap"] = ap
            selection["by_epoch"].append(ap)
            if ap > selection["ap"]:
                selection.update(epoch=epoch + 1, ap=ap, state=snapshot())
        return on_epoch(epoch, metrics) if on_epoch is not None else None

    def checkpoint_with_selection(state: TrainingState) -> Any:
        if selection is not None:
            state.modules["best_stage1"], state.modules["best_stage2"] = selection["state"]
            state.extra["selection"] = {key: selection[key] for key in ("epoch", "ap", "by_epoch")}
        return on_checkpoint(state) if on_checkpoint is not None else None

    if use_teacher and resume is not None:
        raise ValueError("a Mean Teacher fit cannot resume: train it from the start")
    if not use_teacher:
        train_kwargs["resume"] = resume
        if on_checkpoint is not None:
            train_kwargs["on_checkpoint"] = checkpoint_with_selection
    history = train_cascade(
        student1,
        student2,
        loader,
        config=CascadeConfig(batch_a=spec.batch_a, hard_b=spec.hard_b),
        train=TrainConfig(
            epochs=int(spec.epochs),  # type: ignore[arg-type]
            batch_size=spec.batch_a,
            lr=float(spec.lr),  # type: ignore[arg-type]
            device=str(device),
            seed=spec.seed,
        ),
        on_epoch=on_epoch_selecting,
        **train_kwargs,
    )
    if selection is not None:
        deployed.load_state_dict(selection["state"][0])
        student2.load_state_dict(selection["state"][1])
    if use_teacher:
        # The paper evaluates (and we deploy) the teacher.
        student1 = train_kwargs["stage1_teacher"]
        stage1 = student1.classifier if isinstance(student1, HeadOnly) else student1
    stage1.eval()
    stage2.eval()

    # Validation: logits, temperature per stage, thresholds on calibrated probabilities.
    if cached:
        eval_loader = make_loader(
            _EncodedFirstView(validation_encoded), batch_size=128, shuffle=False, seed=0
        )
        logits1 = _logits(HeadOnly(stage1), eval_loader, device)
        logits2 = _logits(HeadOnly(stage2), eval_loader, device)
        readable = ~validation_encoded.unreadable
        y_all = validation_encoded.labels
    else:
        viewed = _Viewed(validation, eval_transform(size), size=size)
        eval_loader = make_loader(viewed, batch_size=128, shuffle=False, seed=0)
        logits1 = _logits(stage1, eval_loader, device)
        logits2 = _logits(stage2, eval_loader, device)
        readable = np.ones(len(viewed), dtype=bool)
        readable[sorted(viewed.unreadable)] = False
        y_all = _raw_labels(validation)
    readable &= y_all >= 0
    y = y_all[readable] == 1
    if not y.any() or y.all():
        raise ValueError(
            "the readable validation images must include both classes to measure the model"
        )
    y_index = y.astype(np.int64)
    temperatures = (
        fit_temperature(logits1[readable], y_index),
        fit_temperature(logits2[readable], y_index),
    )
    s1 = _positive_probability(logits1[readable], temperatures[0])
    s2 = _positive_probability(logits2[readable], temperatures[1])
    thresholds, metrics = evaluate_cascade(s1, s2, y, target_precision=spec.target_precision)

    # Loss prediction on stage 1's features of the training images (plain view).
    if cached:
        lp_set: Dataset = _EncodedFirstView(train_encoded)
        lp_model: nn.Module = HeadOnly(stage1)
    else:
        lp_set = _Viewed(train, eval_transform(size), size=size)
        lp_model = stage1
    lp_loader = make_loader(lp_set, batch_size=spec.batch_a, shuffle=True, seed=spec.seed + 2)
    loss_prediction = fit_loss_prediction(
        lp_model, lp_loader, epochs=spec.lp_epochs, device=device, seed=spec.seed
    )
    metrics["validation"] = {
        "size": int(len(y)),
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
        "unreadable": int((~readable).sum()),
    }
    baseline_probe = None
    if cached:
        began = time.perf_counter()
        baseline_probe = fit_probe_baseline(config1, train_encoded, seed=spec.seed, device=device)
        baseline_seconds = time.perf_counter() - began
        baseline = probe_baseline_scores(
            baseline_probe, config1, validation_encoded, device=device
        )[readable]
        metrics["baseline"] = {
            "name": "logistic probe on frozen pretrained features, same labels",
            "function": "mlcore.probe.fit_linear_probe",
            "ap": _finite(average_precision(y, baseline)),
            "seconds": baseline_seconds,
        }
    if selection is not None:
        metrics["epoch_selection"] = {
            "selected_epoch": selection["epoch"],
            "stage1_validation_ap_by_epoch": [_finite(ap) for ap in selection["by_epoch"]],
            "rule": (
                "the epoch (0 = the probe-initialised start) with the best stage-1 AP on the "
                "validation split; that split chose it, so its figures are slightly optimistic"
            ),
        }
    metrics["calibration"] = {
        "method": "temperature scaling on the validation split (Guo et al. 2017)",
        "temperatures": [_finite(t) for t in temperatures],
    }
    metrics["backbones"] = {"stage1": config_to_dict(config1), "stage2": config_to_dict(config2)}
    metrics["started_from"] = origin
    metrics["preset"] = spec.preset
    metrics["mean_teacher"] = use_teacher
    metrics["history"] = [{k: _finite(v) for k, v in epoch.items()} for epoch in history]
    if cached:
        unreadable_validation = np.flatnonzero(validation_encoded.unreadable).tolist()
    else:
        unreadable_validation = sorted(viewed.unreadable)
    del title
    return CascadeFit(
        stage1=stage1.cpu(),
        stage2=stage2.cpu(),
        loss_prediction=loss_prediction.cpu(),
        thresholds=thresholds,
        temperatures=(float(temperatures[0]), float(temperatures[1])),
        metrics=metrics,
        validation_scores=(s1, s2, y),
        history=history,
        unreadable_train=unreadable_train,
        unreadable_validation=unreadable_validation,
        seconds=time.perf_counter() - started,
        spec=spec,
        started_from=origin,
        baseline_probe=baseline_probe,
    )
