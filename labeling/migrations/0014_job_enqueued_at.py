"""Job.enqueued_at: when the job's task was last handed to the broker (issue 8, item 2).

A job whose message was never sent (the broker was down) or was lost with the broker (a Redis
restart) is sent again by the recovery sweep (labeling.services.jobs.jobs_recover).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0013_review_decision"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="enqueued_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
