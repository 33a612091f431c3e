"""Semi-supervised: supervised vs one-head vs two-head Mean Teacher at 5% of the labels, seeds.

Protocol 4 of shared/DATA.md, with a validation split: per seed, ``validation`` train images
(labels kept, never trained on) are set aside for choosing settings, ``labeled`` of the others
(3,000 = 5% of the 60,000) keep their labels and the rest are unlabeled. Test error on t10k
(never trained on, never used to choose anything: ``bench/semisup_tune.py`` tunes on the
validation split and never loads t10k).

Arms, all on the same network (bench.common.backbone) from the same initial weights, the same
labeled batches, the same number of SGD steps and the same learning-rate schedule:

- ``supervised``: ``mlcore.train.fit`` on the labeled images (``--supervised-view``: weak or
  strong augmentation; weak by default, the better of the two on validation).
- ``mt_one_head``: ``mlcore.mean_teacher.train_mean_teacher`` with ``logit_distance_cost=None``,
  the consistency cost on the class logits (the variant the issue found losing).
- ``mt_two_heads``: the same function with the paper's separate consistency head tied by a
  logit-distance cost (``--logit-distance-cost``, 0.01 as in the paper).

Mean Teacher arms add one unlabeled batch per step, the softmax-MSE consistency cost to the EMA
teacher (which sees the weak view; the student an independent draw of ``--student-view``) and
report the teacher (the paper's choice, and what the app deploys) and the student. Settings
(``Settings``) were chosen on validation by ``bench/semisup_tune.py``. Mean Teacher does
about 2.5x the work per step; it is not given more steps. Per arm: validation and test error,
the test set's mean max-probability (how confident the network is: the one-head student
flattened its predictions) and seconds; then mean and sample sd over ``--seeds``.

The augmentations are written here on whole batches (flip, reflected shift, brightness and
contrast jitter, random erasing: the geometric and photometric kinds of mlcore.augment's
strong/weak transforms) because per-image torchvision transforms cost more than the tiny
network's forward pass on two cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench import common
from mlcore.config import TrainConfig
from mlcore.mean_teacher import (
    PAPER_LOGIT_DISTANCE_COST,
    MeanTeacherConfig,
    make_teacher,
    train_mean_teacher,
)
from mlcore.train import fit

ARMS = ("supervised", "mt_one_head", "mt_two_heads")
DEFAULT_SEEDS = 3
View = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Budget:
    """epochs: passes over the labeled images (every arm takes the same steps); rampup_epochs:
    Mean Teacher's consistency ramp-up; sizes in images (test_size None = all of t10k)."""

    labeled: int
    validation: int
    epochs: int
    rampup_epochs: float
    test_size: int | None


FULL = Budget(labeled=3000, validation=5000, epochs=20, rampup_epochs=5.0, test_size=None)
QUICK = Budget(labeled=3000, validation=1000, epochs=2, rampup_epochs=1.0, test_size=2000)


@dataclass(frozen=True)
class Settings:
    """What the arms are run with. The defaults were chosen on the validation split by
    bench/semisup_tune.py (bench/results/semisup_tune-round1.json, then semisup_tune.json; seed 0,
    20 epochs): the weak view for the supervised network (0.167 against 0.204 with the strong
    one) and for the Mean Teacher student, consistency weight 1 (of 1, 3, 10, 30) and no
    switch to a slower EMA decay after the ramp-up (0.999 was worse at every weight). Both Mean
    Teacher arms use the same settings; only the consistency head differs."""

    consistency_weight: float = 1.0
    ema_decay: float = 0.99
    ema_decay_after_rampup: float | None = None
    logit_distance_cost: float = PAPER_LOGIT_DISTANCE_COST
    supervised_view: str = "weak"
    student_view: str = "weak"


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Each image translated by up to ``max_shift`` px in x and y (reflect-padded)."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, :]
    return padded[torch.arange(batch)[:, None, None], 0, rows, cols].unsqueeze(1)


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def weak_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The teacher's view: horizontal flip and a shift of up to 2 px."""
    return _shift(_flip(x, generator), generator, 2)


def strong_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The student's view: flip, shift up to 4 px, brightness and contrast jitter (+-30%),
    and with probability 0.5 an erased rectangle of 2-20% of the image (filled with 0)."""
    x = _shift(_flip(x, generator), generator, 4)
    batch, _, height, width = x.shape
    contrast = 1.0 + (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5) * 0.6
    brightness = (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5) * 0.6
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness * mean).clamp_(0.0, 1.0)
    area = (0.02 + 0.18 * torch.rand(batch, generator=generator)) * height * width
    aspect = torch.exp((torch.rand(batch, generator=generator) - 0.5) * 2 * np.log(3.0))
    erase_h = (area * aspect).sqrt().clamp(1, height).long()
    erase_w = (area / aspect).sqrt().clamp(1, width).long()
    top = (torch.rand(batch, generator=generator) * (height - erase_h + 1)).long()
    left = (torch.rand(batch, generator=generator) * (width - erase_w + 1)).long()
    rows = torch.arange(height)[None, :]
    cols = torch.arange(width)[None, :]
    inside = ((rows >= top[:, None]) & (rows < (top + erase_h)[:, None]))[:, :, None] & (
        (cols >= left[:, None]) & (cols < (left + erase_w)[:, None])
    )[:, None, :]
    erase = (torch.rand(batch, generator=generator) < 0.5)[:, None, None]
    return x.masked_fill((inside & erase).unsqueeze(1), 0.0)


VIEWS: dict[str, View] = {"weak": weak_view, "strong": strong_view}


@dataclass(frozen=True)
class Split:
    """One seed's data: labeled images/labels, unlabeled images, validation images/labels."""

    labeled_images: np.ndarray
    labels: np.ndarray
    unlabeled_images: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray


