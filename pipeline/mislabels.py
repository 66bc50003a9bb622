"""Mislabel candidates from out-of-sample evidence only, next to cleanlab's ranking.

Conventions: N images, C classes, D embedding size, k neighbours. The reference set is the
training split (``train_mask``); every image is judged against it, and a training image is never
part of its own evidence:

* the SGM posterior (Eq. 5, a softmax over ``-||z - mu_j||^2 / (2 sigma^2)``) against class means
  computed WITHOUT the image: for a training image of class y, ``mu_y = (n_y mu_y - z_i) / (n_y - 1)``;
* the vote of its k nearest training neighbours, leaving the image itself out, each neighbour's
  vote weighted by how well ITS label agrees with ITS own neighbours (the image being judged left
  out of that count too): a neighbour whose own label its neighbourhood contradicts is probably
  wrong itself and should not outvote the rest. See :func:`trusted_votes`.

Neither piece reads the image's own label: flipping ``labels[i]`` leaves row i of both evidence
arrays unchanged (see :func:`oos_evidence`); the label only decides which entry is "given".
The score combines the two; cleanlab runs on the same out-of-sample probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import log_softmax

from .neighbours import EXACT_MAX_PAIRS, knn

__all__ = ["Evidence", "oos_evidence", "evidence_from_arrays", "scores", "knn_probs", "cleanlab_scores"]

# Weight of (1 - posterior of the given label) next to the kNN disagreement in ``score``, and the
# neighbours for the mislabel evidence (more than the paper's K = 11 for classification: the label
# of one image is judged, and more noisy neighbours outvote chance better). Both chosen by
# ``python -m pipeline.mislabel_select`` on a *selection* half of 6,000 FER+ training images with
# FER2013's labels (grid K 11/25/50 x weight 0/0.1/0.25/0.5 x trust on/off; best K = 50, weight 0,
# trust on, AP 0.625) and reported on the disjoint other half only (AP 0.627; the earlier K = 25,
# weight 0.1: 0.618). docs/RESULTS.md.
POSTERIOR_WEIGHT = 0.0
MISLABEL_K = 50

# Laplace smoothing of the kNN vote distribution handed to cleanlab (counts + alpha) / (k + C alpha).
KNN_ALPHA = 0.5


@dataclass
class Evidence:
    """Out-of-sample class evidence for every image.

    log_post:   (N, C) float64, log SGM posterior against leave-one-out class means
    votes:      (N, C) float64, label counts among the k nearest training neighbours (self excluded)
    neighbours: (N, k) int64, rows of those neighbours (nearest first)
    distances:  (N, k) float64, their Euclidean distances
    trusted:    (N, C) float64 or None, the votes weighted by each neighbour's trust and rescaled
                to sum to k (:func:`trusted_votes`); None where there are no neighbour rows
    """

    log_post: np.ndarray
    votes: np.ndarray
    neighbours: np.ndarray
    distances: np.ndarray
    n_votes: int | None = None      # votes per image when there are no neighbour rows (cross-fit)
    trusted: np.ndarray | None = None

    @property
    def score_votes(self) -> np.ndarray:
        """The votes the score reads: trust-weighted when available, else the plain counts."""
        return self.trusted if self.trusted is not None else self.votes

    @property
    def post(self) -> np.ndarray:
        return np.exp(self.log_post)

    @property
    def k(self) -> int:
        return int(self.n_votes) if self.n_votes is not None else int(self.neighbours.shape[1])


def evidence_from_arrays(post: np.ndarray, votes: np.ndarray, trusted: np.ndarray | None = None) -> Evidence:
    """Evidence from arrays computed elsewhere, e.g. training's cross-fit (``crossfit_posterior``
    and ``crossfit_votes``: (N, C) from fold models that never saw the image). No neighbour rows.
    ``trusted``: trust-weighted votes on the same scale as ``votes``, when known."""
    post = np.asarray(post, dtype=np.float64)
    votes = np.asarray(votes, dtype=np.float64)
    p = np.clip(post, 1e-300, None)
    log_post = np.log(p / p.sum(1, keepdims=True))
    n = votes.shape[0]
    return Evidence(log_post=log_post, votes=votes, neighbours=np.zeros((n, 0), np.int64),
                    distances=np.zeros((n, 0)), n_votes=max(1, int(round(float(votes.sum(1).max())))) if n else 1,
                    trusted=None if trusted is None else np.asarray(trusted, dtype=np.float64))


def pool(a: Evidence, b: Evidence) -> Evidence:
    """The mean of two kinds of evidence (e.g. leave-one-out and cross-fit), each vote array
    first put on the scale of ``a``'s k (the fold models may use another k)."""
    ka, kb = max(a.k, 1), max(b.k, 1)
    votes = 0.5 * (a.votes + b.votes * (ka / kb))
    trusted = 0.5 * (a.score_votes + b.score_votes * (ka / kb))
    ev = evidence_from_arrays(0.5 * (a.post + b.post), votes, trusted)
    ev.n_votes = ka
    return ev


