"""`python -m pipeline`: real processes, one-line errors, exit codes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def test_train_evaluate_and_runs_listing(tmp_path):
    out = tmp_path / "runs" / "cli"
    p = cli("train", "--data", "synthetic:240", "--out", str(out), "--epochs", "1", "--steps-per-epoch", "3",
            "--per-class", "8", "--embedding-dim", "16", "--no-progress-bar")
    assert p.returncode == 0, p.stderr
    assert "run complete" in p.stdout and "kNN acc" in p.stdout
    e = cli("evaluate", str(out))
    assert e.returncode == 0 and "test" in e.stdout and "NMI" in e.stdout
    r = cli("runs", str(tmp_path / "runs"))
    assert r.returncode == 0 and "cli" in r.stdout and "complete" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["train", "--data", "ferplus:/definitely/not/here", "--out", "{tmp}/a"], "/definitely/not/here"),
    (["train", "--data", "csv:{tmp}/bad.csv", "--out", "{tmp}/b"], "bad.csv"),
    (["train", "--data", "bogus", "--out", "{tmp}/c"], "unknown data source"),
    (["evaluate", "{tmp}/nothing"], "no such run directory"),
    (["train", "--data", "synthetic:200", "--out", "{tmp}/d", "--sigma", "nan"], "sigma"),
    (["train", "--data", "synthetic:200", "--out", "{tmp}/e", "--analyze", "--maps", "tsne,tsnee"], "tsnee"),
    (["train", "--data", "synthetic:200", "--out", "{tmp}/f", "--maps", "pca"], "--maps goes with --analyze"),
    (["analyze", "{tmp}/nothing", "--maps", "umpa"], "umpa"),
])
def test_bad_input_gets_one_line_error_and_exit_1(tmp_path, args, needle):
    (tmp_path / "bad.csv").write_text("filename,emotion\na.png,happy\n")
    p = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert p.returncode == 1
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not any((tmp_path / d).exists() for d in "ef")      # refused before anything was written


def test_crossfit_defaults_on_for_a_gpu_and_off_for_a_cpu(monkeypatch):
    from pipeline.cli import _parser, build_config
    from pipeline.config import default_crossfit

    monkeypatch.setenv("WORLD_SIZE", "4")
    assert default_crossfit("cuda") == 0          # under torchrun rank 0 alone would train the folds
    monkeypatch.delenv("WORLD_SIZE")

    assert default_crossfit("cuda") == 2 and default_crossfit("cuda:1") == 2 and default_crossfit("cpu") == 0
    cfg = lambda *extra: build_config(_parser().parse_args(["train", "--data", "synthetic", "--out", "x", *extra]))  # noqa: E731
    assert cfg("--device", "cpu").train.crossfit == 0
    assert cfg("--device", "cuda").train.crossfit == 2
    assert cfg("--device", "cuda", "--crossfit", "0").train.crossfit == 0
    assert cfg("--device", "cpu", "--crossfit", "3").train.crossfit == 3
