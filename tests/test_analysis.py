"""``analyze`` on a small fake run with known sub-groups and known flipped labels: every artifact
is written as RUN_FORMAT.md says and survives a round-trip, metrics.json gains the ground-truth
scores, a second run reads the stored maps back; plus the pure pieces on hand-made inputs."""
import numpy as np
import pandas as pd
import pytest

from pipeline import analysis as A
from pipeline import hierarchy as H
from pipeline import maps
from pipeline.runs import create_run, open_run

CLASSES = ["neutral", "happiness", "surprise"]


def make_run(path, seed=0, n_per_sub=70, flip=0.08):
    """3 classes x 2 hidden sub-groups in D=12, 8% flipped labels, a train/val/test split."""
    rng = np.random.default_rng(seed)
    z, lab, sub = [], [], []
    for c in range(3):
        centre = rng.normal(0, 5, 12)
        for s in range(2):
            m = centre + rng.normal(0, 2.5, 12)
            z.append(m + rng.normal(0, 0.5, (n_per_sub, 12)))
            lab += [c] * n_per_sub
            sub += [2 * c + s] * n_per_sub
    z = np.concatenate(z).astype(np.float32)
    gt = np.array(lab)
    n = len(gt)
    flipped = rng.random(n) < flip
    given = gt.copy()
    given[flipped] = (gt[flipped] + rng.integers(1, 3, flipped.sum())) % 3
    split = rng.choice(["train", "val", "test"], n, p=[0.7, 0.15, 0.15])
    train = split == "train"
    items = pd.DataFrame({
        "id": [f"img{i:04d}" for i in range(n)], "source": "fake", "split": split,
        "label": given, "label_name": np.array(CLASSES, dtype=object)[given], "path": "",
        "gt_label": gt, "gt_subclass": np.array(sub), "gt_flipped": flipped,
    })
    from pipeline.mislabels import oos_evidence

    items["pred"] = oos_evidence(z, given, train_mask=train, k=11).votes.argmax(1)
    run = create_run(path, config={"hierarchy": {"min_per_subclass": 30, "max_components": 4, "topk": 8},
                                   "train": {"knn_k": 11}, "loss": {"sigma": 0.5}}, classes=CLASSES)
    run.put_table("items.parquet", items)
    run.put_array("embeddings.npy", z)
    run.put_array("class_means.npy", np.stack([z[train & (given == j)].mean(0) for j in range(3)]))
    run.put_json("metrics.json", {"test": {"knn_accuracy": 0.9}})
    run.save_manifest(status="complete")
    return run.path


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    path = make_run(tmp_path_factory.mktemp("an") / "run")
    out = A.analyze(path, maps=("pca",), summary_size=10)
    return path, out


