"""Indexes for pages and list APIs that must not grow with the pool (issue 11, item 3).

Placeholder claimed first so the number is ours; the operations land with the feature.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0010_job_owner"),
    ]

    operations = []
