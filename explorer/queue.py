"""The mislabel queue's arithmetic, pure (numpy in, numbers out; no Streamlit).

- :func:`display_scores`: our score on [0, 1] and a ranking with its ties broken;
- :func:`likely_wrong`: the cut-off, images whose own evidence says their label is probably wrong;
- :func:`model_strength`: whether the model is good enough for the ranking to mean much;
- :func:`progress`: how far along a review is, from the decisions so far (issue 12, item 4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Below this test kNN accuracy the queue warns that its ranking means little. The ranking reads
# "how many of the image's neighbours carry another label": when more than 4 in 10 test images
# are misclassified by their own neighbours, most disagreement is the model's error, not the
# label's, and the top of the queue fills with correct labels (seen: a 2-epoch model at 51 %).
MIN_KNN_ACCURACY = 0.6

# "Likely wrong": most of the (trust-weighted) neighbours carry another label AND the posterior of
# the given label, class means fit without the image, is below one half.
LIKELY_DISAGREE = 0.5
LIKELY_P_GIVEN = 0.5

RECENT = 20  # the "recent precision" window: the last this-many reviewed candidates


def display_scores(score: np.ndarray, posterior_weight: float = 0.1) -> np.ndarray:
    """Our score (``knn_disagree + w (1 - p_given)``, in [0, 1 + w]) divided by its maximum, so
    it reads as a share on [0, 1] in the app and in the Label Studio export."""
    s = np.asarray(score, dtype=np.float64) / (1.0 + float(posterior_weight))
    return np.clip(s, 0.0, 1.0)


def margins(z: np.ndarray, labels: np.ndarray, suggested: np.ndarray, class_means: np.ndarray) -> np.ndarray:
    """How much nearer each image lies to its suggested class's mean than to its given class's
    (squared distances, given minus suggested; larger = more suspicious). The tie-breaker."""
    z = np.asarray(z, dtype=np.float32)
    mu = np.asarray(class_means, dtype=np.float32)
    dg = ((z - mu[np.asarray(labels, dtype=np.int64)]) ** 2).sum(1)
    ds = ((z - mu[np.asarray(suggested, dtype=np.int64)]) ** 2).sum(1)
    return (dg - ds).astype(np.float64)


def ranking(score: np.ndarray, tie_break: np.ndarray | None) -> np.ndarray:
    """1 = most suspicious: by ``score`` (descending), equal scores by ``tie_break`` (descending),
    then by row. Returns (N,) int64 ranks."""
    score = np.asarray(score, dtype=np.float64)
    keys = [np.arange(len(score))]
    if tie_break is not None:
        keys.append(-np.asarray(tie_break, dtype=np.float64))
    keys.append(-score)
    order = np.lexsort(keys)  # the last key is the primary one
    r = np.empty(len(score), dtype=np.int64)
    r[order] = np.arange(1, len(score) + 1)
    return r


def likely_wrong(knn_disagree: np.ndarray, p_given: np.ndarray) -> np.ndarray:
    """(N,) bool: the image's own evidence says its label is probably wrong."""
    return (np.asarray(knn_disagree) > LIKELY_DISAGREE) & (np.asarray(p_given) < LIKELY_P_GIVEN)


@dataclass(frozen=True)
class Strength:
    knn_accuracy: float | None
    split: str
    weak: bool


def model_strength(metrics: dict) -> Strength:
    """The run's kNN accuracy (test split, else val, else train) against :data:`MIN_KNN_ACCURACY`."""
    for split in ("test", "val", "train"):
        acc = (metrics.get(split) or {}).get("knn_accuracy")
        if isinstance(acc, (int, float)) and acc == acc:
            return Strength(float(acc), split, float(acc) < MIN_KNN_ACCURACY)
    return Strength(None, "", False)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for k successes in n trials (95 % by default); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


@dataclass(frozen=True)
class Progress:
    reviewed: int              # candidates with a decision
    wrong: int                 # of those, confirmed wrong (flag or relabel)
    share: float | None        # wrong / reviewed
    interval: tuple[float, float]
    unreviewed: int
    est_left: float | None     # estimated wrong labels among the unreviewed candidates
    recent: float | None       # share confirmed wrong among the last RECENT reviewed
    recent_n: int
    stop: bool                 # recent precision has dropped below the level
    until_rank: int | None     # review down to about this rank (the fit's share falls below the level)


def progress(score: np.ndarray, reviewed: np.ndarray, wrong: np.ndarray, when: np.ndarray,
             *, level: float, window: int = RECENT) -> Progress:
    """Review progress over the candidates, all arrays in queue order (best first).

    ``score``: the display score; ``reviewed``/``wrong``: bool (wrong = flag or relabel);
    ``when``: decision time (any value where not reviewed). The share confirmed wrong is fit
    against the score, non-decreasing (isotonic), on the reviewed candidates; the unreviewed
    ones are summed under that fit, the lowest reviewed score's share carried on below it.
    """
    score = np.asarray(score, dtype=np.float64)
    reviewed = np.asarray(reviewed, dtype=bool)
    wrong = np.asarray(wrong, dtype=bool) & reviewed
    n, k = int(reviewed.sum()), int(wrong.sum())
    left = int((~reviewed).sum())
    share = k / n if n else None
    est = until = None
    if n >= 2 and len(np.unique(score[reviewed])) >= 1:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(score[reviewed], wrong[reviewed].astype(np.float64))
        fit = iso.predict(score)
        est = float(fit[~reviewed].sum())
        below = np.flatnonzero(fit < level)
        until = int(below[0]) + 1 if below.size else len(score)
    recent = None
    rn = 0
    if n:
        idx = np.flatnonzero(reviewed)
        last = idx[np.argsort(np.asarray(when, dtype=np.float64)[idx], kind="stable")][-window:]
        rn = len(last)
        recent = float(wrong[last].mean())
    stop = recent is not None and rn >= window and recent < level
    return Progress(n, k, share, wilson(k, n), left, est, recent, rn, stop, until)