def test_every_artifact_is_listed_and_round_trips(analyzed):
    path, _ = analyzed
    run = open_run(path)                        # checks every listed size
    items, z = run.items(), run.embeddings()
    N, D = z.shape
    sub = run.table("analysis/subclasses.parquet")
    js = run.json("analysis/subclasses.json")
    assert js["primary"] == "expression" and [f["name"] for f in js["facets"]] == ["expression", "look"]
    assert list(sub.columns) == ["subclass", "facet_expression", "facet_look"] and len(sub) == N
    assert (sub["subclass"] == sub["facet_expression"]).all()
    K = len(js["subclasses"])
    assert K == sum(f["n_subclasses"] for f in js["facets"])
    means = run.array("analysis/subclass_means.npy")
    assert means.shape == (K, D) and means.dtype == np.float32
    for f in js["facets"]:          # ids run on from one facet to the next
        ids = sorted(e["id"] for e in js["subclasses"] if e["facet"] == f["name"])
        assert ids == list(range(f["first_id"], f["first_id"] + f["n_subclasses"]))
        assert sorted(np.unique(sub[f["column"]])) == ids
    for e in js["subclasses"]:
        col = next(f["column"] for f in js["facets"] if f["name"] == e["facet"])
        rows = np.flatnonzero(sub[col].to_numpy() == e["id"])
        assert e["size"] == len(rows) and e["medoid"] in rows and set(e["topk"]) <= set(rows)
        assert e["class_name"] == CLASSES[e["class"]] and (items["label"].to_numpy()[rows] == e["class"]).all()
        assert np.allclose(means[e["id"]], z[rows].mean(0), atol=1e-5)
        # what sets it apart: the class its posterior leans to (another class), and more like it outside it
        assert e["lean"]["class"] != e["class"] and 0 <= e["lean"]["p"] <= 1 - e["p_own"] + 1e-6
        assert e["outside"] and not set(e["outside"]) & set(rows)
        d = ((z[e["outside"]] - means[e["id"]]) ** 2).sum(1)
        assert (np.diff(d) >= -1e-4).all()
    assert js["mode"] == "bic" and set(js["bic"]) == set(CLASSES)
    assert not run.has("analysis/subclass_images.npy")      # this run stores no images
    mis = run.table("analysis/mislabels.parquet")
    assert list(mis.columns) == ["score", "suggested", "suggested_name", "p_given_oos", "knn_disagree", "rank",
                                 "cleanlab_score", "cleanlab_rank", "cleanlab_issue"] and len(mis) == N
    conf = run.json("analysis/confusion.json")
    m = np.array(conf["matrix"])
    assert conf["classes"] == CLASSES and m.sum() == N
    for key, rows in conf["cells"].items():
        i, j = map(int, key.split(","))
        assert m[i, j] == len(rows)
        assert (items["label"].to_numpy()[rows] == i).all() and (items["pred"].to_numpy()[rows] == j).all()
    summ = run.json("analysis/summary.json")
    assert len(summ["rows"]) == 10 == len(set(summ["rows"])) and summ["method"]
    idx = run.json("analysis/maps.json")
    assert [e["method"] for e in idx] == ["pca"]
    assert run.array(idx[0]["file"]).shape == (N, 2)
    # what the manifest says is what is on disk, exactly
    for name in run.artifacts:
        assert (run.path / name).stat().st_size == run.artifacts[name]["bytes"]


def test_metrics_gain_ground_truth_scores(analyzed):
    path, out = analyzed
    met = open_run(path).metrics()
    assert met["test"] == {"knn_accuracy": 0.9}               # training's sections kept
    sc, ml = met["subclass"], met["mislabels"]
    assert sc["mode"] == "bic" and sc["n_hidden"] == 6
    assert set(sc["per_class"]) == set(CLASSES)
    assert set(sc["per_class"]["neutral"]) == {"subclasses", "nmi", "purity", "hidden"}
    assert sum(v["subclasses"] for v in sc["per_class"].values()) == sc["n_subclasses"]
    assert sc["nmi_within"] >= 0.6 and 0 <= sc["purity_within"] <= 1 and "nmi" in sc and "purity" in sc
    assert ml["truth"] == "gt_flipped" and ml["base_rate"] == pytest.approx(ml["n_true"] / ml["n"])
    for who in ("ours", "cleanlab"):
        assert set(ml[who]) >= {"ap", "precision_at_k", "recall_at_k", "k"}
        assert ml[who]["ap"] > 3 * ml["base_rate"]
    assert ml["ours"]["ap"] >= 0.7
    assert {"n_flagged", "precision", "recall"} <= set(ml["cleanlab"]["issues"])
    assert "suggested_accuracy" in ml and "train" in ml
    assert ml["cleanlab_posterior"]["ap"] > 3 * ml["base_rate"]
    assert out["subclass"]["n_subclasses"] == sc["n_subclasses"]
    assert out["timings"]["total"] > 0


