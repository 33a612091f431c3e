# A person's view preferences per project (issue 9, item 1).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0004_pool_audit"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Preference",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "protection",
                    models.CharField(
                        choices=[
                            ("off", "Off: images shown as they are"),
                            (
                                "blur",
                                "Blur until revealed: R or a click reveals the image on screen",
                            ),
                            (
                                "session",
                                "Blur until revealed once: the reveal stays on until you close "
                                "the tab",
                            ),
                            ("grayscale", "Grayscale: images shown without colour"),
                        ],
                        max_length=10,
                    ),
                ),
                ("pixelated", models.BooleanField(default=False)),
                ("intro_seen_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="preferences",
                        to="labeling.project",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="preferences",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user", "project"), name="preference_one_per_project"
                    )
                ],
            },
        ),
    ]
