"""The bench suite at toy sizes: every section runs, the table and the JSON have their shape, and
every ratio that was measured is a positive finite number. The budget machinery is checked on a
child that sleeps, and the map rows on scripted child results (UMAP's compile is too slow here)."""
from __future__ import annotations

import json
import math

import pytest

from bench import report
from bench.report import Row
from bench.subproc import ChildResult, run_child


def test_row_ratio_is_a_speed_ratio_both_ways():
    assert Row("a", "x", "ours", 80.0, "bare", 100.0, "img/s").finish().ratio == pytest.approx(0.8)
    r = Row("d", "x", "openTSNE", 10.0, "sklearn", 40.0, "s").finish()
    assert r.ratio == pytest.approx(4.0) and r.status == "ok"
    r = Row("d", "x", "openTSNE", 10.0, "sklearn", 40.0, "s", b_bound=">=").finish()
    assert (r.ratio_bound, r.status) == (">=", "bound")
    assert Row("e", "x", status="skipped", note="why").finish().ratio is None


def test_a_child_is_stopped_at_its_budget():
    res = run_child("sleep", {"seconds": 60}, budget_s=5.0)
    assert res.timed_out and res.error is None
    assert [r["event"] for r in res.results] == ["start"]
    assert res.wall_s < 20


def test_quick_cpu_suite_prints_the_table_and_writes_json(tmp_path, capsys):
    from bench.__main__ import main

    out = tmp_path / "bench.json"
    assert main(["cpu", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| measurement | A | B | A/B speed |" in printed
    obj = json.loads(out.read_text())
    assert obj["schema"] == report.SCHEMA and obj["mode"] == "cpu" and obj["quick"] is True
    assert obj["wall_s"] > 0 and obj["machine"]["cpus"] >= 1
    rows = obj["rows"]
    assert {r["section"] for r in rows} == {"a", "b", "c", "d", "e"}
    for r in rows:
        assert r["status"] in report.STATUSES, r
        assert r["status"] != "failed", r
        if r["ratio"] is not None:
            assert math.isfinite(r["ratio"]) and r["ratio"] > 0, r
    by = {(r["section"], r["name"].split(" (")[0]): r for r in rows}
    assert by[("a", "training step")]["status"] == "ok" and by[("a", "training step")]["ratio"] > 0
    emb = [r for r in rows if r["section"] == "c"]
    assert len(emb) == 2 and all(r["status"] == "ok" for r in emb)
    # a 1 s budget cannot hold a compile: the row says so instead of hanging the suite
    assert [r["status"] for r in rows if r["section"] == "b"] == ["skipped"]
    tsne = next(r for r in rows if r["section"] == "d" and "openTSNE vs scikit-learn" in r["name"])
    assert tsne["a_value"] > 0 and tsne["b_value"] > 0
    an = [r for r in rows if r["section"] == "e"]
    assert len(an) == 2 and all(r["a_value"] > 0 and r["extra"]["peak_rss_mb"] > 0 for r in an)


def test_map_rows_from_scripted_children(tmp_path, monkeypatch):
    """openTSNE done, sklearn cut with progress (a bound plus an estimate), UMAP compile row."""
    import bench.subproc
    from bench.suite import Suite, preset

    p = preset("cpu", quick=True)
    p = type(p)(**{**p.__dict__, "map_sizes": (100, 200), "opentsne_budget": (50.0, 50.0),
                   "sklearn_budget": (50.0, 50.0), "umap_budget": 50.0, "umap_skip": "",
                   "analyze_jobs": (), "total_s": 10_000.0})

    def fake(task, args, *, budget_s, on_line=None):
        m = args["method"]
        if m == "opentsne":
            n = args["sizes"][0]
            return ChildResult(results=[{"event": "start", "method": m, "n": n, "fit": "first", "_t": 1.0},
                                        {"event": "done", "method": m, "n": n, "fit": "first", "seconds": 2.0, "_t": 3.0}],
                               returncode=0)
        if m == "sklearn":
            n = args["sizes"][0]
            return ChildResult(results=[{"event": "start", "method": m, "n": n, "fit": "first", "_t": 2.0},
                                        {"event": "progress", "n": n, "iter": 50, "t": 5.0, "_t": 7.0},
                                        {"event": "progress", "n": n, "iter": 100, "t": 10.0, "_t": 12.0}],
                               timed_out=True, returncode=-9)
        res = [{"event": "start", "method": m, "n": 100, "fit": "first", "_t": 1.0},
               {"event": "done", "method": m, "n": 100, "fit": "first", "seconds": 40.0, "_t": 41.0},
               {"event": "done", "method": m, "n": 100, "fit": "warm", "seconds": 4.0, "_t": 45.0},
               {"event": "start", "method": m, "n": 200, "fit": "first", "_t": 45.0}]
        return ChildResult(results=res, timed_out=True, returncode=-9)

    monkeypatch.setattr(bench.subproc, "run_child", fake)
    s = Suite(p, workdir=tmp_path)
    s.maps()
    rows = [r for r in s.rows]
    assert len(rows) == 5
    t100 = rows[0]
    assert t100.a_value == 2.0 and t100.b_bound == ">=" and t100.b_value == pytest.approx(48.0)
    assert t100.ratio_bound == ">=" and t100.ratio == pytest.approx(24.0)
    assert "100/250 iterations, ~25 s extrapolated" in t100.note
    assert rows[1].b_value == 4.0 and rows[1].ratio == pytest.approx(2.0)        # warm UMAP at 100
    assert rows[3].b_bound == ">=" and rows[3].b_value == pytest.approx(5.0)     # UMAP 200 cut in flight
    compile_row = rows[4]
    assert (compile_row.a_value, compile_row.b_value) == (40.0, 4.0) and "~36 s" in compile_row.note


def test_gpu_mode_without_cuda_says_so_in_one_line(capsys):
    import torch

    from bench.__main__ import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no CUDA device" in err


def test_an_overrun_is_shared_by_every_job_still_to_come(tmp_path):
    from bench.suite import Suite, preset

    p = preset("cpu", quick=True)
    s = Suite(p, workdir=tmp_path)
    nominal = dict(s.pending)
    s.t0 -= p.total_s / 2                    # half the deadline already spent
    first = next(iter(nominal))
    assert s.budget(first) == pytest.approx(nominal[first] * (p.total_s / 2) / sum(nominal.values()), rel=0.05)
    assert first not in s.pending


@pytest.mark.slow
def test_large_maps_fit_a_sample_and_place_the_rest(tmp_path):
    """python -m bench.large_maps at toy size: both methods finish, placed points land with their
    class, the JSON holds the table."""
    from bench.large_maps import main

    out = tmp_path / "lm.json"
    assert main(["--n", "3000", "--max-fit", "1000", "--out", str(out), "--budget", "300"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["tsne", "umap"]
    for r in rows:
        assert r["max_fit"] == 1000 and r["whole_map_s"] > 0 and r["placed_agreement"] > 0.9
