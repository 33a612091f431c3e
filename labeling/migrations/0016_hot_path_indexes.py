"""Indexes for the labeling hot path (issue 11, item 1): draft, claimed by helper 3."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("labeling", "0015_annotator_tallies")]

    operations = []