def test_second_analyze_reads_maps_back(tmp_path, monkeypatch):
    path = make_run(tmp_path / "run")
    A.analyze(path, maps=("pca",))
    calls = []
    real = maps.compute_map
    monkeypatch.setattr(maps, "compute_map", lambda z, **kw: calls.append(kw["method"]) or real(z, **kw))
    first = open_run(path).table("analysis/mislabels.parquet")
    A.analyze(path, maps=("pca",))
    assert calls == []
    pd.testing.assert_frame_equal(first, open_run(path).table("analysis/mislabels.parquet"))


def test_stored_algorithm2_levels_are_kept(tmp_path):
    path = make_run(tmp_path / "run")
    run = open_run(path)
    z, lab = np.asarray(run.embeddings()), run.items()["label"].to_numpy()
    l1 = H.split_classes(z, lab, n_components=1, min_per_subclass=30, seed=0)
    l2 = H.split_classes(z, l1, n_components=2, min_per_subclass=30, seed=0)
    A.write_hierarchy(run, H.describe(z, l2, lab, levels=[l1, l2], mode="dgms"))
    A.analyze(path, maps=())
    run = open_run(path)
    t = run.table("analysis/subclasses.parquet")
    assert list(t.columns) == ["subclass", "facet_levels", "facet_expression", "facet_look", "subclass_l1", "subclass_l2"]
    assert np.array_equal(t["subclass_l2"], l2) and run.json("analysis/subclasses.json")["mode"] == "dgms"
    assert run.metrics()["subclass"]["mode"] == "dgms"
    with pytest.raises(ValueError):
        A.analyze(make_run(tmp_path / "other"), maps=(), hierarchy_mode="dgms")


def test_dgms_column_written_by_training_is_described(tmp_path):
    path = make_run(tmp_path / "run")
    run = open_run(path)
    items, z = run.items(), np.asarray(run.embeddings())
    lab = items["label"].to_numpy()
    items["dgms_subclass"] = H.split_classes(z, lab, n_components=2, min_per_subclass=30, seed=0,
                                             fit_mask=(items["split"] == "train").to_numpy())
    run.put_table("items.parquet", items)
    run.save_manifest()
    out = A.analyze(path, maps=())
    t = open_run(path).table("analysis/subclasses.parquet")
    assert out["subclass"]["mode"] == "dgms"
    assert np.array_equal(H.relabel_compact(items["dgms_subclass"].to_numpy(), lab), t["subclass"])
    assert A.analyze(path, maps=(), hierarchy_mode="bic")["subclass"]["mode"] == "bic"


def test_a_run_without_ground_truth_or_predictions(tmp_path):
    path = make_run(tmp_path / "run")
    run = open_run(path)
    items = run.items().drop(columns=["gt_label", "gt_subclass", "gt_flipped", "pred"])
    run.put_table("items.parquet", items)
    run.save_manifest()
    out = A.analyze(path, maps=())
    assert "nmi_within" not in out["subclass"] and "ours" not in out["mislabels"]
    conf = open_run(path).json("analysis/confusion.json")
    assert np.array(conf["matrix"]).sum() == len(items)


def test_crossfit_evidence_from_training_is_pooled(tmp_path):
    """With training's cross-fit arrays the evidence is their average with leave-one-out (here the
    cross-fit knows the true class, so its ranking alone is perfect); each alone is reported."""
    path = make_run(tmp_path / "run")
    run = open_run(path)
    items = run.items()
    gt = items["gt_label"].to_numpy()
    post = np.full((len(gt), 3), 0.05, np.float32)
    post[np.arange(len(gt)), gt] = 0.9
    votes = np.zeros((len(gt), 3), np.float32)
    votes[np.arange(len(gt)), gt] = 11
    run.put_array("crossfit_posterior.npy", post)
    run.put_array("crossfit_votes.npy", votes)
    run.save_manifest()
    out = A.analyze(path, maps=())
    ml = out["mislabels"]
    assert ml["evidence"] == "crossfit+leave-one-out"
    assert ml["crossfit"]["ours"]["ap"] == pytest.approx(1.0)
    assert ml["ours"]["ap"] >= ml["leave_one_out"]["ours"]["ap"] - 1e-9
    t = open_run(path).table("analysis/mislabels.parquet")
    flipped = items["gt_flipped"].to_numpy()
    assert t["knn_disagree"].to_numpy()[flipped].min() >= 0.5     # the cross-fit half votes against


