"""Mislabel scores: out-of-sample only (an image never judges itself), checked against a slow
loop on hand-placed points, and scored on blobs with a KNOWN set of flipped labels."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from pipeline import mislabels as M

COLUMNS = ["score", "suggested", "suggested_name", "p_given_oos", "knn_disagree", "rank",
           "cleanlab_score", "cleanlab_rank", "cleanlab_issue"]


def noisy_blobs(seed=0, n=900, C=4, D=8, flip=0.08, pull=0.3):
    """Blobs, a known set of flipped labels, and flipped training points pulled part of the way
    toward their wrong class (what training on the noisy label does to an embedding)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (C, D))
    y = rng.integers(0, C, n)
    z = centres[y] + rng.normal(0, 0.8, (n, D))
    flipped = rng.random(n) < flip
    given = y.copy()
    given[flipped] = (y[flipped] + rng.integers(1, C, flipped.sum())) % C
    train = rng.random(n) < 0.7
    moved = flipped & train
    z[moved] = (1 - pull) * z[moved] + pull * centres[given[moved]]
    return z.astype(np.float32), given, y, flipped, train


def brute_force(z, labels, train, i, k, sigma, C):
    """Posterior of image i against means without i, and its k nearest training rows other than i."""
    z = z.astype(np.float64)
    logits = []
    for j in range(C):
        members = [r for r in range(len(z)) if train[r] and labels[r] == j and r != i]
        mu = np.mean(z[members], axis=0)
        logits.append(-((z[i] - mu) ** 2).sum() / (2 * sigma ** 2))
    logits = np.array(logits)
    post = np.exp(logits - logits.max())
    post /= post.sum()
    others = [r for r in range(len(z)) if train[r] and r != i]
    nb = sorted(others, key=lambda r: ((z[r] - z[i]) ** 2).sum())[:k]
    return post, nb


def test_matches_a_slow_loop_on_hand_placed_points():
    z = np.array([[0, 0], [0.2, 0.1], [0.1, -0.3], [3, 3], [3.2, 2.9], [2.8, 3.1], [0.1, 0.2], [3, 2.5]], np.float32)
    z += np.random.default_rng(0).normal(0, 0.01, z.shape).astype(np.float32)   # no distance ties
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])      # row 6 sits with class 0 but says 1
    train = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)  # row 7 is a test image
    ev = M.oos_evidence(z, labels, train_mask=train, k=3, sigma=1.0)
    for i in range(len(z)):
        post, nb = brute_force(z, labels, train, i, 3, 1.0, 2)
        assert np.allclose(ev.post[i], post, atol=1e-9)
        assert list(ev.neighbours[i]) == nb and i not in ev.neighbours[i]
    df = M.scores(z, labels, train_mask=train, k=3, sigma=1.0, classes=["a", "b"])
    assert df["rank"].iloc[6] == 1 and df["suggested"].iloc[6] == 0
    assert df["suggested_name"].iloc[6] == "a"


def test_given_class_means_are_the_same_as_computed_ones():
    z, given, _, _, train = noisy_blobs()
    cm = np.stack([z[train & (given == j)].mean(0) for j in range(4)])
    a = M.oos_evidence(z, given, train_mask=train, class_means=cm)
    b = M.oos_evidence(z, given, train_mask=train)
    assert np.allclose(a.log_post, b.log_post, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(i=st.integers(0, 299), new=st.integers(0, 3), seed=st.integers(0, 3))
def test_an_image_own_label_never_enters_its_own_evidence(i, new, seed):
    z, given, _, _, train = noisy_blobs(seed=seed, n=300)
    flipped = given.copy()
    flipped[i] = new
    a = M.oos_evidence(z, given, train_mask=train, n_classes=4)
    b = M.oos_evidence(z, flipped, train_mask=train, n_classes=4)
    # row i: the same neighbours, the same votes, the same posterior over all classes
    assert np.array_equal(a.neighbours[i], b.neighbours[i])
    assert np.array_equal(a.votes[i], b.votes[i])
    # nor through the trust of its neighbours (i's vote on them is left out)
    assert np.allclose(a.trusted[i], b.trusted[i], rtol=0, atol=1e-12)
    assert np.allclose(a.log_post[i], b.log_post[i], rtol=0, atol=1e-9)
    # so the given label only decides which entry is read
    da = M.scores(z, given, train_mask=train)
    db = M.scores(z, flipped, train_mask=train)
    assert db["p_given_oos"].iloc[i] == pytest.approx(np.exp(a.log_post[i, new]), abs=1e-9)
    assert db["knn_disagree"].iloc[i] == pytest.approx(1 - a.trusted[i, new] / a.k)
    assert da["p_given_oos"].iloc[i] == pytest.approx(np.exp(a.log_post[i, given[i]]), abs=1e-9)


def test_an_image_is_never_its_own_neighbour_even_with_duplicates():
    z = np.zeros((20, 3), np.float32)                 # all identical: every distance is 0
    labels = np.arange(20) % 2
    ev = M.oos_evidence(z, labels, train_mask=np.ones(20, bool), k=5)
    assert ev.neighbours.shape == (20, 5)
    assert not (ev.neighbours == np.arange(20)[:, None]).any()


def test_trusted_votes_match_a_slow_loop():
    """Each neighbour j of i weighs (a + 1) / (m + 2): a of j's m neighbours other than i share
    j's label. The weighted votes are rescaled to sum to k."""
    z, given, _, _, train = noisy_blobs(seed=3, n=200)
    ev = M.oos_evidence(z, given, train_mask=train, k=7, n_classes=4)
    nb = ev.neighbours
    for i in range(0, 200, 13):
        w = np.zeros(4)
        for j in nb[i]:
            others = [m for m in nb[j] if m != i]
            a = sum(given[m] == given[j] for m in others)
            w[given[j]] += (a + 1) / (len(others) + 2)
        assert np.allclose(ev.trusted[i], w * 7 / w.sum())


def test_a_neighbour_its_own_neighbourhood_contradicts_counts_less():
    """Two neighbours of row 0 say 'b' but sit among 'a's (so they are the likely errors); the
    plain vote is 3 a : 2 b, the trusted one leans much further to 'a'."""
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.3, (30, 2)), rng.normal(10, 0.3, (30, 2))]).astype(np.float32)
    labels = np.array([0] * 30 + [1] * 30)
    labels[[1, 2]] = 1
    z[1], z[2] = z[0] + 0.01, z[0] - 0.01
    ev = M.oos_evidence(z, labels, train_mask=np.ones(60, bool), k=5)
    assert {1, 2} <= set(ev.neighbours[0]) and ev.votes[0, 1] == 2
    assert ev.trusted[0, 1] < 0.7 * ev.votes[0, 1]


