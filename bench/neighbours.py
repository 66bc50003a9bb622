"""``python -m bench neighbours``: the approximate neighbour search of :mod:`pipeline.neighbours`
(faiss HNSW) against the exact brute force, recall and time side by side, at 35k and 450k images.

The search is the mislabel evidence's: every image asks for its k = 25 nearest other images.
Embeddings: the 64-D Gaussian mixture of :mod:`bench.synthetic` (8 unbalanced classes of 1-4
sub-clusters), plus isotropic blobs (8 unit-variance clusters, the hard case for an approximate
search). Where the exact search of every image would take too long (``--exact-sample``), it is
run on a seeded sample of queries: its time is scaled up to all queries and says so, and recall
is measured on that sample.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

K = 25


def blobs(n: int, *, dim: int = 64, classes: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 2.0, (classes, dim))
    return (centers[rng.integers(0, classes, n)] + rng.normal(0.0, 1.0, (n, dim))).astype(np.float32)


def measure(z: np.ndarray, *, exact_sample: int, seed: int = 0) -> dict:
    from pipeline.neighbours import knn

    n = len(z)
    own = np.arange(n)
    t0 = time.perf_counter()
    approx, _ = knn(z, z, K, own=own, exact_max_pairs=0)
    t_approx = time.perf_counter() - t0
    q = np.arange(n) if exact_sample <= 0 or exact_sample >= n else \
        np.sort(np.random.default_rng(seed).choice(n, exact_sample, replace=False))
    t0 = time.perf_counter()
    exact, _ = knn(z, z[q], K, own=own[q], exact_max_pairs=float("inf"))
    t_exact = (time.perf_counter() - t0) * n / len(q)
    recall = float(np.mean([len(np.intersect1d(approx[i], exact[j])) for j, i in enumerate(q)]) / K)
    return {"n": n, "k": K, "approx_s": round(t_approx, 2), "exact_s": round(t_exact, 2),
            "exact_queries": int(len(q)), "exact_scaled": bool(len(q) < n), "recall": round(recall, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench neighbours", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="35000,450000", help="comma-separated numbers of images")
    ap.add_argument("--exact-sample", type=int, default=2000,
                    help="above 50,000 images, time the exact search on this many queries and scale up (0: all)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    a = ap.parse_args(argv)
    from .report import machine
    from .synthetic import gaussian_mixture

    info = machine()
    rows = []
    print(f"bench neighbours: {info.get('cpus')} CPUs, load average {os.getloadavg()[0]:.2f} at the start",
          file=sys.stderr, flush=True)
    for n in (int(s) for s in a.sizes.split(",") if s.strip()):
        sample = a.exact_sample if n > 50_000 else 0
        for name, z in (("mixture", gaussian_mixture(n, seed=0)[0]), ("blobs", blobs(n, seed=0))):
            r = {"data": name, **measure(z, exact_sample=sample)}
            rows.append(r)
            print(f"  {name} {n}: approx {r['approx_s']} s, exact {r['exact_s']} s, recall {r['recall']}",
                  file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(f"{'data':8} {'images':>8} {'approx (HNSW) s':>16} {'exact s':>10} {'ratio':>6} {'recall@25':>10}  note")
    for r in rows:
        note = f"exact timed on {r['exact_queries']:,} queries, scaled to all" if r["exact_scaled"] else "exact on all queries"
        print(f"{r['data']:8} {r['n']:>8,} {r['approx_s']:>16.1f} {r['exact_s']:>10.1f} "
              f"{r['exact_s'] / max(r['approx_s'], 1e-9):>6.1f} {r['recall']:>10.3f}  {note}")
    print(f"machine: {info.get('cpus')} CPUs, torch {info.get('torch')}; load average (1 min) at the end {load:.2f}")
    if a.out:
        from pipeline.runs import write_json

        write_json(a.out, {"rows": rows, "machine": info, "load_avg_1m_end": round(load, 2)}, sort_keys=False)
    return 0
