"""The protocol's numbers against brute force and sklearn on small inputs."""
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from pipeline import metrics as M


def blobs(seed=0, n=60, c=3, d=4, spread=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (c, d))
    y = np.repeat(np.arange(c), n // c)
    z = centers[y] + rng.normal(0, spread, (len(y), d))
    return z.astype(np.float32), y


def test_knn_predict_matches_sklearn():
    z, y = blobs(spread=2.0)
    q, _ = blobs(seed=1, spread=2.0)
    ours = M.knn_predict(z, y, q, k=5, num_classes=3)
    ref = KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit(z, y).predict(q)
    assert (ours == ref).mean() >= 0.95   # ties may break differently


def test_leave_one_out_never_counts_the_query_itself():
    z = np.array([[0.0], [10.0], [10.1], [10.2]], np.float32)
    y = np.array([0, 1, 1, 1])
    v = M.knn_votes(z, y, z, k=1, num_classes=2, exclude_self=True)
    assert v[0].tolist() == [0.0, 1.0]    # its only neighbour is class 1


def test_retrieval_by_brute_force():
    z, y = blobs(spread=1.5, n=30)
    r = M.retrieval_scores(z, y, ks=(1, 4))
    d = ((z[:, None] - z[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, 1)[:, :4]
    hit = y[nn] == y[:, None]
    assert r["recall_at"]["1"] == pytest.approx(hit[:, :1].any(1).mean())
    assert r["recall_at"]["4"] == pytest.approx(hit.any(1).mean())
    assert r["acc_at"]["4"] == pytest.approx(hit.mean())


def test_well_separated_blobs_score_perfectly():
    z, y = blobs(spread=0.05)
    m = M.evaluate_split(z, y, z, y, num_classes=3, k=5, sigma=0.5, exclude_self=True)
    assert m["knn_accuracy"] == 1.0 and m["kmeans_nmi"] == pytest.approx(1.0) and m["kmeans_f1"] == pytest.approx(1.0)
    assert m["posterior_accuracy"] == 1.0 and m["recall_at"]["1"] == 1.0


def test_pairwise_f1_by_hand():
    # classes {0,0,1,1}; clusters {a,a,a,b}: true pairs 2, predicted pairs 3, both 1
    assert M.pairwise_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


def test_gaussian_posterior_ignores_classes_without_means():
    mu = np.array([[0.0, 0.0], [np.nan, np.nan], [1.0, 0.0]], np.float32)
    p = M.gaussian_posterior(np.array([[0.1, 0.0]], np.float32), mu, sigma=0.5)
    assert p[0, 1] == 0 and p.sum() == pytest.approx(1.0) and p[0, 0] > p[0, 2]


def test_format_table_names_every_split(tiny_run):
    txt = M.format_table(tiny_run.metrics())
    assert "test" in txt and "kNN acc" in txt and "R@32" in txt
