"""Embedding on import: new images get their vectors in the project's store as they arrive.

Cold-start recall ranks by the vectors of `labeling.ml.recall.project_store` (docs/vectors.md).
It embeds whatever the store lacks when it runs, which on a large import meant the engineer's
first recall waited for the whole import to be embedded. Instead, once an import commits,
`enqueue_embedding_for(project, image_ids)` sends one `labeling.tasks.ml_embed_images` task per
block of `EMBED_BLOCK` new images (on commit: the worker must see the rows), so every running ml
worker takes a share, and the recall finds them stored.

The task is thin and idempotent: it embeds only the ids the store lacks (`embed_rows`), so a
message delivered twice after a worker died embeds nothing the second time, and a block that
was never run (no ml worker, a task lost) costs nothing but time: the next recall, or
`manage.py vectors embed`, embeds what is missing, as before. It is not a Job row: nobody waits
on it, starts it or cancels it, like the triage pass that also follows an import.

Its adds are incremental: each block is new segments of the store. The FAISS index (stores of
50,000 vectors and more) takes the new rows in memory when the store is next opened; the file
is written again only when the rows it lacks reach `INDEX_SAVE_BEHIND` or a tenth of what it
covers, so a stream of small imports does not rewrite a large index file each time.
"""

from __future__ import annotations

from collections.abc import Iterable

from labeling.models import Image, Project
from labeling.services.jobs import task_enqueue

EMBED_TASK = "labeling.tasks.ml_embed_images"
# Images per task: a few minutes of a CPU worker, small enough to spread a big import.
EMBED_BLOCK = 512
# Rows added since the index file was written before it is written again (see the docstring).
INDEX_SAVE_BEHIND = 20_000
# Images per forward pass (cold start's default batch size).
EMBED_BATCH_SIZE = 32


def enqueue_embedding_for(*, project: Project, image_ids: Iterable[int]) -> int:
    """After an import: embed these new images of `project` in the background, once the
    surrounding transaction commits. Returns the number of tasks it will send."""
    ids = sorted({int(pk) for pk in image_ids})
    blocks = [ids[start : start + EMBED_BLOCK] for start in range(0, len(ids), EMBED_BLOCK)]
    for block in blocks:
        task_enqueue(EMBED_TASK, project.pk, block)
    return len(blocks)


def _save_index_if_due(store) -> bool:
    info = store.describe()
    if not store.uses_index():
        return False
    behind = info["rows"] - info["index_rows"]
    if info["index_file"] and behind < max(INDEX_SAVE_BEHIND, info["index_rows"] // 10):
        return False
    return store.save_index()


def embed_images_run(*, project_id: int, image_ids: list[int]) -> dict:
    """Add the vectors of `image_ids` (those still in the project) that the project's store
    lacks. Returns what it did: {"images", "embedded", "already_stored", "unreadable",
    "index_saved"}."""
    # The ML bridge is imported here: the import service (web process) imports this module.
    from labeling.ml.recall import RecallRow, embed_rows, project_store

    rows = [
        RecallRow(image_id=pk, name=name, content_hash=content_hash)
        for pk, name, content_hash in Image.objects.filter(project_id=project_id, pk__in=image_ids)
        .order_by("pk")
        .values_list("pk", "file", "content_hash")
    ]
    if not rows:
        return {"images": 0, "embedded": 0, "already_stored": 0, "unreadable": []}
    store = project_store(project_id)
    outcome = embed_rows(
        rows,
        store=store,
        batch_size=EMBED_BATCH_SIZE,
        load_vectors=False,
        save_index=False,
    )
    return {
        "images": len(rows),
        "embedded": outcome.computed,
        "already_stored": outcome.cached,
        "unreadable": outcome.unreadable,
        "index_saved": _save_index_if_due(store),
    }
