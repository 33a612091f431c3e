"""Agreement between annotators on items labeled by more than one person (issue 9, item 8).

The votes are the active annotations (`labels_active`: no retractions, no answers to gold
items, nothing a later label superseded) of the project, one per annotator and image (their
latest). An image with votes from two or more annotators is a shared item. From them:

- per pair of annotators: the items both labeled, the share where they gave the same value, and
  Cohen's kappa (scikit-learn's `cohen_kappa_score`);
- per annotator: the mean of their pairs' kappas, and the share of the shared items with a
  strict majority (one value has more than half the votes) where their vote was not it;
- Fleiss' kappa (statsmodels' `fleiss_kappa`) over the items with exactly k votes, k the
  project's overlap (or, for a project with overlap 1, the commonest number of votes);
- the disagreements: shared items whose votes are not all the same.

A kappa is None where it is undefined: every vote of both people the same single value (the
chance agreement is 1, so the statistic is 0 / 0).

The quality page and the API (`agreement`) read a recent window, not the whole project: the
images of the project's latest AGREEMENT_WINDOW annotations, with all their votes (older ones
too). Reading every vote of a pool of a million images took over 20 s per request (issue 11,
item 3); the window keeps the request at a few thousand rows however large the pool grows, and
describes how the team agrees now. Queuing every disagreement for re-review
(labeling.services.agreement) still reads them all: it is an action, not a page.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations

from django.contrib.auth.models import User

from labeling.models import Label, Project, Queue, QueueItem, Strategy
from labeling.selectors.labels import _current_of, labels_active

# The quality page and the API list at most this many disagreements (newest first).
DISAGREEMENTS_LIMIT = 200
# Their agreement reads the images of this many latest annotations (module docstring).
AGREEMENT_WINDOW = 2_000


def recent_images(*, project: Project, window: int = AGREEMENT_WINDOW) -> list[int]:
    """The images of the project's latest `window` annotations (answers to gold items left
    out), newest first: read backwards along the labels' created_at index."""
    rows = (
        Label.objects.filter(project=project, kind=Label.Kind.ANNOTATION)
        .exclude(strategy=Strategy.GOLD)
        .order_by("-created_at", "-id")
        .values_list("image_id", flat=True)[:window]
    )
    return list(dict.fromkeys(rows))


