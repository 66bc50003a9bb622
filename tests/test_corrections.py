"""Corrections in, a new run out: `train --labels-from` for every input format and every error."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer import jobs, train_form
from explorer_fixtures import pipeline_run_dir, runs_root  # noqa: F401  (fixtures)
from explorer.review import ReviewStore, flagged_frame, to_csv, to_label_studio
from pipeline.corrections import apply_corrections, read_corrections
from pipeline.sources import DataError, load_source

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ds():
    return load_source("synthetic:240")


def ids_in(ds, split, n):
    t = ds.table
    return t.loc[t["split"] == split, "id"].head(n).tolist()


def other_class(ds, item_id):
    t = ds.table.set_index("id")
    return next(c for c in ds.classes if c != t.loc[item_id, "label_name"])


def test_csv_relabel_flag_keep_and_test_rows_untouched(ds, tmp_path):
    a, b, c, d = ids_in(ds, "train", 4)
    (t,) = ids_in(ds, "test", 1)
    new = other_class(ds, a)
    f = tmp_path / "c.csv"
    f.write_text(f"id,label,decision\n{a},{new},relabel\n{b},,flag\n{c},,keep\n{d},{other_class(ds, d)},\n"
                 f"{t},{other_class(ds, t)},relabel\n")
    out, info, log = apply_corrections(ds, f)
    assert info["format"] == "csv" and len(info["sha256"]) == 64
    assert info["applied"] == {"relabel": 2, "drop": 1, "keep": 1, "unchanged": 0, "test_untouched": 1}
    tab = out.table.set_index("id")
    assert b not in tab.index and len(out.table) == len(ds.table) - 1 and len(out.images) == len(out.table)
    assert tab.loc[a, "label_name"] == new and out.classes[tab.loc[a, "label"]] == new
    assert tab.loc[t, "label"] == ds.table.set_index("id").loc[t, "label"]  # the yardstick never moves
    assert sorted(log["kind"]) == ["drop", "relabel", "relabel"]
    # the source dataset is not modified
    assert b in set(ds.table["id"]) and ds.table.set_index("id").loc[a, "label_name"] != new


def test_csv_without_decision_column_and_case_insensitive_class(ds, tmp_path):
    (a,) = ids_in(ds, "train", 1)
    f = tmp_path / "c.csv"
    f.write_text(f"id,label\n{a},{other_class(ds, a).upper()}\n")
    out, info, _ = apply_corrections(ds, f)
    assert info["applied"]["relabel"] == 1
    assert out.table.set_index("id").loc[a, "label_name"] == other_class(ds, a)


@pytest.mark.parametrize("body, needle", [
    ("id,label\n{a},happiness\nnot-an-id,anger\n", "line 3: id 'not-an-id' is not in the data"),
    ("id,label\n{a},joy\n", "line 2: unknown class 'joy'"),
    ("id,label\n{a},anger\n{b},fear\n{a},fear\n", "line 4: conflicts with line 2"),
    ("id,label,decision\n{a},,flag\n{a},anger,relabel\n", "line 3: conflicts with line 2"),
    ("id,label,decision\n{a},,relabel\n", "line 2: id '{a}' has no label"),
    ("id,label,decision\n{a},anger,maybe\n", "line 2: unknown decision 'maybe'"),
    ("item,label\n{a},anger\n", "line 1: no 'id' column"),
    ("", "empty file"),
])
def test_csv_errors_name_the_row(ds, tmp_path, body, needle):
    a, b = ids_in(ds, "train", 2)
    f = tmp_path / "bad.csv"
    f.write_text(body.format(a=a, b=b))
    with pytest.raises(DataError) as e:
        apply_corrections(ds, f)
    msg = str(e.value)
    assert needle.format(a=a) in msg and "\n" not in msg and "bad.csv" in msg


def test_identical_duplicate_rows_are_not_a_conflict(ds, tmp_path):
    (a,) = ids_in(ds, "train", 1)
    f = tmp_path / "c.csv"
    f.write_text(f"id,label\n{a},anger\n{a},Anger\n")
    assert apply_corrections(ds, f)[1]["rows"] == 2


def test_review_database_round_trip_and_its_hash_follows_its_content(ds, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    a, b, c = ids_in(ds, "train", 3)
    s = ReviewStore(run)
    s.decide(a, "relabel", proposed_label=other_class(ds, a))
    s.flag([b])
    s.decide(c, "keep")
    fmt, corr = read_corrections(run / "review.sqlite")
    assert fmt == "review.sqlite" and {x.kind for x in corr} == {"relabel", "drop", "keep"}
    out, info, _ = apply_corrections(ds, run / "review.sqlite")
    assert info["applied"]["relabel"] == 1 and info["applied"]["drop"] == 1 and info["applied"]["keep"] == 1
    s.decide(c, "flag")
    assert apply_corrections(ds, run / "review.sqlite")[1]["sha256"] != info["sha256"]


def test_review_database_with_an_unknown_class_or_id(ds, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (a,) = ids_in(ds, "train", 1)
    ReviewStore(run).decide(a, "relabel", proposed_label="maybe happy")
    with pytest.raises(DataError, match=f"item '{a}': unknown class 'maybe happy'"):
        apply_corrections(ds, run / "review.sqlite")
    ReviewStore(run).undecide(a)
    ReviewStore(run).flag("ghost-7")
    with pytest.raises(DataError, match="item 'ghost-7': id 'ghost-7' is not in the data"):
        apply_corrections(ds, run / "review.sqlite")


def test_a_sqlite_file_that_is_not_a_review_database(ds, tmp_path):
    f = tmp_path / "other.sqlite"
    sqlite3.connect(f).execute("CREATE TABLE x (a)").connection.commit()
    with pytest.raises(DataError, match="not a review database"):
        apply_corrections(ds, f)


def _ls_tasks(ds, run: Path) -> list:
    """Our own Label Studio export of the flags, then 'answered' as Label Studio's JSON export has it."""
    items = ds.table
    flagged = flagged_frame(items, ReviewStore(run).decisions(), ReviewStore(run).tags())
    return json.loads(to_label_studio(flagged))


