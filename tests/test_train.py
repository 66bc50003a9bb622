"""Algorithm 1 end to end on small synthetic faces: the run directory, resume, determinism, bad input."""
import json

import numpy as np
import pytest

from conftest import tiny_config
from pipeline.config import DataConfig, HierarchyConfig, RunConfig
from pipeline.runs import RunError, open_run
from pipeline.sources import DataError
from pipeline.errors import TrainingError
from pipeline.evaluate import evaluate
from pipeline.train import train
from pipeline.trainer import Trainer


def test_train_writes_a_complete_valid_run(tiny_run):
    run = open_run(tiny_run.path)
    assert run.status == "complete"
    items = run.items()
    z = run.embeddings()
    assert z.shape == (len(items), 16) and np.isfinite(z).all()
    assert run.images().shape == (len(items), 48, 48)
    assert {"pred", "pred_name", "posterior_pred", "p_given", "gt_flipped", "vote_neutral"} <= set(items.columns)
    m = run.metrics()
    for s in ("train", "val", "test"):
        assert 0 <= m[s]["knn_accuracy"] <= 1 and set(m[s]["recall_at"]) == {"1", "2", "4", "8", "16", "32"}
    ev = [e["event"] for e in run.progress()]
    assert ev[-1] == "done" and "epoch" in ev and "step" in ev
    assert (run.path / "checkpoints" / "last.pt").exists() and (run.path / "checkpoints" / "best.pt").exists()
    assert run.manifest["config"]["train"]["seed"] == 0


