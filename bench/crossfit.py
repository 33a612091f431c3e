"""Validation metrics graded on their own answers vs cross-fitted: optimism and coverage.

Issue 12: the cascade's thresholds are chosen on the validation split for a target precision,
so precision measured on the same images flatters. Here synthetic two-stage scores (a rare
positive class, stage 2 correlated with stage 1, a fixed separation) give, per run, a small
validation split and a large test split from the same distribution. On the validation split
`mlcore.pipeline.evaluate_cascade` chooses the deployed thresholds (the job's function) and
reports (a) the deployed pair's own in-sample precision (`thresholds.in_sample_counts`) and (b)
the cross-fitted precision with its Wilson interval; the test split measures the deployed
thresholds' true precision. Reported per validation size: the mean of each, how often each
says "at least the target", how often the interval holds the test precision, and how often
"target reached" (the interval's lower bound at or above the target) is right.

Arrays only: no database, no network, seconds on a CPU.
"""

from __future__ import annotations

import argparse

import numpy as np

from mlcore.cascade import cascade_decision
from mlcore.pipeline import evaluate_cascade

TARGET = 0.95


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=None, help="runs per validation size")
    parser.add_argument("--separation", type=float, default=2.2, help="stage-1 shift of positives")


def _draw(rng: np.random.Generator, positives: int, negatives: int, separation: float):
    y = np.r_[np.ones(positives, bool), np.zeros(negatives, bool)]
    z1 = rng.normal(size=len(y)) + separation * y
    z2 = 0.6 * z1 + 0.8 * rng.normal(size=len(y)) + 0.8 * separation * y
    return 1 / (1 + np.exp(-(z1 - 2.5))), 1 / (1 + np.exp(-(z2 - 2.5))), y


def _one_size(rng, positives: int, negatives: int, runs: int, separation: float) -> dict:
    rows = []
    for _ in range(runs):
        s1, s2, y = _draw(rng, positives, negatives, separation)
        thresholds, metrics = evaluate_cascade(s1, s2, y, target_precision=TARGET)
        if not metrics["thresholds"]["found"]:
            continue
        own = metrics["thresholds"]["in_sample_counts"]
        in_sample = own["tp"] / max(1, own["tp"] + own["fp"])
        t1, t2, ty = _draw(rng, positives * 40, negatives * 40, separation)
        called = cascade_decision(t1, t2, thresholds=thresholds)
        truth = float((called & ty).sum() / max(1, called.sum()))
        cascade = metrics["cascade"]
        interval = cascade["precision_ci"]
        rows.append(
            (
                in_sample,
                np.nan if cascade["precision"] is None else cascade["precision"],
                truth,
                interval is not None and interval[0] <= truth <= interval[1],
                metrics["target"]["reached"],
                truth >= TARGET,
            )
        )
    a = np.array(rows, dtype=float)
    reached = a[:, 4] == 1
    return {
        "validation_positives": positives,
        "validation_negatives": negatives,
        "runs_with_thresholds": len(a),
        "precision_in_sample_mean": round(float(np.nanmean(a[:, 0])), 3),
        "precision_cross_fitted_mean": round(float(np.nanmean(a[:, 1])), 3),
        "precision_test_mean": round(float(np.nanmean(a[:, 2])), 3),
        "in_sample_says_target": round(float(np.mean(a[:, 0] >= TARGET)), 3),
        "truly_at_target": round(float(np.mean(a[:, 5])), 3),
        "target_reached_said": round(float(np.mean(reached)), 3),
        "target_reached_right": round(float(np.mean(a[reached, 5])), 3) if reached.any() else None,
        "interval_holds_test_precision": round(float(np.mean(a[:, 3])), 3),
    }


def run(*, quick: bool, seed: int, runs: int | None = None, separation: float = 2.2) -> dict:
    rng = np.random.default_rng(seed)
    runs = runs or (40 if quick else 200)
    sizes = ((10, 500), (30, 1500)) if quick else ((10, 500), (30, 1500), (100, 5000))
    return {
        "target_precision": TARGET,
        "separation": separation,
        "function": "mlcore.pipeline.evaluate_cascade",
        "sizes": [_one_size(rng, p, n, runs, separation) for p, n in sizes],
    }
