"""`manage.py demo [--pool N] [--reset] [--password P]`: a demo project built from real images
that install offline (see DATA.md), imported through the ordinary import service.

The pool looks like the real job: mostly ordinary product images (Fashion-MNIST train images and
Tux Paint stamps of food, clothes, household things, vehicles...) with a rare disturbing class
(Tux Paint insects, slugs, lizards, amphibians, shellfish). Each image's dataset class is kept in
Image.metadata["true_label"] so a simulation can label from it; the labeling pages never show it.
The import puts the whole frozen validation split into the project's validation queue (every
model version is measured on it, so it must be labeled; annotators see that queue first), and the
labeling queue starts with a seeded random sample of the pool (--queue), in a shuffled order so
positives are not served first. The rest of the pool is left for the loop to choose from:
cold-start recall and model-driven selection move what waits and never queue an image twice.

Running it again imports nothing new (content-hash dedup) and keeps users' passwords unless
--reset is given. The selection is a prefix of a fixed order, so a larger --pool only adds.
"""

from __future__ import annotations

import io
import random
import secrets
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.urls import reverse
from PIL import Image as PILImage

from labeling.ml.offline_data import FASHION_MNIST_DEFAULT_ROOT, fashion_mnist_train
from labeling.models import Image, Project, Queue, Strategy
from labeling.roles import Role
from labeling.services.imports import images_import
from labeling.services.projects import project_create, project_default_queues_ensure
from labeling.services.queues import queue_items_add

DEMO_SLUG = "demo"
DEMO_NAME = "Disgusting product images (demo)"
DEMO_SCHEMA = {
    "classes": [
        {"key": "normal", "name": "Normal", "names": {"zh-hans": "正常"}, "hotkey": "1"},
        {"key": "disgusting", "name": "Disgusting", "names": {"zh-hans": "恶心"}, "hotkey": "2"},
    ],
    "positive": "disgusting",
    "default": "normal",
    "subcategories": [
        {"key": "animal", "name": "Animal", "names": {"zh-hans": "动物"}, "hotkey": "a"},
        {"key": "human", "name": "Human", "names": {"zh-hans": "人体"}, "hotkey": "h"},
        {"key": "object", "name": "Object", "names": {"zh-hans": "物品"}, "hotkey": "o"},
    ],
}
FASHION_MNIST_DIR = FASHION_MNIST_DEFAULT_ROOT
STAMPS_DIR = "/usr/share/tuxpaint/stamps"
DISTURBING_STAMPS = [
    "animals/insects",
    "animals/lizards",
    "animals/amphibians",
    "animals/shellfish",
]
PRODUCT_STAMPS = ["food", "clothes", "household", "vehicles", "hobbies", "sports"]
SEED = 20240607
DEMO_USERS = [("annotator", Role.ANNOTATOR), ("lead", Role.LEAD), ("engineer", Role.SITE_ENGINEER)]


class Command(BaseCommand):
    help = "Build the demo project (Fashion-MNIST + Tux Paint stamps), its queue and users."

    def add_arguments(self, parser):
        parser.add_argument(
            "--pool", type=int, default=1500, help="Images in the pool (default 1500)."
        )
        parser.add_argument(
            "--queue",
            type=int,
            default=250,
            help="Pool images put in the labeling queue at the start, besides the validation "
            "split (default 250); the loop picks the rest.",
        )
        parser.add_argument(
            "--reset", action="store_true", help="Set new passwords for existing demo users."
        )
        parser.add_argument("--password", help="Use this password instead of random ones.")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--fashion-mnist-dir",
            default=getattr(settings, "IMAGECLEAN_FASHION_MNIST_DIR", FASHION_MNIST_DIR),
        )
        parser.add_argument(
            "--stamps-dir", default=getattr(settings, "IMAGECLEAN_STAMPS_DIR", STAMPS_DIR)
        )

    def handle(
        self, *args, pool, queue, reset, password, base_url, fashion_mnist_dir, stamps_dir, **o
    ):
        if pool < 10:
            raise CommandError("--pool must be at least 10.")
        started = time.monotonic()
        fmnist_dir, stamps = Path(fashion_mnist_dir), Path(stamps_dir)
        _require_data(fmnist_dir, stamps)

        with transaction.atomic():
            project = Project.objects.filter(slug=DEMO_SLUG).first()
            if project is None:
                project = project_create(
                    name=DEMO_NAME,
                    slug=DEMO_SLUG,
                    label_schema=DEMO_SCHEMA,
                    description="Fashion-MNIST products and Tux Paint stamps; the disturbing "
                    "class is the rare insects, slugs, lizards, amphibians and shellfish.",
                )
            else:
                project_default_queues_ensure(project=project)
            passwords = _ensure_users(project, reset=reset, password=password)

        files = _demo_files(pool, fmnist_dir, stamps)
        report = images_import(project=project, files=files, add_to_queue=False)
        queued = _queue_starting_set(project, pool_sample=queue)
        for entry in report.entries:
            if entry.status == "rejected":
                self.stderr.write(f"{entry.name}: {entry.reason}")

        positives = project.images.filter(metadata__true_label="disgusting").count()
        self.stdout.write(
            f"Project {project.name!r} (slug {project.slug}): {project.images.count()} images, "
            f"{positives} disgusting by the datasets' classes."
        )
        self.stdout.write(f"Import: {report.summary()}.")
        self.stdout.write(
            f"Labeling queue: {queued} new items (a random sample of {queue} pool images); the "
            f"validation split waits in its own queue; the rest of the pool waits for cold "
            f"start and selection."
        )
        for username, new_password in passwords:
            role = dict(DEMO_USERS)[username]
            if new_password is None:
                self.stdout.write(
                    f"  {role.value:<9} {username:<10} (exists; password unchanged, --reset sets "
                    "a new one)"
                )
            else:
                self.stdout.write(f"  {role.value:<9} {username:<10} password: {new_password}")
        if any(p is not None for _u, p in passwords) and not password:
            self.stdout.write("These passwords are shown once; note them now.")
        self.stdout.write(f"Open {base_url.rstrip('/')}{reverse('login')} and sign in.")
        self.stdout.write(f"Done in {time.monotonic() - started:.1f} s.")


