"""explorer.train_form: the form's request -> the recipe -> a config file -> ``pipeline train --config``;
the data sources the form offers (pipeline.sources.discover)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from explorer.jobs import JobError
from explorer.train_form import TrainRequest, check_spec
from pipeline.config import RunConfig
from pipeline.runs import new_run_dir
from pipeline.sources import DataError
from pipeline.sources.discover import discover, spec_paths


def test_train_request_writes_a_config_and_trains_with_it(tmp_path):
    req = TrainRequest(spec="ferplus:/data/fer", loss="triplet", backbone="resnet18", epochs=3, levels=2,
                       data_roots=("/data",))
    argv = req.train_argv(tmp_path / "out", tmp_path / "c.json")
    assert argv[:3] == [sys.executable, "-m", "pipeline"]
    assert argv[3:] == ["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "out"),
                        "--no-progress-bar"]
    cfg = RunConfig.load(tmp_path / "c.json")
    assert (cfg.data.spec, cfg.loss.name, cfg.model.backbone, cfg.train.epochs, cfg.hierarchy.levels,
            cfg.data.data_roots) == ("ferplus:/data/fer", "triplet", "resnet18", 3, 2, ("/data",))
    assert cfg.train.per_class == 32                       # the recipe's, for resnet18
    assert RunConfig.load(tmp_path / "c.json") == req.config()
    assert TrainRequest().config().train.epochs == 20      # the recipe's, for synthetic data
    assert TrainRequest(resume=True).train_argv(tmp_path / "o", tmp_path / "d.json")[-1] == "--resume"
    d = new_run_dir(tmp_path, req.config())
    assert d.parent == tmp_path and "ferplus" in d.name and "fer" in d.name and d.name.endswith("triplet-resnet18")
    for bad, needle in ((TrainRequest(loss="mse"), "unknown loss"), (TrainRequest(backbone="vgg"), "backbone"),
                        (TrainRequest(levels=0), "levels"), (TrainRequest(spec="a\nb"), "not one line"),
                        (TrainRequest(levels=2, loss="softmax"), "metric loss")):
        with pytest.raises(JobError, match=needle):
            bad.validate()


def test_discover_finds_the_sources_under_the_roots(tmp_path):
    root = tmp_path / "data"
    for cls in ("happy", "sad"):
        d = root / "faces" / cls
        d.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
    (root / "fer" / "FER2013Train").mkdir(parents=True)
    (root / "fer" / "FER2013Test").mkdir()
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n")
    (root / "training.csv").write_text("x\n")
    (root / "labels.csv").write_text("path,label\n")
    (root / ".hidden").mkdir()
    found = discover([root])
    assert sorted(found) == sorted([f"folder:{root / 'faces'}", f"ferplus:{root / 'fer'}", f"fer2013:{root / 'fer2013.csv'}",
                                    f"affectnet:{root / 'training.csv'}", f"csv:{root / 'labels.csv'}"])
    assert discover([tmp_path / "missing"]) == [] and len(discover([root], limit=2)) == 2
    assert spec_paths("fer2013:/a.csv, /b.csv") == ["/a.csv", "/b.csv"] and spec_paths("synthetic:600") == []
    with pytest.raises(DataError, match="unknown data source"):
        spec_paths("bogus:/x")
    assert check_spec(f"folder:{root / 'faces'}", [root]) == f"folder:{root / 'faces'}"
    for spec, needle in (("synthetic:3", "between"), ("folder:/elsewhere", "not under"), ("bogus:/x", "unknown"),
                         (f"folder:{root / 'nope'}", "does not exist"), ("folder:", "needs a path")):
        with pytest.raises(JobError, match=needle):
            check_spec(spec, [root])


def test_resume_continues_an_interrupted_run_from_its_last_finished_epoch(tmp_path, tiny_run, capsys):
    """What the app's Resume runs: the run's own manifest as the config, its own folder, --resume;
    the trainer picks up after the epoch last.pt holds instead of starting over."""
    import shutil

    from explorer.train_form import resume_argv
    from pipeline import cli, progress
    from pipeline.runs import MANIFEST, load_torch, open_run, save_torch

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    with pytest.raises(JobError, match="nothing to resume"):
        resume_argv(run)
    # as a cancel during epoch 2 of 2 leaves it: last.pt holds epoch 1, the manifest says interrupted
    ck = load_torch(run / "checkpoints" / "last.pt", map_location="cpu")
    ck["epoch"] = 1
    save_torch(run / "checkpoints" / "last.pt", ck)
    r = open_run(run, require_complete=False, check_files=False)
    r.register("checkpoints/last.pt")
    r.save_manifest(status="running")      # marked running and just written: maybe training elsewhere
    with pytest.raises(JobError, match="may still be training in another process"):
        resume_argv(run)
    r.save_manifest(status="interrupted")
    argv = resume_argv(run)
    assert argv[3:] == ["train", "--config", str(run.resolve() / MANIFEST), "--out", str(run.resolve()), "--resume",
                        "--no-progress-bar"]
    before = len(progress.read(run))
    capsys.readouterr()
    assert cli.main(argv[3:]) == 0
    assert f"resuming {run.resolve()} after epoch 1" in capsys.readouterr().err
    new = progress.read(run)[before:]
    assert [e.epoch for e in new if e.event == "epoch"] == [2] and new[-1].event == "done"   # epoch 2 only
    assert open_run(run).status == "complete"


def test_an_unfinished_demo_is_resumed_from_its_own_manifest(tmp_path):
    from explorer import jobs
    from explorer.train_form import start_demo
    from explorer_fixtures import fake_run
    from pipeline.runs import open_run

    root = tmp_path / "runs"
    demo = fake_run(root / "demo", 40, analysed=False)
    open_run(demo).save_manifest(status="interrupted")
    job = start_demo(root, spec="synthetic:600", epochs=1)
    try:
        train = job.steps[0]
        assert job.run_dir == str(demo) and "--resume" in train
        assert train[train.index("--config") + 1] == str(demo.resolve() / "manifest.json")
        assert job.step_names == ["train", "analyze"]
    finally:
        jobs.cancel(root)
        jobs.wait(root, timeout=60)
