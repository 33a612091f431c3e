"""Few-shot recall: find the pool images nearest to a handful of seed images.

METHOD.md's cold start adds a few hundred positives "recalled from the content pool by image
retrieval": embed every pool image once with a pretrained network, embed the seeds (positives
from user feedback), and hand annotators the pool images most similar to the seeds. Similarity
is cosine between L2-normalised embeddings, aggregated over the seeds by ``aggregate``:

- ``"max"``: the maximum over the seeds (the previous behaviour). Positives are diverse
  (insects, reptiles, skin...), and an image need only resemble one kind of them; but one
  seed's look-alikes (the same product photographed twice) can fill the list;
- ``"mean"``: the mean cosine over the seeds. An image close to *all* the seeds ranks above a
  near-copy of *one* seed. The mean cosine ranks as the inner product with the seeds'
  centroid does, a class prototype in the sense of Snell et al., "Prototypical Networks for
  Few-shot Learning", NeurIPS 2017, on frozen features;
- ``"softmax"`` (the default): a temperature soft-max over the seeds,
  ``t * log(mean_s exp(cos_s / t))``, the mean as ``t`` grows and the maximum as ``t``
  shrinks: an image scores by the seeds of its own kind, and one seed alone weighs less than
  several agreeing ones.

Why the soft-max by default (docs/benchmarks.md, "Few-shot recall", bench/recall.py): issue 7
expected the mean to beat the maximum, but on Fashion-MNIST with Lite0 embeddings (Sandal + Bag
at 2%, 5 seeds, 10 draws; Bag alone; and at 224 px) the mean was the worst of the three in
every setting (it won 1-3 draws of 10 against the maximum), while the soft-max at
``DEFAULT_TEMPERATURE`` beat the maximum in 4-8 draws of 10 (and tied in up to 3 more), by
0.001-0.01 precision@100 and 0.004-0.013 AP on average: within the draws' spread, but never
worse on average. Departure from the issue, which expected the mean to win.

Once people have labeled positives *and* negatives, ranking by similarity ignores half of what
they said; :mod:`mlcore.probe` ranks the pool with a logistic probe on the same embeddings
instead (the labeling app switches automatically).

The default embedder is EfficientNet-Lite0 with its offline ImageNet weights (the pooled 1280-d
output of its head; see /work/shared/DATA.md). Its original preprocessing is
``(pixel - 127) / 128`` at 224 px; :func:`embedder_transform` emits the usual ImageNet-normalised
tensor and ``mlcore.backbones``' Lite adapter converts it to that scale inside the network.

:func:`nearest_neighbours` is an exact search in torch, chunked over the pool so memory stays
bounded (about ``chunk_size x n_seeds`` floats at a time); :class:`AnnIndex` wraps faiss
(optional extra ``ann``) for pools of millions, with the same result type: it retrieves
candidates per seed (and, for mean and soft-max, for the seeds' centroid), then re-scores their
union exactly with the same aggregation, so on a flat index it returns what the exact search
returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mlcore.augment import eval_transform
from mlcore.backbones import IMAGENET_WEIGHTS, build_backbone
from mlcore.config import BackboneConfig, resolve_device

__all__ = [
    "AGGREGATES",
    "DEFAULT_AGGREGATE",
    "DEFAULT_TEMPERATURE",
    "AnnIndex",
    "Neighbours",
    "default_embedder",
    "embed_images",
    "embedder_transform",
    "nearest_neighbours",
]


AGGREGATES = ("mean", "softmax", "max")
DEFAULT_AGGREGATE = "softmax"
# Cosines between Lite0 embeddings of different products spread over about 0.2-0.9; at 0.05 a
# seed 0.1 closer weighs e^2 (7x) more in the soft-max, between the mean and the maximum.
# Chosen before measuring; 0.02, 0.1 and 0.2 measured within 0.02 precision@100 of it.
DEFAULT_TEMPERATURE = 0.05


@dataclass(frozen=True)
class Neighbours:
    """``indices`` (k,) pool indices, most similar first; ``scores`` (k,) their aggregated
    cosine similarity to the seeds (mean, soft-max or maximum); ``nearest_seed`` (k,) which
    seed (row of ``seeds``) is each item's most similar one, whatever the aggregation;
    ``function``: the search that produced it (recorded by the job and the benchmark alike)."""

    indices: np.ndarray
    scores: np.ndarray
    nearest_seed: np.ndarray
    function: str = "mlcore.recall.nearest_neighbours"

    def __len__(self) -> int:
        return int(self.indices.shape[0])


ANN_FUNCTION = "mlcore.recall.AnnIndex.search"


def _no_neighbours(function: str) -> Neighbours:
    empty = np.empty(0, dtype=np.int64)
    return Neighbours(empty, np.empty(0, dtype=np.float32), empty, function=function)


def _check_aggregate(aggregate: str, temperature: float) -> None:
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _aggregate(
    similarity: torch.Tensor, aggregate: str, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """similarity (B, S) cosines -> (scores (B,), nearest seed (B,)) by ``aggregate``."""
    best, nearest = similarity.max(dim=1)
    if aggregate == "max":
        return best, nearest
    if aggregate == "mean":
        return similarity.mean(dim=1), nearest
    # Log-mean-exp, not log-sum-exp: the score stays a cosine-scale number in [mean, max]
    # whatever the number of seeds.
    smooth = torch.logsumexp(similarity / temperature, dim=1) - math.log(similarity.shape[1])
    return temperature * smooth, nearest


def embedder_transform(size: int = 224) -> Any:
    """Preprocessing for :func:`default_embedder`: Pillow image or uint8 (C, H, W) tensor ->
    float (3, size, size), resized (aspect not kept) and ImageNet-normalised (grayscale becomes
    RGB). The Lite backbone maps it to Lite's ``(pixel - 127) / 128`` itself."""
    return eval_transform(size, grayscale_to_rgb=True)


