"""Per-queue, per-status item counts kept by triggers (issue 11, items 1 and 3).

QueueItemCount is kept by triggers on labeling_queueitem and labeling_queue
(labeling.selectors.item_count_sql holds the rules and the statements), filled here once,
set-based, from the existing items.
"""

from django.db import migrations, models

from labeling.selectors import item_count_sql


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        statements = item_count_sql.postgresql_install()
    elif vendor == "sqlite":
        statements = item_count_sql.sqlite_install()
    else:
        raise RuntimeError(f"No queue item count triggers for {vendor}")
    with schema_editor.connection.cursor() as cursor:
        for statement in [*statements, item_count_sql.BACKFILL_SQL]:
            cursor.execute(statement)


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = (
        item_count_sql.postgresql_uninstall()
        if vendor == "postgresql"
        else item_count_sql.sqlite_uninstall()
    )
    with schema_editor.connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("labeling", "0016_hot_path_indexes")]

    operations = [
        migrations.CreateModel(
            name="QueueItemCount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("queue_id", models.BigIntegerField()),
                ("status", models.CharField(max_length=8)),
                ("slot", models.SmallIntegerField()),
                ("n", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("queue_id", "status", "slot"), name="queueitemcount_key"
                    )
                ],
            },
        ),
        migrations.RunPython(install, uninstall),
    ]
