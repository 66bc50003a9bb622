"""Sub-classes: Algorithm 2 (DGMS) levels and the fast per-class mixture fit.

Conventions: N images, D embedding size, C classes, K sub-classes in all (global ids 0..K-1,
numbered class by class: the sub-classes of class 0 first, then class 1, ...).

Two ways to get sub-labels, one way to describe them:

* :func:`split_classes` is one level of Algorithm 2: in every class an EM Gaussian mixture with
  ``k = min(level, |Z_j| // Mc)`` components (at least 1). The training loop calls it between
  SGM rounds with ``k`` = the level number.
* :func:`fit_fast` fits one mixture per class on the final embedding and picks the number of
  components by minimum BIC, up to a cap and never more than ``|Z_j| // Mc``. Where the data
  carries crowd votes, it can instead fit on :func:`crowd_features` (the SGM posterior next to
  the vote distribution), which finds "happiness the crowd half-read as surprise" kinds of groups.
* :func:`describe` turns any sub-labels into a :class:`Hierarchy` (size, share, mean, variance,
  medoid, top-k members nearest the medoid), the thing ``analysis`` stores and the explorer shows.

Everything here is pure: arrays in, arrays out; every random choice takes ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Hierarchy", "Facet", "split_classes", "fit_fast", "fit_shared", "describe", "relabel_compact",
           "crowd_features", "class_specific_features", "shared_features", "number_facets", "resolve_features",
           "FEATURES", "FACET_TITLES"]

# What the fast mode's mixtures are fit on: the embedding itself, or crowd_features.
from .config import FEATURES, SUBCLASS_FEATURES  # noqa: E402  (the one list of choices)

# Diagonal covariances: with D = 64 and a few hundred images per class a full covariance has
# more parameters than the class has images, so BIC would always pick k = 1.
DEFAULT_COVARIANCE = "diag"
_REG_COVAR = 1e-4
# Images per class the fast mode fits on; larger classes are sampled (BIC needs no more to
# tell 1 from 5 components, and EM cost grows with every image).
MAX_FIT = 5000


@dataclass
class Hierarchy:
    """Per-image sub-class ids and a description of every sub-class.

    labels:        (N,) int64, final sub-class id of every image (global, class by class)
    levels:        list of (N,) int64, one per Algorithm 2 level (empty in the fast mode)
    sub_class:     (K,) int64, the class each sub-class belongs to
    index_in_class:(K,) int64, 0.. within its class
    size:          (K,) int64, members
    share:         (K,) float64, size / size of its class
    means:         (K, D) float32
    variance:      (K,) float64, mean per-dimension variance of the members (trace / D)
    medoid:        (K,) int64, row of the member nearest the mean
    topk:          list of K int64 arrays, rows nearest the medoid (the medoid first)
    bic:           {class index: [(k, bic), ...]} BIC curves (fast mode only)
    mode:          "bic" or "dgms"
    """

    labels: np.ndarray
    sub_class: np.ndarray
    index_in_class: np.ndarray
    size: np.ndarray
    share: np.ndarray
    means: np.ndarray
    variance: np.ndarray
    medoid: np.ndarray
    topk: list[np.ndarray]
    levels: list[np.ndarray] = field(default_factory=list)
    bic: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    mode: str = "bic"
    features: str = "embedding"

    @property
    def n_subclasses(self) -> int:
        return int(self.size.shape[0])


# ----------------------------------------------------------------------------- mixtures
def _gmm(k: int, seed: int, covariance_type: str, n_init: int = 1):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(n_components=k, covariance_type=covariance_type, reg_covar=_REG_COVAR,
                           n_init=n_init, max_iter=200, init_params="k-means++", random_state=seed)


def _cap(n: int, k: int, min_per_subclass: int) -> int:
    """Components allowed for a class of ``n`` images: min(k, n // Mc), at least 1."""
    return max(1, min(int(k), n // max(1, int(min_per_subclass))))


def relabel_compact(sub: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Renumber sub-labels ``(N,)`` to consecutive global ids, class by class, ordered by size
    within a class (largest first), so that empty mixture components leave no gaps."""
    sub = np.asarray(sub)
    labels = np.asarray(labels)
    out = np.empty(sub.shape[0], dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        vals, counts = np.unique(sub[rows], return_counts=True)
        order = np.lexsort((vals, -counts))       # largest first, ties by old id: deterministic
        new_id = np.empty(len(vals), dtype=np.int64)
        new_id[order] = offset + np.arange(len(vals))
        out[rows] = new_id[np.searchsorted(vals, sub[rows])]
        offset += len(vals)
    return out


def split_classes(z: np.ndarray, labels: np.ndarray, *, n_components: int | Sequence[int],
                  min_per_subclass: int, seed: int, fit_mask: np.ndarray | None = None,
                  covariance_type: str = DEFAULT_COVARIANCE) -> np.ndarray:
    """One level of Algorithm 2: split every class with an EM Gaussian mixture.

    z: (N, D) float32; labels: (N,) int (class ids, or the previous level's sub-labels: each
    distinct value is split on its own). ``n_components``: k for every class, or one k per
    distinct label value (in sorted order). Per group k = min(k, |Z_j| // Mc), at least 1.
    fit_mask: (N,) bool, fit each mixture on these rows only (the training split) and assign
    every row of the group to its most likely component; None fits on all rows. Returns (N,) int64 global sub-labels, numbered group by group, largest component first.
    """
    z = np.asarray(z, dtype=np.float64)
    labels = np.asarray(labels)
    groups = np.unique(labels)
    if np.ndim(n_components) == 0:
        ks = [int(n_components)] * len(groups)
    else:
        ks = [int(k) for k in n_components]
        if len(ks) != len(groups):
            raise ValueError(f"n_components has {len(ks)} entries for {len(groups)} classes")
    from threadpoolctl import threadpool_limits

    fit_mask = np.ones(labels.shape[0], bool) if fit_mask is None else np.asarray(fit_mask, bool)
    sub = np.zeros(labels.shape[0], dtype=np.int64)
    offset = 0
    for g, k_want in zip(groups, ks):
        rows = np.flatnonzero(labels == g)
        fit = rows[fit_mask[rows]]
        k = _cap(len(fit), k_want, min_per_subclass)
        if k == 1 or len(fit) < 2:
            k = 1
            sub[rows] = offset
        else:
            with threadpool_limits(1):
                gm = _gmm(k, seed, covariance_type).fit(z[fit])
                sub[rows] = offset + gm.predict(z[rows])
        offset += k
    return relabel_compact(sub, labels)


def resolve_features(requested: str, has_votes: bool) -> str:
    """The features the headline sub-classes fit on: ``requested`` ("auto" or one of :data:`FEATURES`).
    "auto" is always the embedding: sub-classes come from the images, so a folder of images and a
    crowd-labelled set get the same kind; with votes, the crowd's reading is an extra facet ("crowd"),
    not the headline. Raises ValueError (one line) for an unknown choice or posterior+votes without votes."""
    if requested not in SUBCLASS_FEATURES:
        raise ValueError(f"sub-class features must be auto, {' or '.join(FEATURES)}, not {requested!r}")
    if requested == "auto":
        return "embedding"
    if requested == "posterior+votes" and not has_votes:
        raise ValueError("the data holds no crowd votes, which sub-class features 'posterior+votes' need; "
                         "use 'embedding'")
    return requested


def crowd_features(z: np.ndarray, class_means: np.ndarray, votes: np.ndarray, *, sigma: float) -> np.ndarray:
    """(N, 2C) float32: Hellinger coordinates ``sqrt([P(w|z), v])`` of the SGM posterior (Eq. 5
    against ``class_means`` (C, D), :func:`pipeline.metrics.class_means`: a class without rows
    has NaN there and gets posterior 0) and the crowd's vote distribution ``votes`` (N, C) counts
    or shares (a row without any vote gets zeros there: only its posterior speaks).

    Why: inside one class the embedding's spread is mostly appearance (skin tone, lighting,
    glasses), while the ways a class is *read* (a smile the crowd half-called contempt, a
    surprise half-called fear) show in which other classes the image leans to, for the model
    (posterior) and for the annotators (votes). The square root makes Euclidean distance the
    Hellinger distance between distributions, so a mixture sees small shares (0.2 vs 0) as
    differences. Measured against the synthetic hidden sub-classes in docs/RESULTS.md.
    """
    from .metrics import gaussian_posterior

    post = gaussian_posterior(z, class_means, sigma=float(sigma)).astype(np.float64)
    v = np.asarray(votes, dtype=np.float64)
    if v.shape != post.shape:
        raise ValueError(f"votes shape {v.shape} does not match the posterior's {post.shape}")
    tot = v.sum(1, keepdims=True)
    share = np.divide(v, tot, out=np.zeros_like(v), where=tot > 0)
    return np.sqrt(np.concatenate([post, share], axis=1)).astype(np.float32)


def fit_fast(z: np.ndarray, labels: np.ndarray, *, max_components: int = 5,
             min_per_subclass: int = 64, seed: int = 0, topk: int = 16,
             covariance_type: str = DEFAULT_COVARIANCE, max_fit: int = MAX_FIT,
             features: np.ndarray | None = None, features_name: str = "embedding") -> Hierarchy:
    """The explorer's fast mode: one mixture per class, k by minimum BIC.

    z: (N, D) float32; labels: (N,) int class ids. For each class, k runs over
    1 .. min(max_components, |Z_j| // Mc); a fit whose smallest hard cluster holds fewer than
    Mc / 2 images is skipped (it would not be a sub-class anyone can browse). A class larger
    than ``max_fit`` is fit (and its BIC taken) on a seeded sample of ``max_fit`` images, and
    every image is then assigned to its most likely component. Returns the
    :class:`Hierarchy` with ``mode="bic"`` and the BIC curve of every class.
    ``features``: (N, F) to fit the mixtures on instead of ``z`` (e.g. :func:`crowd_features`),
    named ``features_name``; the sub-classes are still described (means, medoids) in ``z``.
    """
    from threadpoolctl import threadpool_limits

    if features is not None and np.shape(features)[0] != np.shape(z)[0]:
        raise ValueError(f"features have {np.shape(features)[0]} rows for {np.shape(z)[0]} images")
    with threadpool_limits(1):        # small BLAS calls: extra threads only contend (16x slower on a busy box)
        h = _fit_fast(z, labels, max_components=max_components, min_per_subclass=min_per_subclass,
                      seed=seed, topk=topk, covariance_type=covariance_type, max_fit=max_fit,
                      fit_on=features)
    h.features = features_name if features is not None else "embedding"
    return h


def _fit_fast(z, labels, *, max_components, min_per_subclass, seed, topk, covariance_type, max_fit, fit_on=None):
    z64 = np.asarray(z if fit_on is None else fit_on, dtype=np.float64)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    sub = np.zeros(labels.shape[0], dtype=np.int64)
    curves: dict[int, list[tuple[int, float]]] = {}
    offset = 0
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        fit = np.sort(rng.choice(rows, size=max_fit, replace=False)) if len(rows) > max_fit else rows
        zf = z64[fit]
        scale = len(rows) / len(fit)
        kmax = _cap(len(rows), max_components, min_per_subclass)
        best_bic, best_k, best_gm, best_keep = np.inf, 1, None, None
        curve = []
        for k in range(1, kmax + 1):
            if len(fit) < 2:
                curve.append((1, 0.0))
                break
            gm = _gmm(k, seed, covariance_type).fit(zf)
            bic = float(gm.bic(zf))
            curve.append((k, bic))
            keep = _browsable(gm, zf, scale, min_per_subclass) if k > 1 else np.ones(1, bool)
            if keep.sum() < 2 and k > 1:
                continue
            if bic < best_bic:
                best_bic, best_k, best_gm, best_keep = bic, k, gm, keep
        curves[int(c)] = curve
        if best_k > 1:
            # a component too small to browse (often a pile of identical feature rows) keeps its
            # place in the mixture, but its images join their most likely browsable component
            proba = best_gm.predict_proba(z64[rows])
            sub[rows] = offset + np.flatnonzero(best_keep)[proba[:, best_keep].argmax(1)]
        offset += best_k
    sub = relabel_compact(sub, labels)
    return describe(z, sub, labels, topk=topk, mode="bic", bic=curves)


def _browsable(gm, zf: np.ndarray, scale: float, min_per_subclass: int) -> np.ndarray:
    """(k,) bool: the components that keep at least Mc / 2 images (scaled to the whole class)
    once the smaller ones are dropped one by one, smallest first, and their images reassigned
    to the most likely remaining component."""
    proba = gm.predict_proba(zf)
    keep = np.ones(proba.shape[1], bool)
    while keep.sum() > 1:
        counts = np.bincount(np.flatnonzero(keep)[proba[:, keep].argmax(1)], minlength=len(keep)) * scale
        small = np.flatnonzero(keep & (counts < min_per_subclass / 2))
        if not len(small):
            break
        keep[small[np.argmin(counts[small])]] = False
    return keep


# ----------------------------------------------------------------------------- facets
# A facet is one way of splitting every class. Measured on synthetic faces without votes (RESULTS.md):
# a per-class mixture on the raw embedding mixes expression variants with appearance and finds few of
# either; separating the two kinds of within-class spread finds far more of both.
#   "expression": per class, the directions along which this class varies more than classes vary in
#                 general (generalized eigenvectors of the class scatter against the pooled within-class
#                 scatter): what is specific to the class, its variants.
#   "look":       appearance every class shares (glasses, a baby's face, lighting, skin): one mixture over
#                 the pooled within-class residuals of all classes, so a rare look is fit on every class's
#                 examples of it at once, then read inside each class.
#   "look_last":  the same on the backbone's last maps alone, where "look" reads two levels: the looks
#                 the expression facet is measured against.
#   "look_embedding": the same on the embedding instead of the backbone's features (runs without
#                 mid-level features).
#   "crowd":      :func:`crowd_features`, where the data has votes: how the crowd read it.
#   "levels":     Algorithm 2 sub-labels stored by training (--levels > 1).
FACET_TITLES = {"expression": "What varies inside this class", "look": "Look shared across classes",
                "look_last": "Look in the last feature maps", "look_embedding": "Look in the embedding",
                "crowd": "How the crowd read it", "levels": "Algorithm 2 levels (training)"}
EXPRESSION_DIMS = 3        # per-class directions kept; 3 found the most variants of 1..8 (RESULTS.md)
LOOK_DIMS = 16             # pooled residual components kept for the look facet
LOOK_MAX_COMPONENTS = 8    # looks the shared mixture may find (BIC picks fewer)
LOOK_MAX_FIT = 20000       # rows the shared mixture is fit on (a seeded sample above that)
LOOK_N_INIT = 1            # EM restarts of the shared mixture (one mixture in all, so restarts are cheap)
LOOK_SHRINK = 20.0         # rows' worth of pull towards the class mean in look_residuals (10-40 measured
                           # alike on five synthetic runs; RESULTS.md)


@dataclass
class Facet:
    """One named way of splitting every class: ``name`` (a key of :data:`FACET_TITLES`), its
    :class:`Hierarchy`, what it was fit on (``about``), and ``offset``, the global id of its first
    sub-class when several facets are stored together (facets are numbered one after another)."""

    name: str
    hierarchy: Hierarchy
    about: str = ""
    offset: int = 0

    @property
    def title(self) -> str:
        return FACET_TITLES.get(self.name, self.name)


def number_facets(facets: Sequence[Facet]) -> list[Facet]:
    """Set every facet's ``offset`` so that sub-class ids are unique across facets (first facet from 0)."""
    off = 0
    for f in facets:
        f.offset = off
        off += f.hierarchy.n_subclasses
    return list(facets)


def _scatter(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    return x.T @ x / max(1, len(x) - 1)


def class_residuals(z: np.ndarray, labels: np.ndarray, fit_mask: np.ndarray | None = None) -> np.ndarray:
    """(N, D) float64: every row minus the mean of its class over the ``fit_mask`` rows (all rows of a
    class without fit rows)."""
    z = np.asarray(z, dtype=np.float64)
    labels = np.asarray(labels)
    fit = np.ones(len(labels), bool) if fit_mask is None else np.asarray(fit_mask, bool)
    r = np.empty_like(z)
    for c in np.unique(labels):
        rows = labels == c
        src = rows & fit if (rows & fit).any() else rows
        r[rows] = z[rows] - z[src].mean(0)
    return r


def _pooled_within(r: np.ndarray, labels: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """(D, D) within-class scatter pooled over classes, each class weighted equally (so the largest
    class does not define what "varies in general" means)."""
    D = r.shape[1]
    acc, n = np.zeros((D, D)), 0
    for c in np.unique(labels):
        rows = np.flatnonzero((labels == c) & fit)
        if len(rows) >= 2:
            acc += _scatter(r[rows])
            n += 1
    return acc / max(1, n)


def class_specific_features(z: np.ndarray, labels: np.ndarray, *, fit_mask: np.ndarray | None = None,
                            dims: int = EXPRESSION_DIMS, ridge: float = 1e-3,
                            residuals: np.ndarray | None = None) -> np.ndarray:
    """(N, dims) float32: each row in the coordinates of its own class's most class-specific directions.

    For class c, the generalized eigenvectors v of ``S_c v = lambda S_w v`` (S_c: the class's scatter,
    S_w: the within-class scatter pooled over all classes, plus ``ridge`` times its mean variance) with
    the largest lambda: directions along which this class spreads more than classes do in general.
    Rows are projected after subtracting their class mean and scaled to unit variance per direction,
    so a mixture with full covariances sees the class's own structure. Fit on ``fit_mask`` rows.
    ``residuals``: (N, D) deviations to use instead of "row minus its class mean" (e.g.
    :func:`look_residuals`, which also takes out the looks every class shares).
    """
    from scipy.linalg import eigh

    labels = np.asarray(labels)
    fit = np.ones(len(labels), bool) if fit_mask is None else np.asarray(fit_mask, bool)
    if residuals is not None and np.shape(residuals)[0] != len(labels):
        raise ValueError(f"residuals have {np.shape(residuals)[0]} rows for {len(labels)} images")
    r = class_residuals(z, labels, fit) if residuals is None else np.asarray(residuals, dtype=np.float64)
    sw = _pooled_within(r, labels, fit)
    sw = sw + ridge * max(float(np.trace(sw)) / sw.shape[0], 1e-12) * np.eye(sw.shape[0])
    dims = int(max(1, min(dims, r.shape[1])))
    out = np.zeros((len(labels), dims), np.float32)
    for c in np.unique(labels):
        rows = labels == c
        src = np.flatnonzero(rows & fit) if (rows & fit).sum() > dims else np.flatnonzero(rows)
        if len(src) < 2:
            continue
        w, v = eigh(_scatter(r[src]), sw)
        v = v[:, np.argsort(-w)[:dims]]
        proj = r[rows] @ v
        sd = (r[src] @ v).std(0)
        out[rows] = (proj / np.where(sd > 0, sd, 1.0)).astype(np.float32)
    return out


def shared_features(z: np.ndarray, labels: np.ndarray, *, fit_mask: np.ndarray | None = None,
                    dims: int = LOOK_DIMS) -> np.ndarray:
    """(N, dims) float32: the pooled within-class residuals (row minus its class mean), whitened on
    their first ``dims`` principal components (fit on ``fit_mask`` rows, classes weighted equally)."""
    labels = np.asarray(labels)
    fit = np.ones(len(labels), bool) if fit_mask is None else np.asarray(fit_mask, bool)
    r = class_residuals(z, labels, fit)
    w, v = np.linalg.eigh(_pooled_within(r, labels, fit))
    order = np.argsort(-w)[: int(max(1, min(dims, r.shape[1])))]
    scale = np.sqrt(np.clip(w[order], 1e-12, None))
    return (r @ v[:, order] / scale).astype(np.float32)


@dataclass
class SharedMixture:
    """The look mixture over all classes: ``proba`` (N, K) every image's posterior over the K
    components, ``bic`` the [(k, bic), ...] curve k was chosen on."""

    proba: np.ndarray
    bic: list[tuple[int, float]]


def shared_mixture(features: np.ndarray, *, fit_mask: np.ndarray | None = None,
                   max_components: int = LOOK_MAX_COMPONENTS, min_per_subclass: int = 64, seed: int = 0,
                   max_fit: int = LOOK_MAX_FIT, n_init: int = LOOK_N_INIT) -> SharedMixture:
    """One mixture (full covariances, k by minimum BIC up to ``max_components`` and at most one
    component per Mc fit rows) over the ``features`` (N, F) of all classes together, fit on the
    ``fit_mask`` rows (a seeded sample of ``max_fit`` above that); every row's posterior."""
    from threadpoolctl import threadpool_limits

    f = np.asarray(features, dtype=np.float64)
    fit = np.ones(len(f), bool) if fit_mask is None else np.asarray(fit_mask, bool)
    rows = np.flatnonzero(fit)
    rng = np.random.default_rng(seed)
    if len(rows) > max_fit:
        rows = np.sort(rng.choice(rows, size=max_fit, replace=False))
    curve, best = [], (np.inf, None)
    with threadpool_limits(1):
        for k in range(1, max(1, min(int(max_components), len(rows) // max(1, int(min_per_subclass)))) + 1):
            gm = _gmm(k, seed, "full", n_init=n_init).fit(f[rows])
            bic = float(gm.bic(f[rows]))
            curve.append((k, bic))
            if bic < best[0]:
                best = (bic, gm)
        proba = best[1].predict_proba(f) if best[1] is not None else np.ones((len(f), 1))
    return SharedMixture(proba=proba, bic=curve)


def look_residuals(x: np.ndarray, labels: np.ndarray, proba: np.ndarray, *, fit_mask: np.ndarray | None = None,
                   shrink: float = LOOK_SHRINK) -> np.ndarray:
    """(N, D) float64: every row minus its class's mean *for its look*: for class c and look
    component k (``proba``: (N, K) posteriors of :func:`shared_mixture`), the class's
    posterior-weighted mean of its ``fit_mask`` rows in look k, shrunk towards the class mean by
    ``shrink`` rows' worth (a look a class barely has keeps the class mean); a row subtracts the
    posterior-weighted sum of those. What is left is how an image differs from the images of its
    class that look like it (glasses, a baby's face, the light): what the class itself varies in."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    p = np.asarray(proba, dtype=np.float64)
    if p.shape[0] != len(labels) or x.shape[0] != len(labels):
        raise ValueError(f"look posteriors ({p.shape[0]} rows) and features ({x.shape[0]}) must match the "
                         f"{len(labels)} images")
    fit = np.ones(len(labels), bool) if fit_mask is None else np.asarray(fit_mask, bool)
    r = np.empty_like(x)
    for c in np.unique(labels):
        rows = labels == c
        src = rows & fit if (rows & fit).any() else rows
        mu = x[src].mean(0)
        w = p[src]
        means = (w.T @ x[src] + shrink * mu) / (w.sum(0)[:, None] + shrink)
        r[rows] = x[rows] - p[rows] @ means
    return r


def equal_blocks(blocks: Sequence[np.ndarray], *, fit_mask: np.ndarray | None = None) -> np.ndarray:
    """(N, sum of widths) float32: the feature blocks side by side, each centred and scaled to a
    mean squared row norm of 1 on the ``fit_mask`` rows, so each weighs the same whatever its width."""
    out = []
    for b in blocks:
        b = np.asarray(b, dtype=np.float64)
        fit = np.ones(len(b), bool) if fit_mask is None else np.asarray(fit_mask, bool)
        b = b - b[fit].mean(0)
        scale = float(np.sqrt((b[fit] ** 2).sum(1).mean()))
        out.append(b / (scale if scale > 0 else 1.0))
    return np.concatenate(out, axis=1).astype(np.float32)


def fit_shared(z: np.ndarray, labels: np.ndarray, features: np.ndarray, *, fit_mask: np.ndarray | None = None,
               max_components: int = LOOK_MAX_COMPONENTS, min_per_subclass: int = 64, seed: int = 0,
               topk: int = 16, max_fit: int = LOOK_MAX_FIT, n_init: int = LOOK_N_INIT,
               mixture: SharedMixture | None = None) -> Hierarchy:
    """One mixture (full covariances, k by minimum BIC up to ``max_components``) over the ``features``
    of all classes together; a sub-class is (class, component). Inside a class, a component with fewer
    than Mc / 2 images hands them to their most likely component that has more (smallest first), so
    every sub-class can be browsed. Returns a :class:`Hierarchy` (mode "shared", described in ``z``).
    ``mixture``: the :func:`shared_mixture` of these features when already fit (it is not refit)."""
    labels = np.asarray(labels)
    if mixture is None:
        mixture = shared_mixture(features, fit_mask=fit_mask, max_components=max_components,
                                 min_per_subclass=min_per_subclass, seed=seed, max_fit=max_fit, n_init=n_init)
    proba, curve = mixture.proba, mixture.bic
    K = proba.shape[1]
    sub = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        rc = np.flatnonzero(labels == c)
        keep = np.ones(K, bool)
        while keep.sum() > 1:
            counts = np.bincount(np.flatnonzero(keep)[proba[rc][:, keep].argmax(1)], minlength=K)
            small = np.flatnonzero(keep & (counts < min_per_subclass / 2))
            if not len(small):
                break
            keep[small[np.argmin(counts[small])]] = False
        sub[rc] = int(c) * K + np.flatnonzero(keep)[proba[rc][:, keep].argmax(1)]
    h = describe(z, sub, labels, topk=topk, mode="shared", bic={-1: curve})
    h.features = "look"
    return h


# ----------------------------------------------------------------------------- description
def describe(z: np.ndarray, sub: np.ndarray, labels: np.ndarray, *, topk: int = 16,
             mode: str = "dgms", levels: Sequence[np.ndarray] = (),
             bic: dict | None = None) -> Hierarchy:
    """Describe given sub-labels: per sub-class its class, size, share, mean, variance, medoid
    (the member nearest the mean) and the ``topk`` members nearest the medoid (medoid first).

    z: (N, D) float32; sub: (N,) int sub-labels (any ids; renumbered compactly here, class by
    class, largest first); labels: (N,) int class ids. A sub-label spanning two classes is an
    error. ``levels``: the Algorithm 2 levels, stored unchanged (each (N,) int).
    """
    z = np.asarray(z, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    sub = np.asarray(sub)
    # every sub-class must sit inside one class
    pairs = np.unique(np.stack([sub.astype(np.int64), labels], 1), axis=0)
    if len(np.unique(pairs[:, 0])) != len(pairs):
        raise ValueError("a sub-label spans more than one class")
    sub = relabel_compact(sub, labels)
    K = int(sub.max()) + 1 if sub.size else 0
    class_size = np.bincount(labels, minlength=int(labels.max()) + 1 if labels.size else 0)
    sub_class = np.zeros(K, dtype=np.int64)
    index_in_class = np.zeros(K, dtype=np.int64)
    size = np.zeros(K, dtype=np.int64)
    share = np.zeros(K, dtype=np.float64)
    means = np.zeros((K, z.shape[1]), dtype=np.float32)
    variance = np.zeros(K, dtype=np.float64)
    medoid = np.zeros(K, dtype=np.int64)
    tops: list[np.ndarray] = []
    seen: dict[int, int] = {}
    for s in range(K):
        rows = np.flatnonzero(sub == s)
        zs = z[rows].astype(np.float64)
        c = int(labels[rows[0]])
        sub_class[s] = c
        index_in_class[s] = seen.get(c, 0)
        seen[c] = index_in_class[s] + 1
        size[s] = len(rows)
        share[s] = len(rows) / class_size[c]
        mu = zs.mean(0)
        means[s] = mu
        variance[s] = float(zs.var(0).mean())
        d_mean = ((zs - mu) ** 2).sum(1)
        m = int(np.argmin(d_mean))          # first of ties: rows are sorted, so deterministic
        medoid[s] = rows[m]
        d_med = ((zs - zs[m]) ** 2).sum(1)
        order = np.lexsort((rows, d_med))[: max(1, int(topk))]
        tops.append(rows[order].astype(np.int64))
    return Hierarchy(labels=sub, sub_class=sub_class, index_in_class=index_in_class, size=size,
                     share=share, means=means, variance=variance, medoid=medoid, topk=tops,
                     levels=[np.asarray(l, dtype=np.int64) for l in levels], bic=dict(bic or {}),
                     mode=mode)


# ----------------------------------------------------------------------------- storage form
def _as_facets(h: "Hierarchy | Sequence[Facet]") -> list[Facet]:
    if isinstance(h, Hierarchy):
        return [Facet(name="levels" if h.mode == "dgms" else "embedding", hierarchy=h)]
    facets = list(h)
    if not facets:
        raise ValueError("no facet to store")
    return number_facets(facets)


def to_json(h: "Hierarchy | Sequence[Facet]", classes: Sequence[str], extra: dict | None = None) -> dict:
    """The ``analysis/subclasses.json`` object (RUN_FORMAT.md). ``h``: one :class:`Hierarchy`, or
    facets (the first is the primary one, whose ids the ``subclass`` column holds). ``extra``:
    {global sub-class id: {key: value}} merged into each sub-class's entry (e.g. its lean class)."""
    facets = _as_facets(h)
    first = facets[0].hierarchy
    subs = []
    for f in facets:
        g = f.hierarchy
        for s in range(g.n_subclasses):
            sid = f.offset + s
            entry = {"id": sid, "facet": f.name, "class": int(g.sub_class[s]),
                     "class_name": str(classes[int(g.sub_class[s])]),
                     "index_in_class": int(g.index_in_class[s]), "size": int(g.size[s]),
                     "share": float(g.share[s]), "medoid": int(g.medoid[s]),
                     "topk": [int(r) for r in g.topk[s]], "variance": float(g.variance[s])}
            entry.update((extra or {}).get(sid, {}))
            subs.append(entry)

    def bic_of(g: Hierarchy) -> dict:
        return {("all classes" if int(c) < 0 else str(classes[int(c)])): [[int(k), float(b)] for k, b in curve]
                for c, curve in g.bic.items()}

    return {
        "mode": first.mode,
        "features": first.features,
        "primary": facets[0].name,
        "facets": [{"name": f.name, "title": f.title, "about": f.about, "mode": f.hierarchy.mode,
                    "features": f.hierarchy.features, "n_subclasses": f.hierarchy.n_subclasses,
                    "first_id": f.offset, "column": f"facet_{f.name}", "bic": bic_of(f.hierarchy)}
                   for f in facets],
        "subclasses": subs,
        "bic": bic_of(first),
    }


def to_table(h: "Hierarchy | Sequence[Facet]"):
    """The ``analysis/subclasses.parquet`` table: ``subclass`` (the primary facet's global ids), one
    ``facet_<name>`` column per facet (global ids, unique across facets), and ``subclass_l1``..
    per Algorithm 2 level of the primary facet."""
    import pandas as pd

    facets = _as_facets(h)
    cols = {"subclass": (facets[0].offset + facets[0].hierarchy.labels).astype(np.int64)}
    for f in facets if not isinstance(h, Hierarchy) else ():
        cols[f"facet_{f.name}"] = (f.offset + f.hierarchy.labels).astype(np.int64)
    for i, lev in enumerate(facets[0].hierarchy.levels, start=1):
        cols[f"subclass_l{i}"] = np.asarray(lev, dtype=np.int64)
    return pd.DataFrame(cols)