def test_label_studio_export_of_our_tasks(ds, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    a, b, c = ids_in(ds, "train", 3)
    ReviewStore(run).flag([a, b, c])
    tasks = _ls_tasks(ds, run)
    assert [t["data"]["item_id"] for t in tasks] == [a, b, c]
    na, nb = other_class(ds, a), other_class(ds, b)
    for i, t in enumerate(tasks):
        t["id"] = 100 + i
    # a: answered twice, the later answer counts; b: one answer and one cancelled; c: unanswered
    tasks[0]["annotations"] = [
        {"id": 1, "created_at": "2026-01-01T10:00:00Z", "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["fear"]}}]},
        {"id": 2, "created_at": "2026-01-02T10:00:00Z", "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [na]}}]}]
    tasks[1]["annotations"] = [
        {"id": 3, "result": [{"type": "choices", "value": {"choices": [nb]}}]},
        {"id": 4, "was_cancelled": True, "result": [{"type": "choices", "value": {"choices": ["fear"]}}]}]
    tasks[2]["annotations"] = []
    f = tmp_path / "export.json"
    f.write_text(json.dumps(tasks))
    out, info, log = apply_corrections(ds, f)
    assert info["format"] == "label-studio" and info["rows"] == 2 and info["applied"]["relabel"] == 2
    tab = out.table.set_index("id")
    assert tab.loc[a, "label_name"] == na and tab.loc[b, "label_name"] == nb


def test_label_studio_json_min_export(ds, tmp_path):
    (a,) = ids_in(ds, "train", 1)
    f = tmp_path / "min.json"
    f.write_text(json.dumps([{"image": "x.png", "item_id": a, "label": other_class(ds, a)}]))
    assert apply_corrections(ds, f)[1]["applied"]["relabel"] == 1


@pytest.mark.parametrize("tasks, needle", [
    ([{"id": 5, "data": {"image": "x"}, "annotations": []}], "task 1 (id 5): no data.item_id"),
    ([{"id": 5, "data": {"item_id": "ghost"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": ["anger"]}}]}]}],
     "task 1 (id 5): id 'ghost' is not in the data"),
    ([{"data": {"item_id": "{a}"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": ["joy"]}}]}]}],
     "task 1: unknown class 'joy'"),
    ([{"data": {"item_id": "{a}"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": ["anger"]}}]}]},
      {"data": {"item_id": "{a}"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": ["fear"]}}]}]}],
     "task 2: conflicts with task 1"),
    ("not json", "not a readable JSON file"),
    ({"data": 3}, "no data.item_id"),
])
def test_label_studio_errors_name_the_task(ds, tmp_path, tasks, needle):
    (a,) = ids_in(ds, "train", 1)
    f = tmp_path / "bad.json"
    text = tasks if isinstance(tasks, str) else json.dumps(tasks).replace("{a}", a)
    f.write_text(text if text != "not json" else "[not json")
    with pytest.raises(DataError) as e:
        apply_corrections(ds, f)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_our_csv_export_reads_back(ds, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    a, b = ids_in(ds, "train", 2)
    ReviewStore(run).decide(a, "relabel", proposed_label=other_class(ds, a))
    ReviewStore(run).flag(b)
    f = tmp_path / "flags.csv"
    f.write_bytes(to_csv(flagged_frame(ds.table, ReviewStore(run).decisions(), ReviewStore(run).tags())))
    out, info, _ = apply_corrections(ds, f)
    assert info["applied"]["relabel"] == 1 and info["applied"]["drop"] == 1


# ---------------------------------------------------------------------------- the CLI, end to end
def cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


TINY = ["--data", "synthetic:240", "--epochs", "1", "--steps-per-epoch", "2", "--per-class", "8",
        "--embedding-dim", "16", "--no-progress-bar", "--quiet"]


def test_cli_retrain_records_parent_and_corrections_and_runs_shows_lineage(tmp_path, ds):
    root = tmp_path / "runs"
    assert cli("train", *TINY, "--out", root / "parent").returncode == 0
    a, b = ids_in(ds, "train", 2)
    ReviewStore(root / "parent").decide(a, "relabel", proposed_label=other_class(ds, a))
    ReviewStore(root / "parent").flag(b)
    p = cli("train", *TINY, "--out", root / "child", "--labels-from", root / "parent" / "review.sqlite")
    assert p.returncode == 0, p.stderr
    m = json.loads((root / "child" / "manifest.json").read_text())
    assert Path(m["parent"]) == (root / "parent").resolve()
    assert m["corrections"]["applied"]["relabel"] == 1 and m["corrections"]["applied"]["drop"] == 1
    assert m["data"]["n_images"] == len(ds.table) - 1
    log = pd.read_parquet(root / "child" / "corrections.parquet")
    assert set(log["id"]) == {a, b}
    items = pd.read_parquet(root / "child" / "items.parquet").set_index("id")
    assert items.loc[a, "label_name"] == other_class(ds, a) and b not in items.index
    r = cli("runs", root)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("child"))
    assert "<- parent + 1 relabelled, 1 dropped (review.sqlite" in line


@pytest.mark.parametrize("args, needle", [
    (["--labels-from", "{tmp}/missing.csv"], "corrections file not found"),
    (["--labels-from", "{tmp}/bad.csv"], "line 2: unknown class 'joy'"),
    (["--labels-from", "{tmp}/bad.csv", "--parent", "{tmp}"], "not a run directory"),
    (["--parent", "{tmp}"], "--parent goes with --labels-from"),
])
def test_cli_bad_corrections_one_line_and_nothing_trained(tmp_path, ds, args, needle):
    (a,) = ids_in(ds, "train", 1)
    (tmp_path / "bad.csv").write_text(f"id,label\n{a},joy\n")
    out = tmp_path / "out"
    p = cli("train", *TINY, "--out", out, *[x.replace("{tmp}", str(tmp_path)) for x in args])
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------- the app's job
def test_retrain_job_uses_the_parents_recipe(tmp_path, tiny_run):
    import shutil

    from pipeline.cli import _parser, build_config
    from pipeline.config import RunConfig

    parent = tmp_path / "parent"
    shutil.copytree(tiny_run.path, parent)
    with pytest.raises(jobs.JobError, match="no review decisions"):
        train_form.retrain_argv(parent, tmp_path / "child")
    (a,) = tiny_run.items()["id"].head(1)
    ReviewStore(parent).flag(a)
    argv = train_form.retrain_argv(parent, tmp_path / "child")
    ns = _parser().parse_args(argv[argv.index("pipeline") + 1:])
    cfg = build_config(ns).to_dict()
    assert cfg["data"]["labels_from"].endswith("review.sqlite") and Path(cfg["data"]["parent"]) == parent.resolve()
    cfg["data"]["labels_from"] = cfg["data"]["parent"] = ""
    parent_cfg = tiny_run.config if isinstance(tiny_run.config, RunConfig) else RunConfig.from_dict(tiny_run.config)
    assert cfg == parent_cfg.to_dict()


def test_app_retrain_with_my_corrections_starts_a_background_job(runs_root):
    from streamlit.testing.v1 import AppTest

    app = str(ROOT / "explorer" / "app.py")
    at = AppTest.from_file(app, default_timeout=60)
    at.run()
    assert not at.exception and at.button(key="retrain").disabled  # nothing to retrain with yet
    run = runs_root / "fixture"
    ReviewStore(run).flag(pd.read_parquet(run / "items.parquet")["id"].head(2).tolist())
    at.run()
    at.button(key="retrain").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = jobs.current(runs_root)
    try:
        assert job is not None and job.active and job.kind == "retrain"
        line = jobs.command_line(job)
        assert f"--labels-from {run.resolve() / 'review.sqlite'}" in line and "analyze" in line
        assert Path(job.run_dir).parent == runs_root and "corrected" in Path(job.run_dir).name
    finally:
        jobs.cancel(runs_root)
        jobs.wait(runs_root, timeout=60)