def test_truth_flags_read_from_text():
    col = pd.Series(["True", "false", "1", "0", "yes", "", None], dtype=object)
    assert list(A._as_bool(col)) == [True, False, True, False, True, False, False]
    assert list(A._as_bool(pd.Series([1, 0, 1]))) == [True, False, True]


def test_confusion_cells_hold_rows():
    c = A.confusion(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), ["a", "b"])
    assert c["matrix"] == [[1, 1], [1, 2]]
    assert c["cells"] == {"0,0": [0], "0,1": [1], "1,0": [4], "1,1": [2, 3]}


def test_album_summary_medoids_first_then_farthest_points():
    z = np.array([[0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [20, 20]], np.float32)
    lab = np.array([0, 0, 0, 1, 1, 1])
    sub = np.array([0, 0, 0, 1, 1, 2])
    h = H.describe(z, sub, lab)
    rows = A.album_summary(z, h, n=2)
    assert list(rows) == [int(h.medoid[0]), int(h.medoid[1])]      # the two largest sub-classes
    rows = A.album_summary(z, h, n=5)
    assert len(set(rows)) == 5 and rows[2] == 5                   # then the isolated point
    assert list(A.album_summary(z, h, n=5)) == list(rows)


def test_scores_against_truth_are_exact_on_perfect_input():
    lab = np.repeat([0, 1], 6)
    hid = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3])
    s = A.subclass_scores(hid + 10, hid, lab)
    assert s["nmi_within"] == pytest.approx(1) and s["purity_within"] == 1 and s["nmi"] == pytest.approx(1)
    truth = np.array([1, 0, 0, 1, 0, 0, 0, 0], bool)
    t = pd.DataFrame({"score": truth * 1.0 + np.arange(8) * 0.01, "cleanlab_score": np.arange(8) * 1.0,
                      "cleanlab_issue": truth, "suggested": np.zeros(8, int)})
    m = A.mislabel_scores(t, truth)
    assert m["ours"]["ap"] == 1 and m["ours"]["precision_at_k"] == 1 and m["base_rate"] == 0.25
    assert m["cleanlab"]["issues"] == {"n_flagged": 2, "precision": 1.0, "recall": 1.0}
    assert m["cleanlab"]["precision_at_k"] == 0.5                  # ranks rows 0, 1 first


def test_crowd_votes_are_a_facet_not_the_headline(tmp_path):
    """With vote_<class> columns (what training stores for FER+-like sources) the headline sub-classes
    still come from the images; the crowd's reading is an extra facet, first only when asked for by
    name; asking for votes a run lacks is a one-line error naming the fix."""
    path = make_run(tmp_path / "run")
    run = open_run(path)
    items = run.items()
    rng = np.random.default_rng(0)
    hidden = items["gt_subclass"].to_numpy()
    # each hidden sub-group's images lean to its own other class
    lean = (items["label"].to_numpy() + 1 + hidden % 2) % 3
    n_lean = rng.integers(2, 5, len(items))              # 2 to 4 of 10 annotators hesitate
    for j, c in enumerate(CLASSES):
        items[f"vote_{c}"] = np.where(items["label"] == j, 10.0 - n_lean, 0.0) + np.where(lean == j, n_lean, 0.0)
    run.put_table("items.parquet", items)
    run.save_manifest()
    out = A.analyze(path, maps=())
    js = open_run(path).json("analysis/subclasses.json")
    assert js["primary"] == "expression" and out["subclass"]["features"] == "expression"
    assert [f["name"] for f in js["facets"]] == ["expression", "look", "crowd"]
    crowd = open_run(path).table("analysis/subclasses.parquet")["facet_crowd"].to_numpy()
    assert A.subclass_scores(crowd, hidden, items["label"].to_numpy())["nmi_within"] > 0.8
    # the images' recovery never counts the crowd facet
    assert "crowd" not in out["subclass"]["recovery"]["gt_subclass"]["by_facet"]
    out = A.analyze(path, maps=(), features="posterior+votes")
    assert out["subclass"]["features"] == "posterior+votes" and out["subclass"]["primary"] == "crowd"
    plain = make_run(tmp_path / "plain")
    with pytest.raises(ValueError, match="no crowd votes"):
        A.analyze(plain, maps=(), features="posterior+votes")
    assert [f for f in A.analyze(plain, maps=())["subclass"]["facets"]] == ["expression", "look"]


