"""Nearest neighbours in an embedding, the one place the project searches them (mislabel evidence,
similar images, duplicates).

Exact search is a chunked torch brute force (squared distances by one matrix product per chunk,
then ``topk``); it is used whenever queries x references stays under ``exact_max_pairs``.
Above that the search is approximate: a faiss HNSW graph (Malkov & Yashunin) built on the
references. The graph is built on one thread, so it (and every answer) is the same on every run;
the search uses every core. ``python -m bench neighbours`` puts recall and time against the exact
search side by side at 35k and 450k images.

Shapes: references (M, D), queries (N, D), float; answers (N, k) int64 rows of the references and
(N, k) float64 Euclidean distances, nearest first.
"""
from __future__ import annotations

import numpy as np
import torch

# Above this many query x reference pairs (about 16k images querying themselves) the search is
# approximate: the exact one grows with N^2.
EXACT_MAX_PAIRS = 2.5e8
HNSW_M = 32                 # graph degree
EF_CONSTRUCTION = 40        # faiss's default
EF_SEARCH = 64              # candidates kept per query; recall 0.985 on isotropic 64-D blobs at 35k
_CHUNK_BYTES = 64 << 20     # the distance block of one exact chunk


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable else a.copy()       # torch refuses read-only (memory-mapped) arrays


def exact_knn(ref: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest references of every query, in float64 when the inputs are (else float32)."""
    dt = np.float64 if np.asarray(ref).dtype == np.float64 or np.asarray(queries).dtype == np.float64 else np.float32
    r = torch.from_numpy(_writable(np.ascontiguousarray(ref, dtype=dt)))
    q = torch.from_numpy(_writable(np.ascontiguousarray(queries, dtype=dt)))
    M, N = r.shape[0], q.shape[0]
    k = int(min(k, M))
    idx = np.empty((N, k), np.int64)
    dist = np.empty((N, k), np.float64)
    if k == 0 or N == 0:
        return idx, dist
    rn = (r * r).sum(1)
    step = max(1, _CHUNK_BYTES // (r.element_size() * M))
    with torch.no_grad():
        for s in range(0, N, step):
            qc = q[s:s + step]
            d = torch.addmm(rn[None, :], qc, r.T, alpha=-2.0)         # |r|^2 - 2 q.r (|q|^2 added below)
            ids = torch.topk(d, k, dim=1, largest=False, sorted=True).indices
            # the k distances again as |q - r| (the expansion above loses precision near zero), in order
            dd = (qc[:, None, :] - r[ids]).double().norm(dim=2)
            dd, order = torch.sort(dd, dim=1, stable=True)
            idx[s:s + len(qc)] = torch.gather(ids, 1, order).numpy()
            dist[s:s + len(qc)] = dd.numpy()
    return idx, dist


def approx_knn(ref: np.ndarray, queries: np.ndarray, k: int, *, ef_search: int = EF_SEARCH) -> tuple[np.ndarray, np.ndarray]:
    """Approximately the ``k`` nearest references of every query, by a faiss HNSW graph (deterministic)."""
    import faiss

    r = np.ascontiguousarray(ref, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = int(min(k, len(r)))
    if k == 0 or len(q) == 0:
        return np.empty((len(q), k), np.int64), np.empty((len(q), k), np.float64)
    threads = faiss.omp_get_max_threads()
    index = faiss.IndexHNSWFlat(r.shape[1], HNSW_M)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    faiss.omp_set_num_threads(1)            # a parallel build inserts in a racy order
    try:
        index.add(r)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = max(int(ef_search), k)
    d2, ids = index.search(q, k)
    # HNSW may return fewer than k (-1) on tiny or degenerate data: fill from the exact search
    bad = (ids < 0).any(1)
    if bad.any():
        fill_ids, fill_dist = exact_knn(r, q[bad], k)
        ids[bad], d2[bad] = fill_ids, fill_dist ** 2
    return ids.astype(np.int64), np.sqrt(np.maximum(d2.astype(np.float64), 0.0))


def knn(ref: np.ndarray, queries: np.ndarray, k: int, *, own: np.ndarray | None = None,
        exact_max_pairs: float = EXACT_MAX_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest references of every query: exact when ``N * M <= exact_max_pairs``, else
    approximate. ``own``: (N,) the reference row each query is (-1: none); a query never finds
    itself (k + 1 are searched and the query's own row, or else the farthest, is dropped)."""
    ref = np.asarray(ref)
    queries = np.asarray(queries)
    k = int(min(k, len(ref) - (0 if own is None else 1)))
    if k <= 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0))
    extra = 0 if own is None else 1
    search = exact_knn if float(len(queries)) * len(ref) <= exact_max_pairs else approx_knn
    idx, dist = search(ref, queries, k + extra)
    if own is None:
        return idx, dist
    is_own = idx == np.asarray(own, dtype=np.int64)[:, None]
    drop = np.where(is_own.any(1), is_own.argmax(1), k)
    keep = np.ones_like(is_own)
    keep[np.arange(len(idx)), drop] = False
    return idx[keep].reshape(-1, k), dist[keep].reshape(-1, k)
