"""`manage.py demo_loop SLUG [--inline | --worker]`: the active-learning loop end to end on the
CPU, in minutes, printing what happens at each step.

Labels come from `simulate_annotators` (a SIMULATION: the datasets' true classes, with seeded
noise) and the lead's re-review is simulated the same way; everything else is the product:
the same job kinds, services and queues an engineer drives from the jobs page.

Steps: (0) the project: SLUG is built from the demo data (`manage.py demo`'s Fashion-MNIST +
Tux Paint pool) when it does not exist, imported without queueing the pool (the validation
split goes to its own queue at import), so the first round is a seeded random share rather than
everything; (1) cold-start recall from a few positive seeds (labeled as the engineer's
positives), when the `cold_start` job kind exists; (2) a first labeling round: the validation
queue, a seeded random share of the pool, and what cold start queued;
(3) train the cascade (v1) and promote it, as an engineer would; (4) score the pool and fill the
queue by selection (confidence band ∪ loss top-K); (5) label what was selected; (6) noise
detection (O2U), when the `detect_noise` job kind exists, and the lead's re-review of the
suspects; (7) retrain on the cleaned labels (v2) and compare with v1; (8) a pool audit of the
active version (the audit job of labeling.services.audit), answered by a SIMULATED annotator who
gives the datasets' true class, and the pool estimates it yields (what the project's estimates
page shows) beside the truth only a simulation knows.

Inline (default): each job is created with `job_create` like any other and its body runs in this
process right away; its Celery message still goes to the broker, and a worker that takes it
later finds the job finished and does nothing (the status guard). `--worker`: jobs are only
created, and a running worker (`celery -A config worker -Q default,ml`) does the work while this
command waits on the database.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from labeling.management.commands import demo as demo_command
from labeling.management.commands.simulate_annotators import BANNER, simulate_labeling
from labeling.models import Image, Job, ModelVersion, Project, Queue, QueueItem, Strategy
from labeling.services.imports import images_import
from labeling.services.jobs import JOB_KINDS, job_create
from labeling.services.labels import review_resolve
from labeling.services.models import model_version_promote
from labeling.services.projects import project_create, project_default_queues_ensure
from labeling.services.queues import queue_items_add

RUNNERS = {
    Job.Kind.COLD_START: "labeling.services.recall.cold_start_run",
    Job.Kind.SCORE_POOL: "labeling.services.scoring.score_pool_run",
    Job.Kind.SELECT: "labeling.services.selection.select_run",
    Job.Kind.DETECT_NOISE: "labeling.services.noise.detect_noise_run",
    Job.Kind.TRAIN_CASCADE: "labeling.services.training.train_cascade_run",
    Job.Kind.AUDIT: "labeling.services.audit.audit_run",
}


class Command(BaseCommand):
    help = (
        "Run the active-learning loop end to end on the CPU (cold start, SIMULATED labeling, "
        "train, score, select, noise review, retrain), inline by default or with --worker."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--pool", type=int, default=1500, help="Images when building.")
        parser.add_argument("--first-batch", type=int, default=300, help="Random pool items.")
        parser.add_argument("--cold-start-k", type=int, default=100)
        parser.add_argument("--select-k", type=int, default=60, help="k_band and k_loss.")
        parser.add_argument(
            "--noise", type=float, default=0.0, help="Simulated symmetric label noise."
        )
        parser.add_argument(
            "--miss-rate", type=float, default=0.10, help="Simulated: positives answered negative."
        )
        parser.add_argument(
            "--false-alarm-rate",
            type=float,
            default=0.005,
            help="Simulated: negatives answered positive.",
        )
        parser.add_argument(
            "--validation-fraction",
            type=float,
            default=0.3,
            help="Validation share when building: the demo has only 25 disturbing images.",
        )
        parser.add_argument("--epochs", type=int, default=None, help="Default: the preset's.")
        parser.add_argument(
            "--preset",
            default=None,
            help="cpu_transfer (the default: pretrained), cpu_small, cpu_tiny or full.",
        )
        parser.add_argument(
            "--audit-labels",
            type=int,
            default=200,
            help="Labels of the pool audit at the end (0 skips it).",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--worker", action="store_true", help="Wait for a real worker.")
        parser.add_argument("--job-timeout", type=int, default=1800)

    # --- plumbing ----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.stdout.write(f"[{elapsed:6.1f} s] {text}")

    def run_job(self, kind: str, params: dict) -> Job:
        job = job_create(project=self.project, kind=kind, params=params, created_by=self.engineer)
        if self.use_worker:
            taken_by = time.monotonic() + 120
            deadline = time.monotonic() + self.job_timeout
            while True:
                job.refresh_from_db()
                if job.is_finished:
                    break
                if job.status == Job.Status.QUEUED and time.monotonic() > taken_by:
                    raise CommandError(
                        f"no worker took {kind} job {job.pk} within 120 s: start one with "
                        "`celery -A config worker -Q default,ml`, or run without --worker."
                    )
                if time.monotonic() > deadline:
                    raise CommandError(f"{kind} job {job.pk} still {job.status} after timeout.")
                time.sleep(1.0)
        else:
            from django.utils.module_loading import import_string

            import_string(RUNNERS[kind])(job_id=job.pk)
            if kind == Job.Kind.SCORE_POOL:
                # The planner enqueued one shard task per shard; inline, run them here.
                from labeling.services.scoring import score_shard_run

                for index in job.shards.order_by("index").values_list("index", flat=True):
                    score_shard_run(job_id=job.pk, shard_index=index)
            job.refresh_from_db()
        if job.status != Job.Status.SUCCEEDED:
            raise CommandError(f"{kind} job {job.pk} {job.status}: {job.error}")
        return job

    def label_round(self, what: str, items: int, queue: Queue | None = None) -> None:
        report = simulate_labeling(
            project=self.project,
            queue=queue,
            annotator=self.annotator,
            labels=items,
            noise=self.noise,
            miss_rate=self.miss_rate,
            false_alarm_rate=self.false_alarm_rate,
            seed=self.seed + len(self.noisy),
            # The validation split is the project's gold standard (labeled with overlap or
            # reviewed); with 25 positives in all, two false alarms there would swamp its AP.
            clean_validation=True,
        )
        self.noisy.update(report.noisy_image_ids)
        self.say(
            f"{what}: SIMULATED annotator labeled {report.labeled} items "
            f"({report.positives} positive), {len(report.noisy_image_ids)} deliberately wrong"
        )

    # --- the loop ----------------------------------------------------------------------------
    def handle(
        self,
        *args,
        slug,
        pool,
        first_batch,
        cold_start_k,
        select_k,
        noise,
        miss_rate,
        false_alarm_rate,
        validation_fraction,
        epochs,
        preset,
        seed,
        worker,
        job_timeout,
        audit_labels=200,
        **options,
    ):
        self.started = time.monotonic()
        # A new user may run this before scripts/run-app ever migrated the embedded database.
        call_command("migrate", interactive=False, verbosity=0)
        self.use_worker, self.job_timeout = worker, job_timeout
        self.noise, self.seed, self.noisy = noise, seed, set()
        self.miss_rate, self.false_alarm_rate = miss_rate, false_alarm_rate
        self.validation_fraction = validation_fraction
        self.stdout.write(BANNER)
        self.say(f"mode: {'a real worker (--worker)' if worker else 'inline, in this process'}")
        self.project = self.build_project(slug, pool)
        self.engineer = User.objects.get(username="engineer")
        self.annotator = User.objects.get(username="annotator")
        lead = User.objects.get(username="lead")
        labeling_queue, review_queue = project_default_queues_ensure(project=self.project)
        positive = self.project.positive_class

        # 1. Cold start.
        if Job.Kind.COLD_START in JOB_KINDS:
            seeds = list(
                Image.objects.filter(
                    project=self.project,
                    split=Image.Split.POOL,
                    metadata__true_label=positive,
                ).order_by("pk")[:5]
            )
            if seeds:
                job = self.run_job(
                    Job.Kind.COLD_START,
                    {"seed_image_ids": [s.pk for s in seeds], "k": cold_start_k},
                )
                self.say(
                    f"cold start (job {job.pk}): {len(seeds)} positive seeds (SIMULATED user "
                    f"feedback), {job.result.get('queued')} nearest neighbours queued"
                )
        else:
            self.say("cold start: the cold_start job kind is not installed; skipped")

        # 2. First labeling round: all of validation + a random share of the pool.
        unqueued = Image.objects.filter(project=self.project).exclude(
            queue_items__queue__project=self.project
        )
        validation = list(
            unqueued.filter(split=Image.Split.VALIDATION).values_list("pk", flat=True)
        )
        pool_ids = list(unqueued.filter(split=Image.Split.POOL).values_list("pk", flat=True))
        sample = random.Random(seed).sample(pool_ids, min(first_batch, len(pool_ids)))
        queue_items_add(queue=labeling_queue, images=validation + sample, strategy=Strategy.MANUAL)
        open_items = labeling_queue.items.filter(status=QueueItem.Status.OPEN).count()
        self.say(
            f"queued {len(validation)} validation + {len(sample)} random pool images; "
            f"{open_items} open items"
        )
        self.label_round("round 1", open_items)
        # Imports put the validation split into its own queue (issue 12); label it too.
        validation_queue = Queue.objects.filter(
            project=self.project, kind=Queue.Kind.VALIDATION
        ).first()
        if validation_queue is not None:
            waiting = validation_queue.items.filter(status=QueueItem.Status.OPEN).count()
            self.label_round("round 1 (validation queue)", waiting, queue=validation_queue)

        # 3. Train v1 and promote it.
        # Only what the command line sets; the job's own defaults (the preset's) do the rest.
        train_params = {"min_per_class": 5, "seed": seed}
        train_params.update({k: v for k, v in (("preset", preset), ("epochs", epochs)) if v})
        v1 = self.train(train_params)
        model_version_promote(version=v1, by=self.engineer)
        self.project.refresh_from_db()  # the jobs below read the project's active version
        self.say(f"promoted {v1.name} (as the engineer's click would)")

        # 4. Score and select.
        job = self.run_job(Job.Kind.SCORE_POOL, {})
        self.say(f"scored the pool (job {job.pk}): {job.result.get('scored')} images")
        # --select-k as given (within the job's default share of the pool).
        job = self.run_job(
            Job.Kind.SELECT,
            {"sizing": "fixed", "k_band": select_k, "k_loss": select_k, "seed": seed},
        )
        self.say(f"selection (job {job.pk}) queued {job.result.get('added')}")

        # 5. Label the selection.
        open_items = labeling_queue.items.filter(status=QueueItem.Status.OPEN).count()
        self.label_round("round 2 (selected items)", open_items)

        # 6. Noise detection and the lead's re-review.
        if Job.Kind.DETECT_NOISE in JOB_KINDS:
            job = self.run_job(Job.Kind.DETECT_NOISE, {"seed": seed})
            self.say(
                f"noise detection (job {job.pk}): {job.result.get('samples')} labels ranked, "
                f"{job.result.get('queued')} suspects sent to the leads' re-review queue"
            )
            self.review(lead)
        else:
            self.say("noise detection: the detect_noise job kind is not installed; skipped")

        # 7. Retrain on the cleaned labels and compare.
        v2 = self.train({**train_params, "seed": seed + 1})
        self.say(f"{v2.name} vs {v1.name}: {self.last_comparison}")

        # 8. A pool audit of the active version and its estimates.
        if audit_labels > 0:
            self.audit_round(v1, audit_labels, labeling_queue)
        self.say(f"done: open {v2.name} on /projects/{self.project.slug}/models/ to promote it")

    def audit_round(self, version: ModelVersion, labels: int, queue: Queue) -> None:
        """The audit job draws a stratified sample of the pool the active version scored; a
        SIMULATED annotator answers every open item with the dataset's true class (no planted
        mistakes: the audit measures the model); then the estimates, as the page shows them,
        beside the truth that only this simulation knows."""
        from labeling.models import Score
        from labeling.services.audit import pool_estimates_get

        began = time.monotonic()
        job = self.run_job(Job.Kind.AUDIT, {"labels": labels, "strata": 6, "seed": self.seed})
        self.say(
            f"pool audit (job {job.pk}) of {version.name}: {len(job.result['drawn'])} images "
            f"drawn by score stratum, {job.result['queued']} queued among the labeling work"
        )
        report = simulate_labeling(
            project=self.project,
            queue=queue,
            annotator=self.annotator,
            labels=queue.items.filter(status=QueueItem.Status.OPEN).count(),
            seed=self.seed + 7,
        )
        self.say(
            f"audit round: SIMULATED annotator answered {report.labeled} items from the "
            f"datasets' true classes ({report.positives} positive)"
        )
        figures = pool_estimates_get(project=self.project)
        estimates = (figures or {}).get("estimates")
        if not estimates:
            self.say("audit round: no audit label yet, no estimates")
            return
        positive = self.project.positive_class
        rows = Score.objects.filter(
            model_version=version, image__project=self.project, image__split=Image.Split.POOL
        ).values_list("decision", "image__metadata__true_label")
        truth = [(bool(d), t == positive) for d, t in rows]
        positives = sum(t for _d, t in truth)
        caught = sum(d and t for d, t in truth)
        called = sum(d for d, _t in truth)

        def shown(interval: dict, digits: int) -> str:
            values = [interval.get(key) for key in ("estimate", "low", "high")]
            if any(v is None or v != v for v in values):  # nan: e.g. nothing called positive
                return "undefined"
            low, high = f"{values[1]:.{digits}f}", f"{values[2]:.{digits}f}"
            if values[1] == values[2]:
                # Not a collapse: every posterior draw gave this value, as when the audit
                # labeled every image the figure rests on (all the images called positive).
                return (
                    f"{values[0]:.{digits}f} (zero-width 95% interval: every posterior draw "
                    "gives it, as when the audit labeled every image it rests on)"
                )
            return f"{values[0]:.{digits}f} (95% interval {low}-{high})"

        def ratio(hits: int, total: int) -> str:
            return f"{hits / total:.3f}" if total else "undefined"

        cascade = estimates["decisions"]["cascade"]
        self.say(
            f"pool estimates from {estimates['labels']} audit labels "
            f"(/projects/{self.project.slug}/estimates/): prevalence "
            f"{shown(estimates['prevalence'], 4)}, positives {shown(estimates['positives'], 1)}, "
            f"cascade precision {shown(cascade['precision'], 3)}, "
            f"recall {shown(cascade['recall'], 3)}"
        )
        self.say(
            f"the truth, known only to this SIMULATION: prevalence "
            f"{positives / max(len(truth), 1):.4f} ({positives} positives in {len(truth)}), "
            f"precision {ratio(caught, called)} ({called} called positive), "
            f"recall {ratio(caught, positives)}"
        )
        self.say(f"audit round: {time.monotonic() - began:.1f} s")

    def build_project(self, slug: str, pool: int) -> Project:
        project = Project.objects.filter(slug=slug).first()
        if project is not None:
            unqueued = (
                Image.objects.filter(project=project, split=Image.Split.POOL)
                .exclude(queue_items__queue__project=project)
                .count()
            )
            self.say(f"project {slug}: {project.images.count()} images, {unqueued} not queued")
            if unqueued == 0:
                self.say(
                    "warning: every pool image is already in a queue, so cold start and "
                    "selection have nothing to add; use a new SLUG to build a fresh loop project"
                )
            demo_command._ensure_users(project, reset=False, password=None)
            return project
        fmnist = Path(
            getattr(settings, "IMAGECLEAN_FASHION_MNIST_DIR", demo_command.FASHION_MNIST_DIR)
        )
        stamps = Path(getattr(settings, "IMAGECLEAN_STAMPS_DIR", demo_command.STAMPS_DIR))
        demo_command._require_data(fmnist, stamps)
        project = project_create(
            name=f"Active-learning loop ({slug})",
            slug=slug,
            label_schema=demo_command.DEMO_SCHEMA,
            description="Built by demo_loop from the demo data; labels are SIMULATED.",
            # 25 disturbing images in all: at the default 10% the validation split would hold
            # two or three of them, too few to measure a model with.
            validation_fraction=self.validation_fraction,
        )
        created = demo_command._ensure_users(project, reset=False, password=None)
        report = images_import(
            project=project,
            files=demo_command._demo_files(pool, fmnist, stamps),
            add_to_queue=False,
        )
        self.say(f"built project {slug}: {report.summary()} (not queued)")
        for username, password in created:
            if password:
                self.say(f"  new user {username}, password {password} (shown once)")
        return project

    def train(self, params: dict) -> ModelVersion:
        job = self.run_job(Job.Kind.TRAIN_CASCADE, params)
        version = ModelVersion.objects.get(pk=job.result["model_version_id"])
        data, cascade = version.data_snapshot, version.metrics["cascade"]
        thresholds = version.metrics["thresholds"]
        target = version.metrics.get("target") or {}
        # "Reached" only when the cross-fitted interval's lower bound supports it (issue 12).
        rule = (
            f"target precision reached (interval lower bound {target.get('precision_lower')})"
            if target.get("reached")
            else "target precision not shown to be reached (interval lower bound "
            f"{target.get('precision_lower')})"
            if thresholds.get("found")
            else "fallback thresholds"
        )
        origin = version.metrics.get("started_from") or {}
        baseline = version.metrics.get("baseline") or {}
        self.say(
            f"{version.name}: preset {version.metrics.get('preset')}, stage 1 from "
            f"{origin.get('stage1')}"
            + (f" (fallback: {origin['fallback']})" if origin.get("fallback") else "")
        )
        self.say(
            f"trained {version.name} (job {job.pk}, {version.training_seconds:.1f} s) on "
            f"{data['labeled_positive']} positive / {data['labeled_negative']} negative labels, "
            f"{data['unlabeled']} unlabeled, {data['excluded_suspects']} suspects kept from "
            f"stage 2; "
            f"validation {data['validation_size']} ({data['validation_positive']} positive): "
            f"cascade precision {cascade['precision']} ({cascade.get('tp')}/"
            f"{cascade.get('predicted_positive')}, 95% CI {cascade.get('precision_ci')}), "
            f"recall {cascade['recall']} ({cascade.get('tp')}/{cascade.get('positives')}, "
            f"95% CI {cascade.get('recall_ci')}), cross-fitted, "
            f"AP {cascade['ap']}; thresholds t1={thresholds['stage1']}, "
            f"t2={thresholds['stage2']} ({rule})"
        )
        if baseline.get("ap") is not None:
            self.say(
                f"{version.name}: validation AP stage 1 {version.metrics['stage1']['ap']}, "
                f"cascade {cascade['ap']}; the logistic probe on frozen pretrained features, "
                f"same labels and validation images: AP {baseline['ap']}"
            )
        self.last_comparison = job.result.get("comparison", {}).get("delta")
        return version

    def review(self, lead: User) -> None:
        """SIMULATED lead: confirm a suspect whose label matches the dataset's class, flip the
        others to it."""
        items = QueueItem.objects.filter(
            queue__project=self.project,
            queue__kind=Queue.Kind.REVIEW,
            status=QueueItem.Status.OPEN,
        ).select_related("queue__project", "image")
        flipped = confirmed = planted = 0
        for item in items:
            truth = (item.image.metadata or {}).get("true_label")
            label = review_resolve(
                item=item,
                lead=lead,
                confirm=item.details.get("label") == truth,
                value=None if item.details.get("label") == truth else truth,
            )
            flipped += label.kind == "correction"
            confirmed += label.kind == "confirmation"
            planted += item.image_id in self.noisy
        self.say(
            f"SIMULATED lead re-review: {flipped} flipped, {confirmed} confirmed; "
            f"{planted} of the suspects were among the {len(self.noisy)} planted mistakes"
        )