def default_embedder(device: str = "auto") -> nn.Module:
    """EfficientNet-Lite0 with the offline ImageNet weights, in eval mode on ``device``.

    CBAM is off: an untrained attention block at the head would perturb the pretrained
    features. Use with :func:`embedder_transform` and :func:`embed_images`.
    """
    model = build_backbone(
        BackboneConfig(
            name="efficientnet_lite0",
            num_classes=2,
            cbam=False,
            input_size=224,
            pretrained_path=IMAGENET_WEIGHTS,
        )
    )
    return model.to(resolve_device(device)).eval()


@torch.inference_mode()
def embed_images(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: torch.device | str,
    normalize: bool = True,
) -> np.ndarray:
    """Embeddings (N, D) float32 in dataset-index order, L2-normalised unless ``normalize=False``.

    model: has ``forward_embedding(x) -> (B, D)`` (``mlcore.backbones.Classifier``).
    loader: yields ``(images (B, 3, H, W), labels, indices (B,))``; row i of the result is the
    item with the i-th smallest index (the whole dataset in order when the loader covers it).
    """
    if not hasattr(model, "forward_embedding"):
        raise TypeError("model needs a forward_embedding(x) method (mlcore.backbones.Classifier)")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    all_indices: list[torch.Tensor] = []
    try:
        for images, _, indices in loader:
            embedding = model.forward_embedding(images.to(device, non_blocking=True)).float()
            if normalize:
                embedding = nn.functional.normalize(embedding, dim=1)
            chunks.append(embedding.cpu())
            all_indices.append(torch.as_tensor(indices).cpu())
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("the loader yielded no batches")
    order = torch.argsort(torch.cat(all_indices), stable=True)
    return torch.cat(chunks)[order].numpy().astype(np.float32)


def _as_matrix(name: str, values: np.ndarray | torch.Tensor) -> torch.Tensor:
    matrix = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(matrix.shape)}")
    if not torch.isfinite(matrix).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return matrix


def _check_query(pool: torch.Tensor, seeds: torch.Tensor, k: int) -> None:
    if pool.shape[1] != seeds.shape[1]:
        raise ValueError(
            f"pool has dimension {pool.shape[1]} but seeds have dimension {seeds.shape[1]}"
        )
    if seeds.shape[0] == 0:
        raise ValueError("give at least one seed")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")


def nearest_neighbours(
    pool: np.ndarray,
    seeds: np.ndarray,
    *,
    k: int,
    exclude: np.ndarray | None = None,
    aggregate: str = DEFAULT_AGGREGATE,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = 65536,
    device: str = "cpu",
) -> Neighbours:
    """Exact cosine search: the ``k`` pool items most similar to the seeds.

    pool: (N, D); seeds: (S, D) (both normalised here, so raw embeddings work too). exclude:
    pool indices never returned (the seeds themselves, items already labeled). aggregate:
    "softmax" (default, with ``temperature``), "mean" or "max" over the seeds (see the module
    docstring). Ties keep the lower index. Fewer than ``k`` come back when fewer are eligible.
    Memory: one (chunk_size, S) block at a time.
    """
    _check_aggregate(aggregate, temperature)
    pool_t = _as_matrix("pool", pool)
    seeds_t = _as_matrix("seeds", seeds)
    _check_query(pool_t, seeds_t, k)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    target = resolve_device(device)
    seeds_t = nn.functional.normalize(seeds_t, dim=1).to(target)
    n = pool_t.shape[0]
    eligible = torch.ones(n, dtype=torch.bool)
    if exclude is not None:
        excluded = torch.as_tensor(np.asarray(exclude, dtype=np.int64))
        if excluded.numel() and (excluded.min() < 0 or excluded.max() >= n):
            raise ValueError(f"exclude holds indices outside [0, {n})")
        eligible[excluded] = False
    k = min(k, int(eligible.sum()))
    best_scores = torch.empty(0)
    best_indices = torch.empty(0, dtype=torch.long)
    best_seeds = torch.empty(0, dtype=torch.long)
    for start in range(0, n, chunk_size):
        chunk = nn.functional.normalize(pool_t[start : start + chunk_size].to(target), dim=1)
        similarity, seed = _aggregate(chunk @ seeds_t.T, aggregate, temperature)
        similarity, seed = similarity.cpu(), seed.cpu()
        keep = eligible[start : start + chunk.shape[0]]
        indices = torch.arange(start, start + chunk.shape[0])[keep]
        # Running top-k: merge this chunk's eligible items with the best so far.
        scores = torch.cat([best_scores, similarity[keep]])
        candidates = torch.cat([best_indices, indices])
        candidate_seeds = torch.cat([best_seeds, seed[keep]])
        # Stable sort on descending score keeps the lower index first among ties, because
        # earlier chunks (lower indices) come first in the concatenation.
        order = torch.argsort(-scores, stable=True)[:k]
        best_scores, best_indices, best_seeds = (
            scores[order],
            candidates[order],
            candidate_seeds[order],
        )
    return Neighbours(
        indices=best_indices.numpy().astype(np.int64),
        scores=best_scores.numpy().astype(np.float32),
        nearest_seed=best_seeds.numpy().astype(np.int64),
    )


