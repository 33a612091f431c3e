"""The logistic probe on frozen features: a linear classifier on cached image embeddings.

Two uses, one function, so that what the app runs is what the benchmarks measure:

- **Recall once labels exist.** Few-shot recall (:mod:`mlcore.recall`) ranks the pool by
  similarity to a few seed images and ignores the negatives people have labeled. Once a project
  has labeled positives *and* negatives, the cold-start job fits :func:`fit_linear_probe` on the
  labeled images' embeddings (seeds as extra positives) and ranks the pool with
  :func:`probe_rank` instead.
- **The baseline "logistic probe on frozen features"** of the transfer benchmarks: the same
  :func:`fit_linear_probe` on the same L2-normalised EfficientNet-Lite0 embeddings, which any
  fine-tuned model has to beat (issue 7: it reaches AP 0.86-0.89 on DATA.md's rare task).

The probe is scikit-learn's ``LogisticRegression`` (L2 penalty, lbfgs) on L2-normalised
embeddings (linear evaluation of frozen features, as in Kornblith, Shlens & Le, "Do Better
ImageNet Models Transfer Better?", CVPR 2019). Rare positives: ``class_weight="balanced"``
weighs each class by the inverse of its count, so a handful of positives is not drowned by
hundreds of negatives. The regularisation ``C`` is chosen by stratified cross-validation over a
small grid (``LogisticRegressionCV``, scored by average precision, the metric the project reports)
when both classes have at least ``cv_min_per_class`` labels; with fewer, folds would hold one
or two positives and the choice would be noise, so ``C`` stays at ``ProbeConfig.C``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold

__all__ = [
    "LinearProbe",
    "ProbeConfig",
    "ProbeRanking",
    "fit_linear_probe",
    "prior_shifted",
    "probe_rank",
]


@dataclass(frozen=True)
class ProbeConfig:
    """Options of :func:`fit_linear_probe`.

    C: inverse L2 strength when there are too few labels to cross-validate (scikit-learn's
    default). C_grid: the values cross-validation chooses among. cv_min_per_class: both classes
    need at least this many labels for cross-validation; cv_folds: at most this many folds
    (never more than the smaller class's count). max_iter: lbfgs iterations. normalize:
    L2-normalise the embeddings first (fit and predict alike). cross_validate: False keeps ``C``
    whatever the label counts (one fit instead of folds x grid, for a starting point that
    fine-tuning moves anyway).
    """

    C: float = 1.0
    C_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    cv_min_per_class: int = 10
    cv_folds: int = 5
    max_iter: int = 2000
    normalize: bool = True
    cross_validate: bool = True

    def __post_init__(self) -> None:
        if self.C <= 0 or not self.C_grid or min(self.C_grid) <= 0:
            raise ValueError("C and every value of C_grid must be > 0")
        if self.cv_folds < 2 or self.cv_min_per_class < 2:
            raise ValueError("cv_folds and cv_min_per_class must be >= 2")


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe. ``C``: the regularisation used; ``cv_average_precision``: the mean
    cross-validated AP at that C (None when C was not cross-validated); ``n_positive`` /
    ``n_negative``: the labels it was fitted on; ``function``: what fitted it (recorded by the
    job and the benchmarks alike)."""

    model: LogisticRegression | LogisticRegressionCV
    C: float
    cv_average_precision: float | None
    n_positive: int
    n_negative: int
    normalize: bool
    function: str = "mlcore.probe.fit_linear_probe"

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """(N,) positive-class probabilities of embeddings (N, D)."""
        matrix = _prepare(embeddings, normalize=self.normalize)
        return self.model.predict_proba(matrix)[:, 1]

    @property
    def labels_odds(self) -> float:
        """The odds of a positive among the labels it was fitted on."""
        return self.n_positive / self.n_negative

    def predict_rate(self, embeddings: np.ndarray) -> np.ndarray:
        """(N,) probabilities moved from the probe's balanced classes to its labels' odds of a
        positive (:func:`prior_shifted`): a rate, where :meth:`predict_proba` is a ranking."""
        return prior_shifted(self.predict_proba(embeddings), self.labels_odds)


@dataclass(frozen=True)
class ProbeRanking:
    """``indices`` (k,) pool indices, highest probability first; ``scores`` (k,) those
    probabilities."""

    indices: np.ndarray
    scores: np.ndarray
    function: str = "mlcore.probe.probe_rank"

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def _prepare(embeddings: np.ndarray, *, normalize: bool) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, D), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("embeddings contain NaN or infinity")
    if normalize:
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.maximum(norms, 1e-12)
    return matrix