def trusted_votes(labels: np.ndarray, neighbours: np.ndarray, n_classes: int, *, chunk: int = 8192) -> np.ndarray:
    """(N, C) neighbour votes, each weighted by the neighbour's trust, rescaled to sum to k.

    The trust of neighbour j, as seen by image i, is (a + 1) / (m + 2): a of the m neighbours of
    j (i itself left out when it is one of them) carry j's label. So image i's own label never
    enters its own evidence, not even through its neighbours' trust. labels: (N,) int;
    neighbours: (N, k) rows (every row of ``neighbours[j]`` must be a valid row).
    """
    labels = np.asarray(labels).astype(np.int64)
    nb = np.asarray(neighbours, dtype=np.int64)
    N, k = nb.shape
    out = np.zeros((N, n_classes))
    if k == 0 or N == 0:
        return out
    agree = (labels[nb] == labels[:, None]).sum(1).astype(np.float64)     # a_j over all of j's neighbours
    for s in range(0, N, chunk):
        i = np.arange(s, min(N, s + chunk))
        j = nb[i]                                                           # (n, k)
        i_in_nj = (nb[j] == i[:, None, None]).any(2)                        # (n, k): is i a neighbour of j
        a = agree[j] - (i_in_nj & (labels[i][:, None] == labels[j]))        # i's vote on j removed
        m = k - i_in_nj
        w = (a + 1.0) / (m + 2.0)
        np.add.at(out, (np.repeat(i - s, k) + s, labels[j].ravel()), w.ravel())
    tot = out.sum(1, keepdims=True)
    return np.divide(out * k, tot, out=np.zeros_like(out), where=tot > 0)


def _loo_sq_dist(z: np.ndarray, labels: np.ndarray, train: np.ndarray, C: int,
                 class_means: np.ndarray | None) -> np.ndarray:
    """(N, C) squared distances to class means, the image's own contribution removed."""
    n = np.bincount(labels[train], minlength=C).astype(np.float64)
    if class_means is not None:
        sums = np.asarray(class_means, dtype=np.float64) * n[:, None]
    else:
        sums = np.zeros((C, z.shape[1]))
        np.add.at(sums, labels[train], z[train])
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = sums / n[:, None]
    d = ((z[:, None, :] - mu[None, :, :]) ** 2).sum(-1) if z.shape[0] * C * z.shape[1] < 5e7 else \
        (z ** 2).sum(1)[:, None] - 2 * z @ np.nan_to_num(mu).T + (np.nan_to_num(mu) ** 2).sum(1)[None, :]
    d[:, n == 0] = np.inf
    # training rows: their own class mean without them
    rows = np.flatnonzero(train)
    y = labels[rows]
    m = n[y] - 1
    ok = m > 0
    mu_loo = np.full((len(rows), z.shape[1]), np.nan)
    mu_loo[ok] = (sums[y[ok]] - z[rows[ok]]) / m[ok, None]
    d_own = ((z[rows] - mu_loo) ** 2).sum(1)
    d_own[~ok] = np.inf
    d[rows, y] = d_own
    return np.maximum(d, 0.0)


