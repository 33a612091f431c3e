"""Pages and list APIs over a large pool: p95 of each with 1M images and 5M labels in PostgreSQL.

What runs (issue 11, item 3): a fresh PostgreSQL database `imageclean_bench_pages`, migrated;
one project seeded in bulk with INSERT ... SELECT FROM generate_series (never the ORM one row at a
time): N images (10% in the validation split), every pool image in the labeling queue and every
validation image in the validation queue (mixed strategies, the labeled ones done), a re-review
queue, four images in five labeled (spread over the pool; 5M labels make 6.25 each) by 50
annotators (a third of the labels from grid pages, 2% imported, 5,000 answers to 20 gold items,
spread over 60 days), a completed lease per done item, a ready model version with a score
for every image, and 300 jobs. Triggers (foreign-key checks, the current-label trigger) are off
while the generated rows go in, and the current-label table is then filled set-based
(labeling.selectors.current_sql.BACKFILL_SQL, the rule the trigger applies), and so are the
per-annotator tallies (labeling.selectors.tally_sql.backfill) and the per-queue item counts
(labeling.selectors.item_count_sql.BACKFILL_SQL), then VACUUM ANALYZE, as autovacuum would do
after such a load.

Then each page and API is requested through the whole Django stack (django.test.Client: URL
routing, middleware, sessions, authentication, permissions, templates, DRF) as the role that
uses it, `reps` times after one warm-up request, and its p50 / p95 / max and SQL statement count
are reported. A request slower than `give_up_s` stops that endpoint's repetitions, and a SQL
statement slower than it fails its request (PostgreSQL's statement_timeout: the endpoint is
reported as answering 500), so a page that does grow with the pool cannot hold the run up for an
hour; the figures say which.

--quick seeds 20,000 images / 100,000 labels and repeats each request 10 times (CI: seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG_DB = "imageclean_bench_pages"
ANNOTATORS = 50
TARGET_P95_MS = 100.0


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=None, help="pool size (full: 1,000,000)")
    parser.add_argument("--labels", type=int, default=None, help="labels (full: 5,000,000)")
    parser.add_argument("--reps", type=int, default=None, help="requests per endpoint")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the database a previous run seeded (migrated first, so a schema change "
        "that came since, and its backfill, applies to it)",
    )
    parser.add_argument(
        "--database",
        default=PG_DB,
        help=f"database name (default {PG_DB}); a copy made with CREATE DATABASE ... TEMPLATE "
        "lets several people measure one seeded pool",
    )


def _env(database_url: str) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url,
        DJANGO_DEBUG="0",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
    )
    # Nothing here touches the broker; keep it off other people's Redis databases.
    env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/7")
    return env


def _child(env: dict, *args: str, timeout: float = 3600) -> str:
    done = subprocess.run(
        [PYTHON, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done.stdout


def _fresh_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG_ADMIN_URL}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def run(
    *,
    quick: bool,
    seed: int,
    images: int | None = None,
    labels: int | None = None,
    reps: int | None = None,
    reuse: bool = False,
    database: str = PG_DB,
) -> dict:
    n_images = images or (20_000 if quick else 1_000_000)
    n_labels = labels or (100_000 if quick else 5_000_000)
    reps = reps or (10 if quick else 30)
    figures: dict = {"load_average_before": list(os.getloadavg())}
    env = _env(f"{PG_ADMIN_URL}/{database}")
    if reuse:
        started = time.perf_counter()
        _child(env, "manage.py", "migrate", "--noinput", timeout=3600)
        figures["migrate_seconds"] = round(time.perf_counter() - started, 1)
    else:
        _fresh_database(database)
        started = time.perf_counter()
        _child(env, "manage.py", "migrate", "--noinput", timeout=600)
        figures["seed"] = json.loads(
            _child(env, "-m", "bench.pages", "seed", str(n_images), str(n_labels), str(seed))
        )
        figures["seed"]["seconds_with_migrate"] = round(time.perf_counter() - started, 1)
    give_up_s = 5 if quick else 20
    # Every connection of the measuring process (Django may open one per request) gets the
    # statement timeout from libpq's PGOPTIONS.
    measure_env = {**env, "PGOPTIONS": f"-c statement_timeout={give_up_s * 1000}"}
    figures["measure"] = json.loads(
        _child(measure_env, "-m", "bench.pages", "measure", str(reps), str(give_up_s))
    )
    slow = [
        name
        for name, row in figures["measure"]["endpoints"].items()
        if row["p95_ms"] > TARGET_P95_MS
    ]
    figures["over_target"] = slow
    figures["target_p95_ms"] = TARGET_P95_MS
    figures["load_average_after"] = list(os.getloadavg())
    return figures


# --- Child commands (Django set up against the benchmark's database) ----------------------------
def _seed(n_images: int, n_labels: int, seed: int, vacuum: bool = True) -> dict:
    """Seed the project (module docstring). tests/labeling/test_page_queries.py seeds with it
    too, inside its test transaction (vacuum=False: VACUUM cannot run in one; it ANALYZEs)."""
    from django.contrib.auth.models import Group, User
    from django.db import connection, transaction

    from labeling.models import ModelVersion, Queue
    from labeling.selectors import current_sql, item_count_sql, tally_sql
    from labeling.services.gold import gold_queue_ensure
    from labeling.services.projects import project_create, project_validation_queue_ensure

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, sql: str, params=None) -> None:
        t0 = time.perf_counter()
        with connection.cursor() as cur:
            cur.execute(sql, params)
        timings[name] = round(time.perf_counter() - t0, 1)

    engineer = User.objects.create_user("bench-engineer", password=None)
    engineer.groups.add(Group.objects.get(name="site_engineer"))
    lead = User.objects.create_user("bench-lead", password=None)
    lead.groups.add(Group.objects.get(name="lead"))
    project = project_create(
        name="Pages bench", slug="pages-bench", created_by=engineer, blur_images=False
    )
    project.members.add(lead)
    annotator_group = Group.objects.get(name="annotator")
    annotators = []
    for i in range(ANNOTATORS):
        user = User.objects.create_user(f"bench-annotator-{i}", password=None)
        user.groups.add(annotator_group)
        project.members.add(user)
        annotators.append(user.pk)
    gold_queue_ensure(project=project)
    project_validation_queue_ensure(project=project)
    queues = {q.kind: q.pk for q in Queue.objects.filter(project=project)}
    review = Queue.objects.get(pk=queues["review"])
    version = ModelVersion.objects.create(
        project=project, name="bench-v1", status=ModelVersion.Status.READY, class_keys=["a", "b"]
    )
    project.active_model_version = version
    project.save(update_fields=["active_model_version"])
    p = project.pk
    positive, normal = project.positive_class, project.default_class
    # Four images in five are labeled (offsets from the first image not = 4 mod 5, so the
    # unlabeled ones are spread over the pool), with n_labels / n_labeled labels each.
    n_labeled = n_images - n_images // 5
    a0, n_ann = min(annotators), ANNOTATORS  # annotator ids are consecutive

    with transaction.atomic():
        # Generated rows, consistent by construction: no trigger runs while they go in (neither
        # the foreign-key checks, millions of index probes, nor the current-label trigger,
        # whose table is filled set-based below). Superuser only, as the benchmark's role is.
        step("triggers_off", "SET LOCAL session_replication_role = replica")
        step(
            "images",
            """
            INSERT INTO labeling_image (project_id, content_hash, file, thumbnail, width, height,
                format, byte_size, source, split, metadata, created_at)
            SELECT %s, md5(i::text) || md5((i + 7)::text), 'images/bench/' || i || '.png', '',
                   256, 256, 'PNG', 10000, 'bench-' || i || '.png',
                   CASE WHEN i %% 10 = 0 THEN 'validation' ELSE 'pool' END, '{}',
                   now() - make_interval(secs => %s - i)
            FROM generate_series(1, %s) AS i
            """,
            [p, n_images, n_images],
        )
        with connection.cursor() as cur:
            cur.execute("SELECT min(id) FROM labeling_image WHERE project_id = %s", [p])
            i0 = cur.fetchone()[0]
        # Queue items: pool images in the labeling queue with mixed strategies, validation images
        # in the validation queue; the labeled ones (the first n_labeled) done.
        step(
            "queue_items",
            """
            INSERT INTO labeling_queueitem (queue_id, image_id, strategy, priority, status,
                labels_needed, labels_done, details, created_at, done_at)
            SELECT CASE WHEN im.split = 'validation' THEN %s ELSE %s END, im.id,
                   CASE WHEN im.split = 'validation' THEN 'validation'
                        ELSE (ARRAY['manual', 'cold_start', 'confidence_band', 'loss_ranked',
                                    'random_audit', 'pool_audit'])[1 + (im.id %% 6)] END,
                   ((im.id * 7919) %% 100000) / 100000.0,
                   CASE WHEN (im.id - %s) %% 5 <> 4 THEN 'done' ELSE 'open' END,
                   1, CASE WHEN (im.id - %s) %% 5 <> 4 THEN 1 ELSE 0 END,
                   jsonb_build_object('decision', im.id %% 3 = 0, 'rank', im.id %% 1000),
                   im.created_at, NULL
            FROM labeling_image im WHERE im.project_id = %s
            """,
            [queues["validation"], queues["labeling"], i0, i0, p],
        )
        step(
            "review_items",
            """
            INSERT INTO labeling_queueitem (queue_id, image_id, strategy, priority, status,
                labels_needed, labels_done, details, created_at)
            SELECT %s, im.id, 'noise_review', (im.id %% 997) / 997.0,
                   CASE WHEN ((im.id - %s) / 100) %% 2 = 0 THEN 'open' ELSE 'done' END,
                   1, 0, '{}', now()
            FROM labeling_image im
            WHERE im.project_id = %s AND (im.id - %s) %% 100 = 0
            """,
            [review.pk, i0, p, i0],
        )
        # Labels: label k goes to labeled image (k mod n_labeled), by a different annotator for
        # each of an image's labels; ~3% positive; a third from grid pages; 2% imported; the
        # newest labels first in time order, spread over 60 days.
        step(
            "labels",
            """
            INSERT INTO labeling_label (project_id, image_id, annotator_id, kind, value,
                subcategory, queue_id, strategy, duration_ms, page_size, client_id, created_at)
            SELECT %s, %s + (k %% %s) + (k %% %s) / 4, %s + ((k / %s + k %% %s) %% %s),
                   CASE WHEN k %% 50 = 7 THEN 'imported' ELSE 'annotation' END,
                   CASE WHEN (k * 2654435761) %% 100 < 3 THEN %s ELSE %s END, '',
                   %s, 'cold_start', 400 + (k * 37) %% 3000,
                   CASE WHEN k %% 3 = 0 THEN 24 ELSE NULL END, '',
                   now() - make_interval(secs => (%s - k) * 5184000.0 / %s)
            FROM generate_series(0, %s - 1) AS k
            """,
            [
                p, i0, n_labeled, n_labeled, a0, n_labeled, n_ann, n_ann, positive, normal,
                queues["labeling"], n_labels, n_labels, n_labels,
            ],
        )  # fmt: skip
        step(
            "gold",
            """
            WITH g AS (
                INSERT INTO labeling_queueitem (queue_id, image_id, strategy, priority, status,
                    labels_needed, labels_done, details, created_at)
                SELECT %s, %s + 5 * j + 4, 'gold', 0, 'open', 1, 0, '{}', now()
                FROM generate_series(0, 19) AS j
                RETURNING id, image_id)
            INSERT INTO labeling_golditem (project_id, image_id, item_id, value, subcategory,
                active, created_at)
            SELECT %s, g.image_id, g.id, %s, '', true, now() FROM g
            """,
            [queues["gold"], i0, p, normal],
        )
        step(
            "gold_answers",
            """
            INSERT INTO labeling_label (project_id, image_id, annotator_id, kind, value,
                subcategory, queue_id, queue_item_id, strategy, duration_ms, client_id,
                created_at)
            SELECT %s, gi.image_id, %s + (k %% %s), 'annotation',
                   CASE WHEN k %% 9 = 0 THEN %s ELSE %s END, '', %s, gi.item_id, 'gold', 900, '',
                   now() - make_interval(secs => k * 60)
            FROM generate_series(0, 4999) AS k
            JOIN (SELECT image_id, item_id, row_number() OVER (ORDER BY image_id) - 1 AS n
                  FROM labeling_golditem WHERE project_id = %s) gi ON gi.n = k %% 20
            """,
            [p, a0, n_ann, positive, normal, queues["labeling"], p],
        )
        # A completed lease for each done labeling item (the history a real queue keeps),
        # and 50 people holding an open item now.
        step(
            "leases",
            """
            INSERT INTO labeling_lease (item_id, annotator_id, slot, state, created_at,
                expires_at, finished_at)
            SELECT qi.id, %s + qi.id %% %s, 0,
                   CASE WHEN qi.status = 'done' THEN 'completed' ELSE 'active' END,
                   now() - interval '1 hour', now() + interval '10 minutes',
                   CASE WHEN qi.status = 'done' THEN now() ELSE NULL END
            FROM labeling_queueitem qi
            WHERE qi.queue_id = %s
              AND (qi.status = 'done' OR qi.id IN (
                    SELECT id FROM labeling_queueitem
                    WHERE queue_id = %s AND status = 'open' ORDER BY id LIMIT 50))
            """,
            [a0, n_ann, queues["labeling"], queues["labeling"]],
        )
        step(
            "scores",
            """
            INSERT INTO labeling_score (image_id, model_version_id, stage1, stage2, score,
                decision, predicted_loss, created_at)
            SELECT im.id, %s, s, s, s, s > 0.9, ((im.id * 31) %% 1000) / 1000.0, now()
            FROM (SELECT id, ((id * 104729) %% 1000003) / 1000003.0 AS s
                  FROM labeling_image WHERE project_id = %s) im
            """,
            [version.pk, p],
        )
        step(
            "jobs",
            """
            INSERT INTO labeling_job (project_id, kind, params, status, stage, percent, log,
                error, result, cancel_requested, attempts, created_at, started_at, finished_at,
                owner)
            SELECT %s, (ARRAY['score_pool', 'select', 'train_cascade', 'detect_noise'])
                       [1 + j %% 4], '{}', 'succeeded', '', 100, '[]', '',
                   '{"images": 1000, "scored": 1000}', false, 1,
                   now() - make_interval(mins => j), now() - make_interval(mins => j),
                   now() - make_interval(mins => j), ''
            FROM generate_series(1, 300) AS j
            """,
            [p],
        )
        step("current_labels", current_sql.BACKFILL_SQL)
        # The per-annotator tallies, as migration 0015 fills them (labeling.selectors.tally_sql).
        for n, statement in enumerate(tally_sql.backfill(connection.vendor)):
            step(f"annotator_tallies_{n}", statement)
        # The per-queue item counts, as migration 0017 fills them (item_count_sql).
        step("queue_item_counts", item_count_sql.BACKFILL_SQL)
        step("triggers_on", "SET LOCAL session_replication_role = origin")
    if vacuum:
        t0 = time.perf_counter()
        connection.ensure_connection()
        raw = connection.connection
        old = raw.autocommit
        raw.autocommit = True
        with raw.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        raw.autocommit = old
        timings["vacuum_analyze"] = round(time.perf_counter() - t0, 1)
    with connection.cursor() as cur:
        counts = {}
        for table in ("image", "label", "queueitem", "lease", "currentlabel", "score", "job"):
            cur.execute(f"SELECT count(*) FROM labeling_{table}")  # noqa: S608 - fixed names
            counts[table] = cur.fetchone()[0]
        cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cur.fetchone()[0]
    return {
        "rows": counts,
        "database_size": size,
        "steps_s": timings,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _endpoints() -> list[tuple[str, str, str]]:
    """(name, role, URL) of each page and API measured."""
    from django.contrib.auth.models import User

    from labeling.models import Job, Project, Queue

    project = Project.objects.get(slug="pages-bench")
    s = project.slug
    queues = {q.kind: q.pk for q in Queue.objects.filter(project=project)}
    job = Job.objects.filter(project=project).order_by("-id").first()
    annotator = User.objects.get(username="bench-annotator-3")
    labeling = queues["labeling"]
    return [
        ("home page", "annotator", "/"),
        ("project page (annotator)", "annotator", f"/projects/{s}/"),
        ("project page (engineer)", "engineer", f"/projects/{s}/"),
        ("queue items page", "lead", f"/projects/{s}/queues/{labeling}/items/"),
        (
            "queue items page, open, one strategy",
            "lead",
            f"/projects/{s}/queues/{labeling}/items/?status=open&strategy=loss_ranked",
        ),
        ("queue items API", "lead", f"/api/v1/queues/{labeling}/items/"),
        ("queue stats API", "annotator", f"/api/v1/queues/{labeling}/stats/"),
        ("review index page", "lead", "/review/"),
        ("review page", "lead", f"/projects/{s}/review/"),
        ("review next API", "lead", f"/api/v1/projects/{s}/review/next/"),
        ("quality page", "lead", f"/projects/{s}/quality/"),
        # The page's agreement section, which it loads after itself (a second request).
        (
            "quality page, agreement section",
            "lead",
            f"/projects/{s}/quality/agreement/?part=section",
        ),
        ("quality API", "lead", f"/api/v1/projects/{s}/quality/"),
        ("quality checks API", "lead", f"/api/v1/projects/{s}/quality/checks/"),
        ("agreement API", "lead", f"/api/v1/projects/{s}/quality/agreement/"),
        ("jobs page", "engineer", "/jobs/"),
        ("project jobs page", "engineer", f"/projects/{s}/jobs/"),
        ("job page", "engineer", f"/jobs/{job.pk}/"),
        ("project jobs API", "engineer", f"/api/v1/projects/{s}/jobs/"),
        ("job API", "engineer", f"/api/v1/jobs/{job.pk}/"),
        ("strategy yield API", "engineer", f"/api/v1/projects/{s}/strategy-yield/"),
        ("validation progress API", "engineer", f"/api/v1/projects/{s}/validation/"),
        ("image list API", "lead", f"/api/v1/projects/{s}/images/"),
        ("image list API, label", "lead", f"/api/v1/projects/{s}/images/?label=positive"),
        (
            "image list API, split + label",
            "lead",
            f"/api/v1/projects/{s}/images/?split=validation&label=positive",
        ),
        ("image list API, unlabeled", "lead", f"/api/v1/projects/{s}/images/?labeled=false"),
        (
            "image list API, score band",
            "lead",
            f"/api/v1/projects/{s}/images/?min_score=0.95&max_score=0.96",
        ),
        ("image list API, strategy", "lead", f"/api/v1/projects/{s}/images/?strategy=loss_ranked"),
        (
            "image list API, annotator",
            "lead",
            f"/api/v1/projects/{s}/images/?annotator={annotator.pk}",
        ),
    ]


def _measure(reps: int, give_up_s: int) -> dict:
    import statistics

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    users = {
        "annotator": User.objects.get(username="bench-annotator-3"),
        "lead": User.objects.get(username="bench-lead"),
        "engineer": User.objects.get(username="bench-engineer"),
    }
    # A statement slower than give_up_s fails its request (PGOPTIONS, set by run(); answered
    # 500, reported as such), so a page that reads the whole pool cannot hold the run up.
    with connection.cursor() as cur:
        cur.execute("SHOW statement_timeout")
        statement_timeout = cur.fetchone()[0]
        rows = {}
        for table in ("image", "label", "currentlabel", "queueitem"):
            cur.execute(f"SELECT count(*) FROM labeling_{table}")  # noqa: S608 - fixed names
            rows[table] = cur.fetchone()[0]
    clients = {}
    for role, user in users.items():
        client = Client(HTTP_HOST="localhost", raise_request_exception=False)
        client.force_login(user)
        clients[role] = client
    results: dict[str, dict] = {}
    for name, role, url in _endpoints():
        client = clients[role]
        # Warm-up (the connection, the templates, the caches), counting its SQL statements.
        with CaptureQueriesContext(connection) as queries:
            first = client.get(url)
        statements = len(queries.captured_queries)
        response = first
        times: list[float] = []
        stopped = False
        for _ in range(reps):
            t0 = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - t0
            times.append(elapsed * 1000)
            if elapsed > give_up_s:
                stopped = True
                break
        times.sort()
        p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]
        results[name] = {
            "url": url,
            "role": role,
            "status": response.status_code,
            "first_status": first.status_code,
            "requests": len(times),
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(p95, 1),
            "max_ms": round(times[-1], 1),
            "sql_statements": statements,
            **({"stopped_early": f"a request took over {give_up_s} s"} if stopped else {}),
            **(
                {"failed": "answered 500 (a statement ran past statement_timeout)"}
                if response.status_code >= 500 or first.status_code >= 500
                else {}
            ),
        }
        print(f"{name}: p95 {p95:.1f} ms", file=sys.stderr)
    return {
        "reps": reps,
        "statement_timeout": statement_timeout,
        "rows": rows,
        "endpoints": results,
    }


def _child_main(argv: list[str]) -> None:
    import django

    django.setup()
    command, args = argv[0], [int(a) for a in argv[1:]]
    result = {"seed": _seed, "measure": _measure}[command](*args)
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
