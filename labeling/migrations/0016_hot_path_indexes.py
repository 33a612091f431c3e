"""Indexes for the labeling hot path (issue 11, item 1; docs/platform-benchmarks.md).

- queueitem_open: the claim's scan, open items only in serving order. The claim used
  queueitem_order and filtered on status, so it stepped over every done item at the head of the
  serving order: its cost grew with every label (1,500 done items: 1 ms a claim).
- label_item_annotator: "has this person labeled this item?" as one probe; the planner had read
  all of a person's labels through the annotator index, also growing with every label.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("labeling", "0015_annotator_tallies")]

    operations = [
        migrations.AddIndex(
            model_name="queueitem",
            index=models.Index(
                condition=models.Q(("status", "open")),
                fields=["queue", "-priority", "id"],
                name="queueitem_open",
            ),
        ),
        migrations.AddIndex(
            model_name="label",
            index=models.Index(fields=["queue_item", "annotator"], name="label_item_annotator"),
        ),
    ]
