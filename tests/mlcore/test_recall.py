"""Invariants of mlcore.recall: the exact search agrees with brute force under every
aggregation over seeds, the mean favours items near all seeds, the pretrained embedder finds an
image's own near-duplicate first, and the faiss index agrees with the exact search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from mlcore import recall
from mlcore.data import ImageDataset, ImageRecord, decode_image, make_loader

STAMPS = "/usr/share/tuxpaint/stamps"
STAMP_FILES = [
    "animals/insects/hornet.png",
    "animals/marsupials/koala.png",
    "animals/marsupials/kangaroo.png",
    "animals/marsupials/wombat.png",
    "food/fruit/apple_red.png",
    "household/Lightbulb.png",
    "clothes/hats/tophat.png",
    "military/vehicles/f22_raptor.png",
]


def _brute_force(
    pool: np.ndarray, seeds: np.ndarray, k: int, exclude=(), aggregate="max", temperature=0.05
):
    pool_n = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    seeds_n = seeds / np.linalg.norm(seeds, axis=1, keepdims=True)
    cosine = (pool_n @ seeds_n.T).astype(np.float64)
    if aggregate == "max":
        score = cosine.max(axis=1)
    elif aggregate == "mean":
        score = cosine.mean(axis=1)
    else:
        score = temperature * np.log(np.exp(cosine / temperature).mean(axis=1))
    score[list(exclude)] = -np.inf
    return np.argsort(-score, kind="stable")[:k], score


@pytest.mark.parametrize("aggregate", ["mean", "softmax", "max"])
@pytest.mark.parametrize("chunk_size", [7, 64, 10_000])
def test_nearest_neighbours_matches_brute_force_whatever_the_chunking(chunk_size, aggregate):
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(300, 16)).astype(np.float32)
    seeds = rng.normal(size=(3, 16)).astype(np.float32)
    expected, similarity = _brute_force(pool, seeds, 10, exclude=[5, 6], aggregate=aggregate)
    found = recall.nearest_neighbours(
        pool, seeds, k=10, exclude=np.array([5, 6]), chunk_size=chunk_size, aggregate=aggregate
    )
    assert found.indices.tolist() == expected.tolist()
    assert found.scores == pytest.approx(similarity[expected], abs=1e-5)
    assert np.all(np.diff(found.scores) <= 0)
    seed_similarity = (
        pool[found.indices] / np.linalg.norm(pool[found.indices], axis=1)[:, None]
    ) @ (seeds / np.linalg.norm(seeds, axis=1)[:, None]).T
    assert found.nearest_seed.tolist() == seed_similarity.argmax(axis=1).tolist()


def _near_all_vs_near_one() -> tuple[np.ndarray, np.ndarray]:
    """Seeds: three directions. Item 0 lies between all three (cosine 0.55 to each); item 1 is
    nearly a copy of seed 0 (cosine 0.93 to it) and unlike the others (0.05)."""
    seeds = np.eye(3, 8, dtype=np.float32)
    between = np.array([1, 1, 1, 0.5, 0, 0, 0, 0], dtype=np.float32)
    copy_of_one = np.array([1, 0.05, 0.05, 0.4, 0, 0, 0, 0], dtype=np.float32)
    unrelated = np.array([0, 0, 0, 0, 1, 1, 0, 0], dtype=np.float32)
    return np.stack([between, copy_of_one, unrelated]), seeds


def test_mean_ranks_an_item_near_all_seeds_above_one_near_a_single_seed():
    pool, seeds = _near_all_vs_near_one()
    mean_order = recall.nearest_neighbours(pool, seeds, k=3, aggregate="mean").indices
    assert mean_order.tolist() == [0, 1, 2]
    # The maximum (the old rule) lets the single seed's look-alike win.
    assert recall.nearest_neighbours(pool, seeds, k=3, aggregate="max").indices.tolist() == [
        1,
        0,
        2,
    ]
    # The soft-max moves from the maximum (cold) to the mean (hot).
    cold = recall.nearest_neighbours(pool, seeds, k=3, aggregate="softmax", temperature=0.01)
    hot = recall.nearest_neighbours(pool, seeds, k=3, aggregate="softmax", temperature=10.0)
    assert cold.indices.tolist() == [1, 0, 2] and hot.indices.tolist() == [0, 1, 2]
    mean = recall.nearest_neighbours(pool, seeds, k=3, aggregate="mean").scores
    maximum = recall.nearest_neighbours(pool, seeds, k=3, aggregate="max").scores
    middle = recall.nearest_neighbours(pool, seeds, k=3, aggregate="softmax")
    for index, score in zip(middle.indices, middle.scores, strict=True):
        low = recall.nearest_neighbours(
            pool[index : index + 1], seeds, k=1, aggregate="mean"
        ).scores[0]
        high = recall.nearest_neighbours(
            pool[index : index + 1], seeds, k=1, aggregate="max"
        ).scores[0]
        assert low - 1e-6 <= score <= high + 1e-6
    assert mean.max() <= maximum.max()


def test_nearest_neighbours_rejects_unknown_aggregates():
    pool, seeds = _near_all_vs_near_one()
    with pytest.raises(ValueError, match="aggregate"):
        recall.nearest_neighbours(pool, seeds, k=1, aggregate="median")
    with pytest.raises(ValueError, match="temperature"):
        recall.nearest_neighbours(pool, seeds, k=1, aggregate="softmax", temperature=0.0)


def test_nearest_neighbours_returns_fewer_when_few_are_eligible_and_rejects_bad_shapes():
    pool = np.eye(4, dtype=np.float32)
    found = recall.nearest_neighbours(pool, pool[:1], k=10, exclude=np.array([0, 1]))
    assert sorted(found.indices.tolist()) == [2, 3]
    with pytest.raises(ValueError, match="dimension"):
        recall.nearest_neighbours(pool, np.ones((1, 3)), k=1)


def _near_duplicate(image: Image.Image) -> Image.Image:
    """A flipped, cropped, recoloured and rescaled copy, as a re-upload would look."""
    width, height = image.size
    copy = ImageOps.mirror(image).crop((width // 12, height // 12, width, height))
    copy = ImageEnhance.Color(ImageEnhance.Brightness(copy).enhance(1.15)).enhance(0.8)
    return copy.resize((int(copy.width * 0.7), int(copy.height * 0.7)))


@pytest.fixture(scope="module")
def stamp_embeddings():
    embedder = recall.default_embedder(device="cpu")
    # 160 px rather than the default 224 halves the CPU time; the network is fully convolutional.
    transform = recall.embedder_transform(160)
    originals = [ImageRecord(source=f"{STAMPS}/{name}") for name in STAMP_FILES]
    pool = recall.embed_images(
        embedder,
        make_loader(ImageDataset(originals, transform), batch_size=4, shuffle=True, seed=0),
        device="cpu",
    )
    seed_images = [_near_duplicate(decode_image(originals[i].source)) for i in (0, 5, 7)]
    seeds = torch.stack([transform(image) for image in seed_images])
    with torch.inference_mode():
        seed_vectors = torch.nn.functional.normalize(embedder.forward_embedding(seeds), dim=1)
    return pool, seed_vectors.numpy()


@pytest.mark.slow
def test_default_embedder_gives_normalised_embeddings_in_dataset_order(stamp_embeddings):
    pool, _ = stamp_embeddings
    assert pool.shape == (len(STAMP_FILES), 1280) and pool.dtype == np.float32
    assert np.linalg.norm(pool, axis=1) == pytest.approx(np.ones(len(STAMP_FILES)), abs=1e-5)
    # Distinct images are not collapsed onto one vector.
    assert (pool @ pool.T)[~np.eye(len(pool), dtype=bool)].max() < 0.95


@pytest.mark.slow
def test_nearest_neighbours_returns_an_images_own_near_duplicate_first(stamp_embeddings):
    pool, seeds = stamp_embeddings
    for seed_row, original in enumerate((0, 5, 7)):
        found = recall.nearest_neighbours(pool, seeds[seed_row : seed_row + 1], k=3)
        assert found.indices[0] == original
        assert found.scores[0] > found.scores[1] + 0.05
    together = recall.nearest_neighbours(pool, seeds, k=3, aggregate="max")
    assert set(together.indices.tolist()) == {0, 5, 7}
    assert together.nearest_seed[together.indices == 5].tolist() == [1]


@pytest.mark.parametrize("aggregate", ["mean", "softmax", "max"])
@pytest.mark.parametrize("data_seed", [1, 2, 3])
def test_ann_index_flat_agrees_with_exact_search(aggregate, data_seed):
    rng = np.random.default_rng(data_seed)
    pool = rng.normal(size=(500, 32)).astype(np.float32)
    seeds = rng.normal(size=(4, 32)).astype(np.float32)
    index = recall.AnnIndex(32)
    index.add(pool[:200])
    index.add(pool[200:])
    assert len(index) == 500
    exact = recall.nearest_neighbours(pool, seeds, k=15, exclude=np.array([3]), aggregate=aggregate)
    approximate = index.search(seeds, k=15, exclude=np.array([3]), aggregate=aggregate)
    assert approximate.indices.tolist() == exact.indices.tolist()
    assert approximate.scores == pytest.approx(exact.scores, abs=1e-5)
    assert approximate.nearest_seed.tolist() == exact.nearest_seed.tolist()


def test_ann_index_ivf_finds_near_duplicates():
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(2000, 32)).astype(np.float32)
    index = recall.AnnIndex(32, nlist=16, nprobe=4)
    index.add(pool)
    targets = np.array([10, 999, 1500])
    seeds = pool[targets] + 0.05 * rng.normal(size=(3, 32)).astype(np.float32)
    found = index.search(seeds, k=3, aggregate="max")
    assert set(found.indices.tolist()) == set(targets.tolist())
    # The default soft-max too (the mean would not: each target is near one seed only). IVF
    # visits 4 of 16 clusters; the scores are exact re-scores of what it found.
    found = index.search(seeds, k=3)
    assert set(found.indices.tolist()) == set(targets.tolist())
    exact = recall.nearest_neighbours(pool[found.indices], seeds, k=3).scores
    assert sorted(found.scores.tolist()) == pytest.approx(sorted(exact.tolist()), abs=1e-5)
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((1, 8)), k=1)
