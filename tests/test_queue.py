"""explorer.queue: the mislabel queue's cut-off, tie-breaking, model-strength warning and review progress."""
from __future__ import annotations

import numpy as np
import pytest

from explorer import queue


def test_scores_are_shares_and_ties_are_broken():
    raw = np.array([1.1, 1.1, 0.55, 0.0, 1.1])
    s = queue.display_scores(raw, 0.1)
    assert s.min() >= 0 and s.max() == pytest.approx(1.0) and s[2] == pytest.approx(0.5)
    r = queue.ranking(s, np.array([0.5, 3.0, 9.0, 0.0, 1.0]))
    assert list(r) == [3, 1, 4, 5, 2]  # the three tied at 1.0 ordered by the tie-breaker
    assert len(set(r)) == len(r)


def test_margins_say_which_mean_the_image_sits_nearer():
    mu = np.array([[0.0, 0.0], [4.0, 0.0]])
    z = np.array([[3.5, 0.0], [0.5, 0.0]])
    m = queue.margins(z, np.array([0, 0]), np.array([1, 1]), mu)
    assert m[0] > 0 > m[1]


def test_likely_wrong_needs_both_pieces_of_evidence():
    assert list(queue.likely_wrong(np.array([0.9, 0.9, 0.3]), np.array([0.1, 0.8, 0.1]))) == [True, False, False]


def test_model_strength_uses_the_test_split_and_says_when_weak():
    assert queue.model_strength({"test": {"knn_accuracy": 0.51}}).weak
    st = queue.model_strength({"val": {"knn_accuracy": 0.9}})
    assert not st.weak and st.split == "val"
    assert queue.model_strength({}).knn_accuracy is None


def test_wilson_interval():
    lo, hi = queue.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert queue.wilson(0, 0) == (0.0, 1.0)


def test_progress_estimates_what_is_left_and_when_to_stop():
    n = 200
    score = np.linspace(1, 0, n)            # queue order: best first
    truth = np.arange(n) < 60               # the first 60 are wrong labels
    reviewed = np.arange(n) < 80            # a reviewer went through the first 80
    p = queue.progress(score, reviewed, truth, np.arange(n, dtype=float), level=0.5)
    assert (p.reviewed, p.wrong, p.unreviewed) == (80, 60, 120)
    assert p.share == pytest.approx(0.75) and p.interval[0] < 0.75 < p.interval[1]
    assert p.est_left == pytest.approx(0.0)  # the last 20 reviewed were all right: nothing left at lower scores
    assert p.recent == 0.0 and p.stop and p.until_rank == 61
    early = queue.progress(score, np.arange(n) < 30, truth, np.arange(n, dtype=float), level=0.5)
    assert not early.stop and early.recent == 1.0 and early.est_left == pytest.approx(170)  # carried on: an upper estimate