def shared_votes(
    *, project: Project, image_ids: list[int] | None = None
) -> dict[int, dict[int, str]]:
    """{image id: {annotator id: value}} for images with votes from two or more annotators:
    every such image of the project, or those of `image_ids`."""
    rows = labels_active(project=project).filter(
        kind=Label.Kind.ANNOTATION, annotator__isnull=False
    )
    if image_ids is not None:
        rows = rows.filter(image_id__in=image_ids)
    rows = rows.order_by("created_at", "id").values_list("image_id", "annotator_id", "value")
    votes: dict[int, dict[int, str]] = defaultdict(dict)
    for image_id, annotator_id, value in rows:
        votes[image_id][annotator_id] = value  # the latest wins
    return {image_id: by for image_id, by in votes.items() if len(by) > 1}


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two raters' values on the same items; None where undefined.

    Written out (observed against chance agreement from each rater's marginals) rather than
    scikit-learn's `cohen_kappa_score`, whose input checks cost about 1.5 ms a call: hundreds
    of pairs on one page (tests/labeling/test_agreement.py compares the two)."""
    if not first or len(set(first) | set(second)) < 2:
        return None
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    of_first, of_second = Counter(first), Counter(second)
    chance = sum(count * of_second[value] for value, count in of_first.items()) / (n * n)
    if chance >= 1.0:
        return None
    return round((observed - chance) / (1.0 - chance), 4)


def fleiss(items: list[list[str]]) -> float | None:
    """Fleiss' kappa of items that each have the same number of votes; None where undefined."""
    if not items:
        return None
    categories = sorted({value for votes in items for value in votes})
    if len(categories) < 2:
        return None
    from statsmodels.stats.inter_rater import fleiss_kappa  # lazy, as above

    table = [[votes.count(value) for value in categories] for votes in items]
    kappa = float(fleiss_kappa(table, method="fleiss"))
    return None if math.isnan(kappa) else round(kappa, 4)


def majority(values: list[str]) -> str | None:
    """The value with more than half the votes, or None."""
    value, count = Counter(values).most_common(1)[0]
    return value if count * 2 > len(values) else None


def agreement(*, project: Project) -> dict:
    """Pairs, annotators, Fleiss' kappa and disagreements of the images of the project's latest
    AGREEMENT_WINDOW annotations (module docstring)."""
    window = recent_images(project=project)
    votes = shared_votes(project=project, image_ids=window)
    pair_values: dict[tuple[int, int], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    against: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # [disagreed, with majority]
    shared: Counter = Counter()
    disagreements = []
    for image_id, by in votes.items():
        annotators = sorted(by)
        for first, second in combinations(annotators, 2):
            pair_values[(first, second)][0].append(by[first])
            pair_values[(first, second)][1].append(by[second])
        top = majority(list(by.values()))
        for annotator_id, value in by.items():
            shared[annotator_id] += 1
            if top is not None:
                against[annotator_id][1] += 1
                against[annotator_id][0] += int(value != top)
        if len(set(by.values())) > 1:
            disagreements.append(image_id)

    users = User.objects.in_bulk(list(shared))
    pairs = []
    kappas: dict[int, list[float]] = defaultdict(list)
    for (first, second), (a, b) in pair_values.items():
        kappa = cohen_kappa(a, b)
        agreed = sum(x == y for x, y in zip(a, b, strict=True))
        pairs.append(
            {
                "annotator_a": users[first].username,
                "annotator_b": users[second].username,
                "items": len(a),
                "agreed": agreed,
                "observed": round(agreed / len(a), 4),
                "kappa": kappa,
            }
        )
        if kappa is not None:
            kappas[first].append(kappa)
            kappas[second].append(kappa)
    pairs.sort(key=lambda p: (p["annotator_a"], p["annotator_b"]))

    annotators = []
    for annotator_id, items in shared.items():
        mine = kappas.get(annotator_id, [])
        disagreed, with_majority = against[annotator_id]
        annotators.append(
            {
                "annotator_id": annotator_id,
                "username": users[annotator_id].username,
                "shared_items": items,
                "mean_kappa": round(sum(mine) / len(mine), 4) if mine else None,
                "majority_items": with_majority,
                "against_majority": disagreed,
                "against_majority_share": (
                    round(disagreed / with_majority, 4) if with_majority else None
                ),
            }
        )
    annotators.sort(key=lambda a: a["username"])

    k = project.labels_per_item
    if k < 2:
        counts = Counter(len(by) for by in votes.values())
        k = counts.most_common(1)[0][0] if counts else 2
    fleiss_items = [list(by.values()) for by in votes.values() if len(by) == k]

    return {
        "overlap": project.labels_per_item,
        "window_annotations": AGREEMENT_WINDOW,
        "window_images": len(window),
        "shared_items": len(votes),
        "fleiss": {"k": k, "items": len(fleiss_items), "kappa": fleiss(fleiss_items)},
        "pairs": pairs,
        "annotators": annotators,
        "disagreement_count": len(disagreements),
        "disagreements": _disagreement_rows(
            project=project, votes=votes, image_ids=disagreements, users=users
        ),
    }


def _disagreement_rows(
    *, project: Project, votes: dict, image_ids: list[int], users: dict
) -> list[dict]:
    """The newest DISAGREEMENTS_LIMIT disagreements: votes by name, the current label, and the
    image's item in the re-review queue if it has one (the review page opens it)."""
    image_ids = sorted(image_ids, reverse=True)[:DISAGREEMENTS_LIMIT]
    if not image_ids:
        return []
    rows: dict[int, list[tuple]] = defaultdict(list)
    for image_id, pk, kind, value, created_at in (
        labels_active(project=project)
        .filter(image_id__in=image_ids)
        .order_by("created_at", "id")
        .values_list("image_id", "id", "kind", "value", "created_at")
    ):
        rows[image_id].append((pk, kind, value, created_at))
    current = {image_id: _current_of(image_rows) for image_id, image_rows in rows.items()}
    review = dict(
        QueueItem.objects.filter(
            queue__project=project, queue__kind=Queue.Kind.REVIEW, image_id__in=image_ids
        ).values_list("image_id", "pk")
    )
    return [
        {
            "image": image_id,
            "votes": {users[a].username: value for a, value in sorted(votes[image_id].items())},
            "current": current[image_id][2] if current.get(image_id) else None,
            "review_item": review.get(image_id),
        }
        for image_id in image_ids
    ]