def _queue_starting_set(project: Project, *, pool_sample: int) -> int:
    """Queue a seeded random sample of the pool, in shuffled order (the validation split is in
    its own queue since the import)."""
    rng = random.Random(SEED + 2)
    pool_ids = list(
        project.images.filter(split=Image.Split.POOL).order_by("id").values_list("id", flat=True)
    )
    chosen = rng.sample(pool_ids, min(pool_sample, len(pool_ids)))
    priorities = {image_id: rng.random() for image_id in chosen}
    labeling = Queue.objects.get(project=project, kind=Queue.Kind.LABELING, name="Labeling")
    return queue_items_add(
        queue=labeling,
        images=chosen,
        strategy=Strategy.RANDOM_AUDIT,
        details={"reason": "demo starting set: a random pool sample"},
        priorities=priorities,
    )


def _require_data(fmnist_dir: Path, stamps: Path) -> None:
    missing = []
    if not (fmnist_dir / "train-images-idx3-ubyte.gz").is_file():
        missing.append(
            f"Fashion-MNIST (looked in {fmnist_dir}): apt-get install dataset-fashion-mnist"
        )
    if not (stamps / "animals" / "insects").is_dir():
        missing.append(
            f"Tux Paint stamps (looked in {stamps}): apt-get install tuxpaint-stamps-default"
        )
    if missing:
        raise CommandError(
            "The demo needs Debian packages that are not installed:\n  "
            + "\n  ".join(missing)
            + "\n(run `apt-get update` first if apt cannot find them)."
        )


def _ensure_users(project: Project, *, reset: bool, password: str | None):
    """One user per role, members of the demo project. Returns (username, new password or
    None when an existing user's password was left alone)."""
    out = []
    for username, role in DEMO_USERS:
        user, created = User.objects.get_or_create(username=username)
        new_password = None
        if created or reset:
            new_password = password or secrets.token_urlsafe(12)
            user.set_password(new_password)
            user.is_active = True
            user.save()
        # Exactly one role group (labeling.roles takes the highest one a person holds).
        role_groups = Group.objects.filter(name__in=[r.value for _u, r in DEMO_USERS])
        user.groups.remove(*role_groups.exclude(name=role.value))
        user.groups.add(Group.objects.get(name=role.value))
        project.members.add(user)
        out.append((username, new_password))
    return out


def _demo_files(pool: int, fmnist_dir: Path, stamps: Path) -> list[tuple[str, bytes, dict]]:
    rng = random.Random(SEED)
    disturbing = _stamp_paths(stamps, DISTURBING_STAMPS, rng)
    products = _stamp_paths(stamps, PRODUCT_STAMPS, rng)
    n_positive = min(len(disturbing), max(1, pool // 60))  # ~1.7%: rare, as in the real pools
    n_products = min(len(products), pool // 8)
    n_fashion = pool - n_positive - n_products

    files = []
    for path in disturbing[:n_positive]:
        rel = str(path.relative_to(stamps))
        meta = {"true_label": "disgusting", "true_subcategory": "animal"}
        files.append((f"tuxpaint/{rel}", _flattened_png(path), {**meta, **_stamp_meta(rel)}))
    for path in products[:n_products]:
        rel = str(path.relative_to(stamps))
        files.append(
            (f"tuxpaint/{rel}", _flattened_png(path), {"true_label": "normal", **_stamp_meta(rel)})
        )
    for index, (pixels, class_name) in enumerate(fashion_mnist_train(fmnist_dir, n_fashion)):
        img = PILImage.fromarray(pixels)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        files.append(
            (
                f"fashion-mnist/train-{index:05d}.png",
                buf.getvalue(),
                {
                    "true_label": "normal",
                    "dataset": "fashion-mnist",
                    "path": f"train[{index}]",
                    "class": class_name,
                },
            )
        )
    # Queue order is import order: shuffle with a fixed seed so positives are spread out.
    random.Random(SEED + 1).shuffle(files)
    return files


def _stamp_meta(rel: str) -> dict:
    return {"dataset": "tuxpaint", "path": rel, "class": rel.rsplit("/", 1)[0]}


def _stamp_paths(stamps: Path, folders: list[str], rng: random.Random) -> list[Path]:
    paths = sorted(p for folder in folders for p in (stamps / folder).rglob("*.png"))
    rng.shuffle(paths)
    return paths


def _flattened_png(path: Path) -> bytes:
    """The stamp on a white background (stamps are cut-outs with transparent backgrounds)."""
    with PILImage.open(path) as img:
        rgba = img.convert("RGBA")
    canvas = PILImage.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
