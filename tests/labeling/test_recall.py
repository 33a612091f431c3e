"""Cold-start recall with the real pretrained EfficientNet-Lite0: insect seeds from the Tux Paint
stamps recall more insects than chance from a mixed pool, never an image already labeled or
queued; a second recall reads every embedding from the cache; uploaded seeds go through the
import service; bad seeds are refused. With planted embeddings in the cache: the aggregation
over seeds reaches the ranking, and once a project has labeled positives and negatives the
logistic probe ranks instead (the job says which, and names the function the benchmark
runs)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from labeling.models import Image, Job, Label, Queue, QueueItem, Strategy
from labeling.services.imports import images_import
from labeling.services.jobs import job_create
from labeling.services.queues import MODEL_PRIORITY_BASE, queue_get_or_create, queue_items_add
from labeling.services.recall import (
    COLD_START,
    PROBE_MIN_PER_CLASS,
    cold_start_run,
    cold_start_start,
)
from mlcore import recall as mlcore_recall
from tests.factories import make_project, make_user
from tests.labeling import worker as loop_worker
from tests.labeling.worker import wait_for

celery_worker = loop_worker.celery_worker
worker_storage = loop_worker.worker_storage
worker_var_dir = loop_worker.worker_var_dir

STAMPS = Path("/usr/share/tuxpaint/stamps")
OTHER_FOLDERS = ("food", "vehicles", "household", "town")
PER_OTHER_FOLDER = 12


def _pngs(folder: Path, limit: int | None = None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.png") if "_mirror" not in p.name)
    return files[:limit] if limit else files


def stamp_project():
    """Every insect stamp plus 12 stamps from each of four other folders, imported through the
    import service (pool split only, not queued). Returns (project, insect ids, other ids)."""
    project = make_project(validation_fraction=0.0)
    insects = _pngs(STAMPS / "animals" / "insects")
    others = [p for name in OTHER_FOLDERS for p in _pngs(STAMPS / name, PER_OTHER_FOLDER)]
    report = images_import(
        project=project,
        files=[(str(p.relative_to(STAMPS)), p.read_bytes()) for p in insects + others],
        add_to_queue=False,
    )
    ids = {e.name: e.image_id for e in report.entries if e.image_id}
    insect_ids = [ids[n] for n in ids if n.startswith("animals/insects/")]
    other_ids = [ids[n] for n in ids if not n.startswith("animals/insects/")]
    return project, insect_ids, other_ids


@pytest.mark.django_db
@pytest.mark.slow
def test_insect_seeds_recall_insects_above_chance_and_cache_embeddings():
    project, insect_ids, other_ids = stamp_project()
    assert len(insect_ids) >= 15 and len(other_ids) == 4 * PER_OTHER_FOLDER
    engineer = make_user("site_engineer")
    annotator = make_user("annotator")
    seeds = insect_ids[:4]
    # One insect already labeled (never recalled) and one waiting in the queue since an import
    # (recalled like any unlabeled image: a recall moves it up instead of skipping it).
    labeled, queued = insect_ids[4], insect_ids[5]
    Label.objects.create(project=project, image_id=labeled, annotator=annotator, value="normal")
    queue = queue_get_or_create(project=project, kind=Queue.Kind.LABELING)
    queue_items_add(queue=queue, images=[queued], strategy=Strategy.MANUAL)
    candidates = insect_ids[6:]
    pool_size = len(candidates) + len(other_ids) + 1  # + the waiting one
    k = len(candidates)

    job = job_create(
        project=project,
        kind=Job.Kind.COLD_START,
        params={"seed_image_ids": seeds, "k": k, "batch_size": 16},
        created_by=engineer,
    )
    cold_start_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["pool"] == pool_size
    assert job.result["embedded"] == pool_size + len(seeds) and job.result["from_cache"] == 0
    # The seeds became positive labels by the engineer, plus one negative: too few for the
    # probe, so the seeds rank (by the soft-max).
    assert job.result["ranking"]["mode"] == "similarity"
    assert job.result["ranking"]["aggregate"] == "softmax"
    assert job.result["ranking"]["temperature"] == mlcore_recall.DEFAULT_TEMPERATURE
    assert job.result["ranking"]["function"] == "mlcore.recall.nearest_neighbours"
    assert (
        job.result["ranking"]["labeled_positives"],
        job.result["ranking"]["labeled_negatives"],
    ) == (len(seeds), 1)
    assert job.result["seeds_labeled"] == len(seeds)
    seed_labels = Label.objects.filter(image_id__in=seeds)
    assert {(lb.annotator_id, lb.value, lb.strategy) for lb in seed_labels} == {
        (engineer.pk, project.positive_class, Strategy.SEED)
    }
    items = list(QueueItem.objects.filter(queue=queue, strategy=Strategy.COLD_START))
    assert len(items) == k == job.result["queued"] == job.result["added"] + job.result["moved"]
    recalled = {item.image_id for item in items}
    assert labeled not in recalled
    if queued in recalled:  # moved, not duplicated, and the trail kept
        moved = QueueItem.objects.get(queue=queue, image_id=queued)
        assert moved.details["moved_from"]["strategy"] == Strategy.MANUAL
        assert job.result["moved"] == 1
    assert not recalled & set(seeds)
    hits = len(recalled & set(candidates))
    chance = k * len(candidates) / pool_size
    print(f"recall: {hits}/{k} insects among the top {k}; chance {chance:.1f}")
    assert hits >= 2 * chance, (hits, chance)
    for item in items:
        assert item.details["seed_image_id"] in seeds
        assert -1.0 <= item.details["similarity"] <= 1.0
        # Above anything an import queued (priority 0): the neighbours are served first.
        assert item.priority == pytest.approx(
            MODEL_PRIORITY_BASE + item.details["similarity"], abs=1e-5
        )
    # The vectors are in the project's store (no file per image any more).
    from labeling.ml.recall import project_store

    store = project_store(project.pk)
    assert store.contains(seeds + candidates).all() and store.count() == pool_size + len(seeds)
    some = Image.objects.get(pk=seeds[0])
    assert not default_storage.exists(
        f"embeddings/efficientnet_lite0-224/{some.content_hash[:2]}/{some.content_hash}.npy"
    )

    # A second recall embeds nothing: every vector comes from the cache.
    again = job_create(
        project=project,
        kind=Job.Kind.COLD_START,
        params={"seed_image_ids": seeds[:2], "k": 5},
        created_by=engineer,
    )
    cold_start_run(job_id=again.pk)
    again.refresh_from_db()
    assert again.status == Job.Status.SUCCEEDED, again.error
    assert again.result["embedded"] == 0
    assert again.result["from_cache"] == again.result["pool"] + 2
    # The first job's items still wait unlabeled, so they are eligible: those among the best
    # five are moved (re-ranked by this job), the others added; the seeds are labeled now, so
    # none of them is eligible.
    assert again.result["pool"] == pool_size
    assert again.result["queued"] == again.result["moved"] + again.result["added"] == 5
    for item in QueueItem.objects.filter(details__job_id=again.pk):
        if "moved_from" in item.details:
            assert item.details["moved_from"]["job_id"] == job.pk


@pytest.mark.django_db
def test_uploaded_seeds_are_imported_and_bad_seeds_refused():
    project = make_project(validation_fraction=0.0)
    other = make_project()
    engineer = make_user("site_engineer")
    bee = (STAMPS / "animals" / "insects" / "bee.png").read_bytes()
    job, notes = cold_start_start(
        project=project,
        created_by=engineer,
        uploads=[
            SimpleUploadedFile("bee.png", bee, content_type="image/png"),
            SimpleUploadedFile("notes.png", b"not an image", content_type="image/png"),
        ],
        params={"k": "7"},
    )
    bee_image = Image.objects.get(project=project, source="bee.png")
    assert job.params == {
        "seed_image_ids": [bee_image.pk],
        "k": 7,
        "batch_size": 32,
        "aggregate": "softmax",
        "label_seeds": True,
    }
    assert len(notes) == 1 and notes[0].startswith("notes.png: rejected")
    assert not QueueItem.objects.filter(image=bee_image).exists()  # a seed is not queued

    foreign = images_import(project=other, files=[("bee.png", bee)], add_to_queue=False)
    for params, message in [
        ({}, "Pick at least one seed image."),
        ({"seed_image_ids": [foreign.entries[0].image_id]}, "No images"),
        ({"seed_image_ids": ["x"]}, "is not an image id"),
        ({"seed_image_ids": [bee_image.pk], "k": 0}, "from 1 to"),
        ({"seed_image_ids": [bee_image.pk], "radius": 3}, "Unknown parameters"),
        ({"seed_image_ids": [bee_image.pk], "aggregate": "median"}, "must be one of"),
    ]:
        with pytest.raises(ValidationError) as error:
            job_create(
                project=project, kind=Job.Kind.COLD_START, params=params, created_by=engineer
            )
        assert message in " ".join(error.value.messages)


def test_recall_and_noise_tasks_go_to_the_ml_queue_and_are_safe_to_redeliver():
    from config.celery import app
    from labeling import tasks

    router = app.amqp.router
    for task in (tasks.ml_cold_start, tasks.ml_detect_noise):
        assert router.route({}, task.name)["queue"].name == "ml"
        assert task.acks_late and task.reject_on_worker_lost


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_cold_start_runs_on_a_real_worker(celery_worker, worker_storage):
    project = make_project(validation_fraction=0.0)
    insects = _pngs(STAMPS / "animals" / "insects", 4)
    food = _pngs(STAMPS / "food", 4)
    report = images_import(
        project=project,
        files=[(p.name, p.read_bytes()) for p in insects + food],
        add_to_queue=False,
    )
    ids = [e.image_id for e in report.entries]
    job = job_create(
        project=project,
        kind=Job.Kind.COLD_START,
        params={"seed_image_ids": ids[:2], "k": 3},
        created_by=make_user("site_engineer"),
    )
    wait_for(
        lambda: Job.objects.get(pk=job.pk).is_finished,
        timeout=180,
        worker=celery_worker,
        what="the cold-start job to finish",
    )
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["pool"] == 6 and job.result["queued"] == 3
    assert any("embedding" in line or "embedded" in line for line in job.log)
    assert (
        QueueItem.objects.filter(strategy=Strategy.COLD_START, queue__project=project).count() == 3
    )


def _planted_project(vectors: np.ndarray):
    """A project whose pool images have the given embeddings already in the cache, so the job
    embeds nothing (no file is ever decoded): rows only, content hashes unique to this test."""
    from labeling.ml.recall import _write_cached, embedding_name

    project = make_project(validation_fraction=0.0)
    tag = uuid.uuid4().hex[:16]
    images = Image.objects.bulk_create(
        Image(
            project=project,
            content_hash=f"{tag}{i:048d}",
            file=f"planted/{tag}/{i}.png",
            width=32,
            height=32,
            format="PNG",
            byte_size=100,
            source=f"planted-{i}.png",
            split=Image.Split.POOL,
        )
        for i in range(len(vectors))
    )
    for image, vector in zip(images, vectors, strict=True):
        _write_cached(embedding_name(image.content_hash), vector, default_storage)
    return project, [image.pk for image in images]


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _run(project, params: dict) -> Job:
    job = job_create(
        project=project,
        kind=Job.Kind.COLD_START,
        params=params,
        created_by=make_user("site_engineer"),
    )
    cold_start_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job


@pytest.mark.django_db
def test_the_aggregate_parameter_reaches_the_ranking():
    """Seeds along three axes; image 3 lies between all of them, image 4 is a near copy of
    seed 0 alone. The mean ranks 3 first, the maximum 4."""
    dim = 8
    seeds = np.eye(3, dim)
    between = np.array([1, 1, 1, 0.5, 0, 0, 0, 0])
    copy_of_one = np.array([1, 0.05, 0.05, 0.4, 0, 0, 0, 0])
    others = np.random.default_rng(0).normal(size=(10, dim)) * [0, 0, 0, 0, 1, 1, 1, 1]
    project, ids = _planted_project(_unit(np.vstack([seeds, between, copy_of_one, others])))
    orders = {}
    for aggregate in ("mean", "max"):
        job = _run(project, {"seed_image_ids": ids[:3], "k": 2, "aggregate": aggregate})
        assert job.result["embedded"] == 0 and job.result["ranking"]["aggregate"] == aggregate
        items = QueueItem.objects.filter(details__job_id=job.pk).order_by("-priority")
        orders[aggregate] = [item.image_id for item in items]
        assert all(item.details["ranking"] == "similarity" for item in items)
        QueueItem.objects.filter(details__job_id=job.pk).delete()  # eligible again
    assert orders["mean"] == [ids[3], ids[4]]
    assert orders["max"] == [ids[4], ids[3]]


@pytest.mark.django_db
def test_a_recall_that_finds_nothing_says_why_in_its_result_and_on_its_page():
    vectors, _is_positive = _separable(n=12, positives=4, seed=3)
    project, ids = _planted_project(vectors)
    annotator = make_user("annotator")
    for image_id in ids[2:]:  # everything but the seeds is labeled already
        Label.objects.create(
            project=project, image_id=image_id, annotator=annotator, value="normal"
        )
    job = _run(project, {"seed_image_ids": ids[:2], "k": 5})
    assert job.result["queued"] == job.result["added"] == job.result["moved"] == 0
    notice = job.result["notice"]
    assert "Nothing to rank" in notice and "10 are labeled" in notice and "2 are seeds" in notice
    engineer = make_user("site_engineer")
    client = Client()
    client.force_login(engineer)
    page = client.get(reverse("job-detail", kwargs={"pk": job.pk})).content.decode()
    assert 'id="job-notice"' in page and "Nothing to rank" in page


def _separable(n: int = 240, positives: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Planted embeddings: positives shifted along one axis, in two unlike groups (as real
    positives are diverse); the rest is noise."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 32))
    is_positive = np.zeros(n, dtype=bool)
    is_positive[:positives] = True
    vectors[:positives, 0] += 10.0
    vectors[: positives // 2, 1] += 10.0  # one kind of positive
    vectors[positives // 2 : positives, 2] += 10.0  # another kind
    return _unit(vectors), is_positive


@pytest.mark.django_db
def test_with_labeled_positives_and_negatives_the_probe_ranks_and_finds_the_positives():
    vectors, is_positive = _separable()
    project, ids = _planted_project(vectors)
    annotator = make_user("annotator")
    positives = [i for i, p in zip(ids, is_positive, strict=True) if p]
    negatives = [i for i, p in zip(ids, is_positive, strict=True) if not p]
    # Seeds and labeled positives of both kinds; the rest of the positives are to be found.
    seeds = [positives[0], positives[20]]
    labeled_pos, labeled_neg = positives[1:5] + positives[21:25], negatives[:60]
    for image_id in labeled_pos:
        Label.objects.create(
            project=project, image_id=image_id, annotator=annotator, value="disgusting"
        )
    for image_id in labeled_neg:
        Label.objects.create(
            project=project, image_id=image_id, annotator=annotator, value="normal"
        )
    remaining = set(positives) - set(seeds) - set(labeled_pos)
    job = _run(project, {"seed_image_ids": seeds, "k": len(remaining)})
    ranking = job.result["ranking"]
    assert ranking["mode"] == "probe"
    # The seeds were labeled positive by the engineer who started the job.
    assert (ranking["labeled_positives"], ranking["labeled_negatives"]) == (10, 60)
    # The probe's training set: the labeled images plus the seeds as positives.
    assert (ranking["positives"], ranking["negatives"]) == (10, 60)
    assert ranking["function"] == "mlcore.probe.probe_rank"
    assert ranking["fit"] == "mlcore.probe.fit_linear_probe"
    assert job.result["embedded"] == 0
    items = list(QueueItem.objects.filter(details__job_id=job.pk).order_by("-priority"))
    recalled = {item.image_id for item in items}
    assert recalled == remaining  # every remaining positive, nothing else
    assert not recalled & set(seeds + labeled_pos + labeled_neg)
    for item in items:
        assert item.details["ranking"] == "probe"
        assert 0.0 <= item.details["probability"] <= 1.0
        assert item.priority == pytest.approx(
            MODEL_PRIORITY_BASE + item.details["probability"], abs=1e-5
        )
        assert "seed_image_id" not in item.details


@pytest.mark.django_db
def test_too_few_labels_of_one_class_keep_the_similarity_ranking():
    vectors, is_positive = _separable(seed=1)
    project, ids = _planted_project(vectors)
    annotator = make_user("annotator")
    negatives = [i for i, p in zip(ids, is_positive, strict=True) if not p]
    # Plenty of negatives, one positive short of the probe's minimum.
    for image_id in negatives[:50]:
        Label.objects.create(
            project=project, image_id=image_id, annotator=annotator, value="normal"
        )
    positives = [i for i, p in zip(ids, is_positive, strict=True) if p]
    for image_id in positives[2 : 2 + PROBE_MIN_PER_CLASS - 1]:
        Label.objects.create(
            project=project, image_id=image_id, annotator=annotator, value="disgusting"
        )
    # Seeds left unlabeled here: as labels they would be the missing positives.
    job = _run(project, {"seed_image_ids": positives[:2], "k": 5, "label_seeds": False})
    assert "seeds_labeled" not in job.result
    ranking = job.result["ranking"]
    assert (
        ranking["mode"] == "similarity"
        and ranking["function"] == "mlcore.recall.nearest_neighbours"
    )
    assert (ranking["labeled_positives"], ranking["labeled_negatives"]) == (
        PROBE_MIN_PER_CLASS - 1,
        50,
    )


def test_the_job_and_the_benchmark_rank_with_the_same_functions():
    """bench/recall.py records the functions its rankings came from; the cold-start job records
    its own (tests above). If either stops calling the shared mlcore function, this fails."""
    from bench import recall as bench_recall

    vectors, is_positive = _separable(n=400, positives=60, seed=2)
    _, functions = bench_recall._one_draw(vectors, is_positive.astype(np.int64), seed=0)
    assert functions["similarity"] == "mlcore.recall.nearest_neighbours"
    assert functions["probe"] == "mlcore.probe.probe_rank"
    assert functions["probe_fit"] == "mlcore.probe.fit_linear_probe"


def test_cold_start_spec_declares_mlcores_aggregations():
    aggregate = next(spec for spec in COLD_START.params if spec.name == "aggregate")
    assert set(aggregate.choice_values) == set(mlcore_recall.AGGREGATES)
    assert aggregate.default == mlcore_recall.DEFAULT_AGGREGATE


@pytest.mark.django_db
def test_a_large_pool_ranks_through_the_stores_index_and_finds_what_exact_search_finds(settings):
    """With the store's exact threshold lowered under the pool size, the job ranks through the
    FAISS index (the result names it) and queues the planted neighbours exact search finds."""
    from labeling.ml.recall import project_store

    settings.IMAGECLEAN_VECTOR_EXACT_BELOW = 100
    vectors, is_positive = _separable(n=600, positives=20, seed=5)
    project, ids = _planted_project(vectors)
    seeds = [ids[0], ids[10]]  # one of each kind of positive
    job = _run(project, {"seed_image_ids": seeds, "k": 18, "label_seeds": False})
    ranking = job.result["ranking"]
    assert ranking["function"] == "mlcore.vectorstore.VectorStore.search"
    assert ranking["index"] == "faiss IVF-SQ8"
    assert job.result["embedded"] == 0 and job.result["from_cache"] == 600  # legacy files
    recalled = set(
        QueueItem.objects.filter(details__job_id=job.pk).values_list("image_id", flat=True)
    )
    store = project_store(project.pk)
    assert store.describe()["index_rows"] == 600  # saved by the job
    exact = store.search(vectors[[0, 10]], k=18, exclude_keys=seeds, exact=True)
    assert recalled == set(exact.keys.tolist()) == set(ids[:20]) - set(seeds)


@pytest.mark.django_db
def test_the_vectors_command_imports_embeds_and_rebuilds_a_projects_store():
    from django.core.management import CommandError, call_command

    from labeling.ml.recall import _write_cached, embedding_name, project_store

    project = make_project(validation_fraction=0.0)
    stamps = _pngs(STAMPS / "animals" / "insects", 5)
    report = images_import(
        project=project, files=[(p.name, p.read_bytes()) for p in stamps], add_to_queue=False
    )
    images = [Image.objects.get(pk=e.image_id) for e in report.entries]
    planted = _unit(np.random.default_rng(0).normal(size=(1, 1280)))[0]
    _write_cached(embedding_name(images[0].content_hash), planted, default_storage)

    def run(*args) -> str:
        out = io.StringIO()
        call_command("vectors", *args, project.slug, stdout=out)
        return out.getvalue()

    assert "4 images without a vector" not in run("status") and "5 images without" in run("status")
    assert "imported 1 vectors" in run("import")
    np.testing.assert_allclose(project_store(project.pk).get([images[0].pk])[0], planted, atol=1e-6)
    out = run("embed", "--batch-size", "2")
    assert "embedded 4, already stored or imported 1" in out and "0 images without" in out
    images[4].delete()
    out = run("rebuild")
    assert "rebuilt: 4 vectors, 1 of deleted images" in out
    assert project_store(project.pk).count() == 4
    with pytest.raises(CommandError, match="No project"):
        call_command("vectors", "status", "no-such-project")
