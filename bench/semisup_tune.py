"""Semi-supervised tuning: Mean Teacher's settings and the supervised view, on validation only.

The settings ``bench/semisup.py`` runs with were chosen here, on the validation split carved
from the Fashion-MNIST train images (``semisup.make_split``: never trained on, never the test
set; this module does not load t10k at all). Candidates, each trained on the same split, seed,
budget and batches as the benchmark's arms:

- the two-head Mean Teacher over the student's view (weak or strong augmentation; the teacher
  always gets the weak one) x consistency weight x EMA decay after the ramp-up;
- the supervised arm with the weak or the strong view (the issue saw strong lose).

The result is the validation error of each candidate (the teacher's and the student's for Mean
Teacher) and the choice: the candidate with the lowest validation error per arm. Options:
``--seeds`` (default: ``--seed`` alone), ``--epochs``, ``--labeled``, ``--validation``,
``--rampup-epochs``, ``--consistency-weights``, ``--ema-decays-after-rampup`` (0 = none),
``--student-views``.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from bench import common, semisup

CONSISTENCY_WEIGHTS = (3.0, 10.0, 30.0)
EMA_DECAYS_AFTER_RAMPUP: tuple[float | None, ...] = (None, 0.999)
SUPERVISED_VIEWS = ("weak", "strong")
STUDENT_VIEWS = ("weak", "strong")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", help="default: --seed alone")
    parser.add_argument("--labeled", type=int)
    parser.add_argument("--validation", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--rampup-epochs", type=float)
    parser.add_argument("--consistency-weights", type=float, nargs="+")
    parser.add_argument(
        "--ema-decays-after-rampup", type=float, nargs="+", help="0 keeps the ramp-up decay"
    )
    parser.add_argument("--student-views", nargs="+", choices=sorted(semisup.VIEWS))


def _validation_errors(
    arm: str, *, budget: semisup.Budget, settings: semisup.Settings, seeds: list[int]
) -> dict:
    errors: dict[str, list[float]] = {}
    for seed in seeds:
        split = semisup.make_split(labeled=budget.labeled, validation=budget.validation, seed=seed)
        networks, _ = semisup.train_arm(arm, split, budget=budget, settings=settings, seed=seed)
        for name, network in networks.items():
            error, _ = semisup.error_and_confidence(
                network, split.validation_images, split.validation_labels
            )
            errors.setdefault(name, []).append(error)
    return {name: float(np.mean(values)) for name, values in errors.items()} | {"per_seed": errors}


def run(
    *,
    quick: bool,
    seed: int,
    seeds: list[int] | None = None,
    consistency_weights: list[float] | None = None,
    ema_decays_after_rampup: list[float] | None = None,
    student_views: list[str] | None = None,
    **overrides: float | int | None,
) -> dict:
    threads = common.limit_threads()
    budget, base = semisup.resolve(quick=quick, overrides=overrides)
    seeds = list(seeds) if seeds else [seed]
    weights = list(consistency_weights or CONSISTENCY_WEIGHTS)
    decays = (
        [value or None for value in ema_decays_after_rampup]
        if ema_decays_after_rampup
        else list(EMA_DECAYS_AFTER_RAMPUP)
    )
    candidates = []
    for student_view in student_views or STUDENT_VIEWS:
        for weight in weights:
            for decay in decays:
                settings = dataclasses.replace(
                    base,
                    consistency_weight=weight,
                    ema_decay_after_rampup=decay,
                    student_view=student_view,
                )
                errors = _validation_errors(
                    "mt_two_heads", budget=budget, settings=settings, seeds=seeds
                )
                candidates.append(
                    {
                        "arm": "mt_two_heads",
                        "student_view": student_view,
                        "consistency_weight": weight,
                        "ema_decay_after_rampup": decay,
                        "validation_error": errors,
                    }
                )
    for view in SUPERVISED_VIEWS:
        settings = dataclasses.replace(base, supervised_view=view)
        errors = _validation_errors("supervised", budget=budget, settings=settings, seeds=seeds)
        candidates.append({"arm": "supervised", "view": view, "validation_error": errors})

    def deployed_error(candidate: dict) -> float:
        errors = candidate["validation_error"]
        return errors["teacher"] if "teacher" in errors else errors["network"]

    best = {
        arm: min((c for c in candidates if c["arm"] == arm), key=deployed_error)
        for arm in ("mt_two_heads", "supervised")
    }
    return common.rounded(
        {
            "network": common.backbone(common.NUM_CLASSES).__dict__,
            "torch_threads": threads,
            "budget": dataclasses.asdict(budget),
            "seeds": seeds,
            "selected_on": "validation split carved from train (t10k never loaded)",
            "candidates": candidates,
            "best": best,
        }
    )
