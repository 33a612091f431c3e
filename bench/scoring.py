"""Pool scoring: images/s of the whole pipeline vs a bare model(x) loop, same cascade and batch.

The pipeline is the production path, in-process: `labeling.services.scoring.score_shard_run`
for every shard of a job (read each file through Django storage, decode with Pillow, resize and
normalise, batch in a DataLoader with `IMAGECLEAN_SCORING_LOADER_WORKERS` decode processes,
forward through stage 1 (+ loss-prediction module) and stage 2, then upsert the Score rows and
mark the shard done in one transaction on PostgreSQL). The bare loop runs the same forward
(`labeling.ml.scoring.cascade_scores`) on a ready tensor of the same batch and input size, no
I/O at all. The bare loop runs before and after the pipeline and its two figures are averaged,
because the CPU is shared and its speed drifts. Goal (TARGETS.md): pipeline >= 0.90 x bare.
The pipeline's time in the shard commit (`_shard_commit`: the upsert, the shard's status, the
job's progress under its row lock) is reported beside it, and so is the CPU time per image of
both (this process and its reaped decode workers): on shared cores a steadier figure than the
wall time. `python -m bench` starts OpenMP as the app's processes do (mlcore.runtime: passive
waiting; `OMP_WAIT_POLICY=` in the environment restores libgomp's spinning, which cost this
benchmark 5-7 times its speed at load 6-7, docs/platform-benchmarks.md).

The write path is measured on its own at pool scale (issue 11): 1,000,000 images (100,000 in
quick mode) inserted with generate_series (no files: nothing reads them), a score_pool job
planned into shards of SHARD_SIZE by the job's own planner (`shards_plan`: the anti-join for
unscored images, the JobShard rows), then every shard committed by the job's own
`_shard_commit` with synthetic score records built beforehand, so only the database work is
timed: `INSERT ... ON CONFLICT (image, model_version) DO UPDATE` of the shard's rows, the shard
marked done, the shards counted and the job's progress and log saved, one transaction per
shard. It ends with one Score per image and the job SUCCEEDED at 100 %, or it fails.

The images are JPEGs (192 px, varied content) written into a fresh media folder; the database
is a fresh PostgreSQL database (bench/_loopdb.py). Networks: untrained MobileNetV2 (stage 1,
with CBAM and the LP module) and ResNet18 (stage 2, CBAM) at 96 px: the weights do not change
the speed.
"""

from __future__ import annotations

import hashlib
import io
import time

import numpy as np

INPUT_SIZE = 96
BATCH_SIZE = 32
SHARD_SIZE = 256
# Rows of the upsert-only comparison (unnest against the ORM's bulk_create).
COMPARE_ROWS = 50_000


def add_arguments(parser) -> None:
    parser.add_argument(
        "--part",
        choices=("all", "pipeline", "write"),
        default="all",
        help="pipeline: pipeline vs bare forward; write: the write path alone (default: both)",
    )
    parser.add_argument(
        "--write-images", type=int, default=None, help="images of the write path (1,000,000)"
    )


def _jpeg(rng: np.random.Generator) -> bytes:
    from PIL import Image as PILImage

    size = 192
    y, x = np.mgrid[0:size, 0:size]
    base = rng.integers(0, 255, size=3)
    freq = rng.uniform(0.01, 0.2, size=3)
    pixels = np.stack(
        [(base[c] + 80 * np.sin(freq[c] * (x + c * y))) % 256 for c in range(3)], axis=-1
    ).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _make_pool(project, n: int, seed: int) -> list[int]:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from labeling.models import Image

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        data = _jpeg(rng) + i.to_bytes(4, "big")  # distinct bytes, distinct hashes
        digest = hashlib.sha256(data).hexdigest()
        name = default_storage.save(
            f"images/{project.pk}/{digest[:2]}/{digest}.jpg", ContentFile(data)
        )
        rows.append(
            Image(
                project=project,
                content_hash=digest,
                file=name,
                width=192,
                height=192,
                format="JPEG",
                byte_size=len(data),
                source=f"bench-{i}.jpg",
                split="pool",
            )
        )
    return [image.pk for image in Image.objects.bulk_create(rows, batch_size=1000)]


