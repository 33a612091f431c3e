"""`manage.py vectors ACTION PROJECT`: look after a project's embedding store (labeling.ml.recall).

- `status`: rows, keys, segments and index of the store, and how many of the project's images
  have no vector yet;
- `import`: copy the per-image `.npy` vectors of earlier versions into the store, once (a recall
  also imports them as it goes, image by image);
- `embed`: embed every image of the project the store lacks (after a large import, so the
  next recall only ranks), adding them in blocks and saving the index;
- `rebuild`: rewrite the store from its vectors, newest row per image, dropping images no longer
  in the project, and build a new FAISS index (after many re-embeddings, or when the index file
  was lost).
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from labeling.ml.recall import RecallRow, embed_rows, import_legacy, project_store
from labeling.models import Image, Project

ACTIONS = ("status", "import", "embed", "rebuild")


class Command(BaseCommand):
    help = "Status, one-time import, embedding and rebuild of a project's vector store."

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument("project", help="project slug")
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--device", default="auto")

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        if not 1 <= options["batch_size"] <= 512:
            raise CommandError("--batch-size must be from 1 to 512.")
        store = project_store(project.pk)
        started = time.perf_counter()
        images = Image.objects.filter(project=project).order_by("pk")
        action = options["action"]
        if action == "import" or action == "embed":
            rows = [
                RecallRow(image_id=pk, name=name, content_hash=content_hash)
                for pk, name, content_hash in images.values_list("pk", "file", "content_hash")
            ]
            if action == "import":
                added = import_legacy(rows, store=store)
                store.save_index()
                self.stdout.write(f"imported {added} vectors from per-image files")
            else:

                def progress(done: int, total: int) -> None:
                    if done == total or done % (20 * options["batch_size"]) < options["batch_size"]:
                        self.stdout.write(f"  {done}/{total}")

                result = embed_rows(
                    rows,
                    store=store,
                    batch_size=options["batch_size"],
                    device=options["device"],
                    on_batch=progress,
                    load_vectors=False,
                )
                self.stdout.write(
                    f"embedded {result.computed}, already stored or imported {result.cached}, "
                    f"unreadable {len(result.unreadable)}"
                )
        elif action == "rebuild":
            in_project = set(images.values_list("pk", flat=True))
            gone = [int(k) for k in store.stored_keys() if int(k) not in in_project]
            store.rebuild(drop_keys=gone)
            self.stdout.write(f"rebuilt: {store.count()} vectors, {len(gone)} of deleted images")
        store.refresh()
        info = store.describe()
        missing = images.count() - int(store.contains(images.values_list("pk", flat=True)).sum())
        self.stdout.write(
            f"{info['root']}: {info['keys']} images, {info['rows']} rows, "
            f"{info['segments']} segments, index: {info['index_file'] or 'none'} "
            f"({info['index_rows']} rows, {info['index_lists'] or '-'} lists); "
            f"{missing} images without a vector ({time.perf_counter() - started:.1f} s)"
        )
