"""pipeline.neighbours: exact brute force against scikit-learn, self-exclusion, the approximate
(faiss HNSW) search deterministic and close to exact; bench neighbours prints its table."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
from sklearn.neighbors import NearestNeighbors

from conftest import ROOT
from pipeline.neighbours import approx_knn, exact_knn, knn


def blobs(n=2000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 2, (6, d))[rng.integers(0, 6, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


def test_exact_matches_sklearn_and_never_returns_the_query_itself():
    z = blobs()
    idx, dist = exact_knn(z, z[:300], 10)
    d_ref, i_ref = NearestNeighbors(n_neighbors=10).fit(z).kneighbors(z[:300])
    np.testing.assert_allclose(dist, d_ref, rtol=1e-4, atol=1e-4)
    assert (idx == i_ref).mean() > 0.999                 # only exact ties may swap
    own = np.arange(300)
    nb, nd = knn(z, z[:300], 10, own=own)
    assert not (nb == own[:, None]).any() and np.all(np.diff(nd, axis=1) >= 0)
    assert (i_ref[:, 0] == own).all() and (nb[:, :9] == i_ref[:, 1:]).mean() > 0.999
    # a query that is no reference keeps all k; k is capped by the references there are
    assert knn(z[:5], z[:1], 10)[0].shape == (1, 5) and knn(z[:5], z[:5], 10, own=np.arange(5))[0].shape == (5, 4)


def test_approximate_search_is_deterministic_and_close_to_exact():
    z = blobs(3000)
    own = np.arange(len(z))
    a, ad = knn(z, z, 15, own=own, exact_max_pairs=0)
    b, _ = knn(z, z, 15, own=own, exact_max_pairs=0)
    e, _ = knn(z, z, 15, own=own)
    assert np.array_equal(a, b) and not (a == own[:, None]).any()
    recall = np.mean([len(np.intersect1d(a[i], e[i])) for i in range(len(z))]) / 15
    assert recall > 0.95 and np.all(np.diff(ad, axis=1) >= 0)
    i, d = approx_knn(z, z[:10], 3)
    assert i.shape == (10, 3) and (i[:, 0] == np.arange(10)).all() and np.allclose(d[:, 0], 0, atol=1e-3)


def test_bench_neighbours_prints_recall_and_time_side_by_side(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "neighbours", "--sizes", "1500", "--out", str(tmp_path / "n.json")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [l for l in p.stdout.splitlines() if l.startswith(("mixture", "blobs"))]
    assert len(rows) == 2 and all("1,500" in r and "exact on all queries" in r for r in rows)
    assert "load average" in p.stdout and (tmp_path / "n.json").exists()
