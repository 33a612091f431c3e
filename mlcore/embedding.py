"""The embedding pipeline: read, decode, resize, batch, forward, store, at the network's speed.

:func:`embed_pipeline` embeds items named by integer keys. ``read(key) -> bytes`` fetches a file
(the labeling app reads Django storage; the benchmark reads a folder); a pool of
``decode_threads`` threads decodes and resizes the next batches while the network runs on the
current one (Pillow and torch release the GIL there), so on a CPU the forward pass is the only
work on the critical path. Batches go through the network in ``channels_last`` layout under
``torch.inference_mode``, and the vectors reach ``sink(keys, vectors)`` in blocks of
``flush_rows`` (one store segment per block, not one file per image).

The preprocessing is :func:`mlcore.recall.embedder_transform`'s, split in two: each thread
converts the decoded image to a uint8 tensor and resizes it (antialiased, aspect not kept), and
the float conversion and ImageNet normalisation run on the whole batch at once. The vectors
equal :func:`mlcore.recall.embed_images`'s over the same images (the tests check).

A key whose file is missing or does not decode is reported in ``unreadable`` with the reason
and never reaches the sink; the rest of its batch carries on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as tvf

from mlcore.augment import IMAGENET_MEAN, IMAGENET_STD
from mlcore.data import ImageDecodeError, decode_image

__all__ = ["PipelineStats", "decode_resized", "embed_pipeline", "normalise_batch"]


@dataclass
class PipelineStats:
    """What a run did: ``embedded`` vectors sent to the sink, ``unreadable`` (key, reason),
    ``seconds`` of wall time, ``forward_seconds`` of it in the network."""

    embedded: int = 0
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    forward_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def decode_resized(data: bytes, size: int) -> torch.Tensor:
    """Encoded bytes -> uint8 (3, size, size), as the embedder transform resizes (RGB,
    antialiased, aspect not kept). Raises ImageDecodeError."""
    image = decode_image(data)
    tensor = tvf.pil_to_tensor(image)
    return tvf.resize(tensor, [size, size], antialias=True)


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def normalise_batch(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float ImageNet-normalised, in channels_last layout."""
    batch = batch.contiguous(memory_format=torch.channels_last)
    return ((batch.float() / 255.0) - _MEAN) / _STD


def _load(key: int, read: Callable[[int], bytes], size: int) -> torch.Tensor | str:
    try:
        return decode_resized(read(key), size)
    except (ImageDecodeError, OSError, ValueError) as error:
        return f"{type(error).__name__}: {error}"


@torch.inference_mode()
def embed_pipeline(
    model: nn.Module,
    keys: Sequence[int],
    read: Callable[[int], bytes],
    sink: Callable[[np.ndarray, np.ndarray], None],
    *,
    size: int = 224,
    batch_size: int = 64,
    decode_threads: int = 1,
    prefetch_batches: int = 2,
    flush_rows: int = 1024,
    on_batch: Callable[[int, int], None] | None = None,
) -> PipelineStats:
    """Embed ``keys`` with ``model.forward_embedding`` (L2-normalised float32 vectors) and hand
    them to ``sink(keys (n,), vectors (n, D))`` in blocks of about ``flush_rows``.

    ``on_batch(done, total)`` runs after each batch and may raise to stop (what was flushed
    stays flushed; the rest of the current block is flushed before the exception goes on).
    """
    if not hasattr(model, "forward_embedding"):
        raise TypeError("model needs a forward_embedding(x) method (mlcore.backbones.Classifier)")
    if batch_size < 1 or decode_threads < 1 or prefetch_batches < 1:
        raise ValueError("batch_size, decode_threads and prefetch_batches must be >= 1")
    stats = PipelineStats()
    started = time.perf_counter()
    keys = [int(k) for k in keys]
    device = next(model.parameters()).device
    model.eval()
    model.to(memory_format=torch.channels_last)
    pending_keys: list[np.ndarray] = []
    pending_vectors: list[np.ndarray] = []

    def flush() -> None:
        if pending_keys:
            sink(np.concatenate(pending_keys), np.concatenate(pending_vectors))
            pending_keys.clear()
            pending_vectors.clear()

    window: deque[tuple[int, Future]] = deque()
    with ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode") as pool:
        submitted = 0

        def top_up() -> None:
            nonlocal submitted
            while submitted < len(keys) and len(window) < batch_size * (prefetch_batches + 1):
                key = keys[submitted]
                window.append((key, pool.submit(_load, key, read, size)))
                submitted += 1

        try:
            done = 0
            while done < len(keys):
                top_up()
                batch_keys, tensors = [], []
                for _ in range(min(batch_size, len(window))):
                    key, future = window.popleft()
                    result = future.result()
                    if isinstance(result, str):
                        stats.unreadable.append((key, result))
                    else:
                        batch_keys.append(key)
                        tensors.append(result)
                top_up()  # the next batches decode while this one runs
                done = submitted - len(window)
                if tensors:
                    forward_started = time.perf_counter()
                    batch = normalise_batch(torch.stack(tensors)).to(device, non_blocking=True)
                    vectors = nn.functional.normalize(model.forward_embedding(batch).float(), dim=1)
                    stats.forward_seconds += time.perf_counter() - forward_started
                    pending_keys.append(np.asarray(batch_keys, dtype=np.int64))
                    pending_vectors.append(vectors.cpu().numpy().astype(np.float32))
                    stats.embedded += len(batch_keys)
                    if sum(len(k) for k in pending_keys) >= flush_rows:
                        flush()
                if on_batch is not None:
                    on_batch(done, len(keys))
        finally:
            for _, future in window:
                future.cancel()
            flush()
    stats.seconds = time.perf_counter() - started
    return stats
