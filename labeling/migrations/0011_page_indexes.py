"""Pages and list APIs that do not grow with the pool (issue 11, item 3).

- CurrentLabel: each labeled image's current value, kept by a trigger on labeling_label
  (labeling.selectors.current_sql holds the rule in SQL and the trigger's statements), filled
  here once from the existing labels.
- Indexes for the image list's strategy and annotator filters and the queue items page's
  serving order without a status filter.
"""

import django.db.models.deletion
from django.db import migrations, models

from labeling.selectors import current_sql


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        statements = current_sql.postgresql_install() + [
            # Per-queue, per-status row estimates for the pages' counts of large queues
            # (labeling.selectors.counts): the two columns are far from independent.
            "CREATE STATISTICS IF NOT EXISTS queueitem_queue_status (mcv) "
            "ON queue_id, status FROM labeling_queueitem",
        ]
    elif vendor == "sqlite":
        statements = current_sql.sqlite_install()
    else:
        raise RuntimeError(f"No current-label trigger for {vendor}")
    with schema_editor.connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
        cursor.execute(current_sql.BACKFILL_SQL)


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = (
        [*current_sql.postgresql_uninstall(), "DROP STATISTICS IF EXISTS queueitem_queue_status"]
        if vendor == "postgresql"
        else current_sql.sqlite_uninstall()
    )
    with schema_editor.connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0010_job_owner"),
    ]

    operations = [
        migrations.CreateModel(
            name="CurrentLabel",
            fields=[
                (
                    "image",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="current_row",
                        serialize=False,
                        to="labeling.image",
                    ),
                ),
                ("split", models.CharField(max_length=12)),
                ("value", models.CharField(max_length=64)),
                (
                    "project",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="labeling.project",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["project", "value", "image"], name="currentlabel_value"),
                    models.Index(
                        fields=["project", "split", "value", "image"],
                        name="currentlabel_split",
                    ),
                ],
            },
        ),
        migrations.AddIndex(
            model_name="queueitem",
            index=models.Index(fields=["queue", "-priority", "id"], name="queueitem_order"),
        ),
        migrations.AddIndex(
            model_name="queueitem",
            index=models.Index(fields=["strategy", "image"], name="queueitem_strategy"),
        ),
        migrations.AddIndex(
            model_name="label",
            index=models.Index(
                fields=["project", "annotator", "image"], name="label_annotator_image"
            ),
        ),
        migrations.RunPython(install, uninstall),
    ]
