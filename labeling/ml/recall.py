"""Few-shot recall over a project's images: rows in, cached embeddings and rankings out.

Two rankings, both mlcore functions on the same cached embeddings:
- `recall_nearest`: similarity to the seed images, aggregated over the seeds by mean, soft-max
  or max (mlcore.recall.nearest_neighbours);
- `recall_by_probe`: once people have labeled positives and negatives, the logistic probe on
  frozen features (mlcore.probe) fitted on them, the seeds as extra positives.
The service (labeling.services.recall) decides which one runs.

Embeddings: `mlcore.recall.default_embedder` (EfficientNet-Lite0, offline ImageNet weights, the
pooled 1280-d output) at 224 px, L2-normalised, in batches.

The embedding cache is one `.npy` file per image in Django storage, named by the embedder and the
image's content hash: ``embeddings/<EMBEDDER_KEY>/<hash[:2]>/<hash>.npy``. Why files and not a
table:
- the vector depends only on the bytes of the image and the embedder, and the content hash names
  exactly that, so the same picture imported into two projects is embedded once, and a new
  embedder (a new EMBEDDER_KEY) never reads stale vectors;
- it needs no schema change (models.py is shared) and works the same on local disk and S3;
- a cached image costs one small read (5 kB); a second recall over the same pool embeds nothing.
At millions of images, per-file reads dominate: that scale wants a vector table (pgvector) or a
FAISS index (mlcore.recall.AnnIndex) built from these files once.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage
from torch.utils.data import DataLoader

from labeling.ml.datasets import ImageRow, ImageRowDataset
from mlcore.config import resolve_device
from mlcore.probe import fit_linear_probe, probe_rank
from mlcore.recall import (
    AGGREGATES,
    DEFAULT_TEMPERATURE,
    default_embedder,
    embedder_transform,
    nearest_neighbours,
)

EMBEDDER_KEY = "efficientnet_lite0-224"
INPUT_SIZE = 224

_EMBEDDER: dict[str, torch.nn.Module] = {}
_EMBEDDER_LOCK = threading.Lock()


@dataclass(frozen=True)
class RecallRow:
    image_id: int
    name: str  # storage name of the file
    content_hash: str


@dataclass
class Embeddings:
    """`vectors` (n, D) float32, row i for `image_ids[i]`; images that did not decode are
    missing from both and listed in `unreadable`."""

    image_ids: list[int]
    vectors: np.ndarray
    computed: int = 0
    cached: int = 0
    unreadable: list[int] = field(default_factory=list)


def embedding_name(content_hash: str) -> str:
    return f"embeddings/{EMBEDDER_KEY}/{content_hash[:2]}/{content_hash}.npy"


def _embedder(device: str) -> torch.nn.Module:
    # Building Lite0 reads its weights file: once per process and device.
    with _EMBEDDER_LOCK:
        key = str(resolve_device(device))
        if key not in _EMBEDDER:
            _EMBEDDER[key] = default_embedder(device=key)
        return _EMBEDDER[key]


def _read_cached(name: str, storage: Storage) -> np.ndarray | None:
    try:
        with storage.open(name, "rb") as handle:
            vector = np.load(io.BytesIO(handle.read()), allow_pickle=False)
    except (FileNotFoundError, OSError, ValueError):
        return None  # missing or damaged: embed again
    if vector.ndim != 1 or not np.isfinite(vector).all():
        return None
    return vector.astype(np.float32)


def _write_cached(name: str, vector: np.ndarray, storage: Storage) -> None:
    buffer = io.BytesIO()
    np.save(buffer, vector.astype(np.float32), allow_pickle=False)
    if storage.exists(name):  # another job wrote the same bytes' vector meanwhile
        storage.delete(name)
    storage.save(name, ContentFile(buffer.getvalue()))


def embed_rows(
    rows: Sequence[RecallRow],
    *,
    batch_size: int = 32,
    device: str = "auto",
    on_batch: Callable[[int, int], None] | None = None,
    storage: Storage | None = None,
) -> Embeddings:
    """Embeddings of `rows`, read from the cache where present, computed (and cached) for the
    rest in batches. `on_batch(done, to_compute)` after each batch may raise to stop."""
    storage = storage or default_storage
    vectors: dict[int, np.ndarray] = {}
    missing: list[RecallRow] = []
    for row in rows:
        cached = _read_cached(embedding_name(row.content_hash), storage)
        if cached is None:
            missing.append(row)
        else:
            vectors[row.image_id] = cached
    cached_count = len(vectors)
    unreadable: list[int] = []
    computed = 0
    if missing:
        model = _embedder(device)
        target = next(model.parameters()).device
        by_id = {row.image_id: row for row in missing}
        dataset = ImageRowDataset(
            [ImageRow(image_id=row.image_id, name=row.name) for row in missing],
            transform=embedder_transform(INPUT_SIZE),
            input_size=INPUT_SIZE,
            storage=storage,
        )
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        done = 0
        for images, image_ids, ok, _errors in loader:
            with torch.inference_mode():
                batch = model.forward_embedding(images.to(target)).float()
                batch = torch.nn.functional.normalize(batch, dim=1).cpu().numpy()
            for position, image_id in enumerate(image_ids.tolist()):
                if not bool(ok[position]):
                    unreadable.append(image_id)
                    continue
                vector = batch[position]
                _write_cached(embedding_name(by_id[image_id].content_hash), vector, storage)
                vectors[image_id] = vector
                computed += 1
            done += len(image_ids)
            if on_batch is not None:
                on_batch(done, len(missing))
    order = [row.image_id for row in rows if row.image_id in vectors]
    matrix = (
        np.stack([vectors[pk] for pk in order]).astype(np.float32)
        if order
        else np.zeros((0, 0), dtype=np.float32)
    )
    return Embeddings(
        image_ids=order,
        vectors=matrix,
        computed=computed,
        cached=cached_count,
        unreadable=unreadable,
    )


@dataclass(frozen=True)
class Recalled:
    image_id: int
    score: float  # aggregated cosine similarity to the seeds, or the probe's probability
    rank: int  # 1 = first
    seed_image_id: int | None = None  # similarity ranking: the most similar seed


@dataclass(frozen=True)
class RecallRanking:
    """What a recall ranked: `mode` "similarity" or "probe", the mlcore `function` that
    ranked (recorded in the job's result, as the benchmark records it), the ranked `items`, and
    the ranking's settings and fit (`details`, JSON-ready)."""

    mode: str
    function: str
    items: list[Recalled]
    details: dict


def _pool_exclusions(pool: Embeddings, exclude_ids: set[int]) -> np.ndarray:
    return np.asarray(
        [i for i, pk in enumerate(pool.image_ids) if pk in exclude_ids], dtype=np.int64
    )


def recall_nearest(
    *,
    pool: Embeddings,
    seeds: Embeddings,
    k: int,
    exclude_ids: set[int],
    aggregate: str,
) -> RecallRanking:
    """The `k` pool images most similar to the seeds (similarity aggregated over the seeds by
    `aggregate`: "mean", "softmax" or "max"), never one in `exclude_ids`; exact cosine search
    (mlcore.recall.nearest_neighbours)."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not seeds.image_ids:
        raise ValueError("none of the seed images could be read")
    details = {"aggregate": aggregate, "seeds": len(seeds.image_ids)}
    if aggregate == "softmax":
        details["temperature"] = DEFAULT_TEMPERATURE
    # An empty pool still goes through the search: the result names the function either way.
    vectors = pool.vectors if pool.image_ids else np.zeros((0, seeds.vectors.shape[1]), "f4")
    found = nearest_neighbours(
        vectors,
        seeds.vectors,
        k=k,
        exclude=_pool_exclusions(pool, exclude_ids),
        aggregate=aggregate,
        temperature=DEFAULT_TEMPERATURE,
    )
    items = [
        Recalled(
            image_id=pool.image_ids[int(index)],
            score=float(score),
            rank=rank,
            seed_image_id=seeds.image_ids[int(seed)],
        )
        for rank, (index, score, seed) in enumerate(
            zip(found.indices, found.scores, found.nearest_seed, strict=True), start=1
        )
    ]
    return RecallRanking("similarity", found.function, items, details)


def recall_by_probe(
    *,
    pool: Embeddings,
    labeled: Embeddings,
    positive_ids: set[int],
    k: int,
    exclude_ids: set[int],
    seed: int,
) -> RecallRanking:
    """The `k` pool images the logistic probe (mlcore.probe.fit_linear_probe) finds likeliest
    positive. `labeled`: embeddings of the labeled images and the seeds; an image is a positive
    when its id is in `positive_ids`, a negative otherwise. Never returns one of
    `exclude_ids`."""
    labels = np.asarray([int(pk in positive_ids) for pk in labeled.image_ids], dtype=np.int64)
    probe = fit_linear_probe(labeled.vectors, labels, seed=seed)
    details = {
        "positives": probe.n_positive,
        "negatives": probe.n_negative,
        "C": probe.C,
        "cv_average_precision": probe.cv_average_precision,
        "fit": probe.function,
    }
    vectors = pool.vectors if pool.image_ids else np.zeros((0, labeled.vectors.shape[1]), "f4")
    ranking = probe_rank(probe, vectors, k=k, exclude=_pool_exclusions(pool, exclude_ids))
    items = [
        Recalled(image_id=pool.image_ids[int(index)], score=float(score), rank=rank)
        for rank, (index, score) in enumerate(
            zip(ranking.indices, ranking.scores, strict=True), start=1
        )
    ]
    return RecallRanking("probe", ranking.function, items, details)
