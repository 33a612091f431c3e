"""mlcore.vectorstore: incremental adds, persistence, rebuild, the exact fallback, crash safety
(a writer killed with SIGKILL mid-write, a damaged index file) and concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mlcore import vectorstore
from mlcore.recall import nearest_neighbours
from mlcore.vectorstore import ANN_FUNCTION, EXACT_FUNCTION, VectorStore


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _data(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return _unit(np.random.default_rng(seed).normal(size=(n, dim)))


def test_incremental_adds_persist_and_a_key_added_again_supersedes_its_row(tmp_path):
    vectors = _data(300)
    store = VectorStore(tmp_path)
    assert len(store) == 0 and store.dim is None
    assert store.search(vectors[:2], k=5).keys.size == 0  # empty: nothing, no error
    for start in range(0, 300, 100):
        store.add(np.arange(start, start + 100) * 10, vectors[start : start + 100] * 3.0)
    reopened = VectorStore(tmp_path)
    assert reopened.dim == 32 and reopened.count() == 300
    np.testing.assert_allclose(reopened.get([0, 2990, 10]), vectors[[0, 299, 1]], atol=1e-6)
    assert reopened.contains([10, 11, 2990]).tolist() == [True, False, True]
    with pytest.raises(KeyError, match="no vector for key 11"):
        reopened.get([10, 11])
    reopened.add([10], vectors[[5]])  # image 10 embedded again
    again = VectorStore(tmp_path)
    assert again.count() == 300 and len(again) == 301
    np.testing.assert_allclose(again.get([10]), vectors[[5]], atol=1e-6)
    # The superseded row is never returned: seed = the old vector of key 10.
    found = again.search(vectors[[1]], k=3, exact=True)
    assert found.keys[0] != 10 or found.scores[0] < 0.999
    with pytest.raises(ValueError, match="dimension 8"):
        again.add([1], np.ones((1, 8)))
    with pytest.raises(ValueError, match="NaN"):
        again.add([1], np.full((1, 32), np.nan))
    with pytest.raises(ValueError, match="2 keys for 1 vectors"):
        again.add([1, 2], np.ones((1, 32)))


def test_many_small_adds_are_merged_into_few_segments(tmp_path):
    vectors = _data(400)
    store = VectorStore(tmp_path)
    for i in range(40):
        store.add(np.arange(i * 10, i * 10 + 10), vectors[i * 10 : i * 10 + 10])
    assert len(store._manifest["segments"]) <= vectorstore.MAX_SEGMENTS
    files = {p.name for p in tmp_path.iterdir()}
    assert len([f for f in files if f.endswith(".vec.npy")]) <= vectorstore.MAX_SEGMENTS
    np.testing.assert_allclose(VectorStore(tmp_path).get(np.arange(400)), vectors, atol=1e-6)


@pytest.mark.parametrize("aggregate", ["softmax", "mean", "max"])
def test_exact_search_matches_nearest_neighbours_on_the_allowed_keys(tmp_path, aggregate):
    vectors = _data(500, seed=1)
    keys = np.arange(500) * 7 + 3
    store = VectorStore(tmp_path)
    store.add(keys, vectors)
    seeds = vectors[[4, 9, 30]]
    allowed = keys[::2]
    found = store.search(
        seeds, k=20, allowed_keys=allowed, exclude_keys=keys[[4, 30]], aggregate=aggregate
    )
    assert found.function == EXACT_FUNCTION
    mask = np.zeros(500, dtype=bool)
    mask[::2] = True
    mask[[4, 30]] = False
    expected = nearest_neighbours(vectors[mask], seeds, k=20, aggregate=aggregate)
    np.testing.assert_array_equal(found.keys, keys[mask][expected.indices])
    np.testing.assert_allclose(found.scores, expected.scores, atol=1e-6)
    np.testing.assert_array_equal(found.nearest_seed, expected.nearest_seed)


def _planted(n: int, dim: int, seeds: int, per_seed: int, seed: int = 0):
    """Random unit vectors; around each of ``seeds`` query vectors, ``per_seed`` neighbours at
    cosine 0.7-0.9 planted at random rows. Returns (vectors, queries, planted rows)."""
    rng = np.random.default_rng(seed)
    vectors = _unit(rng.normal(size=(n, dim)))
    queries = _unit(rng.normal(size=(seeds, dim)))
    rows = rng.choice(n, size=seeds * per_seed, replace=False)
    for i, row in enumerate(rows):
        query = queries[i // per_seed]
        noise = _unit(rng.normal(size=(1, dim)))[0]
        noise -= (noise @ query) * query
        noise /= np.linalg.norm(noise)
        cos = rng.uniform(0.7, 0.9)
        vectors[row] = cos * query + np.sqrt(1 - cos**2) * noise
    return vectors, queries, rows


def test_the_index_finds_the_planted_neighbours_and_is_updated_incrementally(tmp_path):
    vectors, queries, rows = _planted(6000, 48, seeds=3, per_seed=10)
    store = VectorStore(tmp_path, exact_below=1000)
    store.add(np.arange(5000), vectors[:5000])
    assert store.uses_index()
    assert store.save_index()
    index_file = store._manifest["index"]["file"]
    first = store.search(queries, k=30)
    assert first.function == ANN_FUNCTION
    exact = store.search(queries, k=30, exact=True)
    early = set(rows[rows < 5000].tolist())
    assert early <= set(first.keys.tolist()) and early <= set(exact.keys.tolist())
    # Rows added after the index was saved: another process opens the store, catches the
    # saved index up with them and finds the new planted rows too.
    store.add(np.arange(5000, 6000), vectors[5000:])
    reopened = VectorStore(tmp_path, exact_below=1000)
    found = reopened.search(queries, k=30)
    assert set(rows.tolist()) == set(found.keys.tolist())
    assert reopened._index.ntotal == 6000
    assert reopened._manifest["index"]["file"] == index_file  # loaded, not built again
    assert reopened.save_index() and reopened._manifest["index"]["covers"] == 6000
    # Restricted to allowed keys: the planted rows that are not allowed never come back.
    allowed = np.setdiff1d(np.arange(6000), rows[:5])
    restricted = reopened.search(queries, k=30, allowed_keys=allowed)
    assert not set(restricted.keys.tolist()) & set(rows[:5].tolist())
    assert set(rows[5:].tolist()) <= set(restricted.keys.tolist())


def test_rebuild_drops_superseded_rows_and_builds_a_new_index(tmp_path):
    vectors, queries, rows = _planted(3000, 32, seeds=2, per_seed=8, seed=2)
    store = VectorStore(tmp_path, exact_below=500)
    store.add(np.arange(3000), vectors)
    store.add(np.arange(100), _data(100, seed=9))  # supersede 100 rows
    store.save_index()
    before = store.search(queries, k=16)
    store.rebuild()
    assert len(store) == store.count() == 3000
    assert len(store._manifest["segments"]) == 1
    assert store._manifest["index"]["covers"] == 3000
    after = VectorStore(tmp_path, exact_below=500).search(queries, k=16)
    exact = store.search(queries, k=16, exact=True)
    np.testing.assert_array_equal(np.sort(after.keys), np.sort(exact.keys))
    np.testing.assert_array_equal(np.sort(before.keys), np.sort(after.keys))
    leftover = {p.name for p in tmp_path.iterdir()}
    assert len([f for f in leftover if f.endswith(".faiss")]) == 1
    assert not [f for f in leftover if f.endswith(".tmp")]


def test_without_faiss_a_large_store_searches_exactly(tmp_path, monkeypatch):
    vectors, queries, rows = _planted(3000, 32, seeds=2, per_seed=5, seed=3)
    store = VectorStore(tmp_path, exact_below=100)
    store.add(np.arange(3000), vectors)
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    assert not vectorstore.faiss_available() and not store.uses_index()
    assert not store.save_index()
    found = store.search(queries, k=10)
    assert found.function == EXACT_FUNCTION and set(found.keys.tolist()) == set(rows.tolist())
    with pytest.raises(ImportError, match="faiss"):
        store.search(queries, k=10, exact=False)


def test_a_damaged_index_file_is_rebuilt_from_the_vectors(tmp_path):
    vectors, queries, rows = _planted(3000, 32, seeds=2, per_seed=5, seed=4)
    store = VectorStore(tmp_path, exact_below=500)
    store.add(np.arange(3000), vectors)
    store.save_index()
    path = tmp_path / store._manifest["index"]["file"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    reopened = VectorStore(tmp_path, exact_below=500)
    found = reopened.search(queries, k=10)
    assert found.function == ANN_FUNCTION and set(found.keys.tolist()) == set(rows.tolist())
    assert reopened.save_index()
    assert VectorStore(tmp_path, exact_below=500)._load_index()


def test_a_failed_write_leaves_the_previous_store_and_the_next_writer_cleans_up(
    tmp_path, monkeypatch
):
    vectors = _data(200)
    store = VectorStore(tmp_path)
    store.add(np.arange(100), vectors[:100])
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        store.add(np.arange(100, 200), vectors[100:])
    monkeypatch.setattr(os, "replace", real_replace)
    orphans = [p.name for p in tmp_path.iterdir() if p.name.startswith("seg-")]
    assert len(orphans) == 4  # the new segment's two files, on disk but not listed
    reopened = VectorStore(tmp_path)
    assert reopened.count() == 100
    reopened.add(np.arange(100, 200), vectors[100:])
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("seg-"))
    assert len(names) == 4 and reopened.count() == 200  # the orphans are gone
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from mlcore.vectorstore import VectorStore

    store = VectorStore(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    batch = 0
    while True:
        keys = np.arange(batch * 500, batch * 500 + 500) + int(sys.argv[2]) * 10**7
        store.add(keys, rng.normal(size=(500, 64)).astype(np.float32))
        batch += 1
        print(batch, flush=True)
    """
)


@pytest.mark.fault
def test_a_writer_killed_mid_write_leaves_a_consistent_store(tmp_path):
    """SIGKILL a process that adds batches as fast as it can, at several moments: the store
    always opens, holds whole batches only, and takes more rows afterwards."""
    root = tmp_path / "store"
    for attempt in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(attempt)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        writer.stdout.readline()  # one batch committed
        time.sleep(0.05 + 0.07 * attempt)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        store = VectorStore(root)
        assert store.count() % 500 == 0 and store.count() >= 500 * (attempt + 1)
        keys = store.stored_keys()
        assert np.isfinite(store.get(keys[:: max(1, len(keys) // 50)])).all()
    store.add([1], np.ones((1, 64)))
    assert VectorStore(root).contains([1]).tolist() == [True]


def _add_many(root: str, offset: int) -> None:
    store = VectorStore(root)
    for batch in range(10):
        keys = np.arange(batch * 50, batch * 50 + 50) + offset
        store.add(keys, np.random.default_rng(offset + batch).normal(size=(50, 16)))


def test_two_processes_adding_at_once_lose_no_rows(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(str(tmp_path), o)) for o in (0, 10**6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert VectorStore(tmp_path).count() == 1000
