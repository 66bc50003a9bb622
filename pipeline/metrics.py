"""The paper's evaluation protocol (PAPER.md), pure: arrays in, numbers out.

z: (N, D) float32 embeddings, y: (N,) int labels. K for kNN classification is 11; retrieval uses
K in {1, 2, 4, 8, 16, 32}, each test image querying the rest of the test set.
"""
from __future__ import annotations

import numpy as np

RETRIEVAL_KS = (1, 2, 4, 8, 16, 32)


def _neighbours(base: np.ndarray, query: np.ndarray, k: int, *, exclude_self: bool = False) -> np.ndarray:
    """Indices (Q, k) of the k nearest base rows for each query row (squared Euclidean).

    ``exclude_self``: query i is base i (same array); i is never its own neighbour."""
    import torch

    b = torch.from_numpy(np.array(base, dtype=np.float32))     # a copy: memory-mapped runs are read-only
    q = torch.from_numpy(np.array(query, dtype=np.float32))
    kk = min(k + (1 if exclude_self else 0), b.shape[0])
    out = np.empty((q.shape[0], min(k, b.shape[0] - (1 if exclude_self else 0))), np.int64)
    bn = (b * b).sum(1)
    for s in range(0, q.shape[0], 2048):
        qs = q[s:s + 2048]
        d = (qs * qs).sum(1, keepdim=True) - 2 * qs @ b.T + bn[None, :]
        if exclude_self:
            r = torch.arange(s, s + qs.shape[0])
            d[torch.arange(qs.shape[0]), r] = float("inf")
        idx = torch.topk(d, kk, largest=False, sorted=True).indices
        if exclude_self:
            idx = idx[:, : kk - 1]
        out[s:s + qs.shape[0]] = idx.numpy()[:, : out.shape[1]]
    return out


def knn_votes(base_z: np.ndarray, base_y: np.ndarray, query_z: np.ndarray, *, k: int = 11,
              num_classes: int, exclude_self: bool = False) -> np.ndarray:
    """(Q, C) share of each class among the k nearest base rows."""
    nb = _neighbours(base_z, query_z, k, exclude_self=exclude_self)
    lab = np.asarray(base_y)[nb]
    votes = np.zeros((len(query_z), num_classes), np.float32)
    for c in range(num_classes):
        votes[:, c] = (lab == c).sum(1)
    return votes / max(nb.shape[1], 1)


def knn_predict(base_z, base_y, query_z, *, k: int = 11, num_classes: int, exclude_self: bool = False) -> np.ndarray:
    """kNN vote; ties go to the class of the nearest tied neighbour's... simplest stable rule:
    the lowest class index among the tied maxima (deterministic)."""
    return knn_votes(base_z, base_y, query_z, k=k, num_classes=num_classes, exclude_self=exclude_self).argmax(1)


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = np.unique(y_true)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "precision": float(p), "recall": float(r), "f1": float(f)}


def pairwise_f1(y_true: np.ndarray, clusters: np.ndarray) -> float:
    """Clustering F1 over pairs (the metric-learning convention): a pair is positive when both
    items share a class; predicted positive when they share a cluster."""
    from sklearn.metrics.cluster import contingency_matrix

    m = contingency_matrix(y_true, clusters).astype(np.float64)
    comb = lambda x: x * (x - 1) / 2.0  # noqa: E731
    tp = comb(m).sum()
    pred_pos = comb(m.sum(0)).sum()
    true_pos = comb(m.sum(1)).sum()
    if pred_pos == 0 or true_pos == 0:
        return 0.0
    prec, rec = tp / pred_pos, tp / true_pos
    return float(2 * prec * rec / (prec + rec)) if prec + rec > 0 else 0.0


def kmeans_scores(z: np.ndarray, y: np.ndarray, *, n_clusters: int, seed: int = 0) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    if len(z) < n_clusters:
        return {"nmi": float("nan"), "f1": float("nan")}
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(z)
    return {"nmi": float(normalized_mutual_info_score(y, km.labels_)), "f1": pairwise_f1(y, km.labels_)}


def retrieval_scores(z: np.ndarray, y: np.ndarray, *, ks=RETRIEVAL_KS) -> dict:
    """Recall@K (a same-class item among the K nearest) and Acc@K (share of the K nearest of the
    query's class), each item querying the rest of the set."""
    y = np.asarray(y)
    if len(z) < 2:
        return {"recall_at": {}, "acc_at": {}}
    kmax = min(max(ks), len(z) - 1)
    nb = _neighbours(z, z, kmax, exclude_self=True)
    hit = y[nb] == y[:, None]
    rec, acc = {}, {}
    for k in ks:
        kk = min(k, kmax)
        rec[str(k)] = float(hit[:, :kk].any(1).mean())
        acc[str(k)] = float(hit[:, :kk].mean())
    return {"recall_at": rec, "acc_at": acc}