def make_split(*, labeled: int, validation: int, seed: int) -> Split:
    """Validation rows first (seeded by ``seed``), then ``labeled`` of the remaining rows; the
    rest are unlabeled. Stratification is left to chance, as a product's first labels are."""
    images, classes = common.fashion_mnist("train")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(classes))
    validation_rows = np.sort(order[:validation])
    labeled_rows = np.sort(order[validation : validation + labeled])
    unlabeled_rows = np.sort(order[validation + labeled :])
    return Split(
        labeled_images=images[labeled_rows],
        labels=classes[labeled_rows],
        unlabeled_images=images[unlabeled_rows],
        validation_images=images[validation_rows],
        validation_labels=classes[validation_rows],
    )


def _labeled_loader(split: Split, *, seed: int, views: View | tuple[View, ...]):
    return common.TensorBatches(
        split.labeled_images,
        split.labels,
        batch_size=common.BATCH_SIZE,
        shuffle=True,
        seed=seed + 2,
        views=views,
    )


def train_arm(
    arm: str, split: Split, *, budget: Budget, settings: Settings, seed: int
) -> tuple[dict[str, torch.nn.Module], dict]:
    """Train one arm; returns its networks by name ("network", or "teacher" and "student") and
    a record (seconds, the exact configuration, the last epoch's losses)."""
    train = TrainConfig(
        epochs=budget.epochs,
        batch_size=common.BATCH_SIZE,
        lr=common.LEARNING_RATE,
        device="cpu",
        seed=seed,
    )
    started = time.perf_counter()
    network = common.new_network(common.NUM_CLASSES, seed=seed + 1)
    if arm == "supervised":
        view = VIEWS[settings.supervised_view]
        history = fit(network, _labeled_loader(split, seed=seed, views=view), train=train)
        record = {"function": "mlcore.train.fit", "view": settings.supervised_view}
        record["final_train_loss"] = history[-1]["train_loss"]
        networks = {"network": network}
    elif arm in ("mt_one_head", "mt_two_heads"):
        views = (VIEWS[settings.student_view], weak_view)
        labeled_loader = _labeled_loader(split, seed=seed, views=views)
        unlabeled_loader = common.TensorBatches(
            split.unlabeled_images,
            None,
            batch_size=common.BATCH_SIZE,
            shuffle=True,
            seed=seed + 3,
            views=views,
            drop_last=True,
        )
        config = MeanTeacherConfig(
            ema_decay=settings.ema_decay,
            ema_decay_after_rampup=settings.ema_decay_after_rampup,
            consistency_weight=settings.consistency_weight,
            rampup_epochs=budget.rampup_epochs,
            steps_per_epoch=len(labeled_loader),
            logit_distance_cost=(settings.logit_distance_cost if arm == "mt_two_heads" else None),
        )
        teacher = make_teacher(network)
        history = train_mean_teacher(
            network, teacher, labeled_loader, unlabeled_loader, config=config, train=train
        )
        record = {
            "function": "mlcore.mean_teacher.train_mean_teacher",
            "student_view": settings.student_view,
            "config": dataclasses.asdict(config),
            "final": {
                key: history[-1][key]
                for key in ("class_loss", "consistency_loss", "logit_distance")
            },
        }
        networks = {"teacher": teacher, "student": network}
    else:
        raise ValueError(f"unknown arm {arm!r}; known: {', '.join(ARMS)}")
    record["seconds"] = time.perf_counter() - started
    record["steps"] = budget.epochs * -(-len(split.labels) // common.BATCH_SIZE)
    return networks, record


def error_and_confidence(network: torch.nn.Module, images: np.ndarray, labels: np.ndarray):
    """(error rate, mean max-probability) of ``network`` on ``images``."""
    probs = common.predict(network, images)
    return 1.0 - common.accuracy(probs, labels), float(probs.max(axis=1).mean())


def _mean_sd(values: list[float]) -> dict[str, float | int | None]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "sd": float(array.std(ddof=1)) if len(array) > 1 else None,
        "n": len(array),
    }


def _one_seed(
    *, arms: list[str], budget: Budget, settings: Settings, seed: int, test: tuple
) -> dict:
    split = make_split(labeled=budget.labeled, validation=budget.validation, seed=seed)
    test_images, test_labels = test
    result: dict = {"seed": seed, "unlabeled": len(split.unlabeled_images), "arms": {}}
    for arm in arms:
        networks, record = train_arm(arm, split, budget=budget, settings=settings, seed=seed)
        for name, network in networks.items():
            val_error, _ = error_and_confidence(
                network, split.validation_images, split.validation_labels
            )
            test_error, confidence = error_and_confidence(network, test_images, test_labels)
            record[name] = {
                "validation_error": val_error,
                "test_error": test_error,
                "test_mean_max_probability": confidence,
            }
        result["arms"][arm] = record
    return result


