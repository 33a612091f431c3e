"""A fresh, migrated PostgreSQL database and media folder for the loop benchmarks (in-process).

Django is set up here, inside the benchmark's `run()`, with DATABASE_URL pointing at a new
database `imageclean_bench_<name>` (dropped and re-created each run) and IMAGECLEAN_VAR_DIR at a
temporary folder, so a benchmark never touches anybody's data.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")


def setup_django(name: str) -> Path:
    import psycopg2

    database = f"imageclean_bench_{name}"
    admin = psycopg2.connect(f"{PG_ADMIN_URL}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{database}"')
    admin.close()
    var_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    os.environ["DATABASE_URL"] = f"{PG_ADMIN_URL}/{database}"
    os.environ["IMAGECLEAN_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/6")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return var_dir


def drop(name: str) -> None:
    import psycopg2
    from django.db import connections

    connections.close_all()
    admin = psycopg2.connect(f"{PG_ADMIN_URL}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "imageclean_bench_{name}" WITH (FORCE)')
    admin.close()
