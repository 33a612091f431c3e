"""The benchmark protocols themselves: exact noise rates, the pair-flip map, the rare task's
prevalence and class mapping, and seeded determinism (bench/common.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import common


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


def test_active_learning_repeats_positives_to_about_a_quarter():
    from bench.active import _balanced_rows

    labels = np.r_[np.ones(2, dtype=np.int64), np.zeros(198, dtype=np.int64)]
    rows = _balanced_rows(labels)
    assert set(rows.tolist()) == set(range(200))
    share = labels[rows].mean()
    assert 0.2 < share < 0.3
    assert np.array_equal(_balanced_rows(np.zeros(5, dtype=np.int64)), np.arange(5))


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
