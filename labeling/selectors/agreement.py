"""Agreement between annotators on items labeled by more than one person (issue 9, item 8).

The votes are the active annotations (`labels_active`: no retractions, no answers to gold
items, nothing a later label superseded) of the project, one per annotator and image (their
latest). An image with votes from two or more annotators is a shared item. From them:

- per pair of annotators: the items both labeled, the share where they gave the same value, and
  Cohen's kappa (from the pair's counts of answers; equal to scikit-learn's
  `cohen_kappa_score`, tests/labeling/test_agreement.py);
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

# The API lists at most this many disagreements (newest first), the quality page fewer (a
# table a person reads; rendering 200 rows of votes was most of the page's time at scale).
DISAGREEMENTS_LIMIT = 200
DISAGREEMENTS_ON_PAGE = 50
# The quality page lists the pairs of annotators that agree least, at most this many (fifty
# annotators make 1,225 pairs); the API lists every pair.
PAIRS_ON_PAGE = 50
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
    return kappa_of_counts(Counter(zip(first, second, strict=True)))


def kappa_of_counts(pairs: Counter) -> float | None:
    """Cohen's kappa from the counts of each (first value, second value) pair."""
    n = sum(pairs.values())
    of_first: Counter = Counter()
    of_second: Counter = Counter()
    for (a, b), count in pairs.items():
        of_first[a] += count
        of_second[b] += count
    if not n or len(of_first.keys() | of_second.keys()) < 2:
        return None
    observed = sum(count for (a, b), count in pairs.items() if a == b) / n
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
    return majority_of_counts(Counter(values))


def majority_of_counts(tally: Counter) -> str | None:
    """`majority` of the votes these are the counts of."""
    value, count = tally.most_common(1)[0]
    return value if count * 2 > tally.total() else None


def agreement(
    *,
    project: Project,
    disagreements_limit: int = DISAGREEMENTS_LIMIT,
    pairs_limit: int | None = None,
) -> dict:
    """Pairs, annotators, Fleiss' kappa and disagreements of the images of the project's latest
    AGREEMENT_WINDOW annotations (module docstring). With `pairs_limit`, `pairs` holds only the
    pairs that agree least (lowest kappa, undefined ones last), and `pair_count` all of them."""
    window = recent_images(project=project)
    votes = shared_votes(project=project, image_ids=window)
    # Per pair of annotators, the counts of each (their value, the other's value): what the
    # pair's agreement and kappa need, kept as counts (tens of thousands of pair-votes a page).
    # A flat count of ((first, value), (second, value)) first: one dictionary step per
    # pair-vote in the loop that runs tens of thousands of times a page; grouped by pair after.
    pair_votes: dict[tuple, int] = {}
    count_of = pair_votes.get
    against: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # [disagreed, with majority]
    shared: Counter = Counter()
    disagreements = []
    for image_id, by in votes.items():
        for key in combinations(sorted(by.items()), 2):
            pair_votes[key] = count_of(key, 0) + 1
        shared.update(by.keys())
        tally = Counter(by.values())
        top = majority_of_counts(tally)
        if top is not None:
            for annotator_id, value in by.items():
                mine = against[annotator_id]
                mine[1] += 1
                mine[0] += value != top
        if len(tally) > 1:
            disagreements.append(image_id)
    pair_values: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for ((first, a), (second, b)), count in pair_votes.items():
        pair_values[(first, second)][(a, b)] += count

    users = User.objects.in_bulk(list(shared))
    pairs = []
    kappas: dict[int, list[float]] = defaultdict(list)
    for (first, second), counts in pair_values.items():
        kappa = kappa_of_counts(counts)
        items = sum(counts.values())
        agreed = sum(count for (a, b), count in counts.items() if a == b)
        pairs.append(
            {
                "annotator_a": users[first].username,
                "annotator_b": users[second].username,
                "items": items,
                "agreed": agreed,
                "observed": round(agreed / items, 4),
                "kappa": kappa,
            }
        )
        if kappa is not None:
            kappas[first].append(kappa)
            kappas[second].append(kappa)
    pair_count = len(pairs)
    if pairs_limit is not None and pair_count > pairs_limit:
        pairs.sort(key=lambda p: (p["kappa"] is None, p["kappa"] or 0.0, -p["items"]))
        pairs = pairs[:pairs_limit]
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
        "pair_count": pair_count,
        "annotators": annotators,
        "disagreement_count": len(disagreements),
        "disagreements": _disagreement_rows(
            project=project,
            votes=votes,
            image_ids=disagreements,
            users=users,
            limit=disagreements_limit,
        ),  # fmt: skip
    }


def _disagreement_rows(
    *, project: Project, votes: dict, image_ids: list[int], users: dict, limit: int
) -> list[dict]:
    """The newest `limit` disagreements: votes by name, the current label, and the
    image's item in the re-review queue if it has one (the review page opens it)."""
    image_ids = sorted(image_ids, reverse=True)[:limit]
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
