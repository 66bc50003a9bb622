"""pipeline.config: the one recipe. The CLI, the app's training form and analyze start from the
same defaults; a saved config trains as it was saved; bad choices get one line."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from explorer.train_form import TrainRequest
from pipeline import analysis
from pipeline.cli import _parser, build_config
from pipeline.mislabels import MISLABEL_K
from pipeline.config import (BACKBONES, LOSSES, ConfigError, DataConfig, HierarchyConfig, RunConfig, TrainConfig,
                             recipe)
from conftest import ROOT


def cli_config(*args: str) -> RunConfig:
    return build_config(_parser().parse_args(["train", "--out", "unused", *args]))


@pytest.mark.parametrize("spec", ["synthetic", "synthetic:600", "ferplus:/data/fer", "folder:/data/faces"])
def test_cli_form_and_analyze_share_the_defaults(spec):
    cli = cli_config("--data", spec, "--backbone", "light")
    form = TrainRequest(spec=spec, backbone="light").config()
    assert cli == form == recipe(spec, "light")
    assert cli_config("--data", spec) == TrainRequest(spec=spec).config() == recipe(spec)  # backbone auto
    # the recipe's data-dependent choices, written once in pipeline.config
    assert cli.train.epochs == (20 if spec.startswith("synthetic") else 30)
    assert cli.train.per_class == 16 and recipe(spec, "resnet18").train.per_class == 32
    # everything else is the dataclasses' defaults
    assert cli.hierarchy == HierarchyConfig() and cli.loss == RunConfig().loss and cli.model.embedding_dim == 64
    # analyze with no options runs with the trained run's config, whichever front end made it
    a = _parser().parse_args(["analyze", "r"])
    assert a.max_components is None and a.subclass_features is None
    assert analysis.settings(cli) == analysis.settings(form) == {
        "max_components": 5, "min_per_subclass": 64, "topk": 16, "knn_k": MISLABEL_K, "sigma": 0.5, "features": "auto"}
    assert analysis.settings(cli, topk=4)["topk"] == 4


def test_flags_replace_the_recipe_and_a_saved_config(tmp_path):
    cfg = cli_config("--data", "synthetic:300", "--device", "cpu", "--epochs", "3", "--no-augment", "--lr", "0.01",
                     "--data-root", "/a", "--subclass-features", "embedding")
    assert (cfg.train.epochs, cfg.train.augment, cfg.train.lr, cfg.data.data_roots, cfg.hierarchy.features) == \
        (3, False, 0.01, ("/a",), "embedding")
    f = cfg.save(tmp_path / "c.json")
    assert RunConfig.load(f) == cfg
    again = cli_config("--config", str(f), "--epochs", "5")
    assert again == cfg.replace(train=TrainConfig(**{**asdict(cfg.train), "epochs": 5}))
    # a run's manifest.json is a config file too
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "config": cfg.to_dict()}))
    assert RunConfig.load(tmp_path / "manifest.json") == cfg


def test_train_with_a_config_file(tmp_path):
    cfg = recipe("synthetic:240", "light", "cpu", **{"train.epochs": 1, "train.steps_per_epoch": 2,
                                                     "train.per_class": 8, "model.embedding_dim": 16})
    f = cfg.save(tmp_path / "c.json")
    p = subprocess.run([sys.executable, "-m", "pipeline", "train", "--config", str(f), "--out", str(tmp_path / "r"),
                        "--quiet", "--no-progress-bar"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    from pipeline.runs import open_run

    assert open_run(tmp_path / "r").config == cfg


@pytest.mark.parametrize("change, needle", [
    ({"loss.name": "hinge"}, "unknown loss"), ({"model.backbone": "vgg"}, "unknown backbone"),
    ({"train.epochs": 0}, "epochs"), ({"hierarchy.levels": 9}, "levels"),
    ({"hierarchy.levels": 2, "loss.name": "softmax"}, "metric loss"), ({"loss.sigma": float("nan")}, "sigma"),
    ({"train.lr": -1.0}, "learning rate"), ({"hierarchy.features": "pixels"}, "sub-class features"),
    ({"data.spec": "a\nb"}, "one line"), ({"train.crossfit": 1}, "crossfit"),
    ({"loss.instance_weight": -0.1}, "instance weight"), ({"loss.instance_temperature": 0.0}, "instance temperature"),
])
def test_validate_names_the_problem_in_one_line(change, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        recipe("synthetic", "light", "cpu", **change).validate()
    assert "\n" not in str(e.value)


def test_config_files_that_cannot_be_read_get_one_line(tmp_path):
    for text, needle in (("{", "not a readable JSON"), ("[1]", "JSON object"),
                         ('{"train": {"epoch": 3}}', "unknown TrainConfig field")):
        (tmp_path / "c.json").write_text(text)
        with pytest.raises(ConfigError, match=needle):
            RunConfig.load(tmp_path / "c.json")
    with pytest.raises(ConfigError, match="no such config file"):
        RunConfig.load(tmp_path / "missing.json")
    assert set(LOSSES) == {"sgm", "triplet", "softmax"} and set(BACKBONES) == {"light", "resnet18"}
    assert DataConfig().spec == "synthetic"
