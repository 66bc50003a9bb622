"""Images that are unlike every class (outliers) and images that are there twice (duplicates).

Conventions: N images, (N, S, S) uint8 pixels, D embedding size.

* **Outliers**: :func:`combined_outlier_scores`: the larger percentile rank of cleanlab's
  :class:`cleanlab.outlier.OutOfDistribution` (mean distance to the k nearest neighbours) on pixel
  thumbnails and of 1 - the posterior of the predicted class. cleanlab on the embedding alone, the
  documented route, missed non-faces the network had trained on (RESULTS.md).
* **Exact duplicates**: the same pixels (SHA-1 of the stored image bytes).
* **Near duplicates**: candidate pairs are each image's nearest neighbours in the embedding and in
  a 16x16 thumbnail of its pixels; a pair is kept when the two images' pixels, standardised
  (brightness and contrast removed), correlate at ``min_corr`` or more. The embedding alone would
  call any two similar-looking faces of one class duplicates; the pixel check keeps only copies
  (re-encoded, re-exposed, slightly shifted).

Pairs that cross the train / test boundary are leakage: a test image the model has already seen
in training. :func:`dedupe_rows` says which rows ``train --dedupe`` leaves out of training.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .runs import DUPLICATES_TABLE, IMAGES_ARRAY, OUTLIERS_TABLE

MIN_CORR = 0.95          # pixel correlation that makes two images near duplicates (RESULTS.md)
NEAR_K = 5               # neighbours per image searched for near duplicates, in each space
OUTLIER_K = 10           # cleanlab OutOfDistribution's k


# ----------------------------------------------------------------------------- duplicates
def image_hashes(images: np.ndarray) -> np.ndarray:
    """(N,) str: SHA-1 of each image's bytes (16 hex digits)."""
    imgs = np.ascontiguousarray(images)
    return np.array([hashlib.sha1(imgs[i].tobytes()).hexdigest()[:16] for i in range(len(imgs))], dtype=object)


def _standardised(images: np.ndarray, size: int | None = None) -> np.ndarray:
    """(N, P) float32 rows with mean 0 and norm 1 (a constant image stays all zeros)."""
    x = np.asarray(images, dtype=np.float32)
    if size is not None and x.shape[-1] != size:
        f = x.shape[-1] // size
        x = x[:, : size * f, : size * f].reshape(len(x), size, f, size, f).mean(axis=(2, 4))
    x = x.reshape(len(x), -1)
    x = x - x.mean(1, keepdims=True)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 1e-6, x / np.maximum(n, 1e-6), 0.0).astype(np.float32)


def _knn_pairs(feats: np.ndarray, k: int) -> np.ndarray:
    """(M, 2) int64 unique pairs (i < j) of each row and its k nearest other rows
    (:func:`pipeline.neighbours.knn`: exact on small inputs, faiss HNSW above its threshold)."""
    from .neighbours import knn

    n = len(feats)
    idx, _ = knn(feats, feats, k, own=np.arange(n))
    if idx.shape[1] == 0:
        return np.zeros((0, 2), np.int64)
    a = np.repeat(np.arange(n), idx.shape[1])
    b = idx.reshape(-1)             # never the row itself (``own``)
    return np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], 1), axis=0)