def test_group_recovery_on_hand_made_labels():
    """Two classes. Class 0 hides groups a (30 images) and b (30); class 1 hides c (50) and a group
    of 10, too small to score. The found sub-classes match a exactly, cut b in two halves
    (best F1 = 2*15/(15+30) = 0.667, found) and lump c with the small group (F1 = 2*50/(60+50) = 0.909)."""
    labels = np.array([0] * 60 + [1] * 60)
    hidden = np.array([0] * 30 + [1] * 30 + [2] * 50 + [3] * 10)
    found = np.array([0] * 30 + [1] * 15 + [2] * 15 + [3] * 60)
    r = A.group_recovery(found, hidden, labels, min_size=20, threshold=0.6)
    assert r["groups"] == 3 and r["found"] == 3
    f1 = {(g["class"], g["value"]): g["f1"] for g in r["per_group"]}
    assert f1 == pytest.approx({(0, 0): 1.0, (0, 1): 2 / 3, (1, 2): 100 / 110})
    assert r["mean_f1"] == pytest.approx((1 + 2 / 3 + 100 / 110) / 3)
    # a threshold above 2/3 leaves b unfound; a sub-class from another class never matches
    assert A.group_recovery(found, hidden, labels, threshold=0.7)["found"] == 2
    # several facets: a group takes its best match over all of them, and says which facet found it
    other = np.array([0] * 30 + [1] * 30 + [3] * 60)
    both = A.group_recovery({"one": found, "two": other}, hidden, labels)
    assert {(g["value"], g["facet"]) for g in both["per_group"]} >= {(1, "two")}
    assert next(g["f1"] for g in both["per_group"] if g["value"] == 1) == 1.0
    # an attribute: only its positive value is a group ("no glasses" is nothing to find)
    glasses = np.array(([1] * 25 + [0] * 35) * 2)
    r = A.group_recovery(np.array([0] * 25 + [1] * 35 + [2] * 25 + [3] * 35), glasses, labels, positive_only=True)
    assert r["groups"] == 2 and r["found"] == 2 and r["mean_f1"] == 1.0


