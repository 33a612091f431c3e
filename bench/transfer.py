"""transfer: pretrained cpu_transfer vs from-scratch preset vs frozen-feature probe, rare task

DATA.md's rare task, with the positive classes as an option: positives are the chosen
Fashion-MNIST classes at 1% of a pool of ``--pool`` training images, labels with the task's
asymmetric noise (10% of positives labeled negative, 0.5% of negatives labeled positive), a
frozen validation split of clean labels drawn from the other training images (thresholds and
temperatures come from it, as in the app), and the t10k split as the test set, never trained on,
its negatives reweighted to 1% prevalence.

Three methods on the same noisy labels, in one run, for each seed (the seed draws the pool's
positives, the noise and the training):
- ``cpu_transfer``: the app's default preset, through ``mlcore.pipeline.fit_cascade`` (the
  function the train_cascade job calls) and ``predict_cascade``;
- the previous from-scratch preset (``--scratch-preset``, default ``cpu_small``), through the
  same two functions;
- the logistic probe on frozen EfficientNet-Lite0 features (``mlcore.pipeline.fit_probe_baseline``,
  which every trained version also reports on its validation split).

The frozen trunk's outputs are computed once per run with ``mlcore.pipeline.encode_images`` (its
views are seeded per image, so sharing the cache across seeds changes no result) and that time is
reported separately. Reported per method: AP and recall at 95% precision at 1% prevalence, for
stage 1 and for the cascade's min(p1, p2), and training seconds; mean ± sd over seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench import common
from mlcore.backbones import build_backbone
from mlcore.config import resolve_device
from mlcore.data import ArrayImageDataset
from mlcore.metrics import prevalence_weights
from mlcore.pipeline import (
    CascadeSpec,
    cascade_backbones,
    encode_images,
    fit_cascade,
    predict_cascade,
    pretrained_embeddings,
    probe_baseline_scores,
)

TASKS = {"5,8": "Sandal + Bag", "6": "Shirt"}
PREVALENCE = common.RARE_PREVALENCE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="positive class sets, comma-separated Fashion-MNIST class ids (default: 5,8 and 6)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per task (default 3)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="offset of the first seed: the pool, validation and test draws stay those of --seed,"
        " so a run of the later seeds completes an earlier run's",
    )
    parser.add_argument("--pool", type=int, default=None, help="pool images (default 20000)")
    parser.add_argument("--validation", type=int, default=None, help="validation images")
    parser.add_argument("--test", type=int, default=None, help="t10k images (default all)")
    parser.add_argument("--views", type=int, default=2, help="cached views per pool image")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--scratch-preset", default="cpu_small")
    parser.add_argument("--scratch-epochs", type=int, default=None)


def _parse_task(text: str) -> tuple[int, ...]:
    return tuple(sorted(int(part) for part in text.split(",")))


def _draw_rows(
    classes: np.ndarray,
    positives: tuple[int, ...],
    *,
    n_negative: int,
    n_positive: int,
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(negative rows, positive rows) of the train split, avoiding ``exclude``."""
    y = common.to_binary(classes, positives)
    allowed = np.ones(len(classes), dtype=bool)
    if exclude is not None:
        allowed[exclude] = False
    negatives = rng.choice(np.flatnonzero((y == 0) & allowed), size=n_negative, replace=False)
    positives_rows = rng.choice(np.flatnonzero((y == 1) & allowed), size=n_positive, replace=False)
    return negatives, positives_rows


def _metrics(y: np.ndarray, stage1: np.ndarray, cascade: np.ndarray | None) -> dict[str, Any]:
    out = {"stage1": common.rare_metrics(y, stage1)}
    if cascade is not None:
        out["cascade"] = common.rare_metrics(y, cascade)
    return out


