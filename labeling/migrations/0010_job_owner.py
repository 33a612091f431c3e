from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0009_audit_log"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="owner",
            field=models.CharField(blank=True, max_length=200),
        ),
    ]
