"""The audit log (issue 8, item 10): labeling.models.AuditEvent, append-only.

On PostgreSQL a trigger refuses UPDATE and DELETE of its rows whoever asks (the app refuses
them already; this covers raw SQL and any future code path). TRUNCATE, which only the test
suite's flush and an operator's deliberate reset use, is not blocked. SQLite keeps the app's
guard only."""

from django.db import migrations, models

TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION labeling_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'labeling_auditevent is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER labeling_auditevent_append_only
    BEFORE UPDATE OR DELETE ON labeling_auditevent
    FOR EACH ROW EXECUTE FUNCTION labeling_auditevent_append_only();
"""
DROP_SQL = """
DROP TRIGGER IF EXISTS labeling_auditevent_append_only ON labeling_auditevent;
DROP FUNCTION IF EXISTS labeling_auditevent_append_only();
"""


def add_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER_SQL)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0008_gold_exposure"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField(auto_now_add=True, db_index=True)),
                ("actor_id", models.IntegerField(blank=True, db_index=True, null=True)),
                ("actor_name", models.CharField(blank=True, max_length=150)),
                (
                    "action",
                    models.CharField(
                        choices=[
                            ("role_changed", "Role changed"),
                            ("user_created", "Person added"),
                            ("membership_changed", "Project membership changed"),
                            ("project_created", "Project created"),
                            ("images_imported", "Images imported"),
                            ("labels_imported", "Labels imported"),
                            ("labels_exported", "Labels exported"),
                            ("job_started", "Job started"),
                            ("job_cancelled", "Job cancelled"),
                            ("model_promoted", "Model version promoted"),
                            ("model_rolled_back", "Model version rolled back"),
                            ("label_corrected", "Label corrected by a lead"),
                            ("audit_exported", "Audit log exported"),
                        ],
                        max_length=24,
                    ),
                ),
                ("project_id", models.IntegerField(blank=True, db_index=True, null=True)),
                ("project_slug", models.CharField(blank=True, max_length=80)),
                ("target", models.CharField(blank=True, max_length=300)),
                ("details", models.JSONField(blank=True, default=dict)),
            ],
            options={
                "ordering": ["-at", "-id"],
                "indexes": [models.Index(fields=["project_id", "-at"], name="audit_project_at")],
            },
        ),
        migrations.RunPython(add_trigger, drop_trigger),
    ]
