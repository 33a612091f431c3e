"""Per-annotator tallies for the quality page and the annotator's stats (issue 11, item 3).

AnnotatorTally and GridTally are kept by triggers on labeling_label and labeling_queueitem
(labeling.selectors.tally_sql holds the rules and the statements), filled here once, set-based,
from the existing labels. A partial index finds the answers to gold items without reading the
other labels.
"""

import django.db.models.deletion
from django.db import migrations, models

from labeling.selectors import tally_sql


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        statements = tally_sql.postgresql_install()
    elif vendor == "sqlite":
        statements = tally_sql.sqlite_install()
    else:
        raise RuntimeError(f"No tally triggers for {vendor}")
    with schema_editor.connection.cursor() as cursor:
        for statement in statements + tally_sql.backfill(vendor):
            cursor.execute(statement)


def uninstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = (
        tally_sql.postgresql_uninstall() if vendor == "postgresql" else tally_sql.sqlite_uninstall()
    )
    with schema_editor.connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("labeling", "0014_job_enqueued_at")]

    operations = [
        migrations.CreateModel(
            name="AnnotatorTally",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("annotator_id", models.IntegerField()),
                ("queue_key", models.IntegerField()),
                ("hour", models.DateTimeField()),
                ("annotations", models.IntegerField(default=0)),
                ("gold", models.IntegerField(default=0)),
                ("positives", models.IntegerField(default=0)),
                ("flagged", models.IntegerField(default=0)),
                ("overturned", models.IntegerField(default=0)),
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
                "indexes": [models.Index(fields=["project", "hour"], name="annotatortally_hour")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "annotator_id", "queue_key", "hour"),
                        name="annotatortally_key",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="GridTally",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("annotator_id", models.IntegerField()),
                ("ms", models.IntegerField()),
                ("tiles", models.IntegerField(default=0)),
                ("pages", models.FloatField(default=0.0)),
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
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "annotator_id", "ms"), name="gridtally_key"
                    )
                ],
            },
        ),
        migrations.AddIndex(
            model_name="label",
            index=models.Index(
                condition=models.Q(("strategy", "gold")),
                fields=["project", "created_at"],
                name="label_gold_answers",
            ),
        ),
        migrations.RunPython(install, uninstall),
    ]
