"""Few-shot recall over a project's images: rows in, stored embeddings and rankings out.

Two rankings, both mlcore functions on the same stored embeddings:
- `recall_nearest`: similarity to the seed images, aggregated over the seeds by mean, soft-max
  or max (exact, mlcore.recall.nearest_neighbours, for small pools; the store's FAISS index for
  large ones, mlcore.vectorstore);
- `recall_by_probe`: once people have labeled positives and negatives, the logistic probe on
  frozen features (mlcore.probe) fitted on them, the seeds as extra positives.
The service (labeling.services.recall) decides which one runs.

Embeddings: `mlcore.recall.default_embedder` (EfficientNet-Lite0, offline ImageNet weights, the
pooled 1280-d output) at 224 px, L2-normalised, through `mlcore.embedding.embed_pipeline`
(decoding in threads ahead of the network, batched writes).

Where the vectors live: one `mlcore.vectorstore.VectorStore` per project and embedder, keyed by
image id, in the directory `vectors/project-<id>/<EMBEDDER_KEY>/` of the media storage when it is
on local disk (`store_root`), else under `VAR_DIR` (FAISS needs local files; an S3 deployment
keeps the store on the ML worker's disk, and `manage.py vectors rebuild` or a recall fills it
again on a new worker). Vectors are added after each block of about a thousand images, so a
cancelled or crashed job keeps what it embedded; the store's index is saved at the end of a
job that added vectors.

Earlier versions cached one `.npy` file per image, `embeddings/<EMBEDDER_KEY>/<hash[:2]>/
<hash>.npy` (named by the image's content hash). Those files are still read: an image missing
from the store whose file exists is imported into the store (counted as cached, not embedded),
and `manage.py vectors import PROJECT` imports a whole project's at once.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage

from mlcore.config import resolve_device
from mlcore.embedding import embed_pipeline
from mlcore.probe import fit_linear_probe, probe_rank
from mlcore.recall import (
    AGGREGATES,
    DEFAULT_TEMPERATURE,
    default_embedder,
    nearest_neighbours,
)
from mlcore.vectorstore import VectorStore

EMBEDDER_KEY = "efficientnet_lite0-224"
INPUT_SIZE = 224
LEGACY_DIR = f"embeddings/{EMBEDDER_KEY}"
# Vectors per store segment while a job embeds (one write per block, not per image).
FLUSH_ROWS = 1024
# Threads decoding images ahead of the network (Pillow and torch release the GIL).
DECODE_THREADS = max(1, min(4, (os.cpu_count() or 2) - 1))

_EMBEDDER: dict[str, torch.nn.Module] = {}
_EMBEDDER_LOCK = threading.Lock()


@dataclass(frozen=True)
class RecallRow:
    image_id: int
    name: str  # storage name of the file
    content_hash: str


@dataclass
class Embeddings:
    """`vectors` (n, D) float32, row i for `image_ids[i]` (None when not loaded: the store holds
    them); images that did not decode are missing and listed in `unreadable`."""

    image_ids: list[int]
    vectors: np.ndarray | None
    computed: int = 0
    cached: int = 0
    unreadable: list[int] = field(default_factory=list)


def embedding_name(content_hash: str) -> str:
    """The per-image file of earlier versions (still read, never written by a job)."""
    return f"{LEGACY_DIR}/{content_hash[:2]}/{content_hash}.npy"


def store_root(project_id: int, storage: Storage | None = None) -> Path:
    """The project's vector store directory: in the media storage when it is a local disk,
    else under VAR_DIR (FAISS reads and writes local files)."""
    storage = storage or default_storage
    name = f"vectors/project-{int(project_id)}/{EMBEDDER_KEY}"
    try:
        return Path(storage.path(name))
    except NotImplementedError:
        return Path(settings.VAR_DIR) / name


def project_store(project_id: int, storage: Storage | None = None) -> VectorStore:
    """The project's store; below `IMAGECLEAN_VECTOR_EXACT_BELOW` vectors (setting, default
    50,000) its search is exact, above it goes through the FAISS index."""
    exact_below = int(getattr(settings, "IMAGECLEAN_VECTOR_EXACT_BELOW", 50_000))
    return VectorStore(store_root(project_id, storage), exact_below=exact_below)


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
    """Write a vector in the earlier per-image format (tests plant legacy files with it)."""
    buffer = io.BytesIO()
    np.save(buffer, vector.astype(np.float32), allow_pickle=False)
    if storage.exists(name):
        storage.delete(name)
    storage.save(name, ContentFile(buffer.getvalue()))


def _has_legacy_files(storage: Storage) -> bool:
    try:
        return storage.exists(LEGACY_DIR)
    except (NotImplementedError, OSError):
        return False


def import_legacy(
    rows: Sequence[RecallRow], *, store: VectorStore, storage: Storage | None = None
) -> int:
    """Copy the per-image `.npy` vectors of `rows` that the store lacks into it; returns how
    many. Rows without a readable file are left for embedding."""
    storage = storage or default_storage
    if not rows or not _has_legacy_files(storage):
        return 0
    missing = [row for row, has in zip(rows, store.contains([r.image_id for r in rows])) if not has]
    imported = 0
    for start in range(0, len(missing), 4 * FLUSH_ROWS):
        keys, vectors = [], []
        for row in missing[start : start + 4 * FLUSH_ROWS]:
            vector = _read_cached(embedding_name(row.content_hash), storage)
            if vector is not None and (store.dim is None or vector.shape[0] == store.dim):
                keys.append(row.image_id)
                vectors.append(vector)
        if keys:
            imported += store.add(keys, np.stack(vectors))
    return imported


def embed_rows(
    rows: Sequence[RecallRow],
    *,
    store: VectorStore,
    batch_size: int = 32,
    device: str = "auto",
    on_batch: Callable[[int, int], None] | None = None,
    storage: Storage | None = None,
    load_vectors: bool = True,
    decode_threads: int = DECODE_THREADS,
    save_index: bool = True,
) -> Embeddings:
    """Make sure `store` holds a vector for each of `rows`: read from the store, imported from
    an earlier per-image file, or computed in batches (and added to the store in blocks).
    `on_batch(done, to_compute)` after each batch may raise to stop; what was embedded before
    stays stored. Returns the rows' vectors (`load_vectors`) in row order. `save_index`: write
    the store's index file afterwards (the embedding-on-import task decides that itself, so
    small imports do not rewrite a large index each time; labeling.services.embeddings)."""
    storage = storage or default_storage
    ids = [row.image_id for row in rows]
    stored_before = int(store.contains(ids).sum()) if ids else 0
    imported = import_legacy(rows, store=store, storage=storage)
    have = store.contains(ids) if ids else np.zeros(0, dtype=bool)
    missing = [row for row, has in zip(rows, have, strict=True) if not has]
    unreadable: list[int] = []
    computed = 0
    if missing:
        model = _embedder(device)
        names = {row.image_id: row.name for row in missing}

        def read(image_id: int) -> bytes:
            with storage.open(names[image_id], "rb") as handle:
                return handle.read()

        try:
            stats = embed_pipeline(
                model,
                [row.image_id for row in missing],
                read,
                store.add,
                size=INPUT_SIZE,
                batch_size=batch_size,
                decode_threads=decode_threads,
                flush_rows=FLUSH_ROWS,
                on_batch=on_batch,
            )
        finally:
            if save_index:
                store.save_index()  # what was added, even when a cancel stopped the job
        computed = stats.embedded
        unreadable = [image_id for image_id, _ in stats.unreadable]
    elif imported and save_index:
        store.save_index()
    present = [pk for pk, ok in zip(ids, store.contains(ids), strict=True) if ok] if ids else []
    vectors = None
    if load_vectors:
        vectors = store.get(present) if present else np.zeros((0, 0), dtype=np.float32)
    return Embeddings(
        image_ids=present,
        vectors=vectors,
        computed=computed,
        cached=stored_before + imported,
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
    store: VectorStore | None = None,
) -> RecallRanking:
    """The `k` pool images most similar to the seeds (similarity aggregated over the seeds by
    `aggregate`: "mean", "softmax" or "max"), never one in `exclude_ids`. With `store` (the
    pool's vectors need not be loaded): the store's search over the pool's ids, exact below its
    size threshold, its FAISS index above; without: exact cosine search over `pool.vectors`
    (mlcore.recall.nearest_neighbours)."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not seeds.image_ids:
        raise ValueError("none of the seed images could be read")
    details = {"aggregate": aggregate, "seeds": len(seeds.image_ids)}
    if aggregate == "softmax":
        details["temperature"] = DEFAULT_TEMPERATURE
    if store is not None:
        hits = store.search(
            seeds.vectors,
            k=k,
            allowed_keys=np.asarray(pool.image_ids, dtype=np.int64),
            exclude_keys=np.asarray(sorted(exclude_ids), dtype=np.int64),
            aggregate=aggregate,
            temperature=DEFAULT_TEMPERATURE,
        )
        if store.uses_index():
            details["index"] = "faiss IVF-SQ8"
        items = [
            Recalled(
                image_id=int(key),
                score=float(score),
                rank=rank,
                seed_image_id=seeds.image_ids[int(seed)],
            )
            for rank, (key, score, seed) in enumerate(
                zip(hits.keys, hits.scores, hits.nearest_seed, strict=True), start=1
            )
        ]
        return RecallRanking("similarity", hits.function, items, details)
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


def _probe_facts(probe) -> dict:
    """What a job records of a fitted probe: its labels, its C and its cross-validated AP."""
    return {
        "positives": probe.n_positive,
        "negatives": probe.n_negative,
        "C": probe.C,
        "cv_average_precision": probe.cv_average_precision,
    }


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
    details = {**_probe_facts(probe), "fit": probe.function}
    vectors = pool.vectors if pool.image_ids else np.zeros((0, labeled.vectors.shape[1]), "f4")
    ranking = probe_rank(probe, vectors, k=k, exclude=_pool_exclusions(pool, exclude_ids))
    items = [
        Recalled(image_id=pool.image_ids[int(index)], score=float(score), rank=rank)
        for rank, (index, score) in enumerate(
            zip(ranking.indices, ranking.scores, strict=True), start=1
        )
    ]
    return RecallRanking("probe", ranking.function, items, details)


# Frame vectors read from the store per block when the audit's probe scores them: 1,280 floats
# each, which the probe turns into float64, so a block is about 84 MB, never the whole frame.
PROBE_SCORE_BLOCK = 8192


def probe_second_opinion(
    *,
    project_id: int,
    labeled_rows: Sequence[RecallRow],
    labels: dict[int, int],
    frame_rows: Sequence[RecallRow],
    seed: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray | None, dict]:
    """A second opinion on every image of an audit's frame (labeling.services.audit): the
    logistic probe (mlcore.probe.fit_linear_probe) on the project's stored embeddings, fitted
    on `labeled_rows` with `labels` {image id: 0/1}, its probability for each of `frame_rows`
    (in their order) moved from its balanced classes to the labels' own odds of a positive
    (mlcore.probe.LinearProbe.predict_rate). Embeds what the store lacks first (`on_batch` as in
    `embed_rows`). Returns (values or None, facts): None when the probe cannot be fitted (an
    unreadable image left one class empty) or an image of the frame has no vector."""
    store = project_store(project_id)
    known = embed_rows(labeled_rows, store=store, load_vectors=True)
    y = np.asarray([labels[pk] for pk in known.image_ids], dtype=np.int64)
    if known.vectors is None or not len(y) or y.min() == y.max():
        return None, {"why": "the labeled images with a vector hold one class only"}
    probe = fit_linear_probe(known.vectors, y, seed=seed)
    facts = {**_probe_facts(probe), "function": probe.function}
    embed_rows(frame_rows, store=store, load_vectors=False, on_batch=on_batch)
    ids = [row.image_id for row in frame_rows]
    has = store.contains(ids)
    if not has.all():
        return None, {**facts, "why": f"{int((~has).sum())} frame images have no vector"}
    values = np.empty(len(ids), dtype=np.float64)
    for start in range(0, len(ids), PROBE_SCORE_BLOCK):
        block = ids[start : start + PROBE_SCORE_BLOCK]
        values[start : start + len(block)] = probe.predict_rate(store.get(block))
    return values, {**facts, "prior_odds": probe.labels_odds}