def _knn(z: np.ndarray, train: np.ndarray, k: int, *,
         exact_max_pairs: float = EXACT_MAX_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) neighbour rows among the training rows and their distances, never the row itself
    (:func:`pipeline.neighbours.knn`: exact up to ``exact_max_pairs``, an HNSW graph above)."""
    ref = np.flatnonzero(train)
    if len(ref) == 0:
        return np.zeros((z.shape[0], 0), np.int64), np.zeros((z.shape[0], 0))
    pos = np.full(z.shape[0], -1, np.int64)
    pos[ref] = np.arange(len(ref))
    nb, dist = knn(z[ref], z, k, own=pos, exact_max_pairs=exact_max_pairs)
    return ref[nb], dist


def oos_evidence(z: np.ndarray, labels: np.ndarray, *, train_mask: np.ndarray,
                 class_means: np.ndarray | None = None, k: int = MISLABEL_K, sigma: float = 0.5,
                 n_classes: int | None = None, seed: int = 0,
                 exact_max_pairs: float = EXACT_MAX_PAIRS) -> Evidence:
    """Out-of-sample posterior and kNN votes for every image (see :class:`Evidence`).

    z: (N, D) float; labels: (N,) int in [0, C); train_mask: (N,) bool, the reference rows.
    class_means: (C, D) means over the training rows (Eq. 5), or None to compute them here.
    Above ``exact_max_pairs`` (N x training rows) the neighbour search is approximate
    (:mod:`pipeline.neighbours`, deterministic, so ``seed`` changes nothing today); below it the
    search is exact.
    """
    z = np.asarray(z, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    train = np.asarray(train_mask, dtype=bool)
    C = int(n_classes or max(int(labels.max()) + 1, 0 if class_means is None else len(class_means)))
    d = _loo_sq_dist(z, labels, train, C, class_means)
    logits = -d / (2.0 * float(sigma) ** 2)
    all_inf = ~np.isfinite(logits).any(1)
    logits[all_inf] = 0.0
    log_post = log_softmax(logits, axis=1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):      # BLAS threads only contend on a shared two-core box
        nb, dist = _knn(z, train, k, exact_max_pairs=exact_max_pairs)
    votes = np.zeros((z.shape[0], C))
    if nb.shape[1]:
        np.add.at(votes, (np.repeat(np.arange(z.shape[0]), nb.shape[1]), labels[nb].ravel()), 1.0)
    return Evidence(log_post=log_post, votes=votes, neighbours=nb, distances=dist,
                    trusted=trusted_votes(labels, nb, C))


def knn_probs(votes: np.ndarray, *, alpha: float = KNN_ALPHA) -> np.ndarray:
    """(N, C) vote counts -> smoothed probabilities (counts + alpha) / (k + C alpha)."""
    v = np.asarray(votes, dtype=np.float64) + alpha
    return v / v.sum(1, keepdims=True)


def _rank(score: np.ndarray) -> np.ndarray:
    """1 = highest score; ties keep row order."""
    order = np.argsort(-score, kind="stable")
    r = np.empty(len(score), dtype=np.int64)
    r[order] = np.arange(1, len(score) + 1)
    return r


def scores(z: np.ndarray, labels: np.ndarray, *, train_mask: np.ndarray,
           class_means: np.ndarray | None = None, k: int = MISLABEL_K, sigma: float = 0.5, seed: int = 0,
           classes: list[str] | None = None, cleanlab_probs: str = "knn",
           posterior_weight: float = POSTERIOR_WEIGHT, evidence: Evidence | None = None) -> pd.DataFrame:
    """Per-image mislabel scores (the ``analysis/mislabels.parquet`` table, RUN_FORMAT.md).

    z: (N, D) float32; labels: (N,) int given labels; train_mask: (N,) bool reference rows.
    Returns N rows: ``score`` = knn_disagree + posterior_weight * (1 - p_given_oos) (higher =
    more suspicious; ``knn_disagree`` is 1 - the trust-weighted share of neighbours carrying the
    given label, see :func:`trusted_votes`),
    ``suggested`` (the most likely class other than the given one, by the mean of the two
    out-of-sample distributions), ``p_given_oos``, ``knn_disagree``, ``rank`` (1 = worst), and
    cleanlab's ``cleanlab_score`` (label quality, lower = worse), ``cleanlab_rank``,
    ``cleanlab_issue`` computed on ``cleanlab_probs``: "knn" (smoothed leave-one-out vote
    distribution) or "posterior" (leave-one-out SGM posterior). Above ``EXACT_MAX_PAIRS`` the
    neighbour search is approximate (see :func:`oos_evidence`); ``seed`` is passed on to it. ``evidence``:
    reuse an :func:`oos_evidence` result computed with the same arguments.
    """
    labels = np.asarray(labels).astype(np.int64)
    N = labels.shape[0]
    C = len(classes) if classes is not None else None
    ev = evidence if evidence is not None else oos_evidence(
        z, labels, train_mask=train_mask, class_means=class_means, k=k, sigma=sigma, n_classes=C, seed=seed)
    C = ev.votes.shape[1]
    rows = np.arange(N)
    post = ev.post
    p_given = post[rows, labels]
    kk = max(ev.k, 1)
    sv = ev.score_votes
    knn_disagree = np.clip(1.0 - sv[rows, labels] / kk, 0.0, 1.0)
    score = knn_disagree + float(posterior_weight) * (1.0 - p_given)
    evidence = 0.5 * (post + sv / kk)
    alt = evidence.copy()
    alt[rows, labels] = -np.inf
    suggested = alt.argmax(1) if C > 1 else labels.copy()

    probs = knn_probs(ev.votes) if cleanlab_probs == "knn" else \
        np.clip(post, 1e-12, None) / np.clip(post, 1e-12, None).sum(1, keepdims=True)
    cl_score, cl_issue = cleanlab_scores(labels, probs)

    df = pd.DataFrame({
        "score": score.astype(np.float64),
        "suggested": suggested.astype(np.int64),
        "p_given_oos": p_given.astype(np.float64),
        "knn_disagree": knn_disagree.astype(np.float64),
        "rank": _rank(score),
        "cleanlab_score": cl_score.astype(np.float64),
        "cleanlab_rank": _rank(-cl_score),
        "cleanlab_issue": cl_issue.astype(bool),
    })
    if classes is not None:
        df.insert(2, "suggested_name", np.asarray(classes, dtype=object)[suggested])
    return df


def cleanlab_scores(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's self-confidence label quality and find_label_issues mask on ``probs``."""
    import warnings

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quality = get_label_quality_scores(labels, probs, method="self_confidence")
        present = np.unique(labels)
        if len(present) < 2:
            return quality, np.zeros(len(labels), dtype=bool)
        # cleanlab wants labels 0..C'-1 all present; restrict to the classes that occur
        remap = -np.ones(probs.shape[1], dtype=np.int64)
        remap[present] = np.arange(len(present))
        p = probs[:, present]
        p = p / p.sum(1, keepdims=True)
        issue = find_label_issues(remap[labels], p, n_jobs=1)
    return np.asarray(quality, dtype=np.float64), np.asarray(issue, dtype=bool)
