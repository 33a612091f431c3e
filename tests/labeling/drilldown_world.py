"""A project where one annotator, Ann, has every kind of item the quality drill-down lists
(issue 9, item 9), shared by its page test and its browser test:

- 3 gold items she answered: one right, two wrong (the positive gold answered "normal", the
  normal gold answered "disgusting");
- a label a lead's review overturned (she said "normal", the lead corrected it to
  "disgusting"), through the review service;
- a label flagged for re-review that no lead has decided yet;
- labels nobody questioned.
Another annotator, Bob, has one wrong gold answer of his own: Ann's page must not show it.
"""

from __future__ import annotations

from labeling.models import Label, Queue, QueueItem, Strategy
from labeling.services.gold import gold_mark
from labeling.services.labels import review_resolve
from tests.factories import make_image, make_project, make_queue, make_user

D, N = "disgusting", "normal"


def _label(project, image, person, value, strategy=Strategy.MANUAL) -> Label:
    return Label.objects.create(
        project=project, image=image, annotator=person, value=value, strategy=strategy
    )


def drilldown_world() -> dict:
    lead = make_user("lead", username="drill-lead")
    ann = make_user("annotator", username="drill-ann")
    bob = make_user("annotator", username="drill-bob")
    project = make_project(members=[lead, ann, bob])
    # Gold: three images the lead labeled, marked gold with their label as the answer.
    gold_images = [make_image(project) for _ in range(3)]
    for image, value in zip(gold_images, (D, N, N), strict=True):
        _label(project, image, lead, value)
    gold_mark(project=project, images=[i.pk for i in gold_images], user=lead)
    answers = {ann: (N, D, N), bob: (D, N, D)}  # Ann: two wrong; Bob: the third wrong
    for person, values in answers.items():
        for image, value in zip(gold_images, values, strict=True):
            _label(project, image, person, value, Strategy.GOLD)
    # Ann's ordinary labels: one overturned by review, one flagged and open, two unquestioned.
    overturned, flagged, *plain = [make_image(project) for _ in range(4)]
    for image in (overturned, flagged, *plain):
        _label(project, image, ann, N)
    review = make_queue(project, kind=Queue.Kind.REVIEW)
    overturned_item = QueueItem.objects.create(
        queue=review, image=overturned, strategy=Strategy.NOISE_REVIEW, details={"rank": 1}
    )
    QueueItem.objects.create(
        queue=review, image=flagged, strategy=Strategy.NOISE_REVIEW, details={"rank": 2}
    )
    review_resolve(item=overturned_item, lead=lead, confirm=False, value=D)
    return {
        "project": project,
        "lead": lead,
        "ann": ann,
        "bob": bob,
        "gold_images": gold_images,
        "overturned": overturned,
        "flagged": flagged,
    }