def test_same_config_and_seed_give_identical_embeddings(tmp_path, tiny_run):
    again = train(tiny_config(), tmp_path / "again", quiet=True)
    assert np.array_equal(np.asarray(again.embeddings()), np.asarray(tiny_run.embeddings()))


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, tiny_run, monkeypatch):
    cfg = tiny_config()
    calls = {"n": 0}
    real = Trainer._val_score

    def interrupt_in_second_epoch(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "_val_score", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", quiet=True)
    monkeypatch.setattr(Trainer, "_val_score", real)
    half = open_run(tmp_path / "r", require_complete=False)
    assert half.status == "interrupted"
    with pytest.raises(RunError, match="interrupted"):
        open_run(tmp_path / "r")
    resumed = train(cfg, tmp_path / "r", resume=True, quiet=True)
    assert np.array_equal(np.asarray(resumed.embeddings()), np.asarray(tiny_run.embeddings()))
    assert resumed.metrics()["test"] == tiny_run.metrics()["test"]


def test_out_dir_holding_a_different_run_is_refused(tmp_path, tiny_run):
    with pytest.raises(RunError, match="different run"):
        train(tiny_config(seed=1), tiny_run.path, quiet=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        train(tiny_config(), tmp_path / "junk", quiet=True)
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"


def test_nan_loss_stops_keeps_last_good_checkpoint_and_says_so(tmp_path):
    cfg = tiny_config()
    cfg = cfg.replace(loss=cfg.loss.__class__(sigma=1e-30))
    with pytest.raises(TrainingError, match="NaN"):
        train(cfg, tmp_path / "nan", quiet=True)
    run = open_run(tmp_path / "nan", require_complete=False)
    assert run.status == "failed" and "NaN" in run.manifest["message"]


def test_class_smaller_than_batch_is_sampled_with_replacement_and_reported(tmp_path, capsys):
    cfg = tiny_config(per_class=40, steps_per_epoch=2, epochs=1)
    cfg = cfg.replace(data=DataConfig(spec="synthetic:200"))
    train(cfg, tmp_path / "small", quiet=False, progress_bar=False)
    err = capsys.readouterr().err
    assert err.count("drawn with replacement") == 1


def test_bad_configuration_gets_one_line_errors(tmp_path):
    for cfg, msg in [
        (tiny_config(epochs=0), "epochs"),
        (tiny_config().replace(loss=tiny_config().loss.__class__(name="hinge")), "unknown loss"),
        (tiny_config(lr=float("nan")), "learning rate"),
        (tiny_config().replace(loss=tiny_config().loss.__class__(name="softmax"), hierarchy=HierarchyConfig(levels=3)), "metric loss"),
    ]:
        with pytest.raises(TrainingError, match=msg) as ei:
            train(cfg, tmp_path / "x", quiet=True)
        assert "\n" not in str(ei.value)
    with pytest.raises(DataError, match="unknown data source"):
        train(tiny_config().replace(data=DataConfig(spec="nonsense:/x")), tmp_path / "y", quiet=True)


def test_softmax_and_triplet_baselines_train_in_the_same_harness(tmp_path):
    runs = {}
    for name in ("softmax", "triplet"):
        cfg = tiny_config(epochs=1).replace(loss=tiny_config().loss.__class__(name=name))
        runs[name] = run = train(cfg, tmp_path / name, quiet=True)
        assert run.status == "complete" and np.isfinite(np.asarray(run.embeddings())).all()
    # triplet is judged on the unit sphere its loss works on
    assert np.allclose(np.linalg.norm(np.asarray(runs["triplet"].embeddings()), axis=1), 1.0, atol=1e-4)
    # softmax reports its own classifier's accuracy beside kNN, and evaluate() recomputes the same
    m = runs["softmax"].metrics()
    assert all(0 <= m[s]["classifier_accuracy"] <= 1 for s in ("train", "val", "test"))
    assert "classifier_accuracy" not in runs["triplet"].metrics()["test"]
    again = evaluate(runs["softmax"].path)
    assert again["test"]["classifier_accuracy"] == pytest.approx(m["test"]["classifier_accuracy"])


def test_dgms_levels_produce_subclasses(tmp_path):
    cfg = tiny_config(epochs=1).replace(hierarchy=HierarchyConfig(levels=3, min_per_subclass=8))
    run = train(cfg, tmp_path / "dgms", quiet=True)
    items = run.items()
    per_class = items.groupby("label")["dgms_subclass"].nunique()
    assert (per_class >= 2).sum() >= 4     # classes were split at the last level
    levels = [e["level"] for e in run.progress() if e["event"] == "level"]
    assert levels == [2, 3]                # the level counter advances


def test_dgms_split_features_embedding_or_crowd(tmp_path):
    """With votes in the data (synthetic), Algorithm 2 splits on the embedding by default (sub-classes
    come from the images) and on the posterior and the votes when asked, so the sub-labels differ;
    an unknown choice is refused before anything is written."""
    runs = {}
    for feat in ("auto", "posterior+votes"):
        cfg = tiny_config(epochs=2).replace(hierarchy=HierarchyConfig(levels=2, min_per_subclass=8, features=feat))
        runs[feat] = train(cfg, tmp_path / feat, quiet=True).items()["dgms_subclass"].to_numpy()
    assert runs["auto"].max() >= 8 and runs["posterior+votes"].max() >= 8       # classes were split either way
    assert not np.array_equal(runs["auto"], runs["posterior+votes"])
    bad = tiny_config(epochs=1).replace(hierarchy=HierarchyConfig(levels=2, features="pixels"))
    with pytest.raises(TrainingError, match="sub-class features"):
        train(bad, tmp_path / "bad", quiet=True)
    assert not (tmp_path / "bad").exists()


def test_evaluate_recomputes_and_cross_domain_matches_classes_by_name(tiny_run, tmp_path):
    out = evaluate(tiny_run.path)
    assert out["test"]["knn_accuracy"] == pytest.approx(tiny_run.metrics()["test"]["knn_accuracy"])
    # another data set whose class names are a subset, written in the folder layout
    from PIL import Image
    items = tiny_run.items()
    imgs = np.asarray(tiny_run.images())
    # the usual spellings of the FER+ classes match (happy, Surprised, fearful); calm matches none
    for folder, cls in (("happy", "happiness"), ("Surprised", "surprise"), ("fearful", "fear"), ("calm", "neutral")):
        d = tmp_path / "other" / folder
        d.mkdir(parents=True)
        for i in np.flatnonzero(items["label_name"].to_numpy() == cls)[:6]:
            Image.fromarray(imgs[i]).save(d / f"{i}.png")
    res = evaluate(tiny_run.path, data_spec=f"folder:{tmp_path / 'other'}", device="cpu")
    key = f"cross:folder:{tmp_path / 'other'}"
    assert res[key]["classes_matched"] == ["happiness", "surprise", "fear"] and res[key]["n"] == 18
    assert res[key]["class_match"] == {"Surprised": "surprise", "fearful": "fear", "happy": "happiness"}
    assert res[key]["classes_left_out"] == ["calm"] and res[key]["images_unmatched"] == 6
    assert key in json.loads((tiny_run.path / "metrics.json").read_text())


def test_crossfit_evidence_comes_from_models_that_never_saw_the_image(tmp_path):
    run = train(tiny_config(epochs=1, crossfit=2), tmp_path / "cf", quiet=True)
    post = np.asarray(run.array("crossfit_posterior.npy"))
    votes = np.asarray(run.array("crossfit_votes.npy"))
    items = run.items()
    assert post.shape == votes.shape == (len(items), 8)
    assert np.allclose(post.sum(1), 1, atol=1e-4) and np.allclose(votes.sum(1), 11, atol=1e-3)
    seen_by = {}
    for f in range(2):
        fold = open_run(run.path / "crossfit" / f"fold{f}").items()
        for i, s in zip(fold["id"], fold["split"]):
            seen_by.setdefault(i, []).append(s)
    train_ids = items.loc[items["split"] == "train", "id"]
    # every training image is held out ("test") in exactly one fold model; in the other it is
    # trained on or is in that fold's validation set, which was carved from its own training rows
    assert all(sorted(seen_by[i]) in (["test", "train"], ["test", "val"]) for i in train_ids)
    assert sum(sorted(seen_by[i]) == ["test", "val"] for i in train_ids) > 0
    # the run's own val and test images never choose a fold model's checkpoint, nor train it
    other_ids = items.loc[items["split"] != "train", "id"]
    assert all(seen_by[i] == ["test", "test"] for i in other_ids)
