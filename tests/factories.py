"""Small builders shared by the tests: users with a role, projects, real image files.

Images are real PNG files made with Pillow (distinct pixels, so distinct content hashes), stored
through Django's storage like an import would, without going through the import service.
"""

from __future__ import annotations

import hashlib
import io
import itertools

from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from PIL import Image as PILImage

from labeling.models import Image, Project, Queue

_counter = itertools.count(1)

PASSWORD = "correct-horse-battery-staple"


def make_user(role: str | None = "annotator", *, username: str | None = None, **extra) -> User:
    username = username or f"{role or 'norole'}{next(_counter)}"
    user = User.objects.create_user(username=username, password=PASSWORD, **extra)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def make_project(*, members=(), slug: str | None = None, **fields) -> Project:
    n = next(_counter)
    schema = fields.pop(
        "label_schema",
        {
            "classes": [
                {"key": "normal", "name": "Normal", "hotkey": "1"},
                {"key": "disgusting", "name": "Disgusting", "hotkey": "2"},
            ],
            "positive": "disgusting",
            "default": "normal",
            "subcategories": [
                {"key": "animal", "name": "Animal", "hotkey": "a"},
                {"key": "human", "name": "Human", "hotkey": "h"},
                {"key": "object", "name": "Object", "hotkey": "o"},
            ],
        },
    )
    project = Project.objects.create(
        name=fields.pop("name", f"Project {n}"),
        slug=slug or f"project-{n}",
        label_schema=schema,
        **fields,
    )
    project.members.add(*members)
    return project


def png_bytes(seed: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A small PNG whose pixels depend on `seed` (so every seed has its own content hash)."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    img = PILImage.new("RGB", size, color=(digest[0], digest[1], digest[2]))
    img.putpixel((0, 0), (digest[3], digest[4], seed % 256))
    img.putpixel((1, 0), ((seed >> 8) % 256, (seed >> 16) % 256, 7))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_image(project: Project, *, seed: int | None = None, split: str = "pool", **extra) -> Image:
    seed = next(_counter) if seed is None else seed
    data = png_bytes(seed)
    content_hash = hashlib.sha256(data).hexdigest()
    image = Image(
        project=project,
        content_hash=content_hash,
        width=32,
        height=32,
        format="PNG",
        byte_size=len(data),
        source=f"test-{seed}.png",
        split=split,
        **extra,
    )
    image.file.save(f"{content_hash}.png", ContentFile(data), save=False)
    image.save()
    return image


def make_queue(project: Project, *, kind: str = Queue.Kind.LABELING, **fields) -> Queue:
    return Queue.objects.create(
        project=project, name=fields.pop("name", f"{kind} {next(_counter)}"), kind=kind, **fields
    )