def find_duplicates(images: np.ndarray, split: np.ndarray, z: np.ndarray | None = None, *,
                    min_corr: float = MIN_CORR, k: int = NEAR_K) -> tuple[pd.DataFrame, dict]:
    """Exact and near duplicate pairs, and their counts.

    Returns (pairs, counts). ``pairs``: one row per pair, columns ``a``, ``b`` (rows, a < b),
    ``kind`` ("exact" or "near"), ``corr`` (pixel correlation), ``embedding_dist`` (NaN without
    ``z``), ``split_a``, ``split_b``, ``cross`` (the pair spans train and test). An exact group of m
    copies gives m - 1 pairs (each copy with the group's first row). ``counts``: see
    :func:`duplicate_counts`."""
    images = np.asarray(images)
    split = np.asarray(split).astype(str)
    n = len(images)
    h = image_hashes(images)
    first: dict[str, int] = {}
    exact = []
    for i, hv in enumerate(h):
        j = first.setdefault(hv, i)
        if j != i:
            exact.append((j, i))
    exact_set = {(a, b) for a, b in exact}
    group = np.array([first[hv] for hv in h], np.int64)          # exact group id = its first row
    std = _standardised(images)
    cands = [_knn_pairs(_standardised(images, 16), k)]
    if z is not None:
        cands.append(_knn_pairs(np.asarray(z, np.float32), k))
    cand = np.unique(np.concatenate(cands), axis=0) if n > 1 else np.zeros((0, 2), np.int64)
    # copies of one exact group are one image: a near pair between two groups is kept once
    if len(cand):
        cand = np.stack([group[cand[:, 0]], group[cand[:, 1]]], 1)
        cand = np.unique(np.sort(cand, 1), axis=0)
        cand = cand[cand[:, 0] != cand[:, 1]]
    corr = (std[cand[:, 0]] * std[cand[:, 1]]).sum(1) if len(cand) else np.zeros(0, np.float32)
    near = cand[corr >= min_corr]
    near_corr = corr[corr >= min_corr]
    rows = [(a, b, "exact", 1.0) for a, b in exact]
    rows += [(int(a), int(b), "near", float(c)) for (a, b), c in zip(near, near_corr) if (a, b) not in exact_set]
    pairs = pd.DataFrame(rows, columns=["a", "b", "kind", "corr"]).astype({"a": np.int64, "b": np.int64})
    if z is not None and len(pairs):
        zz = np.asarray(z, np.float32)
        pairs["embedding_dist"] = np.linalg.norm(zz[pairs["a"].to_numpy()] - zz[pairs["b"].to_numpy()], axis=1)
    else:
        pairs["embedding_dist"] = np.nan
    pairs["split_a"] = split[pairs["a"].to_numpy()] if len(pairs) else []
    pairs["split_b"] = split[pairs["b"].to_numpy()] if len(pairs) else []
    sa, sb = pairs["split_a"].to_numpy(), pairs["split_b"].to_numpy()
    pairs["cross"] = ((sa == "train") & (sb == "test")) | ((sa == "test") & (sb == "train"))
    return pairs, duplicate_counts(pairs, split)


