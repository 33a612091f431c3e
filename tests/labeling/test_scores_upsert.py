"""The scoring job's write path (labeling.services.scoring.scores_upsert) on PostgreSQL: one
statement per shard that inserts new Scores and replaces a version's existing ones in place."""

from __future__ import annotations

import pytest

from labeling.ml.scoring import ScoreRecord
from labeling.models import ModelVersion, Score
from labeling.services.scoring import scores_upsert
from tests.factories import make_image, make_project

pytestmark = pytest.mark.django_db


def test_scores_are_inserted_then_replaced_in_place_one_row_per_image_and_version():
    project = make_project()
    images = [make_image(project) for _ in range(3)]
    v1 = ModelVersion.objects.create(project=project, name="v1", status="ready")
    v2 = ModelVersion.objects.create(project=project, name="v2", status="ready")
    first = [
        ScoreRecord(image.pk, 0.25 * n, None, 0.0, False, None) for n, image in enumerate(images)
    ]
    assert scores_upsert(model_version_id=v1.pk, records=first) == 3
    assert scores_upsert(model_version_id=v2.pk, records=first[:1]) == 1
    assert scores_upsert(model_version_id=v1.pk, records=[]) == 0
    before = {s.image_id: s for s in Score.objects.filter(model_version=v1)}

    again = ScoreRecord(images[0].pk, 0.9, 0.75, 0.75, True, 1.5)
    assert scores_upsert(model_version_id=v1.pk, records=[again]) == 1

    rows = {s.image_id: s for s in Score.objects.filter(model_version=v1)}
    assert len(rows) == 3 and Score.objects.filter(model_version=v2).count() == 1
    replaced = rows[images[0].pk]
    assert replaced.pk == before[images[0].pk].pk  # the same row, updated
    assert replaced.created_at == before[images[0].pk].created_at
    assert (replaced.stage1, replaced.stage2, replaced.score) == (0.9, 0.75, 0.75)
    assert replaced.decision is True and replaced.predicted_loss == 1.5
    untouched = rows[images[1].pk]
    assert (untouched.stage1, untouched.stage2, untouched.predicted_loss) == (0.25, None, None)
    assert Score.objects.get(model_version=v2).stage1 == 0.0  # another version's row kept