def _version(project):
    from labeling.ml.cascade import save_cascade
    from mlcore.backbones import build_backbone
    from mlcore.config import BackboneConfig
    from mlcore.loss_prediction import LossPredictionModule

    stage1 = build_backbone(BackboneConfig(name="mobilenet_v2", input_size=INPUT_SIZE))
    stage2 = build_backbone(BackboneConfig(name="resnet18", input_size=INPUT_SIZE))
    lp = LossPredictionModule(list(stage1.feature_channels), hidden=128)
    return save_cascade(
        project=project,
        name="bench",
        stage1=stage1,
        stage2=stage2,
        loss_prediction=lp,
        loss_prediction_options={"hidden": 128},
        thresholds=(0.5, 0.5),
        positive_index=1,
    )


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the DataLoader's decode workers,
    joined at the end of every shard): on shared cores a steadier cost than the wall time."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _load() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def _bare(cascade, n_images: int) -> tuple[float, float]:
    """Images/s of the bare forward and its CPU ms per image."""
    import torch

    from labeling.ml.scoring import cascade_scores

    x = torch.randn(BATCH_SIZE, 3, INPUT_SIZE, INPUT_SIZE, device=cascade.device)
    for _ in range(2):
        cascade_scores(cascade, x)
    batches = max(1, n_images // BATCH_SIZE)
    cpu = _cpu_seconds()
    started = time.perf_counter()
    for _ in range(batches):
        p1, p2, loss = cascade_scores(cascade, x)
        p1.cpu()
    elapsed = time.perf_counter() - started
    images = batches * BATCH_SIZE
    return images / elapsed, 1000 * (_cpu_seconds() - cpu) / images


def _pipeline(project, version, image_ids: list[int]) -> tuple[float, float, float]:
    """Images/s of the whole pipeline, the share of its time spent in the shard commits and
    its CPU ms per image (decode workers included)."""
    from django.utils import timezone

    from labeling.models import Job, JobShard, Score
    from labeling.services import scoring
    from labeling.services.scoring import score_shard_run

    committing = [0.0]
    commit = scoring._shard_commit

    def timed_commit(**kwargs) -> None:  # the same function, timed (restored below)
        started = time.perf_counter()
        commit(**kwargs)
        committing[0] += time.perf_counter() - started

    job = Job.objects.create(
        project=project,
        kind=Job.Kind.SCORE_POOL,
        status=Job.Status.RUNNING,
        model_version=version,
        params={"shard_size": SHARD_SIZE, "batch_size": BATCH_SIZE},
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    shards = [
        JobShard(job=job, index=n, image_ids=image_ids[start : start + SHARD_SIZE])
        for n, start in enumerate(range(0, len(image_ids), SHARD_SIZE))
    ]
    JobShard.objects.bulk_create(shards)
    scoring._shard_commit = timed_commit
    try:
        cpu = _cpu_seconds()
        started = time.perf_counter()
        for shard in shards:
            score_shard_run(job_id=job.pk, shard_index=shard.index)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu
    finally:
        scoring._shard_commit = commit
    job.refresh_from_db()
    scored = Score.objects.filter(model_version=version).count()
    if job.status != Job.Status.SUCCEEDED or scored != len(image_ids):
        raise RuntimeError(f"pipeline incomplete: job {job.status}, {scored} scores")
    return len(image_ids) / elapsed, committing[0] / elapsed, 1000 * cpu / len(image_ids)


def _synthetic_images(project, n: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
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
        cursor.execute("ANALYZE labeling_image")


def _write_path(n: int, seed: int) -> dict:
    """The write path alone at pool scale (see the module docstring)."""
    from django.db import transaction
    from django.utils import timezone

    from labeling.ml.scoring import ScoringOutcome
    from labeling.models import Job, JobShard, ModelVersion, Project, Score
    from labeling.services.scoring import _shard_commit, shards_plan

    project = Project.objects.create(name="bench write", slug="bench-scoring-write")
    version = ModelVersion.objects.create(project=project, name="bench-write", status="ready")
    started = time.perf_counter()
    _synthetic_images(project, n)
    populate_s = time.perf_counter() - started
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.SCORE_POOL,
        status=Job.Status.RUNNING,
        model_version=version,
        params={"shard_size": SHARD_SIZE, "batch_size": BATCH_SIZE},
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    started = time.perf_counter()
    with transaction.atomic():
        planned = shards_plan(job)
    plan_s = time.perf_counter() - started
    if len(planned) != n:
        raise RuntimeError(f"planned {len(planned)} of {n} images")
    rng = np.random.default_rng(seed)
    writing = 0.0
    shards = list(JobShard.objects.filter(job=job).order_by("index"))
    for shard in shards:
        outcome = ScoringOutcome(records=_records(shard.image_ids, rng))
        started = time.perf_counter()
        _shard_commit(job_id=job.pk, shard=shard, outcome=outcome)
        writing += time.perf_counter() - started
    job.refresh_from_db()
    comparison = _upsert_comparison(project, shards, seed)
    rows = Score.objects.filter(model_version=version, image__project=project).count()
    distinct = (
        Score.objects.filter(model_version=version, image__project=project)
        .values("image_id")
        .distinct()
        .count()
    )
    if job.status != Job.Status.SUCCEEDED or job.percent != 100.0 or rows != n or distinct != n:
        raise RuntimeError(f"write path incomplete: job {job.status} {job.percent}%, {rows} rows")
    return {
        "write_images": n,
        "write_shards": len(shards),
        "write_populate_seconds": round(populate_s, 1),
        "write_plan_seconds": round(plan_s, 2),
        "write_seconds": round(writing, 2),
        "write_rows_per_s": round(n / writing),
        "write_ms_per_shard": round(1000 * writing / len(shards), 2),
        **comparison,
    }


def _records(ids: list[int], rng: np.random.Generator) -> list:
    from labeling.ml.scoring import ScoreRecord

    count = len(ids)
    s1, s2, loss = rng.random(count) ** 3, rng.random(count) ** 2, rng.exponential(size=count)
    return [
        ScoreRecord(
            image_id=pk,
            stage1=float(a),
            stage2=float(b),
            score=float(min(a, b)),
            decision=bool(a >= 0.5 and b >= 0.5),
            predicted_loss=float(c),
        )
        for pk, a, b, c in zip(ids, s1, s2, loss, strict=True)
    ]


def _upsert_comparison(project, shards, seed: int) -> dict:
    """The upsert alone, `scores_upsert` (unnest) against the ORM's bulk_create with
    update_conflicts that it replaced, on the first COMPARE_ROWS images, shard by shard and
    alternating, so the machine's load falls on both alike; each into its own model version,
    one transaction per shard."""
    from django.db import transaction

    from labeling.models import ModelVersion, Score
    from labeling.services.scoring import scores_upsert

    fields = ["stage1", "stage2", "score", "decision", "predicted_loss"]

    def orm(version, records) -> None:
        Score.objects.bulk_create(
            [
                Score(
                    image_id=r.image_id,
                    model_version=version,
                    **{name: getattr(r, name) for name in fields},
                )
                for r in records
            ],
            update_conflicts=True,
            unique_fields=["image", "model_version"],
            update_fields=fields,
            batch_size=1000,
        )

    def unnest(version, records) -> None:
        scores_upsert(model_version_id=version.pk, records=records)

    rng = np.random.default_rng(seed + 1)
    methods = {"orm": orm, "unnest": unnest}
    versions = {
        name: ModelVersion.objects.create(project=project, name=f"bench-{name}", status="ready")
        for name in methods
    }
    seconds = dict.fromkeys(methods, 0.0)
    rows = 0
    for shard in shards:
        if rows >= COMPARE_ROWS:
            break
        records = _records(shard.image_ids, rng)
        for name, write in methods.items():
            started = time.perf_counter()
            with transaction.atomic():
                write(versions[name], records)
            seconds[name] += time.perf_counter() - started
        rows += len(records)
    for name, version in versions.items():
        if Score.objects.filter(model_version=version).count() != rows:
            raise RuntimeError(f"{name}: wrong number of rows")
    return {
        "compare_rows": rows,
        "compare_orm_rows_per_s": round(rows / seconds["orm"]),
        "compare_unnest_rows_per_s": round(rows / seconds["unnest"]),
        "compare_unnest_over_orm": round(seconds["orm"] / seconds["unnest"], 2),
    }


def run(*, quick: bool, seed: int, part: str = "all", write_images: int | None = None) -> dict:
    from bench import _loopdb

    _loopdb.setup_django("scoring")
    try:
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(2)
        figures: dict = {"part": part}
        if part in ("all", "pipeline"):
            figures.update(_pipeline_part(quick=quick, seed=seed))
        if part in ("all", "write"):
            figures.update(_write_path(write_images or (100_000 if quick else 1_000_000), seed))
        return figures
    finally:
        _loopdb.drop("scoring")


def _pipeline_part(*, quick: bool, seed: int) -> dict:
    import torch
    from django.conf import settings

    from labeling.ml.cascade import load_cascade_cached
    from labeling.models import Project

    n_images = 512 if quick else 2048
    workers = settings.IMAGECLEAN_SCORING_LOADER_WORKERS or 1
    settings.IMAGECLEAN_SCORING_LOADER_WORKERS = workers
    project = Project.objects.create(name="bench", slug="bench-scoring")
    image_ids = _make_pool(project, n_images, seed)
    version = _version(project)
    cascade = load_cascade_cached(version, device=settings.IMAGECLEAN_ML_DEVICE)
    load_start = _load()
    bare_before, bare_cpu_before = _bare(cascade, n_images)
    pipeline, commit_share, pipeline_cpu = _pipeline(project, version, image_ids)
    bare_after, bare_cpu_after = _bare(cascade, n_images)
    bare = (bare_before + bare_after) / 2
    return {
        "images": n_images,
        "input_size": INPUT_SIZE,
        "batch_size": BATCH_SIZE,
        "shard_size": SHARD_SIZE,
        "loader_workers": workers,
        "torch_threads": torch.get_num_threads(),
        "device": str(cascade.device),
        "model": "stage1 mobilenet_v2+CBAM+LP, stage2 resnet18+CBAM",
        "bare_images_per_s_before": round(bare_before, 1),
        "bare_images_per_s_after": round(bare_after, 1),
        "bare_images_per_s": round(bare, 1),
        "pipeline_images_per_s": round(pipeline, 1),
        "pipeline_over_bare": round(pipeline / bare, 3),
        "pipeline_commit_share": round(commit_share, 4),
        "bare_cpu_ms_per_image_before": round(bare_cpu_before, 1),
        "bare_cpu_ms_per_image_after": round(bare_cpu_after, 1),
        "pipeline_cpu_ms_per_image": round(pipeline_cpu, 1),
        "load_1min_start_end": [load_start, _load()],
        "goal": ">= 0.90",
    }
