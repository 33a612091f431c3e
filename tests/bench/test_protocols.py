"""The benchmark protocols themselves: exact noise rates, the pair-flip map, the rare task's
prevalence and class mapping, and seeded determinism (bench/common.py); the rare task on the
app's pipeline (bench/_rare.py) and the active-learning and cascade benchmarks that run through
it (bench/active.py, bench/cascade.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import _rare, common


def _labels(n: int = 5000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, common.NUM_CLASSES, size=n)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.0, 1.0])
def test_symmetric_noise_corrupts_exactly_the_rate_and_never_keeps_the_label(rate):
    clean = _labels()
    noisy = common.symmetric_noise(clean, rate=rate, seed=3)
    assert noisy.n_corrupted == round(rate * len(clean))
    assert (noisy.labels[noisy.corrupted] != clean[noisy.corrupted]).all()
    assert (noisy.labels[~noisy.corrupted] == clean[~noisy.corrupted]).all()
    assert noisy.labels.min() >= 0 and noisy.labels.max() < common.NUM_CLASSES


def test_symmetric_noise_spreads_over_all_other_classes():
    clean = np.zeros(20000, dtype=np.int64)
    noisy = common.symmetric_noise(clean, rate=0.4, seed=1)
    counts = np.bincount(noisy.labels[noisy.corrupted], minlength=common.NUM_CLASSES)
    assert counts[0] == 0
    expected = noisy.n_corrupted / (common.NUM_CLASSES - 1)
    # Each of the nine other classes gets about 1/9 of the flips (about 890 each; 6 sigma bound).
    assert np.all(np.abs(counts[1:] - expected) < 6 * np.sqrt(expected))


def test_pair_flip_maps_c_to_c_plus_one_mod_ten_at_the_exact_rate():
    clean = _labels(3001)
    noisy = common.pair_flip_noise(clean, rate=0.2, seed=7)
    assert noisy.n_corrupted == round(0.2 * 3001)
    flipped = noisy.corrupted
    assert (noisy.labels[flipped] == (clean[flipped] + 1) % 10).all()
    assert (noisy.labels[~flipped] == clean[~flipped]).all()
    assert 9 in clean[flipped] and 0 in noisy.labels[flipped]  # 9 wraps round to 0


def test_asymmetric_binary_noise_flips_exact_counts_each_way():
    y = np.r_[np.ones(200, dtype=np.int64), np.zeros(9800, dtype=np.int64)]
    noisy = common.asymmetric_binary_noise(y, seed=0)
    assert ((y == 1) & (noisy.labels == 0)).sum() == round(0.10 * 200)
    assert ((y == 0) & (noisy.labels == 1)).sum() == round(0.005 * 9800)
    assert noisy.n_corrupted == 20 + 49


def test_noise_rate_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match="noise rate"):
        common.symmetric_noise(_labels(10), rate=1.5, seed=0)


def test_rare_task_maps_sandal_and_bag_to_positive():
    classes = np.arange(10)
    assert common.to_binary(classes).tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 1, 0]


def test_rare_pool_has_one_percent_positives_of_both_kinds():
    classes = np.repeat(np.arange(10), 1000)
    images = np.zeros((len(classes), 28, 28), dtype=np.uint8)
    pool = common.rare_pool(images, classes, n_negatives=4950, seed=0)
    assert len(pool) == 5000
    assert pool.y.sum() == 50
    assert pool.prevalence == pytest.approx(0.01)
    assert set(pool.classes[pool.y == 1]) <= {5, 8}
    assert set(pool.classes[pool.y == 0]).isdisjoint({5, 8})
    assert (classes[pool.source_index] == pool.classes).all()
    assert len(np.unique(pool.source_index)) == len(pool)


def test_rare_pool_refuses_more_negatives_than_exist():
    classes = np.repeat(np.arange(10), 10)
    images = np.zeros((len(classes), 28, 28), dtype=np.uint8)
    with pytest.raises(ValueError, match="n_negatives"):
        common.rare_pool(images, classes, n_negatives=81, seed=0)


def test_rare_metrics_reweight_the_test_set_to_one_percent():
    # 20% positives as in t10k; a scorer that ranks every positive first is perfect at any
    # prevalence, and one that interleaves is far worse once negatives weigh 1% prevalence.
    y = np.r_[np.ones(200, dtype=np.int64), np.zeros(800, dtype=np.int64)]
    perfect = common.rare_metrics(y, np.r_[np.ones(200), np.zeros(800)])
    assert perfect == {"average_precision": 1.0, "recall_at_95_precision": 1.0}
    rng = np.random.default_rng(0)
    overlapping = np.r_[rng.uniform(0.3, 1.0, 200), rng.uniform(0.0, 0.7, 800)]
    weighted = common.rare_metrics(y, overlapping)
    from sklearn.metrics import average_precision_score

    assert weighted["average_precision"] < average_precision_score(y, overlapping)


def test_flag_quality_counts_hits():
    corrupted = np.zeros(10, dtype=bool)
    corrupted[[1, 2, 3, 4]] = True
    quality = common.flag_quality(np.array([1, 2, 8, 9]), corrupted)
    assert quality == {"flagged": 4, "precision": 0.5, "recall": 0.5}


def test_seeded_protocol_is_deterministic_and_seed_sensitive():
    clean = _labels()
    first = common.symmetric_noise(clean, rate=0.2, seed=11)
    again = common.symmetric_noise(clean, rate=0.2, seed=11)
    other = common.symmetric_noise(clean, rate=0.2, seed=12)
    assert np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.labels, other.labels)
    assert np.array_equal(
        common.fixed_subset(60000, 300, seed=5), common.fixed_subset(60000, 300, seed=5)
    )
    classes = np.repeat(np.arange(10), 500)
    images = np.arange(len(classes) * 784, dtype=np.int64).reshape(-1, 28, 28).astype(np.uint8)
    pool_a = common.rare_pool(images, classes, n_negatives=2000, seed=4)
    pool_b = common.rare_pool(images, classes, n_negatives=2000, seed=4)
    assert np.array_equal(pool_a.source_index, pool_b.source_index)


def test_seeded_training_gives_identical_predictions():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(96, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 2, size=96)
    common.limit_threads()
    runs = [
        common.predict(
            common.train_network(images, labels, num_classes=2, epochs=1, seed=9), images[:16]
        )
        for _ in range(2)
    ]
    assert np.array_equal(runs[0], runs[1])
    assert runs[0].shape == (16, 2)


def test_tensor_batches_cover_every_row_once_per_pass_and_apply_views():
    images = np.arange(10 * 28 * 28, dtype=np.int64).reshape(10, 28, 28).astype(np.uint8)
    labels = np.arange(10) % 2
    seen = []

    def double(x, generator):
        seen.append(x.shape[0])
        return x * 2

    loader = common.TensorBatches(
        images, labels, batch_size=4, shuffle=True, seed=1, views=(double, double)
    )
    assert len(loader) == 3
    indices, batch_labels = [], []
    for (first, second), y, index in loader:
        assert first.shape[1:] == (1, 28, 28) and float(first.max()) <= 2.0
        assert np.array_equal(first.numpy(), second.numpy())
        indices += index.tolist()
        batch_labels += y.tolist()
    assert sorted(indices) == list(range(10))
    assert batch_labels == labels[indices].tolist()
    assert seen == [4, 4, 4, 4, 2, 2]
    second_pass = [index.tolist() for _, _, index in loader]
    assert sum(second_pass, []) != indices  # a new shuffle each pass, still seeded


def test_semisup_views_keep_shape_and_range_and_differ_from_input():
    import torch

    from bench.semisup import strong_view, weak_view

    images, _ = common.fashion_mnist("test")
    x = torch.from_numpy(images[:32].copy()).unsqueeze(1).float() / 255
    generator = torch.Generator().manual_seed(0)
    for view in (weak_view, strong_view):
        out = view(x, generator)
        assert out.shape == x.shape
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert not torch.equal(out, x)


# --------------------------------------------------------------------------------------------
# The rare task on the app's pipeline (bench/_rare.py, bench/active.py, bench/cascade.py)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("5,8", (5, 8)), ("8, 5", (5, 8)), ("6", (6,)), ((8, 5, 5), (5, 8))]
)
def test_positive_classes_parse_sorted_and_unique(text, expected):
    assert _rare.parse_classes(text) == expected


@pytest.mark.parametrize("text", ["", "10", "-1", "0,1,2,3,4,5,6,7,8,9"])
def test_positive_classes_outside_fashion_mnist_or_all_of_them_are_refused(text):
    with pytest.raises(ValueError):
        _rare.parse_classes(text)


def _fake_splits(n_negative: int, n_positive: int) -> _rare.RareSplits:
    reservoir = _rare.RESERVOIR_FACTOR * n_positive
    y = np.r_[np.zeros(n_negative, dtype=np.int64), np.ones(reservoir, dtype=np.int64)]
    return _rare.RareSplits(
        positives=(5, 8),
        pool_size=n_negative + n_positive,
        n_negative=n_negative,
        n_positive=n_positive,
        candidates=np.arange(len(y)),
        candidate_y=y,
        validation_rows=np.arange(0),
        test_rows=np.arange(0),
        y_test=np.arange(0),
        encoded_candidates=None,  # type: ignore[arg-type]
        encoded_validation=None,  # type: ignore[arg-type]
        encoded_test=None,  # type: ignore[arg-type]
        encode_seconds=0.0,
        encoded_images=0,
    )


def test_each_seed_draws_a_one_percent_pool_with_the_tasks_noise_from_the_candidates():
    splits = _fake_splits(n_negative=9900, n_positive=100)
    first = _rare.draw_pool(splits, seed=0)
    assert len(first.members) == 10_000 and len(np.unique(first.members)) == 10_000
    assert first.clean.sum() == 100
    # Every candidate negative is in every pool; the positives come from the reservoir.
    assert set(range(9900)) <= set(first.members.tolist())
    assert ((first.clean == 1) & (first.noisy == 0)).sum() == 10  # 10% of positives
    assert ((first.clean == 0) & (first.noisy == 1)).sum() == round(0.005 * 9900)
    again, other = _rare.draw_pool(splits, seed=0), _rare.draw_pool(splits, seed=1)
    assert np.array_equal(first.members, again.members)
    assert np.array_equal(first.noisy, again.noisy)
    assert set(first.members[first.clean == 1]) != set(other.members[other.clean == 1])


def test_mean_sd_over_seeds_skips_missing_values():
    assert _rare.mean_sd([1.0, 3.0, None]) == {"mean": 2.0, "sd": math.sqrt(2.0), "n": 2}
    assert _rare.mean_sd([None]) == {"mean": None, "sd": None, "n": 0}
    assert _rare.mean_sd([0.5]) == {"mean": 0.5, "sd": 0.0, "n": 1}


def _seeded_draw(seed: int) -> list[float]:
    import torch

    torch.manual_seed(seed)
    return torch.randn(3).tolist()


def test_parallel_workers_give_the_same_results_in_the_same_order():
    import functools

    calls = [functools.partial(_seeded_draw, seed) for seed in range(4)]
    assert _rare.run_parallel(calls, workers=2) == _rare.run_parallel(calls, workers=1)
    assert _rare.run_parallel(calls, workers=2)[3] == _seeded_draw(3)


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2, 0.5])
def test_band_union_loss_leaves_exactly_room_for_the_jobs_audit(share):
    from bench.active import ranked_budget

    for k in range(0, 401):
        ranked = ranked_budget(k, share)
        # The job adds ceil(share * ranked) audit items: the round must not overspend...
        assert ranked + math.ceil(share * ranked - 1e-9) <= k
        # ... and must take as many ranked items as fit.
        assert ranked == k or ranked + 1 + math.ceil(share * (ranked + 1) - 1e-9) > k
    assert ranked_budget(200, 0.05) == 190


def test_active_benchmark_uses_the_select_jobs_audit_share_and_band_defaults():
    from bench.active import AUDIT_SHARE
    from labeling.services.selection import SELECT
    from mlcore.selection import BandConfig

    declared = {spec.name: spec.default for spec in SELECT.params}
    assert declared["audit_share"] == AUDIT_SHARE
    band = BandConfig()  # what bench.active passes to select
    assert declared["band_mode"] == band.mode
    assert declared["high_share"] == band.high_share
    assert declared["band_share"] == band.band_share
    assert declared["band_center"] == band.band_center


def test_without_a_model_every_strategy_draws_unlabeled_items_at_random():
    from bench.active import RULE_NO_MODEL, STRATEGIES, choose

    labeled = np.zeros(50, dtype=bool)
    labeled[:20] = True
    for strategy in STRATEGIES:
        picked, rules = choose(
            strategy, None, None, labeled, k=10, audit_share=0.05, seed=3, device="cpu"
        )
        assert len(picked) == 10 and len(set(picked.tolist())) == 10
        assert not labeled[picked].any()
        assert set(rules) == {"random" if strategy == "random" else RULE_NO_MODEL}


def test_labels_to_reach_takes_the_first_round_at_or_above_the_target():
    from bench.active import labels_to_reach

    labels = [200, 400, 600, 800]
    assert labels_to_reach(labels, [0.1, None, 0.5, 0.4], 0.45) == 600
    assert labels_to_reach(labels, [0.1, 0.2, 0.3, 0.4], 0.45) is None
    assert labels_to_reach(labels, [0.5, 0.2, 0.3, 0.4], 0.5) == 200


@pytest.mark.slow
def test_active_benchmark_runs_every_strategy_through_the_apps_pipeline():
    """A tiny run: every strategy trains through mlcore.pipeline.fit_cascade (the function the
    train job records), spends exactly the round's labels, starts from the same first model,
    and band ∪ LP queues the band, the LP ranking and the job's random audit."""
    from bench import active

    figures = active.run(
        quick=True,
        seed=0,
        pool=600,
        validation=200,
        test=300,
        initial=200,
        per_round=60,
        rounds=1,
        epochs=1,
        views=1,
        workers=1,
        plot=False,
    )
    assert figures["protocol"]["functions"]["train_recorded"] == ["mlcore.pipeline.fit_cascade"]
    assert figures["protocol"]["functions"]["score"] == "mlcore.pipeline.predict_cascade"
    (run_,) = figures["runs"]
    strategies = run_["strategies"]
    assert set(strategies) == set(active.STRATEGIES)
    firsts = {
        name: history[0]["test"]["cascade"]["average_precision"]
        for name, history in strategies.items()
    }
    assert len(set(firsts.values())) == 1
    for name, history in strategies.items():
        assert [step["labels"] for step in history] == [200, 260], name
        assert sum(history[1]["chosen_by"].values()) == 60
        ap = history[1]["test"]["cascade"]["average_precision"]
        assert 0.0 <= ap <= 1.0
    union_rules = strategies["band_union_loss"][1]["chosen_by"]
    assert union_rules["random_audit"] == 60 - active.ranked_budget(60, active.AUDIT_SHARE)
    assert union_rules.get("loss_top_k", 0) > 0
    assert union_rules.get("high_score", 0) + union_rules.get("uncertain_band", 0) > 0
    assert set(strategies["confidence_band"][1]["chosen_by"]) <= {"high_score", "uncertain_band"}
    assert set(strategies["loss"][1]["chosen_by"]) == {"loss_top_k"}
    summary = figures["summary"]["strategies"]["band_union_loss"]
    assert summary["ap"][0]["n"] == 1 and summary["ap_labels_to_reach"]["random_final"]


@pytest.mark.slow
def test_cascade_benchmark_measures_both_arms_of_one_pipeline_fit():
    """The single arm is the cascade fit's stage 1 at the threshold the pipeline chose on
    validation; both arms are measured on the test split from one fit_cascade."""
    from bench import cascade

    figures = cascade.run(
        quick=True,
        seed=0,
        pool=600,
        validation=200,
        test=400,
        epochs=1,
        views=1,
        workers=1,
        plot=False,
    )
    (record,) = figures["runs"]
    assert record["function"] == "mlcore.pipeline.fit_cascade"
    assert record["score_function"] == "mlcore.pipeline.predict_cascade"
    assert record["validation"]["single_threshold"] == record["validation"]["single"]["threshold"]
    for arm in ("single", "cascade"):
        assert 0.0 <= record[arm]["ap"] <= 1.0
        assert 0.0 <= record[arm]["best_recall_at_95_precision"] <= 1.0
    # The best pair can only do at least as well as the best equal pair (t1 = t2).
    best = record["cascade"]
    assert best["best_pair_recall_at_95_precision"] >= best["best_recall_at_95_precision"] - 1e-9
    assert figures["summary"]["single"]["ap"]["n"] == 1
