"""`manage.py simulate_annotators SLUG [--labels N] [--noise 0.05] [--seed S] [--username U]`

A SIMULATION for demos and tests, never for real labeling: it claims items from the project's
labeling queue as the demo annotator and answers each with the image's dataset class from
Image.metadata["true_label"] (set by `manage.py demo`), flipping a seeded `--noise` share of the
answers to another class so the noise detector (O2U) has real mistakes to find. It goes through
the same services the browser's API calls (`queue_claim_next`, `lease_submit`), so leases,
labels, strategies and queue progress are exactly what people would produce.

An image without a true label is skipped (its lease is released) and counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling.models import Image, Project, Queue
from labeling.services.labels import lease_submit
from labeling.services.queues import lease_skip, queue_claim_next

BANNER = "SIMULATION: labels come from the dataset's true classes, not from a person."
CLAIM_BATCH = 50


@dataclass
class SimulationReport:
    labeled: int = 0
    noisy_image_ids: list[int] = field(default_factory=list)  # answered with a wrong class
    positives: int = 0
    skipped_without_truth: int = 0
    queue_empty: bool = False


def simulate_labeling(
    *,
    project: Project,
    annotator: User,
    labels: int,
    noise: float = 0.0,
    miss_rate: float = 0.0,
    false_alarm_rate: float = 0.0,
    seed: int = 0,
    queue: Queue | None = None,
    clean_validation: bool = False,
) -> SimulationReport:
    """Label up to `labels` items of the project's labeling queue as `annotator` (see the
    module docstring). Returns what was done.

    `noise`: share of answers flipped to a random other class, whatever the truth.
    `miss_rate` / `false_alarm_rate`: the mistakes people make on a rare class (DATA.md's rare
    task uses 0.10 and 0.005): a positive answered as another class, a negative answered as
    the positive class. Symmetric noise on a class rarer than the noise rate would give more
    wrong positives than right ones, which no real annotator does.
    `clean_validation`: no mistakes on images of the frozen validation split, which a real
    project labels as its gold standard (several annotators, a lead's review)."""
    for name, rate in (
        ("noise", noise),
        ("miss_rate", miss_rate),
        ("false_alarm_rate", false_alarm_rate),
    ):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name} must be in [0, 1)")
    queue = queue or (
        Queue.objects.filter(project=project, kind=Queue.Kind.LABELING, is_active=True)
        .order_by("id")
        .first()
    )
    if queue is None:
        raise ValueError(f"project {project.slug!r} has no active labeling queue")
    rng = random.Random(seed)
    classes = project.class_keys
    report = SimulationReport()
    while report.labeled < labels:
        leases = queue_claim_next(
            queue=queue, annotator=annotator, count=min(CLAIM_BATCH, labels - report.labeled)
        )
        if not leases:
            report.queue_empty = True
            break
        progressed = False
        for lease in leases:
            if report.labeled >= labels:
                lease_skip(lease=lease, annotator=annotator)
                continue
            truth = (lease.item.image.metadata or {}).get("true_label")
            if truth not in classes:
                lease_skip(lease=lease, annotator=annotator)
                report.skipped_without_truth += 1
                continue
            value = truth
            draw = rng.random()
            if clean_validation and lease.item.image.split == Image.Split.VALIDATION:
                draw = 1.0  # no mistake
            positive = project.positive_class
            if draw < noise or (truth == positive and draw < noise + miss_rate):
                value = rng.choice([key for key in classes if key != truth])
            elif truth != positive and draw < noise + false_alarm_rate:
                value = positive
            if value != truth:
                report.noisy_image_ids.append(lease.item.image_id)
            lease_submit(lease=lease, annotator=annotator, value=value)
            report.labeled += 1
            report.positives += int(value == project.positive_class)
            progressed = True
        if not progressed:
            # Every claimed item lacked a true label; they are skipped (cool-down), so the next
            # claim serves others, but stop rather than spin when nothing can be labeled.
            break
    return report


class Command(BaseCommand):
    help = (
        "SIMULATION (demo and tests only): label items of a project's labeling queue from "
        "Image.metadata['true_label'] as the demo annotator, with optional seeded label noise, "
        "through the same services the browser uses."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--labels", type=int, default=100, help="How many labels (100).")
        parser.add_argument(
            "--noise", type=float, default=0.05, help="Share of wrong answers, seeded (0.05)."
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--username", default="annotator", help="The annotator to label as (annotator)."
        )

    def handle(self, *args, slug, labels, noise, seed, username, **options):
        self.stdout.write(BANNER)
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise CommandError(f"No project {slug!r} (run `manage.py demo` for the demo one).")
        annotator = User.objects.filter(username=username).first()
        if annotator is None:
            raise CommandError(f"No user {username!r}.")
        if labels < 1:
            raise CommandError("--labels must be at least 1.")
        try:
            report = simulate_labeling(
                project=project, annotator=annotator, labels=labels, noise=noise, seed=seed
            )
        except (ValueError, ValidationError, PermissionDenied) as error:
            raise CommandError(f"Simulation stopped: {error}") from error
        self.stdout.write(
            f"SIMULATION: {username} labeled {report.labeled} items of {project.slug} "
            f"({report.positives} as {project.positive_class!r}); {len(report.noisy_image_ids)} "
            f"answers deliberately wrong (noise {noise:g}, seed {seed})"
            + (
                f"; {report.skipped_without_truth} skipped without a true label"
                if report.skipped_without_truth
                else ""
            )
            + ("; the queue ran out" if report.queue_empty else "")
            + "."
        )
