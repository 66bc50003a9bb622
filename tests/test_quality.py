"""Outliers and duplicates (pipeline.quality) on synthetic faces with known copies and non-faces."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from pipeline import quality as Q
from pipeline.sources import Dataset, load_source
from explorer_fixtures import pipeline_run_dir, runs_root  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def faces():
    return load_source("synthetic:240")


def with_copies(ds: Dataset) -> tuple[Dataset, dict]:
    """ds plus: an exact copy in test of a train image, a re-exposed copy (x0.8 + 20) in train of
    a test image, and two exact copies within train of one train image."""
    t = ds.table
    tr = t.index[t["split"] == "train"].to_numpy()
    te = t.index[t["split"] == "test"].to_numpy()
    src = {"exact_cross": int(tr[0]), "near_cross": int(te[0]), "within": int(tr[1])}
    imgs = [ds.images[src["exact_cross"]], np.clip(ds.images[src["near_cross"]] * 0.8 + 20, 0, 255).astype(np.uint8),
            ds.images[src["within"]], ds.images[src["within"]]]
    extra = t.iloc[[src["exact_cross"], src["near_cross"], src["within"], src["within"]]].copy()
    extra["id"] = ["copy-exact-test", "copy-near-train", "copy-within-1", "copy-within-2"]
    extra["split"] = ["test", "train", "train", "val"]
    table = pd.concat([t, extra], ignore_index=True)
    out = Dataset(table=table, images=np.concatenate([ds.images, np.stack(imgs)]), classes=ds.classes,
                  votes=None if ds.votes is None else np.concatenate([ds.votes, ds.votes[extra.index]]), name="copies")
    n = len(t)
    return out, {"exact_test": n, "near_train": n + 1, "copies": (n + 2, n + 3), **src}


def test_exact_and_near_copies_are_found_and_leakage_counted(faces):
    ds, w = with_copies(faces)
    pairs, c = Q.find_duplicates(ds.images, ds.table["split"].to_numpy())
    got = {(int(a), int(b)): k for a, b, k in pairs[["a", "b", "kind"]].itertuples(index=False)}
    assert got[(w["exact_cross"], w["exact_test"])] == "exact"
    assert got[(w["near_cross"], w["near_train"])] == "near"
    assert got[(w["within"], w["copies"][0])] == "exact" and got[(w["within"], w["copies"][1])] == "exact"
    assert c["exact_pairs"] == 3 and c["near_pairs"] >= 1
    assert c["cross_groups"] >= 2 and c["test_leaked"] >= 2
    cross = pairs[pairs["cross"]]
    assert {(w["exact_cross"], w["exact_test"]), (w["near_cross"], w["near_train"])} <= set(zip(cross["a"], cross["b"]))
    # on the faces alone, far fewer pairs: what is found is the copies
    _, c0 = Q.find_duplicates(faces.images, faces.table["split"].to_numpy())
    assert c0["exact_pairs"] == 0 and c0["cross_groups"] <= c["cross_groups"] - 2


def test_dedupe_keeps_test_images_and_one_copy_within_training(faces):
    ds, w = with_copies(faces)
    split = ds.table["split"].to_numpy()
    pairs, _ = Q.find_duplicates(ds.images, split)
    drop = Q.dedupe_rows(pairs, split)
    assert not drop[split == "test"].any()
    assert drop[w["exact_cross"]] and drop[w["near_train"]]           # train copies of test images
    within = [w["within"], *w["copies"]]
    assert drop[within].sum() == 2 and not drop[w["within"]]          # one of three copies stays


def test_train_dedupe_records_what_it_left_out(faces, tmp_path):
    from dataclasses import replace

    from pipeline.train import train

    ds, w = with_copies(faces)
    cfg = tiny_config(epochs=1, steps_per_epoch=2)
    cfg = cfg.replace(data=replace(cfg.data, dedupe=True))
    run = train(cfg, tmp_path / "r", quiet=True, dataset=ds)
    d = run.manifest["dedupe"]
    assert d["dropped"] >= 4 and d["test_leaked"] >= 2
    ids = set(run.items()["id"])
    assert "copy-exact-test" in ids and "copy-near-train" not in ids
    assert len(ids) == len(ds.table) - d["dropped"]


def test_outlier_scores_rank_non_faces_first(faces):
    rng = np.random.default_rng(0)
    S = faces.images.shape[1]
    odd = [np.full((S, S), 255, np.uint8),                                  # blank
           rng.integers(0, 256, (S, S), dtype=np.uint8),                    # noise
           np.tile((np.indices((S, S)).sum(0) // 6 % 2 * 255).astype(np.uint8), (1, 1)),   # checkerboard
           np.tile(np.linspace(0, 255, S, dtype=np.uint8), (S, 1))]         # gradient
    images = np.concatenate([faces.images, np.stack(odd)])
    truth = np.r_[np.zeros(len(faces.images), bool), np.ones(len(odd), bool)]
    feats = Q._standardised(images, 16)        # pixel thumbnails: a feature space with no training
    score = Q.outlier_scores(feats)
    assert score.shape == (len(images),) and ((0 <= score) & (score <= 1)).all()
    m = Q.ranking_auc(truth, score)
    assert m["auroc"] > 0.95 and m["n_true"] == 4


def test_combined_outlier_score_takes_the_larger_rank(faces):
    rng = np.random.default_rng(1)
    S = faces.images.shape[1]
    images = np.concatenate([faces.images, rng.integers(0, 256, (3, S, S), dtype=np.uint8)])
    post = np.full(len(images), 0.9)
    post[5] = 0.01                                  # a face the model is unsure of
    score, parts = Q.combined_outlier_scores(np.zeros((len(images), 4)), images, post)
    assert set(parts) == {"ood_pixels", "one_minus_posterior"}
    top = set(np.argsort(-score, kind="stable")[:6].tolist())
    assert {len(faces.images), len(faces.images) + 1, len(faces.images) + 2, 5} <= top
    only_z, p2 = Q.combined_outlier_scores(rng.normal(size=(20, 4)))
    assert set(p2) == {"ood_embedding"} and only_z.shape == (20,)


def test_analyze_writes_outliers_duplicates_and_counts(tiny_run, tmp_path):
    from pipeline.analysis import analyze
    from pipeline.runs import open_run

    p = tmp_path / "run"
    shutil.copytree(tiny_run.path, p)
    res = analyze(p, maps=())
    run = open_run(p)
    out = run.table("analysis/outliers.parquet")
    assert len(out) == len(run.items()) and sorted(out["outlier_rank"]) == list(range(len(out)))
    assert {"ood_pixels", "one_minus_posterior"} <= set(out.columns)
    dup = run.table("analysis/duplicates.parquet")
    assert {"a", "b", "kind", "corr", "cross"} <= set(dup.columns)
    q = run.metrics()["quality"]
    assert q == res["quality"] and {"exact_pairs", "near_pairs", "test_leaked"} <= set(q["duplicates"])


def test_outlier_queue_and_duplicate_pairs_in_the_app(runs_root):
    """The fixture run plus an exact copy of a train image placed in test: the duplicates tab shows
    the pair; flagging the most unusual image in the outlier queue lands in the review store."""
    from streamlit.testing.v1 import AppTest

    from explorer.review import ReviewStore
    from pipeline.analysis import analyze
    from pipeline.runs import open_run

    run_dir = runs_root / "fixture"
    run = open_run(run_dir)
    items = run.items()
    imgs = np.asarray(run.images()).copy()
    tr = np.flatnonzero(items["split"].to_numpy() == "train")
    te = np.flatnonzero(items["split"].to_numpy() == "test")
    imgs[te[0]] = imgs[tr[0]]
    run.put_array("images.npy", imgs)
    run.save_manifest()
    analyze(run_dir, maps=())
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "explorer" / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("views/outliers.py")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    caps = "\n".join(c.value for c in at.caption)
    assert "exact" in caps and str(items["id"][te[0]]).replace("-", "\\-") in caps
    first = next(b for b in at.button if b.key and b.key.startswith("olflag_"))
    item = first.key.split("_", 1)[1]
    first.click().run()
    assert not at.exception
    assert ReviewStore(run_dir).decision_map()[item][0] == "flag"
    at.toggle(key="dup_cross").set_value(True).run()
    assert not at.exception and "1 pair(s)" in "\n".join(c.value for c in at.caption)
