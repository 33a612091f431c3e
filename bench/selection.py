"""Selection over 1M Score rows in PostgreSQL: time to fill the queue (band ∪ loss + audit).

A fresh PostgreSQL database (bench/_loopdb.py) gets a project with N pool images and one Score
each from one model version (seeded synthetic values, inserted with generate_series), 0.1% of
the images labeled and 0.1% already queued. Then `queue_fill_from_scores` runs as the `select`
job does: k_band = k_loss = 1000, audit share 5%. Timed: the whole service call (eligibility
filters, the band and loss candidate queries, mlcore.selection ranking, the audit sample over
every eligible id, the QueueItem inserts). It runs twice (cold, then warm caches); both are
reported. Goal (TARGETS.md / the brief): <= 60 s at 1M rows. Quick mode: 100k rows.
"""

from __future__ import annotations

import time


def _populate(project, version, user, n: int, seed: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [((seed % 1000) / 1000.0)])
        cursor.execute(
            """
            INSERT INTO labeling_image (project_id, content_hash, file, thumbnail, width, height,
                format, byte_size, source, split, metadata, created_at)
            SELECT %s, md5(g::text) || md5((g + 1)::text), 'bench/' || g || '.jpg', '', 64, 64,
                'JPEG', 1000, 'bench', 'pool', '{}'::jsonb, now()
            FROM generate_series(1, %s) AS g
            """,
            [project.pk, n],
        )
        cursor.execute(
            """
            INSERT INTO labeling_score (image_id, model_version_id, stage1, stage2, score,
                decision, predicted_loss, created_at)
            SELECT id, %s, s1, s2, LEAST(s1, s2), s1 >= 0.5 AND s2 >= 0.5, l, now()
            FROM (SELECT id, power(random(), 3) AS s1, power(random(), 2) AS s2,
                         -ln(1 - random() * 0.999) AS l
                  FROM labeling_image WHERE project_id = %s) AS r
            """,
            [version.pk, project.pk],
        )
        cursor.execute(
            """
            INSERT INTO labeling_label (project_id, image_id, annotator_id, kind, value,
                subcategory, strategy, client_id, created_at)
            SELECT project_id, id, %s, 'annotation', 'normal', '', '', '', now()
            FROM labeling_image WHERE project_id = %s AND id %% 1000 = 7
            """,
            [user.pk, project.pk],
        )
        cursor.execute("ANALYZE labeling_image; ANALYZE labeling_score; ANALYZE labeling_label")


def run(*, quick: bool, seed: int) -> dict:
    from bench import _loopdb

    _loopdb.setup_django("selection")
    try:
        from django.contrib.auth.models import User

        from labeling.models import Image, ModelVersion, Project, Queue, QueueItem, Strategy
        from labeling.services.queues import queue_get_or_create, queue_items_add
        from labeling.services.selection import queue_fill_from_scores

        n = 100_000 if quick else 1_000_000
        project = Project.objects.create(name="bench", slug="bench-selection")
        version = ModelVersion.objects.create(project=project, name="bench", status="ready")
        user = User.objects.create_user("bench-annotator")
        started = time.perf_counter()
        _populate(project, version, user, n, seed)
        populate_s = time.perf_counter() - started
        queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
        queued = list(
            Image.objects.filter(project=project)
            .order_by("pk")
            .values_list("pk", flat=True)[3::1000]
        )
        queue_items_add(queue=queue, images=queued, strategy=Strategy.MANUAL)
        timings = []
        results = []
        for run_index in range(2):
            started = time.perf_counter()
            result = queue_fill_from_scores(
                project=project,
                model_version=version,
                k_band=1000,
                k_loss=1000,
                audit_share=0.05,
                high=0.9,
                band=(0.3, 0.6),
                seed=seed + run_index,
            )
            timings.append(time.perf_counter() - started)
            results.append(result["added"])
        items = QueueItem.objects.filter(queue=queue).count()
        return {
            "score_rows": n,
            "labeled": n // 1000,
            "already_queued": len(queued),
            "populate_seconds": round(populate_s, 1),
            "select_seconds_first": round(timings[0], 2),
            "select_seconds_second": round(timings[1], 2),
            "added_first": results[0],
            "added_second": results[1],
            "queue_items_after": items,
            "goal_seconds": 60,
        }
    finally:
        _loopdb.drop("selection")
