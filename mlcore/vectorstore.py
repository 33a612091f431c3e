"""A persistent vector store for embeddings: append-only segments on disk plus a FAISS index.

One store holds the vectors of one embedder for one collection (the labeling app keeps one per
project and embedder). It is a directory:

- ``manifest.json``: the dimension, the list of segments in order, the index file and how many
  rows it covers. It is the only file ever replaced; readers trust nothing it does not list;
- ``seg-NNNNNN.ids.npy`` / ``seg-NNNNNN.vec.npy``: a segment, the keys (int64, e.g. image ids)
  and their L2-normalised vectors (float32), written once and never changed. Readers map them
  (``np.load(mmap_mode="r")``), so a million 1280-d vectors (5 GB) need not fit in memory;
- ``index-NNNNNN.faiss``: an IVF index with 8-bit scalar-quantised codes (``IVF<nlist>,SQ8``,
  a quarter of the float32 size) over the rows of the segments in order, built only past
  ``exact_below`` rows and only when faiss is installed. The codes only pick candidates; every
  candidate is scored again from its float32 vector, so the codes' error does not reach the
  ranking.

Crash safety: every file is written to a temporary name, flushed to disk (fsync) and renamed
into place (atomic on POSIX); the manifest is renamed last. A crash at any point leaves the
previous manifest, which lists only complete files; the leftovers (temporaries, segments no
manifest lists) are deleted by the next writer. Writers take an exclusive ``flock`` on
``.lock``, so two jobs adding to one store do not lose each other's rows.

Keys: adding a key again (an image embedded again) supersedes its older row: reads and searches
see the newest one only. Row positions never change when segments merge (``compact`` keeps the
order), so the index stays valid; ``rebuild`` drops superseded rows and builds the index anew.

Search: :meth:`VectorStore.search` takes seeds and returns the keys most similar to them, with
the aggregation of :mod:`mlcore.recall` (soft-max, mean or max over the seeds). Below
``exact_below`` rows, or without faiss, it is the exact :func:`mlcore.recall.nearest_neighbours`
over the stored vectors. Above, the IVF index proposes candidates for each seed (and the seeds'
centroid), restricted to the allowed keys by a faiss ID selector, and the candidates are
re-scored exactly from the stored float32 vectors, as :class:`mlcore.recall.AnnIndex` does.
The index is updated incrementally: rows added after it was saved are added to it when the store
is opened, and :meth:`VectorStore.save_index` persists it (the labeling app does after each
embedding job). When the store has grown past ``RETRAIN_GROWTH`` times the rows the IVF was
trained on, the next index build trains again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlcore.recall import (
    DEFAULT_AGGREGATE,
    DEFAULT_TEMPERATURE,
    _aggregate,
    _check_aggregate,
    nearest_neighbours,
)

__all__ = [
    "ANN_FUNCTION",
    "EXACT_FUNCTION",
    "StoreCorruptError",
    "StoreNeighbours",
    "VectorStore",
    "faiss_available",
]

MANIFEST = "manifest.json"
LOCK = ".lock"
FORMAT_VERSION = 1
EXACT_FUNCTION = "mlcore.recall.nearest_neighbours"
ANN_FUNCTION = "mlcore.vectorstore.VectorStore.search"
# Segments beyond this many are merged (the ones after the largest), so a store filled batch by
# batch does not end up with thousands of small files.
MAX_SEGMENTS = 16
# The IVF is trained again once the store holds this many times the rows it was trained on.
RETRAIN_GROWTH = 4
# Rows the exact search scores at a time (32,768 x 1280 floats: 168 MB).
EXACT_CHUNK = 32768
_SEGMENT = re.compile(r"^seg-(\d{6})\.(ids|vec)\.npy$")
_INDEX = re.compile(r"^index-(\d{6})\.faiss$")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class StoreCorruptError(RuntimeError):
    """A file the manifest lists is missing or does not match it."""


@dataclass(frozen=True)
class StoreNeighbours:
    """``keys`` (k,) most similar first; ``scores`` their aggregated cosine; ``nearest_seed``
    the row of the seeds each is closest to; ``function``: the search that ran."""

    keys: np.ndarray
    scores: np.ndarray
    nearest_seed: np.ndarray
    function: str

    def __len__(self) -> int:
        return int(self.keys.shape[0])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Any) -> None:
    """write(handle) into a temporary file beside ``path``, fsync, rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _normalised(name: str, vectors: np.ndarray, dim: int | None) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(f"{name} have dimension {matrix.shape[1]}, the store has {dim}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} contain NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


class VectorStore:
    """Vectors by integer key, persisted in ``root`` (created on first write).

    dim: fixed by the first ``add`` when not given. exact_below: below this many rows, search
    is exact (and no index is built). nlist/nprobe: IVF clusters (default about
    ``sqrt(rows)``) and clusters visited per query.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        dim: int | None = None,
        exact_below: int = 50_000,
        nlist: int | None = None,
        nprobe: int = 48,
    ) -> None:
        self.root = Path(root)
        self.exact_below = exact_below
        self.nlist = nlist
        self.nprobe = nprobe
        self._dim = dim
        self._manifest: dict = {}
        self._segments: list[tuple[np.ndarray, np.ndarray]] = []
        self._offsets = np.zeros(1, dtype=np.int64)
        self._live: tuple[np.ndarray, np.ndarray] | None = None
        self._index: Any = None
        self._index_covers = 0
        self._index_trained_on = 0
        self._index_file: str | None = None
        self.refresh()

    # ---------------------------------------------------------------- reading

    @property
    def dim(self) -> int | None:
        return self._dim

    def __len__(self) -> int:
        """Rows stored, superseded ones included (see ``count``)."""
        return int(self._offsets[-1])

    def _read_manifest(self) -> dict:
        path = self.root / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            return {"version": FORMAT_VERSION, "dim": self._dim, "segments": [], "index": None}
        if manifest.get("version") != FORMAT_VERSION:
            raise StoreCorruptError(f"{path}: unknown format version {manifest.get('version')}")
        return manifest

    def refresh(self) -> None:
        """Re-read the manifest (another process may have added rows)."""
        manifest = self._read_manifest()
        if manifest == self._manifest and self._segments:
            return
        segments = []
        for entry in manifest["segments"]:
            try:
                ids = np.load(self.root / entry["ids"], mmap_mode="r")
                vec = np.load(self.root / entry["vec"], mmap_mode="r")
            except (FileNotFoundError, ValueError) as error:
                raise StoreCorruptError(f"{self.root}: segment {entry['ids']}: {error}") from error
            if ids.shape != (entry["rows"],) or vec.shape != (entry["rows"], manifest["dim"]):
                raise StoreCorruptError(f"{self.root}: segment {entry['ids']} has the wrong shape")
            segments.append((ids, vec))
        old_rows = len(self) if self._segments else 0
        old_layout = self._manifest.get("layout")
        self._manifest = manifest
        self._segments = segments
        self._offsets = np.cumsum([0] + [len(ids) for ids, _ in segments]).astype(np.int64)
        if manifest.get("dim") is not None:
            self._dim = int(manifest["dim"])
        self._live = None
        if self._index is not None and (
            len(self) < old_rows or manifest.get("layout") != old_layout
        ):
            self._index = None  # rebuilt elsewhere: positions changed, drop ours
        if self._index is not None:
            self._catch_up_index()

    def _live_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys ascending, position of each key's newest row)."""
        if self._live is None:
            if not self._segments:
                empty = np.empty(0, dtype=np.int64)
                self._live = (empty, empty)
            else:
                keys = np.concatenate([np.asarray(ids) for ids, _ in self._segments])
                # Later rows win: reversed, so np.unique's first occurrence is the newest row.
                unique, first = np.unique(keys[::-1], return_index=True)
                self._live = (unique, (len(keys) - 1 - first).astype(np.int64))
        return self._live

    def _positions_of(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, positions of the found keys) for ``keys`` in their order."""
        live_keys, live_positions = self._live_arrays()
        keys = np.asarray(keys, dtype=np.int64).ravel()
        if not len(live_keys):
            return np.zeros(len(keys), dtype=bool), np.empty(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(live_keys, keys), len(live_keys) - 1)
        found = live_keys[at] == keys
        return found, live_positions[at[found]]

    def count(self) -> int:
        """Distinct keys."""
        return len(self._live_arrays()[0])

    def stored_keys(self) -> np.ndarray:
        """Every key, ascending."""
        return self._live_arrays()[0].copy()

    def contains(self, keys) -> np.ndarray:
        return self._positions_of(keys)[0]

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        """Vectors at global row positions (any order), gathered segment by segment."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self._dim or 0), dtype=np.float32)
        if not len(positions):
            return out
        segment_of = np.searchsorted(self._offsets, positions, side="right") - 1
        for s in np.unique(segment_of):
            mask = segment_of == s
            local = positions[mask] - self._offsets[s]
            order = np.argsort(local)
            gathered = np.asarray(self._segments[s][1][local[order]])
            block = np.empty_like(gathered)
            block[order] = gathered
            out[mask] = block
        return out

    def get(self, keys) -> np.ndarray:
        """Vectors (len(keys), D) of ``keys``; KeyError names a missing one."""
        keys = np.asarray(keys, dtype=np.int64).ravel()
        found, positions = self._positions_of(keys)
        if not found.all():
            raise KeyError(f"no vector for key {int(keys[~found][0])}")
        return self._rows(positions)

    def iter_rows(self, chunk: int = 65536) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(start position, keys, vectors) over every stored row in order, ``chunk`` at a time."""
        for s, (ids, vec) in enumerate(self._segments):
            for start in range(0, len(ids), chunk):
                yield (
                    int(self._offsets[s]) + start,
                    np.asarray(ids[start : start + chunk]),
                    np.asarray(vec[start : start + chunk]),
                )

    def describe(self) -> dict:
        """Rows, keys, segments and the saved index, for status pages and commands."""
        index = self._manifest.get("index") or {}
        return {
            "root": str(self.root),
            "dim": self._dim,
            "rows": len(self),
            "keys": self.count(),
            "segments": len(self._manifest.get("segments", [])),
            "index_file": index.get("file"),
            "index_rows": index.get("covers", 0),
            "index_lists": index.get("nlist"),
        }

    # ---------------------------------------------------------------- writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self.refresh()  # what another writer committed meanwhile
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _next_number(self) -> int:
        return int(self._manifest.get("next", 1))

    def _commit(self, manifest: dict) -> None:
        manifest = {**manifest, "version": FORMAT_VERSION, "dim": self._dim}
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        _atomic_write(self.root / MANIFEST, lambda handle: handle.write(data))
        self._manifest = {}  # force refresh to map what was committed
        self.refresh()
        self._remove_unlisted()

    def _remove_unlisted(self) -> None:
        """Delete temporaries and files no manifest lists (left by a crash or a merge)."""
        listed = {MANIFEST, LOCK}
        for entry in self._manifest["segments"]:
            listed.update((entry["ids"], entry["vec"]))
        if self._manifest.get("index"):
            listed.add(self._manifest["index"]["file"])
        for path in self.root.iterdir():
            name = path.name
            ours = _SEGMENT.match(name) or _INDEX.match(name) or name.endswith(".tmp")
            if ours and name not in listed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _write_segment(self, number: int, keys: np.ndarray, vectors: np.ndarray) -> dict:
        entry = {
            "ids": f"seg-{number:06d}.ids.npy",
            "vec": f"seg-{number:06d}.vec.npy",
            "rows": len(keys),
        }
        _atomic_write(self.root / entry["ids"], lambda h: np.save(h, keys, allow_pickle=False))
        _atomic_write(self.root / entry["vec"], lambda h: np.save(h, vectors, allow_pickle=False))
        return entry

    def _write_segment_rows(self, number: int, keys: np.ndarray, positions: np.ndarray) -> dict:
        """A segment of the stored rows at ``positions``, gathered and written in chunks (a
        merge or rebuild of a million rows never holds them twice in memory)."""
        entry = {
            "ids": f"seg-{number:06d}.ids.npy",
            "vec": f"seg-{number:06d}.vec.npy",
            "rows": len(keys),
        }
        _atomic_write(self.root / entry["ids"], lambda h: np.save(h, keys, allow_pickle=False))
        path = self.root / entry["vec"]
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=(len(keys), self._dim)
            )
            for start in range(0, len(keys), 65536):
                out[start : start + 65536] = self._rows(positions[start : start + 65536])
            out.flush()
            del out
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.root)
        return entry

    def add(self, keys, vectors: np.ndarray) -> int:
        """Append rows (L2-normalised here); a key already stored is superseded. One segment
        per call: batch the calls (the labeling app adds about a thousand rows at a time).
        Returns the rows added."""
        keys = np.asarray(keys, dtype=np.int64).ravel()
        matrix = _normalised("vectors", vectors, self._dim)
        if len(keys) != len(matrix):
            raise ValueError(f"{len(keys)} keys for {len(matrix)} vectors")
        if not len(keys):
            return 0
        with self._locked():
            if self._dim is None:
                self._dim = int(matrix.shape[1])
            elif matrix.shape[1] != self._dim:
                raise ValueError(f"vectors have dimension {matrix.shape[1]}, store has {self._dim}")
            number = self._next_number()
            entry = self._write_segment(number, keys, matrix)
            manifest = {
                **self._manifest,
                "segments": [*self._manifest["segments"], entry],
                "next": number + 1,
            }
            self._commit(manifest)
            if len(self._manifest["segments"]) > MAX_SEGMENTS:
                self._merge_tail()
        return len(keys)

    def _merge(self, first: int) -> None:
        """Merge segments[first:] into one, order kept (positions unchanged). Under the lock."""
        entries = self._manifest["segments"]
        if len(entries) - first < 2:
            return
        keys = np.concatenate([np.asarray(ids) for ids, _ in self._segments[first:]])
        positions = np.arange(self._offsets[first], len(self), dtype=np.int64)
        number = self._next_number()
        entry = self._write_segment_rows(number, keys, positions)
        self._commit({**self._manifest, "segments": [*entries[:first], entry], "next": number + 1})

    def _merge_tail(self) -> None:
        sizes = [entry["rows"] for entry in self._manifest["segments"]]
        largest = int(np.argmax(sizes))
        self._merge(largest + 1 if largest + 1 < len(sizes) - 1 else 0)

    def compact(self) -> None:
        """Merge every segment into one (positions and the index stay valid)."""
        with self._locked():
            self._merge(0)

    def rebuild(self, drop_keys=None) -> None:
        """Rewrite the store with only the newest row of each key (less ``drop_keys``), in key
        order, and build a new index from those vectors when the store is large enough (and
        faiss present)."""
        with self._locked():
            order, positions = self._live_arrays()
            if drop_keys is not None and len(drop_keys):
                keep = ~np.isin(order, np.asarray(drop_keys, dtype=np.int64))
                order, positions = order[keep], positions[keep]
            number = self._next_number()
            entries = []
            if len(order):
                entries.append(self._write_segment_rows(number, order, positions))
            self._index = None
            layout = int(self._manifest.get("layout", 0)) + 1
            self._commit(
                {
                    **self._manifest,
                    "segments": entries,
                    "next": number + 1,
                    "index": None,
                    "layout": layout,
                }
            )
            if len(self) >= self.exact_below and faiss_available():
                self._build_index()
                self._save_index_locked()

    # ---------------------------------------------------------------- index

    def uses_index(self) -> bool:
        return len(self) >= self.exact_below and faiss_available()

    def _default_nlist(self) -> int:
        return self.nlist or max(16, min(16384, int(math.sqrt(max(len(self), 1)))))

    def _build_index(self) -> None:
        import faiss

        nlist = self._default_nlist()
        index = faiss.index_factory(self._dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        # k-means on an evenly spread sample of 40 rows per cluster (faiss asks for 39), ten
        # iterations: minutes saved on a million rows, and re-scoring corrects the ranking.
        index.cp.niter = 10
        n = len(self)
        sample = np.linspace(0, n - 1, num=min(n, 40 * nlist)).astype(np.int64)
        index.train(self._rows(np.unique(sample)))
        self._index = index
        self._index_file = None  # not saved yet
        self._index_covers = 0
        self._index_trained_on = n
        self._catch_up_index()

    def _catch_up_index(self) -> None:
        """Add the rows stored after the index's last one."""
        covered = self._index_covers
        if covered >= len(self):
            return
        for start, _keys, vectors in self.iter_rows():
            end = start + len(vectors)
            if end <= covered:
                continue
            block = vectors[max(0, covered - start) :]
            self._index.add(np.ascontiguousarray(block, dtype=np.float32))
        self._index_covers = len(self)

    def _load_index(self) -> bool:
        import faiss

        entry = self._manifest.get("index")
        if not entry:
            return False
        try:
            index = faiss.read_index(str(self.root / entry["file"]))
        except RuntimeError:
            return False  # missing or damaged: build again
        if index.ntotal != entry["covers"] or index.d != self._dim or entry["covers"] > len(self):
            return False
        self._index = index
        self._index_file = entry["file"]
        self._index_covers = int(entry["covers"])
        self._index_trained_on = int(entry.get("trained_on", entry["covers"]))
        self._catch_up_index()
        return True

    def ensure_index(self) -> Any:
        """The faiss index, loaded, caught up or built as needed (None below ``exact_below``)."""
        if not self.uses_index():
            return None
        missing = self._index is None and not self._load_index()
        if missing or len(self) > RETRAIN_GROWTH * max(self._index_trained_on, 1):
            self._build_index()
        else:
            self._catch_up_index()
        return self._index

    def _save_index_locked(self) -> None:
        import faiss

        number = self._next_number()
        name = f"index-{number:06d}.faiss"
        path = self.root / name
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self._index, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.root)
        self._index_file = name
        self._commit(
            {
                **self._manifest,
                "next": number + 1,
                "index": {
                    "file": name,
                    "covers": int(self._index.ntotal),
                    "trained_on": self._index_trained_on,
                    "nlist": int(self._index.nlist),
                },
            }
        )

    def save_index(self) -> bool:
        """Build or catch up the index and persist it when the store is large enough; returns
        whether an index was saved. Cheap to call when nothing changed."""
        with self._locked():
            if self.ensure_index() is None:
                return False
            entry = self._manifest.get("index") or {}
            if entry.get("file") == self._index_file and entry.get("covers") == (
                self._index.ntotal
            ):
                return True  # the file holds this index already
            self._save_index_locked()
            return True

    # ---------------------------------------------------------------- search

    def _live_positions(self, allowed_keys, exclude_keys) -> np.ndarray:
        """Positions of the newest rows of the allowed, not excluded keys, ascending."""
        live_keys, live_positions = self._live_arrays()
        keep = None
        if allowed_keys is not None:
            keep = np.isin(live_keys, np.asarray(allowed_keys, dtype=np.int64).ravel())
        if exclude_keys is not None and len(exclude_keys):
            dropped = np.isin(live_keys, np.asarray(exclude_keys, dtype=np.int64).ravel())
            keep = ~dropped if keep is None else keep & ~dropped
        positions = live_positions if keep is None else live_positions[keep]
        return np.sort(positions)

    def search(
        self,
        seeds: np.ndarray,
        *,
        k: int,
        allowed_keys=None,
        exclude_keys=None,
        aggregate: str = DEFAULT_AGGREGATE,
        temperature: float = DEFAULT_TEMPERATURE,
        candidates_per_query: int | None = None,
        exact: bool | None = None,
    ) -> StoreNeighbours:
        """The ``k`` stored keys most similar to ``seeds`` (S, D), aggregated over the seeds.

        allowed_keys: search only these (None: every key); exclude_keys: never return these.
        exact: force the exact search (True) or the index (False); None decides by size.
        Ties keep the lower key first on the exact path.
        """
        _check_aggregate(aggregate, temperature)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if self._dim is None:
            return _empty(EXACT_FUNCTION)
        seed_vectors = _normalised("seeds", seeds, self._dim)
        if not len(seed_vectors):
            raise ValueError("give at least one seed")
        positions = self._live_positions(allowed_keys, exclude_keys)
        use_index = self.uses_index() if exact is None else not exact
        if use_index and not faiss_available():
            raise ImportError("the index needs faiss: pip install faiss-cpu")
        if not use_index or not len(positions) or k == 0:
            return self._exact(seed_vectors, positions, k, aggregate, temperature)
        return self._ann(seed_vectors, positions, k, aggregate, temperature, candidates_per_query)

    def _key_at(self, positions: np.ndarray) -> np.ndarray:
        segment_of = np.searchsorted(self._offsets, positions, side="right") - 1
        out = np.empty(len(positions), dtype=np.int64)
        for s in np.unique(segment_of):
            mask = segment_of == s
            out[mask] = np.asarray(self._segments[s][0])[positions[mask] - self._offsets[s]]
        return out

    def _exact(self, seeds, positions, k, aggregate, temperature) -> StoreNeighbours:
        """Exact search, ``EXACT_CHUNK`` rows at a time (a million vectors never sit in memory
        at once); the chunks' top ``k`` merge by score, then the lower key among ties."""
        if not len(positions):
            return _empty(EXACT_FUNCTION)
        found_keys, found_scores, found_seeds = [], [], []
        for start in range(0, len(positions), EXACT_CHUNK):
            chunk = positions[start : start + EXACT_CHUNK]
            keys = self._key_at(chunk)
            found = nearest_neighbours(
                self._rows(chunk), seeds, k=k, aggregate=aggregate, temperature=temperature
            )
            found_keys.append(keys[found.indices])
            found_scores.append(found.scores)
            found_seeds.append(found.nearest_seed)
        keys = np.concatenate(found_keys)
        scores = np.concatenate(found_scores)
        order = np.lexsort((keys, -scores))[:k]
        return StoreNeighbours(
            keys=keys[order],
            scores=scores[order],
            nearest_seed=np.concatenate(found_seeds)[order],
            function=EXACT_FUNCTION,
        )

    def _ann(self, seeds, positions, k, aggregate, temperature, per_query) -> StoreNeighbours:
        import faiss

        index = self.ensure_index()
        mask = np.zeros(index.ntotal, dtype=bool)
        mask[positions] = True
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersIVF(sel=selector, nprobe=min(self.nprobe, index.nlist))
        queries = seeds
        if aggregate != "max":
            centroid = _normalised("seeds", seeds.mean(axis=0, keepdims=True), self._dim)
            queries = np.concatenate([seeds, centroid])
        per_query = min(int(mask.sum()), per_query or max(2 * k, 100))
        _, ids = index.search(np.ascontiguousarray(queries), per_query, params=params)
        candidates = np.unique(ids[ids >= 0])
        if not len(candidates):
            return _empty(ANN_FUNCTION)
        stored = torch.from_numpy(self._rows(candidates))
        scores, nearest = _aggregate(stored @ torch.from_numpy(seeds).T, aggregate, temperature)
        order = torch.argsort(-scores, stable=True)[:k].numpy()
        return StoreNeighbours(
            keys=self._key_at(candidates[order]),
            scores=scores.numpy()[order].astype(np.float32),
            nearest_seed=nearest.numpy()[order].astype(np.int64),
            function=ANN_FUNCTION,
        )


def _empty(function: str) -> StoreNeighbours:
    empty = np.empty(0, dtype=np.int64)
    return StoreNeighbours(empty, np.empty(0, dtype=np.float32), empty, function)


def timed_search(store: VectorStore, seeds: np.ndarray, **kwargs) -> tuple[StoreNeighbours, float]:
    """(result, seconds) of one search: what the benchmark times."""
    started = time.perf_counter()
    found = store.search(seeds, **kwargs)
    return found, time.perf_counter() - started
