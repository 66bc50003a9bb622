"""Mislabel constants chosen on a selection half, AP reported on a disjoint report half, cleanlab
compared on cross-validated pred_probs and on our trust-weighted votes (issue 11)."""
import numpy as np

from pipeline import mislabel_select as sel
from pipeline.analysis import _as_bool


def test_halves_are_disjoint_random_halves_of_the_candidates():
    a, b = sel.halves(100, np.arange(10, 60))
    assert len(a) == len(b) == 25 and not set(a) & set(b) and set(a) | set(b) == set(range(10, 60))
    a2, _ = sel.halves(100, np.arange(10, 60), seed=1)
    assert not np.array_equal(a, a2)


def test_constants_come_from_the_selection_half_only(tiny_run):
    items = tiny_run.items()
    z = np.asarray(tiny_run.embeddings())
    labels = items["label"].to_numpy()
    split = items["split"].to_numpy()
    truth = _as_bool(items["gt_flipped"])
    kw = dict(n_classes=8, class_means=np.asarray(tiny_run.array("class_means.npy")), ks=(5, 11), weights=(0.0, 0.1))
    out = sel.select_and_report(z, labels, split, truth, **kw)
    n_train = int((split == "train").sum())
    assert out["selection_n"] + out["report_n"] == n_train          # the test split is in neither half
    assert len(out["grid"]) == 2 * 2 * 2
    assert set(out["rankings"]) == {"ours", "cleanlab_cv", "cleanlab_trusted", "cleanlab_plain"}
    for r in out["rankings"].values():
        assert 0 <= r["report"] <= 1 and 0 <= r["selection"] <= 1
    assert out["rankings"]["ours"]["selection"] == max(g["ap_selection"] for g in out["grid"])
    # scrambling the truth of the report half changes what is reported, never what is chosen
    _, rep = sel.halves(len(labels), np.flatnonzero(split == "train"))
    t2 = truth.copy()
    t2[rep] = np.random.default_rng(3).random(len(rep)) < 0.5
    out2 = sel.select_and_report(z, labels, split, t2, **kw)
    assert out2["chosen"] == out["chosen"] and out2["best_on_selection"] == out["best_on_selection"]
    assert out2["rankings"]["ours"]["report"] != out["rankings"]["ours"]["report"]


def test_cv_pred_probs_are_out_of_sample_distributions():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    z = rng.normal(size=(90, 4)) + y[:, None] * 2.0
    p = sel.cv_pred_probs(z, y, np.arange(90), 4)
    assert p.shape == (90, 4) and np.allclose(p.sum(1), 1) and p[:, 3].max() < 1e-6
    assert (p.argmax(1) == y).mean() > 0.8
