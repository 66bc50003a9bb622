"""The run directory: exact round-trips, atomic writes, validated reads with one-line errors."""
import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.runs import SCHEMA_VERSION, RunError, create_run, list_runs, open_run, write_json


@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 8)),
              elements=st.floats(-1e6, 1e6, width=32)))
def test_array_round_trip_is_exact(tmp_path_factory, arr):
    run = create_run(tmp_path_factory.mktemp("rt") / "r", config={"a": 1}, classes=["x", "y"])
    run.put_array("embeddings.npy", arr)
    run.save_manifest(status="complete")
    back = open_run(run.path).array("embeddings.npy")
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_table_and_json_round_trip(tmp_path):
    run = create_run(tmp_path / "r", config={"seed": 3}, classes=["a", "b"])
    df = pd.DataFrame({"id": ["é", "b c", "<img src=x>"], "label": [0, 1, 0], "score": [0.5, np.nan, 1e-9]})
    run.put_table("items.parquet", df)
    run.put_json("metrics.json", {"test": {"knn_accuracy": 0.25}})
    run.save_manifest(status="complete")
    r = open_run(tmp_path / "r")
    pd.testing.assert_frame_equal(r.items(), df)
    assert r.metrics() == {"test": {"knn_accuracy": 0.25}}
    assert r.manifest["schema_version"] == SCHEMA_VERSION and r.config == {"seed": 3}


def _complete(tmp_path):
    run = create_run(tmp_path / "r", config={}, classes=["a", "b"])
    run.put_array("embeddings.npy", np.ones((4, 2), np.float32))
    run.save_manifest(status="complete")
    return run


def test_truncated_artifact_is_named(tmp_path):
    run = _complete(tmp_path)
    p = run.path / "embeddings.npy"
    p.write_bytes(p.read_bytes()[:-8])
    with pytest.raises(RunError, match="embeddings.npy.*truncated"):
        open_run(run.path)


def test_missing_artifact_and_newer_schema_and_garbled_manifest(tmp_path):
    run = _complete(tmp_path)
    (run.path / "embeddings.npy").unlink()
    with pytest.raises(RunError, match="embeddings.npy: listed in manifest.json but missing"):
        open_run(run.path)
    m = json.loads((run.path / "manifest.json").read_text())
    m["schema_version"] = SCHEMA_VERSION + 1
    (run.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match="newer"):
        open_run(run.path)
    (run.path / "manifest.json").write_text('{"schema_ver')
    with pytest.raises(RunError, match="unreadable or truncated"):
        open_run(run.path)
    with pytest.raises(RunError, match="no such run"):
        open_run(tmp_path / "nope")


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    p = tmp_path / "m.json"
    write_json(p, {"v": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        write_json(p, {"v": Boom()})
    assert json.loads(p.read_text()) == {"v": 1}
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_list_runs_reports_broken_runs_without_failing(tmp_path):
    _complete(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("garbage")
    rows = {p.name: (r, prob) for p, r, prob in list_runs(tmp_path)}
    assert rows["r"][0] is not None and rows["bad"][0] is None and "unreadable" in rows["bad"][1]


def test_checkpoint_with_pickle_payload_is_refused(tmp_path):
    import pickle

    import torch

    from pipeline.runs import load_torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt", pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(RunError, match="refused or unreadable"):
        load_torch(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_trash_run_moves_whole_runs_only(tmp_path):
    from pipeline.runs import RunError, create_run, list_runs, trash_run

    run = create_run(tmp_path / "r1", config={}, classes=["a"])
    run.save_manifest(status="interrupted")
    (tmp_path / "notarun").mkdir()
    with pytest.raises(RunError, match="not a run folder"):
        trash_run(tmp_path / "notarun")
    dest = trash_run(tmp_path / "r1")
    assert dest.parent == tmp_path / ".trash" and (dest / "manifest.json").exists() and not (tmp_path / "r1").exists()
    assert list_runs(tmp_path) == []  # the trash is not a run