class AnnIndex:
    """Approximate cosine search over millions of vectors with faiss (optional extra ``ann``).

    ``nlist=None`` builds an exact flat inner-product index; an integer builds an IVF index with
    that many clusters (trained on the first vectors added; search visits ``nprobe`` clusters).
    Vectors are L2-normalised on the way in, so inner product is cosine similarity. Item ids are
    the positions in the order vectors were added.
    """

    def __init__(self, dim: int, *, nlist: int | None = None, nprobe: int = 16) -> None:
        try:
            import faiss
        except ImportError as error:
            raise ImportError(
                "AnnIndex needs faiss: pip install 'imageclean[ann]' (or faiss-cpu); "
                "nearest_neighbours does the same search exactly without it"
            ) from error
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self._faiss = faiss
        self.dim = dim
        self._ivf = nlist is not None
        if nlist is None:
            self._index = faiss.IndexFlatIP(dim)
        else:
            quantizer = faiss.IndexFlatIP(dim)
            self._index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self._index.nprobe = nprobe
            self._quantizer = quantizer  # faiss does not own it; keep it alive

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _prepare(self, name: str, vectors: np.ndarray) -> np.ndarray:
        matrix = _as_matrix(name, vectors)
        if matrix.shape[1] != self.dim:
            raise ValueError(f"{name} has dimension {matrix.shape[1]}, index has {self.dim}")
        return np.ascontiguousarray(nn.functional.normalize(matrix, dim=1).numpy())

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors (M, D); the first call trains an IVF index on them."""
        prepared = self._prepare("vectors", vectors)
        if not self._index.is_trained:
            self._index.train(prepared)
        self._index.add(prepared)
        if self._ivf:
            # Re-scoring reads stored vectors back by id; an IVF index needs its id map for that.
            self._index.make_direct_map()

    def search(
        self,
        seeds: np.ndarray,
        *,
        k: int,
        exclude: np.ndarray | None = None,
        aggregate: str = DEFAULT_AGGREGATE,
        temperature: float = DEFAULT_TEMPERATURE,
        candidates_per_query: int | None = None,
    ) -> Neighbours:
        """The ``k`` indexed items most similar to the seeds, like :func:`nearest_neighbours`.

        seeds: (S, D). Each seed (and, unless ``aggregate="max"``, the seeds' centroid) fetches
        ``candidates_per_query`` items (default ``k`` plus the excluded count); the union is
        re-scored exactly with ``aggregate``. On a flat index that is exact for "max" (an item
        of the top k is in its nearest seed's top k) and "mean" (the mean cosine ranks as the
        centroid's inner product); for "softmax" it is the best of both candidate sets, which
        the tests find equal to the exact search on random data. IVF adds its usual recall loss.
        """
        _check_aggregate(aggregate, temperature)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        seed_vectors = self._prepare("seeds", seeds)
        if seed_vectors.shape[0] == 0:
            raise ValueError("give at least one seed")
        excluded = set() if exclude is None else set(np.asarray(exclude).ravel().tolist())
        per_query = candidates_per_query or k + len(excluded)
        per_query = min(len(self), per_query)
        if per_query <= 0 or k == 0:
            return _no_neighbours(ANN_FUNCTION)
        queries = seed_vectors
        if aggregate != "max":
            centroid = self._prepare("seeds", seed_vectors.mean(axis=0, keepdims=True))
            queries = np.concatenate([seed_vectors, centroid])
        _, ids = self._index.search(queries, per_query)
        # -1: fewer results than asked (IVF). Sorted ids make the stable sort below keep the
        # lower index first among ties, as the exact search does.
        candidates = np.asarray(
            sorted({int(i) for i in ids.ravel() if i >= 0} - excluded), dtype=np.int64
        )
        if candidates.size == 0:
            return _no_neighbours(ANN_FUNCTION)
        stored = torch.from_numpy(self._index.reconstruct_batch(candidates))
        scores, nearest = _aggregate(
            stored @ torch.from_numpy(seed_vectors).T, aggregate, temperature
        )
        order = torch.argsort(-scores, stable=True)[:k]
        return Neighbours(
            indices=candidates[order.numpy()],
            scores=scores[order].numpy().astype(np.float32),
            nearest_seed=nearest[order].numpy().astype(np.int64),
            function=ANN_FUNCTION,
        )