def _deployed(record: dict) -> dict:
    """The network an arm would ship: the teacher for Mean Teacher (as the paper reports)."""
    return record["teacher"] if "teacher" in record else record["network"]


def _summarise(runs: list[dict], arms: list[str]) -> dict:
    summary: dict = {}
    for arm in arms:
        records = [run["arms"][arm] for run in runs]
        models = [name for name in ("network", "teacher", "student") if name in records[0]]
        summary[arm] = {
            name: {
                metric: _mean_sd([record[name][metric] for record in records])
                for metric in records[0][name]
            }
            for name in models
        }
        summary[arm]["seconds"] = _mean_sd([record["seconds"] for record in records])
    if "supervised" in arms:
        for arm in arms:
            if arm == "supervised":
                continue
            # Per seed, then averaged: the seeds share splits and initial weights across arms.
            reductions = [
                1.0
                - _deployed(run["arms"][arm])["test_error"]
                / run["arms"]["supervised"]["network"]["test_error"]
                for run in runs
            ]
            differences = [
                _deployed(run["arms"][arm])["test_error"]
                - run["arms"]["supervised"]["network"]["test_error"]
                for run in runs
            ]
            summary[arm]["relative_error_reduction_vs_supervised"] = _mean_sd(reductions)
            summary[arm]["test_error_minus_supervised"] = _mean_sd(differences)
            summary[arm]["seeds_better_than_supervised"] = int(sum(d < 0 for d in differences))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's own options (bench/__main__.py passes them to :func:`run`)."""
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help=f"seeds (default: {DEFAULT_SEEDS} from --seed on); each draws its own split",
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, help="arms (default: all three)")
    parser.add_argument("--labeled", type=int, help="labeled train images (default 3000)")
    parser.add_argument("--validation", type=int, help="validation images carved from train")
    parser.add_argument("--epochs", type=int, help="passes over the labeled images")
    parser.add_argument("--rampup-epochs", type=float, help="consistency ramp-up length")
    parser.add_argument("--test-size", type=int, help="t10k images to test on (0: all)")
    parser.add_argument("--consistency-weight", type=float)
    parser.add_argument("--ema-decay", type=float)
    parser.add_argument("--ema-decay-after-rampup", type=float)
    parser.add_argument("--logit-distance-cost", type=float)
    parser.add_argument("--supervised-view", choices=sorted(VIEWS))
    parser.add_argument("--student-view", choices=sorted(VIEWS), help="Mean Teacher's student")


def resolve(
    *, quick: bool, overrides: dict[str, float | int | str | None]
) -> tuple[Budget, Settings]:
    """The budget of the mode and the settings, with the non-None ``overrides`` applied."""
    budget = QUICK if quick else FULL
    budget_fields = {f.name for f in dataclasses.fields(Budget)}
    settings_fields = {f.name for f in dataclasses.fields(Settings)}
    given = {key: value for key, value in overrides.items() if value is not None}
    unknown = set(given) - budget_fields - settings_fields
    if unknown:
        raise ValueError(f"unknown options: {sorted(unknown)}")
    if given.get("test_size") == 0:  # 0 on the command line: all of t10k
        budget = dataclasses.replace(budget, test_size=None)
        del given["test_size"]
    budget = dataclasses.replace(budget, **{k: v for k, v in given.items() if k in budget_fields})
    settings = Settings(**{k: v for k, v in given.items() if k in settings_fields})
    return budget, settings


def run(
    *,
    quick: bool,
    seed: int,
    seeds: list[int] | None = None,
    arms: list[str] | None = None,
    **overrides: float | int | str | None,
) -> dict:
    threads = common.limit_threads()
    budget, settings = resolve(quick=quick, overrides=overrides)
    seeds = list(seeds) if seeds else [seed + n for n in range(DEFAULT_SEEDS)]
    arms = list(arms) if arms else list(ARMS)
    test_images, test_labels = common.fashion_mnist("test")
    if budget.test_size is not None:
        rows = common.fixed_subset(len(test_labels), budget.test_size, seed=7)
        test_images, test_labels = test_images[rows], test_labels[rows]
    runs = [
        _one_seed(
            arms=arms,
            budget=budget,
            settings=settings,
            seed=value,
            test=(test_images, test_labels),
        )
        for value in seeds
    ]
    return common.rounded(
        {
            "network": common.backbone(common.NUM_CLASSES).__dict__,
            "torch_threads": threads,
            "budget": dataclasses.asdict(budget),
            "settings": dataclasses.asdict(settings),
            "seeds": seeds,
            "test_size": len(test_labels),
            "pipeline_functions": sorted(
                {run["arms"][arm]["function"] for run in runs for arm in arms}
            ),
            "summary": _summarise(runs, arms),
            "runs": runs,
        }
    )
