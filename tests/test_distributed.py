"""torchrun with two CPU processes (gloo) against a single process on the same config."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runs import open_run

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["train", "--data", "synthetic:800", "--epochs", "8", "--per-class", "8", "--embedding-dim", "16",
        "--no-progress-bar", "--device", "cpu", "--seed", "1"]


@pytest.mark.slow
def test_two_gloo_processes_match_a_single_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "pipeline", *ARGS, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    two = subprocess.run([*torchrun.split(), "--nproc_per_node=2", "--master-port=29517", "-m", "pipeline", *ARGS,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = open_run(tmp_path / "one"), open_run(tmp_path / "two")
    assert len(b.items()) == len(a.items()) and b.embeddings().shape == a.embeddings().shape
    # only rank 0 wrote: one progress stream, one "done"
    assert [e["event"] for e in b.progress()].count("done") == 1
    ma, mb = a.metrics()["test"], b.metrics()["test"]
    # same batches split across ranks, local class means: close, not identical
    assert abs(ma["knn_accuracy"] - mb["knn_accuracy"]) < 0.12, (ma["knn_accuracy"], mb["knn_accuracy"])
    assert min(ma["knn_accuracy"], mb["knn_accuracy"]) > 0.3     # both learned (chance is 0.125)