def class_means(z: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, D) mean embedding per class; a class with no rows gets NaN (left out of Eq. 5)."""
    d = z.shape[1]
    mu = np.full((num_classes, d), np.nan, np.float32)
    for c in range(num_classes):
        m = y == c
        if m.any():
            mu[c] = z[m].mean(0)
    return mu


def gaussian_posterior(z: np.ndarray, means: np.ndarray, *, sigma: float = 0.5) -> np.ndarray:
    """Eq. 5: P(w_j | z) = softmax_j(-||z - mu_j||^2 / (2 sigma^2)); classes with NaN means get 0."""
    ok = np.isfinite(means).all(1)
    # ||z||^2 - 2 z.mu + ||mu||^2 in float64: (N, C) memory, not the (N, C, D) of z - mu
    z64 = np.asarray(z, dtype=np.float64)
    mu = np.where(ok[:, None], np.asarray(means, dtype=np.float64), 0.0)
    d2 = np.maximum((z64 ** 2).sum(1)[:, None] - 2.0 * z64 @ mu.T + (mu ** 2).sum(1)[None, :], 0.0)
    logits = -d2 / (2 * sigma * sigma)
    logits[:, ~ok] = -np.inf
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def evaluate_split(train_z, train_y, z, y, *, num_classes: int, k: int = 11, sigma: float = 0.5,
                   means: np.ndarray | None = None, seed: int = 0, exclude_self: bool = False) -> dict:
    """Every number of the protocol for one evaluation set against the training embeddings."""
    y = np.asarray(y)
    pred = knn_predict(train_z, train_y, z, k=k, num_classes=num_classes, exclude_self=exclude_self)
    cls = classification_scores(y, pred)
    present = len(np.unique(y))
    km = kmeans_scores(z, y, n_clusters=num_classes if present >= num_classes else present, seed=seed)
    ret = retrieval_scores(z, y)
    if means is None:
        means = class_means(train_z, train_y, num_classes)
    post = gaussian_posterior(z, means, sigma=sigma)
    return {
        "n": int(len(y)),
        "knn_k": k,
        "knn_accuracy": cls["accuracy"], "knn_precision": cls["precision"],
        "knn_recall": cls["recall"], "knn_f1": cls["f1"],
        "kmeans_nmi": km["nmi"], "kmeans_f1": km["f1"],
        "recall_at": ret["recall_at"], "acc_at": ret["acc_at"],
        "posterior_accuracy": float((post.argmax(1) == y).mean()) if len(y) else float("nan"),
    }


def format_table(metrics: dict) -> str:
    """The metrics of each split as a plain-text table (percentages)."""
    splits = [s for s in ("train", "val", "test") if s in metrics] + [s for s in metrics if s.startswith("cross:")]
    cols = [("n", "n"), ("kNN acc", "knn_accuracy"), ("prec", "knn_precision"), ("rec", "knn_recall"), ("F1", "knn_f1"),
            ("NMI", "kmeans_nmi"), ("KM-F1", "kmeans_f1"), ("Eq5 acc", "posterior_accuracy")]
    if any("classifier_accuracy" in metrics[s] for s in splits):
        cols.append(("clf acc", "classifier_accuracy"))      # the softmax baseline's own classifier
    lines = ["split".ljust(22) + "".join(h.rjust(9) for h, _ in cols)]
    for s in splits:
        m = metrics[s]
        row = s.ljust(22)
        for h, key in cols:
            v = m.get(key, float("nan"))
            row += (f"{v:9d}" if key == "n" else f"{100 * v:9.2f}")
        lines.append(row)
    ks = list(RETRIEVAL_KS)
    lines.append("")
    lines.append("split".ljust(22) + "".join(f"R@{k}".rjust(7) for k in ks) + "".join(f"A@{k}".rjust(7) for k in ks))
    for s in splits:
        m = metrics[s]
        lines.append(s.ljust(22) + "".join(f"{100 * m['recall_at'].get(str(k), float('nan')):7.1f}" for k in ks)
                     + "".join(f"{100 * m['acc_at'].get(str(k), float('nan')):7.1f}" for k in ks))
    return "\n".join(lines)
