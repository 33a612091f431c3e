"""Few-shot recall: find the pool images nearest to a handful of seed images.

METHOD.md's cold start adds a few hundred positives "recalled from the content pool by image
retrieval": embed every pool image once with a pretrained network, embed the seeds (positives
from user feedback), and hand annotators the pool images most similar to any seed. Similarity is
cosine between L2-normalised embeddings; a pool image's score is its *maximum* similarity over
the seeds, because positives are diverse (insects, reptiles, skin...) and an image need only
resemble one kind of them, not their average.

The default embedder is EfficientNet-Lite0 with its offline ImageNet weights (the pooled 1280-d
output of its head; see /work/shared/DATA.md). Its original preprocessing is
``(pixel - 127) / 128`` at 224 px; :func:`embedder_transform` emits the usual ImageNet-normalised
tensor and ``mlcore.backbones``' Lite adapter converts it to that scale inside the network.

:func:`nearest_neighbours` is an exact search in torch, chunked over the pool so memory stays
bounded (about ``chunk_size x n_seeds`` floats at a time); :class:`AnnIndex` wraps faiss
(optional extra ``ann``) for pools of millions, with the same result type.
"""

from __future__ import annotations

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
    "AnnIndex",
    "Neighbours",
    "default_embedder",
    "embed_images",
    "embedder_transform",
    "nearest_neighbours",
]


@dataclass(frozen=True)
class Neighbours:
    """``indices`` (k,) pool indices, most similar first; ``scores`` (k,) their cosine similarity
    to the nearest seed; ``nearest_seed`` (k,) which seed (row of ``seeds``) that was."""

    indices: np.ndarray
    scores: np.ndarray
    nearest_seed: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])


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
    chunk_size: int = 65536,
    device: str = "cpu",
) -> Neighbours:
    """Exact cosine search: the ``k`` pool items most similar to any seed.

    pool: (N, D); seeds: (S, D) (normalised here, so raw embeddings work too). exclude: pool
    indices never returned (the seeds themselves, items already labeled). Each item scores its
    maximum cosine similarity over the seeds; ties keep the lower index. Fewer than ``k`` come
    back when fewer are eligible. Memory: one (chunk_size, S) block at a time.
    """
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
        similarity, seed = (chunk @ seeds_t.T).max(dim=1)
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

    def search(self, seeds: np.ndarray, *, k: int, exclude: np.ndarray | None = None) -> Neighbours:
        """The ``k`` indexed items most similar to any seed (max over seeds), like
        :func:`nearest_neighbours`. seeds: (S, D)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        queries = self._prepare("seeds", seeds)
        if queries.shape[0] == 0:
            raise ValueError("give at least one seed")
        excluded = set() if exclude is None else set(np.asarray(exclude).ravel().tolist())
        per_seed = min(len(self), k + len(excluded))
        if per_seed == 0 or k == 0:
            empty = np.empty(0, dtype=np.int64)
            return Neighbours(empty, np.empty(0, dtype=np.float32), empty)
        scores, ids = self._index.search(queries, per_seed)
        best: dict[int, tuple[float, int]] = {}
        for seed_row in range(ids.shape[0]):
            for score, item in zip(scores[seed_row], ids[seed_row], strict=True):
                item = int(item)
                if item < 0 or item in excluded:  # -1: fewer results than asked (IVF)
                    continue
                if item not in best or score > best[item][0]:
                    best[item] = (float(score), seed_row)
        ranked = sorted(best.items(), key=lambda entry: (-entry[1][0], entry[0]))[:k]
        return Neighbours(
            indices=np.asarray([item for item, _ in ranked], dtype=np.int64),
            scores=np.asarray([score for _, (score, _) in ranked], dtype=np.float32),
            nearest_seed=np.asarray([seed for _, (_, seed) in ranked], dtype=np.int64),
        )
