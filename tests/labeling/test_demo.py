"""The demo command on the real Debian data (Fashion-MNIST and Tux Paint stamps)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from labeling.models import Image, Project, Queue, QueueItem
from labeling.roles import Role, user_role

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _run(capsys, *args) -> str:
    call_command("demo", *args)
    return capsys.readouterr().out


def test_demo_builds_project_users_images_and_queue_and_is_idempotent(capsys):
    out = _run(capsys, "--pool", "200", "--queue", "50")
    project = Project.objects.get(slug="demo")
    assert project.name == "Disgusting product images (demo)"
    assert project.positive_class == "disgusting"
    assert [c["hotkey"] for c in project.label_schema["classes"]] == ["1", "2"]
    assert [c["key"] for c in project.label_schema["subcategories"]] == [
        "animal",
        "human",
        "object",
    ]

    images = Image.objects.filter(project=project)
    count = images.count()
    assert 195 <= count <= 200  # the dataset may hold a byte-identical duplicate or two
    positives = images.filter(metadata__true_label="disgusting")
    assert positives.count() >= 3
    assert set(positives.values_list("metadata__dataset", flat=True)) == {"tuxpaint"}
    assert images.filter(metadata__dataset="fashion-mnist").count() > 150
    assert images.filter(metadata__dataset="tuxpaint", metadata__true_label="normal").exists()

    queue = Queue.objects.get(project=project, kind=Queue.Kind.LABELING)
    items = list(QueueItem.objects.filter(queue=queue).order_by("-priority", "id"))
    # A random sample of 50 pool images; the whole frozen validation split waits in its own
    # queue (issue 12); the rest of the pool is left for cold start and selection.
    validation = images.filter(split=Image.Split.VALIDATION)
    assert len(items) == 50
    validation_queue = Queue.objects.get(project=project, kind=Queue.Kind.VALIDATION)
    assert set(validation_queue.items.values_list("image_id", flat=True)) == set(
        validation.values_list("id", flat=True)
    )
    assert images.filter(split=Image.Split.POOL).exclude(queue_items__queue=queue).count() == (
        count - validation.count() - len(items)
    )
    assert {i.strategy for i in items} == {"random_audit"}
    # Positives are spread through the queue, not served first.
    order = [i.image.metadata["true_label"] for i in items]
    assert order[: positives.count()].count("disgusting") < positives.count()
    assert Queue.objects.filter(project=project, kind=Queue.Kind.REVIEW).exists()

    passwords = dict(re.findall(r"^\s+\w+\s+(\w+)\s+password: (\S+)$", out, re.M))
    assert set(passwords) == {"annotator", "lead", "engineer"}
    for username, role in [
        ("annotator", Role.ANNOTATOR),
        ("lead", Role.LEAD),
        ("engineer", Role.SITE_ENGINEER),
    ]:
        user = authenticate(username=username, password=passwords[username])
        assert user is not None
        assert user_role(user) == role
        assert project.members.filter(pk=user.pk).exists()
    assert "/login/" in out

    # Twice: no new images, queue items or users, and passwords stay.
    again = _run(capsys, "--pool", "200", "--queue", "50")
    assert Image.objects.filter(project=project).count() == count
    assert QueueItem.objects.filter(queue=queue).count() == len(items)
    assert User.objects.filter(username__in=passwords).count() == 3
    assert "password unchanged" in again
    assert "0 imported" in again
    assert authenticate(username="lead", password=passwords["lead"]) is not None

    # --reset with --password sets the given password.
    _run(capsys, "--pool", "200", "--reset", "--password", "demo-pass-123")
    assert authenticate(username="lead", password="demo-pass-123") is not None
    assert Project.objects.filter(slug="demo").count() == 1


def test_demo_says_what_to_install_when_data_is_missing(tmp_path):
    with pytest.raises(CommandError, match="apt-get install dataset-fashion-mnist"):
        call_command("demo", "--pool", "50", "--fashion-mnist-dir", str(tmp_path))
    with pytest.raises(CommandError, match="apt-get install tuxpaint-stamps-default"):
        call_command("demo", "--pool", "50", "--stamps-dir", str(tmp_path))
    assert not Project.objects.filter(slug="demo").exists()
