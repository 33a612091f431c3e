"""Pool scoring: images/s of the whole pipeline vs a bare model(x) loop, same cascade and batch.

The pipeline is the production path, in-process: `labeling.services.scoring.score_shard_run`
for every shard of a job (read each file through Django storage, decode with Pillow, resize and
normalise, batch in a DataLoader with `IMAGECLEAN_SCORING_LOADER_WORKERS` decode processes,
forward through stage 1 (+ loss-prediction module) and stage 2, then upsert the Score rows and
mark the shard done in one transaction on PostgreSQL). The bare loop runs the same forward
(`labeling.ml.scoring.cascade_scores`) on a ready tensor of the same batch and input size, no
I/O at all. The bare loop runs before and after the pipeline and its two figures are averaged,
because the CPU is shared and its speed drifts. Goal (TARGETS.md): pipeline >= 0.90 x bare.

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


def _bare(cascade, n_images: int) -> float:
    import torch

    from labeling.ml.scoring import cascade_scores

    x = torch.randn(BATCH_SIZE, 3, INPUT_SIZE, INPUT_SIZE, device=cascade.device)
    for _ in range(2):
        cascade_scores(cascade, x)
    batches = max(1, n_images // BATCH_SIZE)
    started = time.perf_counter()
    for _ in range(batches):
        p1, p2, loss = cascade_scores(cascade, x)
        p1.cpu()
    return batches * BATCH_SIZE / (time.perf_counter() - started)


def _pipeline(project, version, image_ids: list[int]) -> float:
    from django.utils import timezone

    from labeling.models import Job, JobShard, Score
    from labeling.services.scoring import score_shard_run

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
    started = time.perf_counter()
    for shard in shards:
        score_shard_run(job_id=job.pk, shard_index=shard.index)
    elapsed = time.perf_counter() - started
    job.refresh_from_db()
    scored = Score.objects.filter(model_version=version).count()
    if job.status != Job.Status.SUCCEEDED or scored != len(image_ids):
        raise RuntimeError(f"pipeline incomplete: job {job.status}, {scored} scores")
    return len(image_ids) / elapsed


def run(*, quick: bool, seed: int) -> dict:
    from bench import _loopdb

    _loopdb.setup_django("scoring")
    try:
        import torch
        from django.conf import settings

        from labeling.ml.cascade import load_cascade_cached
        from labeling.models import Project

        torch.manual_seed(seed)
        torch.set_num_threads(2)
        n_images = 512 if quick else 2048
        workers = settings.IMAGECLEAN_SCORING_LOADER_WORKERS or 1
        settings.IMAGECLEAN_SCORING_LOADER_WORKERS = workers
        project = Project.objects.create(name="bench", slug="bench-scoring")
        image_ids = _make_pool(project, n_images, seed)
        version = _version(project)
        cascade = load_cascade_cached(version, device=settings.IMAGECLEAN_ML_DEVICE)
        bare_before = _bare(cascade, n_images)
        pipeline = _pipeline(project, version, image_ids)
        bare_after = _bare(cascade, n_images)
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
            "goal": ">= 0.90",
        }
    finally:
        _loopdb.drop("scoring")