def _weighted_rates(y: np.ndarray, decision: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Precision and recall of a yes/no decision at the test's reweighted prevalence."""
    flagged = float(weights[decision].sum())
    hits = float(weights[decision & y].sum())
    return {
        "precision": hits / flagged if flagged else float("nan"),
        "recall": hits / float(weights[y].sum()),
        "flagged_share": flagged / float(weights.sum()),
    }


def _decisions(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, fit: Any) -> dict[str, Any]:
    """What the deployed decision does on the test set: the AND of both stages at the
    thresholds fit_cascade chose on validation, beside stage 1 alone at its own threshold for
    the same target precision (the comparison the method's claim is about), at 1% prevalence."""
    y = y.astype(bool)
    weights = prevalence_weights(y, prevalence=PREVALENCE)
    t1, t2 = fit.thresholds
    alone = fit.metrics["stage1_alone_at_target"]["threshold"]
    return {
        "target_precision": fit.metrics["target_precision"],
        "cascade_and": _weighted_rates(y, (s1 >= t1) & (s2 >= t2), weights),
        "stage1_alone": _weighted_rates(y, s1 >= (alone if alone is not None else np.inf), weights),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """mean and sd over seeds of every numeric leaf."""

    def leaves(prefix: str, value: Any, out: dict[str, list[float]]) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                leaves(f"{prefix}.{key}" if prefix else key, inner, out)
        elif isinstance(value, int | float):
            out.setdefault(prefix, []).append(float(value))

    collected: dict[str, list[float]] = {}
    for run in runs:
        leaves("", run, collected)
    return {
        key: {
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        }
        for key, values in collected.items()
        if not key.endswith("seed")
    }


def run(
    *,
    quick: bool,
    seed: int,
    tasks: list[str] | None = None,
    seeds: int | None = None,
    first_seed: int = 0,
    pool: int | None = None,
    validation: int | None = None,
    test: int | None = None,
    views: int = 2,
    epochs: int | None = None,
    scratch_preset: str = "cpu_small",
    scratch_epochs: int | None = None,
) -> dict[str, Any]:
    threads = common.limit_threads(2)
    device = resolve_device("auto")
    task_keys = tasks or (["5,8"] if quick else list(TASKS))
    n_seeds = seeds or (1 if quick else 3)
    n_pool = pool or (1500 if quick else 20_000)
    n_validation = validation or (400 if quick else 3000)
    x_train, c_train = common.fashion_mnist("train")
    x_test, c_test = common.fashion_mnist("test")
    if test or quick:
        keep = np.random.default_rng(seed).choice(len(c_test), size=test or 1000, replace=False)
        x_test, c_test = x_test[np.sort(keep)], c_test[np.sort(keep)]
    transfer_spec = CascadeSpec(preset="cpu_transfer", views=views, epochs=epochs)
    if quick:
        transfer_spec = CascadeSpec(preset="cpu_transfer", views=views, epochs=epochs or 2)
    trunk_config = cascade_backbones(transfer_spec)[0]
    trunk = build_backbone(trunk_config)

    figures: dict[str, Any] = {
        "protocol": {
            "pool": n_pool,
            "prevalence": PREVALENCE,
            "validation": n_validation,
            "test": int(len(c_test)),
            "noise": {"pos_to_neg": common.RARE_POS_TO_NEG, "neg_to_pos": common.RARE_NEG_TO_POS},
            "seeds": n_seeds,
            "first_seed": first_seed,
            "views": views,
            "threads": threads,
            "transfer_spec": transfer_spec.resolved().__dict__,
            "scratch_preset": scratch_preset,
            "functions": {
                "train": "mlcore.pipeline.fit_cascade",
                "score": "mlcore.pipeline.predict_cascade",
                "probe": "mlcore.pipeline.fit_probe_baseline (fitted inside fit_cascade)",
            },
        },
        "tasks": {},
    }
    for key in task_keys:
        positives = _parse_task(key)
        n_negative = int(round(n_pool * (1 - PREVALENCE)))
        n_positive = n_pool - n_negative
        rng = np.random.default_rng(seed)
        # One candidate set for every seed: fixed negatives and a reservoir of positives the
        # seeds draw their 1% from, so the trunk runs once over the union.
        negatives, reservoir = _draw_rows(
            c_train, positives, n_negative=n_negative, n_positive=min(3 * n_positive, 5000), rng=rng
        )
        candidates = np.concatenate([negatives, reservoir])
        val_neg, val_pos = _draw_rows(
            c_train,
            positives,
            n_negative=int(round(n_validation * (1 - PREVALENCE))),
            n_positive=max(3, int(round(n_validation * PREVALENCE))),
            rng=rng,
            exclude=candidates,
        )
        val_rows = np.concatenate([val_neg, val_pos])
        y_val = common.to_binary(c_train[val_rows], positives)
        y_test = common.to_binary(c_test, positives)

        started = time.perf_counter()
        encoded_candidates = encode_images(
            trunk,
            ArrayImageDataset(x_train[candidates], np.zeros(len(candidates), np.int64)),
            views=views,
            seed=seed,
            device=device,
        )
        encoded_val = encode_images(
            trunk, ArrayImageDataset(x_train[val_rows], y_val), device=device
        )
        encoded_test = encode_images(trunk, ArrayImageDataset(x_test, y_test), device=device)
        # The probe's frozen features depend only on the image: once per run, shared by seeds.
        pretrained_embeddings(trunk_config, encoded_candidates, device=device)
        pretrained_embeddings(trunk_config, encoded_test, device=device)
        encode_seconds = time.perf_counter() - started
        encoded_images = len(candidates) * views + len(val_rows) + len(y_test)

        runs = []
        for offset in range(first_seed, first_seed + n_seeds):
            run_seed = seed + offset
            draw = np.random.default_rng(run_seed + 1000)
            chosen_pos = draw.choice(len(reservoir), size=n_positive, replace=False) + len(
                negatives
            )
            members = draw.permutation(np.concatenate([np.arange(len(negatives)), chosen_pos]))
            clean = common.to_binary(c_train[candidates[members]], positives)
            noisy = common.asymmetric_binary_noise(clean, seed=run_seed).labels
            train_encoded = encoded_candidates.subset(members, noisy)
            record: dict[str, Any] = {"seed": run_seed, "positives_labeled": int(noisy.sum())}

            began = time.perf_counter()
            fit = fit_cascade(
                train_encoded,
                encoded_val,
                spec=CascadeSpec(
                    preset="cpu_transfer",
                    views=views,
                    epochs=transfer_spec.epochs,
                    seed=run_seed,
                ),
            )
            seconds = time.perf_counter() - began
            scores = predict_cascade(
                fit.stage1, fit.stage2, encoded_test, temperatures=fit.temperatures, device=device
            )
            record["cpu_transfer"] = {
                **_metrics(y_test, scores.stage1, np.minimum(scores.stage1, scores.stage2)),
                "stage2": common.rare_metrics(y_test, scores.stage2),
                "decision": _decisions(y_test, scores.stage1, scores.stage2, fit),
                "train_seconds": seconds,
                "validation_ap": fit.metrics["stage1"]["ap"],
                "function": fit.function,
            }

            # The baseline probe fit_cascade fitted on the same labels (the one the job reports).
            assert fit.baseline_probe is not None
            probe = probe_baseline_scores(fit.baseline_probe, trunk_config, encoded_test)
            record["probe"] = {
                **_metrics(y_test, probe, None),
                "train_seconds": fit.metrics["baseline"]["seconds"],
                "function": "mlcore.pipeline.fit_probe_baseline",
            }

            began = time.perf_counter()
            rows = candidates[members]
            scratch = fit_cascade(
                ArrayImageDataset(x_train[rows], noisy),
                ArrayImageDataset(x_train[val_rows], y_val),
                spec=CascadeSpec(
                    preset=scratch_preset,
                    seed=run_seed,
                    epochs=scratch_epochs or (1 if quick else None),
                    mean_teacher=False,
                ),
            )
            seconds = time.perf_counter() - began
            scores = predict_cascade(
                scratch.stage1,
                scratch.stage2,
                ArrayImageDataset(x_test, y_test),
                temperatures=scratch.temperatures,
                device=device,
            )
            record[scratch_preset] = {
                **_metrics(y_test, scores.stage1, np.minimum(scores.stage1, scores.stage2)),
                "train_seconds": seconds,
                "validation_ap": scratch.metrics["stage1"]["ap"],
                "function": scratch.function,
            }
            runs.append(record)
            # The whole record, one line per seed: the results file is written only at the end
            # of the run, and a run stopped early keeps its finished seeds in its log.
            print(
                f"[{TASKS.get(key, key)} seed {run_seed}] transfer AP "
                f"{record['cpu_transfer']['stage1']['average_precision']:.3f}, probe AP "
                f"{record['probe']['stage1']['average_precision']:.3f}, {scratch_preset} AP "
                f"{record[scratch_preset]['stage1']['average_precision']:.3f}; "
                f"record {json.dumps(record, default=float)}",
                flush=True,
            )
        figures["tasks"][TASKS.get(key, key)] = {
            "positives": list(positives),
            "encode_seconds": encode_seconds,
            "encoded_images": encoded_images,
            "runs": runs,
            "summary": _summary(runs),
        }
    return figures