def test_sub_classes_of_a_run_without_votes_come_from_the_images(tmp_path):
    """A synthetic run without votes: training stores the backbone features, analyze splits on them
    (no vote column anywhere), and metrics.json carries the hidden-group recovery per factor."""
    from conftest import tiny_config
    from pipeline.train import train

    import dataclasses

    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, spec="synthetic:320,votes=none"))
    run = train(cfg, tmp_path / "run", quiet=True)
    assert not [c for c in run.items().columns if c.startswith("vote_")]
    assert run.array("features.npy").shape[0] == 320
    mid = run.array("features_mid.npy")
    assert mid.shape == (320, 128) and np.isfinite(mid.astype(np.float32)).all()
    assert not np.allclose(mid, run.array("features.npy"))           # another layer, not a copy
    out = A.analyze(run.path, maps=())
    js = open_run(run.path).json("analysis/subclasses.json")
    assert all("mid-level" in f["about"] for f in js["facets"][:2])          # both levels, both facets
    assert "share its look" in js["facets"][0]["about"] and "share its look" not in js["facets"][1]["about"]
    assert js["primary"] == "expression" and "crowd" not in [f["name"] for f in js["facets"]]
    assert [f["name"] for f in js["facets"]] == ["expression", "look", "look_last"]
    assert "last feature maps" in js["facets"][2]["about"] and "mid-level" not in js["facets"][2]["about"]
    assert all("feature maps" in f["about"] for f in js["facets"][:2])
    rec = open_run(run.path).metrics()["subclass"]["recovery"]
    assert set(rec) == {"gt_subclass", "gt_glasses", "gt_baby"}
    assert rec["gt_subclass"]["groups"] >= 2          # 320 images: only groups of >= 20 in a class count
    for v in rec.values():
        assert 0 <= v["found"] <= v["groups"] and (0 <= v["mean_f1"] <= 1 or v["groups"] == 0)
    assert out["subclass"]["recovery"]["gt_subclass"] == rec["gt_subclass"]
    K = len(js["subclasses"])
    assert open_run(run.path).array("analysis/subclass_images.npy").shape == (K, 48, 48)
    assert open_run(run.path).array("analysis/class_images.npy").shape == (8, 48, 48)
    assert "expression variants" in A.format_recovery(out["subclass"])


def test_analyze_reports_its_stages_in_the_progress_file(analyzed, tmp_path):
    from pipeline import progress

    path, _ = analyzed
    ev = [e for e in progress.read(path) if e.event in ("stage", "analysed", "error")]
    plan = ["sub-classes", "mislabels", "outliers and duplicates", "summary and scores", "pca map"]
    assert [e.stage for e in ev[:-1]] == plan and ev[-1].event == "analysed"
    assert [e.stage_index for e in ev[:-1]] == [1, 2, 3, 4, 5] and {e.stages for e in ev[:-1]} == {5}
    assert ev[0].plan == plan and ev[0].images == len(open_run(path).items())
    assert progress.job_progress(progress.read(path), train=False).phase == "done"
    # a failing analysis says so in the file; a folder that is not a run gets no file
    bad = make_run(tmp_path / "other")
    with pytest.raises(ValueError):
        A.analyze(bad, maps=(), hierarchy_mode="dgms")
    last = progress.read(bad)[-1]
    assert last.event == "error" and last.message.startswith("analysis: ") and "Algorithm 2" in last.message
    with pytest.raises(Exception):
        A.analyze(tmp_path / "not-a-run", maps=())
    assert not (tmp_path / "not-a-run").exists()


def test_image_facets_by_what_the_run_stores():
    """Both feature levels: expression, look (two levels), look_last (the looks the expression facet
    is measured against); the last maps only: expression, look, look_embedding; nothing but the
    embedding: expression and look. Every facet assigns every row to a sub-class of its own class."""
    rng = np.random.default_rng(0)
    n = 600
    labels = np.repeat(np.arange(3), n // 3)
    z = (rng.normal(0, 1, (n, 8)) + 4 * np.eye(3, 8)[labels]).astype(np.float32)
    last = rng.normal(0, 1, (n, 24)).astype(np.float32)
    mid = rng.normal(0, 1, (n, 32)).astype(np.float32)
    fit = np.arange(n) % 5 != 0
    kw = dict(fit_mask=fit, max_components=3, min_per_subclass=32, seed=0, topk=8)
    cases = {("expression", "look", "look_last"): dict(features=last, mid_features=mid),
             ("expression", "look", "look_embedding"): dict(features=last),
             ("expression", "look"): {}}
    for names, extra in cases.items():
        facets = A.image_facets(z, labels, **kw, **extra)
        assert tuple(f.name for f in facets) == names
        for f in facets:
            h = f.hierarchy
            assert len(h.labels) == n and (h.sub_class[h.labels] == labels).all()
    both = A.image_facets(z, labels, **kw, features=last, mid_features=mid)
    assert "share its look" in both[0].about and "mid-level" in both[1].about and "mid-level" not in both[2].about