def _components(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """(n,) int64 component id of every row under the duplicate pairs (union-find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(pairs["a"].to_numpy(), pairs["b"].to_numpy()):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)], np.int64)


def duplicate_counts(pairs: pd.DataFrame, split: np.ndarray) -> dict:
    """``exact_pairs``, ``near_pairs``, ``groups`` (sets of two or more copies, exact and near
    joined), ``images_in_groups``, ``redundant`` (images beyond one per group),
    ``cross_pairs`` (train-test pairs), ``cross_groups`` (groups with a train and a test member),
    ``test_leaked`` (test images with a copy in train), ``conflicting_groups`` left to the caller."""
    split = np.asarray(split).astype(str)
    n = len(split)
    comp = _components(n, pairs)
    sizes = np.bincount(comp, minlength=n)
    in_group = sizes[comp] > 1
    g_has_train = np.zeros(n, bool)
    g_has_test = np.zeros(n, bool)
    np.logical_or.at(g_has_train, comp, split == "train")
    np.logical_or.at(g_has_test, comp, split == "test")
    roots = np.unique(comp[in_group])
    return {
        "exact_pairs": int((pairs["kind"] == "exact").sum()),
        "near_pairs": int((pairs["kind"] == "near").sum()),
        "groups": int(len(roots)),
        "images_in_groups": int(in_group.sum()),
        "redundant": int(in_group.sum() - len(roots)),
        "cross_pairs": int(pairs["cross"].sum()),
        "cross_groups": int((g_has_train[roots] & g_has_test[roots]).sum()),
        "test_leaked": int(((split == "test") & in_group & g_has_train[comp]).sum()),
    }


def dedupe_rows(pairs: pd.DataFrame, split: np.ndarray) -> np.ndarray:
    """(N,) bool: rows ``train --dedupe`` leaves out. In every duplicate group: every train and
    val copy of a test image goes (leakage; test images are never dropped); otherwise the group's
    first train (or val) copy stays and the others go."""
    split = np.asarray(split).astype(str)
    n = len(split)
    comp = _components(n, pairs)
    drop = np.zeros(n, bool)
    has_test = np.zeros(n, bool)
    np.logical_or.at(has_test, comp, split == "test")
    kept: set[int] = set()
    for r in range(n):
        c = comp[r]
        if split[r] == "test":
            continue
        if has_test[c]:
            drop[r] = True
        elif c in kept:
            drop[r] = True
        else:
            kept.add(c)
    return drop


# ----------------------------------------------------------------------------- outliers
def outlier_scores(z: np.ndarray, *, k: int = OUTLIER_K) -> np.ndarray:
    """(N,) float in [0, 1]: 1 - cleanlab's OutOfDistribution typicality of each embedding row
    (mean distance to its k nearest neighbours); high = unlike every other image."""
    from cleanlab.outlier import OutOfDistribution

    z = np.asarray(z, np.float32)
    k = int(min(k, len(z) - 1))
    if k < 1:
        return np.zeros(len(z))
    ood = OutOfDistribution(params={"k": k})
    return 1.0 - np.asarray(ood.fit_score(features=z, verbose=False), dtype=np.float64)


def combined_outlier_scores(z: np.ndarray, images: np.ndarray | None = None,
                            posterior_pred: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """What ``analyze`` ranks outliers by: the larger of two percentile ranks, cleanlab's
    OutOfDistribution on 16x16 standardised pixel thumbnails (``ood_pixels``) and 1 - the Eq. 5
    posterior of the predicted class (``one_minus_posterior``); cleanlab on the embedding alone
    when neither is there. On non-faces injected into the training data (RESULTS.md) cleanlab on
    the embedding scored AUROC 0.58, the thumbnails 0.74, 1 - posterior 0.88, this max 0.96: the
    network learns to place non-faces it trains on, so its own neighbourhoods hide them.
    Returns (score in (0, 1], {part name: its raw score})."""
    from scipy.stats import rankdata

    parts: dict[str, np.ndarray] = {}
    if images is not None and len(images) > 1 and images.shape[-1] >= 16:
        parts["ood_pixels"] = outlier_scores(_standardised(images, 16))
    if posterior_pred is not None:
        parts["one_minus_posterior"] = 1.0 - np.asarray(posterior_pred, np.float64)
    if not parts:
        parts["ood_embedding"] = outlier_scores(z)
    n = len(next(iter(parts.values())))
    score = np.max([rankdata(v) / n for v in parts.values()], axis=0)
    return score, parts


def ranking_auc(truth: np.ndarray, score: np.ndarray) -> dict:
    """AUROC, average precision and precision at the number of true items, of ``score`` against
    boolean ``truth`` (how an outlier ranking is measured on data with a known answer)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = np.asarray(truth, bool)
    n = int(truth.sum())
    top = np.argsort(-np.asarray(score), kind="stable")[:n]
    return {"auroc": float(roc_auc_score(truth, score)), "ap": float(average_precision_score(truth, score)),
            "precision_at_n": float(truth[top].mean()) if n else float("nan"), "n_true": n}


# ----------------------------------------------------------------------------- into a run
def write_quality(run, items: pd.DataFrame, z: np.ndarray, *, ground_truth: bool = True) -> dict:
    """Rank outliers and find duplicates for an analysed run; writes ``analysis/outliers.parquet``
    (row-aligned: ``outlier_score``, ``outlier_rank`` 0 = most unlike the rest) and
    ``analysis/duplicates.parquet`` (:func:`find_duplicates`' pairs). Returns the ``quality``
    section of metrics.json: duplicate counts, and the outlier ranking scored against a
    ``gt_outlier`` column when the items have one."""
    split = items["split"].to_numpy()
    images = np.asarray(run.images()) if run.has(IMAGES_ARRAY) else None
    post = items["posterior_pred"].to_numpy(np.float64) if "posterior_pred" in items.columns else None
    score, parts = combined_outlier_scores(z, images, post)
    rank = np.empty(len(score), np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(len(score))
    table = pd.DataFrame({"outlier_score": score.astype(np.float32), "outlier_rank": rank})
    for name, v in parts.items():
        table[name] = np.asarray(v, np.float32)
    run.put_table(OUTLIERS_TABLE, table)
    out = {"outliers": {"method": "max percentile rank of: " + ", ".join(parts)}}
    if images is not None:          # duplicates are judged on the pixels; a run without them has none to judge
        pairs, counts = find_duplicates(images, split, z)
        run.put_table(DUPLICATES_TABLE, pairs)
        out["duplicates"] = {**counts, "min_corr": MIN_CORR, "k": NEAR_K}
    if ground_truth and "gt_outlier" in items.columns:
        out["outliers"].update(ranking_auc(items["gt_outlier"].to_numpy(bool), score))
    return out


def describe_counts(c: dict | None) -> str:
    """One line for ``pipeline analyze``'s output."""
    if c is None:
        return "duplicates: not searched (the run stores no images.npy)"
    return (f"duplicates: {c['exact_pairs']} exact and {c['near_pairs']} near pair(s) in {c['groups']} group(s), "
            f"{c['cross_groups']} group(s) across train and test ({c['test_leaked']} test image(s) with a copy in train)")
