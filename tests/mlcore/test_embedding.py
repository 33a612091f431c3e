"""mlcore.embedding.embed_pipeline: the same vectors as mlcore.recall.embed_images on the same
images (real pretrained Lite0, real PNG stamps), unreadable files reported and skipped, vectors
reaching the sink in blocks, a stop from the progress callback keeping what was embedded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlcore import recall
from mlcore.data import ImageDataset, ImageRecord, make_loader
from mlcore.embedding import embed_pipeline

STAMPS = Path("/usr/share/tuxpaint/stamps")


@pytest.fixture(scope="module")
def stamps() -> list[bytes]:
    files = sorted(p for p in (STAMPS / "animals").rglob("*.png") if "_mirror" not in p.name)
    return [p.read_bytes() for p in files[:10]]


@pytest.fixture(scope="module")
def embedder():
    return recall.default_embedder(device="cpu")


@pytest.mark.slow
def test_pipeline_vectors_equal_embed_images_and_bad_files_are_reported(stamps, embedder):
    reference = recall.embed_images(
        embedder,
        make_loader(
            ImageDataset([ImageRecord(source=b) for b in stamps], recall.embedder_transform()),
            batch_size=4,
            shuffle=False,
            seed=0,
        ),
        device="cpu",
    )
    files = {i * 10: data for i, data in enumerate(stamps)}
    files[35] = b"not an image"  # unreadable, between good ones

    def read(key: int) -> bytes:
        if key == 55:
            raise FileNotFoundError("gone")
        return files[key]

    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    progress: list[tuple[int, int]] = []
    keys = [0, 10, 20, 30, 35, 40, 50, 55, 60, 70, 80, 90]
    stats = embed_pipeline(
        embedder,
        keys,
        read,
        lambda k, v: blocks.append((k, v)),
        batch_size=3,
        decode_threads=2,
        flush_rows=4,
        on_batch=lambda done, total: progress.append((done, total)),
    )
    assert stats.embedded == 10 and stats.seconds >= stats.forward_seconds > 0
    assert [key for key, _ in stats.unreadable] == [35, 55]
    assert "not an image" in stats.unreadable[0][1] or "cannot identify" in stats.unreadable[0][1]
    assert all(len(k) >= 4 for k, _ in blocks[:-1])  # blocks, not one write per image
    got_keys = np.concatenate([k for k, _ in blocks])
    got = np.concatenate([v for _, v in blocks])
    assert got_keys.tolist() == [k for k in keys if k not in (35, 55)]
    np.testing.assert_allclose(got, reference, atol=2e-5)
    assert progress[-1] == (12, 12) and [d for d, _ in progress] == sorted(d for d, _ in progress)


@pytest.mark.slow
def test_a_stop_from_the_progress_callback_flushes_what_was_embedded(stamps, embedder):
    blocks: list[np.ndarray] = []

    class Stop(Exception):
        pass

    def stop_after_two(done: int, total: int) -> None:
        if done >= 4:
            raise Stop

    with pytest.raises(Stop):
        embed_pipeline(
            embedder,
            range(len(stamps)),
            lambda key: stamps[key],
            lambda k, v: blocks.append(k),
            batch_size=2,
            flush_rows=100,
            on_batch=stop_after_two,
        )
    assert np.concatenate(blocks).tolist() == [0, 1, 2, 3]


def test_bad_arguments_are_refused(embedder):
    with pytest.raises(ValueError, match="batch_size"):
        embed_pipeline(embedder, [1], lambda k: b"", lambda k, v: None, batch_size=0)
    with pytest.raises(TypeError, match="forward_embedding"):
        embed_pipeline(object(), [1], lambda k: b"", lambda k, v: None)