def fit_linear_probe(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    config: ProbeConfig | None = None,
) -> LinearProbe:
    """Fit the logistic probe: embeddings (N, D) (L2-normalised here unless
    ``config.normalize`` is False), labels (N,) in {0, 1}, at least one of each. ``seed`` fixes
    the cross-validation folds. Returns a :class:`LinearProbe`."""
    config = config or ProbeConfig()
    matrix = _prepare(embeddings, normalize=config.normalize)
    y = np.asarray(labels)
    if y.shape != (matrix.shape[0],):
        raise ValueError(f"labels must have shape ({matrix.shape[0]},), got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    y = y.astype(np.int64)
    n_positive = int(y.sum())
    n_negative = int(len(y) - n_positive)
    if n_positive == 0 or n_negative == 0:
        raise ValueError(
            f"the probe needs positives and negatives; got {n_positive} and {n_negative}"
        )
    smaller = min(n_positive, n_negative)
    if config.cross_validate and smaller >= config.cv_min_per_class:
        folds = StratifiedKFold(
            n_splits=min(config.cv_folds, smaller), shuffle=True, random_state=seed
        )
        model = LogisticRegressionCV(
            Cs=list(config.C_grid),
            l1_ratios=(0.0,),
            cv=folds,
            scoring="average_precision",
            class_weight="balanced",
            max_iter=config.max_iter,
            random_state=seed,
            use_legacy_attributes=False,
        ).fit(matrix, y)
        chosen = float(model.C_)
        # scores_: (folds, l1 ratios, Cs); the chosen C's mean over the folds.
        grid_position = int(np.flatnonzero(np.isclose(model.Cs_, chosen))[0])
        cv_ap: float | None = float(np.asarray(model.scores_)[:, 0, grid_position].mean())
    else:
        chosen = config.C
        cv_ap = None
        model = LogisticRegression(
            C=chosen, class_weight="balanced", max_iter=config.max_iter, random_state=seed
        ).fit(matrix, y)
    return LinearProbe(
        model=model,
        C=chosen,
        cv_average_precision=cv_ap,
        n_positive=n_positive,
        n_negative=n_negative,
        normalize=config.normalize,
    )


def probe_rank(
    probe: LinearProbe, pool: np.ndarray, *, k: int, exclude: np.ndarray | None = None
) -> ProbeRanking:
    """The ``k`` pool items (pool: (N, D) embeddings) the probe finds likeliest positive,
    highest first, never one in ``exclude``; ties keep the lower index."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    matrix = _prepare(pool, normalize=False)  # shape and finiteness; the probe normalises
    scores = probe.predict_proba(matrix) if len(matrix) else np.empty(0, dtype=np.float64)
    eligible = np.ones(len(scores), dtype=bool)
    if exclude is not None:
        excluded = np.asarray(exclude, dtype=np.int64)
        if excluded.size and (excluded.min() < 0 or excluded.max() >= len(scores)):
            raise ValueError(f"exclude holds indices outside [0, {len(scores)})")
        eligible[excluded] = False
    candidates = np.flatnonzero(eligible)
    order = candidates[np.argsort(-scores[candidates], kind="stable")][:k]
    return ProbeRanking(indices=order.astype(np.int64), scores=scores[order].astype(np.float32))


def prior_shifted(probabilities: np.ndarray, odds: float) -> np.ndarray:
    """Probabilities of a class-balanced probe (its classes weighed as if equally frequent)
    moved to a population where a positive's prior odds are ``odds`` (for the probe's own
    labels: n_positive / n_negative): the probe's odds times ``odds`` (Saerens, Latinne &
    Decaestecker, Neural Computation 2002, for a known prior). Ranks are unchanged; what
    changes is the scale, so a rate near 0.001 reads as one, not as 0.3."""
    if not odds > 0 or not np.isfinite(odds):
        raise ValueError(f"odds must be finite and > 0, got {odds}")
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    shifted = p / (1.0 - p) * odds
    return shifted / (1.0 + shifted)