def test_table_format():
    z, given, _, _, train = noisy_blobs()
    df = M.scores(z, given, train_mask=train, classes=list("abcd"))
    assert list(df.columns) == COLUMNS and len(df) == len(z)
    assert sorted(df["rank"]) == list(range(1, len(z) + 1))
    assert sorted(df["cleanlab_rank"]) == list(range(1, len(z) + 1))
    assert df["cleanlab_issue"].dtype == bool
    assert (df["suggested"].to_numpy() != given).all()           # a proposal, never the given label
    assert df["p_given_oos"].between(0, 1).all() and df["knn_disagree"].between(0, 1).all()
    # rank 1 = highest score
    assert df["score"].iloc[df["rank"].to_numpy().argmin()] == df["score"].max()
    assert df["cleanlab_score"].iloc[df["cleanlab_rank"].to_numpy().argmin()] == df["cleanlab_score"].min()


@pytest.mark.parametrize("probs", ["knn", "posterior"])
def test_known_flips_are_found(probs):
    from sklearn.metrics import average_precision_score as ap

    z, given, truth, flipped, train = noisy_blobs(seed=1, n=1200)
    df = M.scores(z, given, train_mask=train, cleanlab_probs=probs)
    base = flipped.mean()
    assert ap(flipped, df["score"]) > 0.8 > 3 * base
    assert ap(flipped, -df["cleanlab_score"]) > 0.6
    assert (df["suggested"].to_numpy()[flipped] == truth[flipped]).mean() > 0.8
    issues = df["cleanlab_issue"].to_numpy()
    assert (issues & flipped).sum() / max(issues.sum(), 1) > 0.5


def test_deterministic():
    z, given, _, _, train = noisy_blobs()
    pd.testing.assert_frame_equal(M.scores(z, given, train_mask=train, seed=0),
                                  M.scores(z, given, train_mask=train, seed=0))


def test_approximate_search_for_large_runs():
    """The inverted-file search used above EXACT_MAX_PAIRS: seeded, never the row itself, close
    to the exact neighbours, and still blind to the image's own label."""
    z, given, _, _, train = noisy_blobs(seed=2, n=3000, D=16)
    exact = M.oos_evidence(z, given, train_mask=train)
    a = M.oos_evidence(z, given, train_mask=train, exact_max_pairs=0, seed=0)
    b = M.oos_evidence(z, given, train_mask=train, exact_max_pairs=0, seed=0)
    assert np.array_equal(a.neighbours, b.neighbours)
    assert not (a.neighbours == np.arange(len(z))[:, None]).any()
    assert np.isin(a.neighbours, np.flatnonzero(train)).all()
    recall = np.mean([len(np.intersect1d(a.neighbours[i], exact.neighbours[i])) / a.k for i in range(len(z))])
    assert recall > 0.8
    assert (np.abs(a.votes - exact.votes).sum(1) <= 2).mean() > 0.95
    assert np.all(np.diff(a.distances, axis=1) >= 0)
    i = int(np.flatnonzero(train)[0])
    flipped = given.copy()
    flipped[i] = (given[i] + 1) % 4
    c = M.oos_evidence(z, flipped, train_mask=train, exact_max_pairs=0, seed=0)
    assert np.array_equal(a.neighbours[i], c.neighbours[i]) and np.array_equal(a.votes[i], c.votes[i])
