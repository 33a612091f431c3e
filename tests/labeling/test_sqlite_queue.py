"""The embedded default (SQLite) serves queue items correctly under concurrent threads.

SQLite has no `SELECT ... FOR UPDATE SKIP LOCKED`; there the claim relies on config/settings/base.py
opening every transaction with `BEGIN IMMEDIATE` (one writer at a time, WAL for readers). This
test runs a child Python process whose settings point at a fresh SQLite file, exactly as the
embedded default configures it, migrates it, and has threads claim and label concurrently. The
parent (pytest, on PostgreSQL) checks what the child measured from its database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
THREADS = 8
ANNOTATORS = 240
ITEMS = 60


def _child(db_path: str) -> dict:
    """Runs in the child process: set up Django on SQLite, claim concurrently, report."""
    import threading
    from collections import defaultdict
    from concurrent.futures import ThreadPoolExecutor

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import Group, User

    from labeling.models import Lease, QueueItem, Strategy
    from labeling.services.labels import lease_submit
    from labeling.services.queues import queue_claim_next, queue_items_add
    from tests.factories import make_image, make_project, make_queue

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
    report: dict = {
        "vendor": connection.vendor,
        "journal_mode": journal_mode,
        "transaction_mode": connection.settings_dict["OPTIONS"].get("transaction_mode"),
    }
    group = Group.objects.get(name="annotator")
    for k, label in ((1, "k1"), (2, "k2")):
        project = make_project(labels_per_item=k)
        queue = make_queue(project)
        images = [make_image(project, seed=50_000 + 1000 * k + i) for i in range(ITEMS)]
        queue_items_add(queue=queue, images=images, strategy=Strategy.MANUAL)
        users = User.objects.bulk_create(
            [User(username=f"{label}-{i}", password="!") for i in range(ANNOTATORS)]
        )
        users = list(User.objects.filter(username__startswith=f"{label}-").order_by("pk"))
        group.user_set.add(*users)
        project.members.add(*users)
        barrier = threading.Barrier(THREADS)
        errors: list[str] = []
        leased_by: dict[int, list[int]] = defaultdict(list)

        def work(chunk, queue=queue, barrier=barrier, errors=errors, leased_by=leased_by):
            try:
                barrier.wait()
                for user in chunk:
                    for lease in queue_claim_next(queue=queue, annotator=user):
                        leased_by[lease.item_id].append(user.pk)
                        # Half the winners label at once, the rest keep holding: both paths
                        # write while other threads claim.
                        if user.pk % 2 == 0:
                            lease_submit(lease=lease, annotator=user, value="normal")
            except Exception as exc:  # reported to the parent
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                connection.close()

        chunks = [users[i::THREADS] for i in range(THREADS)]
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            list(pool.map(work, chunks))
        holders: dict[int, list[int]] = defaultdict(list)
        for item_id, annotator_id in Lease.objects.filter(
            item__queue=queue, state__in=[Lease.State.ACTIVE, Lease.State.COMPLETED]
        ).values_list("item_id", "annotator_id"):
            holders[item_id].append(annotator_id)
        items = QueueItem.objects.filter(queue=queue)
        report[label] = {
            "errors": errors,
            "claims_won": sum(len(v) for v in leased_by.values()),
            "holders_per_item": sorted(len(v) for v in holders.values()),
            "distinct_per_item": sorted(len(set(v)) for v in holders.values()),
            "items_with_holders": len(holders),
            "max_labels_done": max(item.labels_done for item in items),
            "done": items.filter(status=QueueItem.Status.DONE).count(),
            "completed_leases": Lease.objects.filter(
                item__queue=queue, state=Lease.State.COMPLETED
            ).count(),
            "sum_labels_done": sum(item.labels_done for item in items),
        }
    return report


@pytest.mark.slow
def test_sqlite_claims_never_lease_an_item_twice(tmp_path):
    db_path = tmp_path / "embedded.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"sqlite:///{db_path}",
        "IMAGECLEAN_VAR_DIR": str(tmp_path / "var"),
        "CELERY_BROKER_URL": "filesystem://",
        "PYTHONPATH": str(REPO),
    }
    code = (
        "import json, sys; from tests.labeling.test_sqlite_queue import _child; "
        f"print('REPORT ' + json.dumps(_child({str(db_path)!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    assert report["vendor"] == "sqlite"
    assert report["journal_mode"] == "wal"
    assert report["transaction_mode"] == "IMMEDIATE"
    assert db_path.exists()

    k1 = report["k1"]
    assert k1["errors"] == []
    assert k1["claims_won"] == ITEMS  # every item once, nobody twice
    assert k1["holders_per_item"] == [1] * ITEMS
    assert k1["max_labels_done"] == 1
    assert k1["sum_labels_done"] == k1["completed_leases"] == k1["done"]

    k2 = report["k2"]
    assert k2["errors"] == []
    assert k2["claims_won"] == 2 * ITEMS
    assert k2["holders_per_item"] == [2] * ITEMS
    assert k2["distinct_per_item"] == [2] * ITEMS
    assert k2["max_labels_done"] <= 2
    assert k2["sum_labels_done"] == k2["completed_leases"]
