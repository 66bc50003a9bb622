"""bench.gpu_check's stage runner, in the default suite: a failing stage is recorded and the next
runs, a stage the budget cannot hold is skipped with the reason, the JSON is on disk after each."""
import json

from bench.gpu_check import Check, table


def test_failures_and_skips_are_recorded_and_the_json_follows_every_stage(tmp_path):
    out = tmp_path / "gc.json"
    chk = Check(out, 100.0, {"mode": "test"})
    seen = []

    def boom(b):
        seen.append(json.loads(out.read_text())["stages"].keys())    # the JSON already holds stage one
        raise ValueError("no such file: labels.csv\nsecond line")

    assert chk.stage("one", lambda b: {"x": 1}, need_s=0) == {"x": 1}
    assert chk.stage("two", boom, need_s=0) is None
    assert chk.stage("three", lambda b: {"budget": b}, need_s=1, share=0.5) == {"budget": chk.result["stages"]["three"]["budget"]}
    assert chk.stage("four", lambda b: {}, need_s=10_000) is None
    st = json.loads(out.read_text())["stages"]
    assert list(seen[0]) == ["one"]          # written before stage two started
    assert st["one"]["status"] == "ok" and st["one"]["x"] == 1
    assert st["two"]["status"] == "error" and st["two"]["error"] == "ValueError: no such file: labels.csv"
    assert st["two"]["traceback"]
    assert st["three"]["status"] == "ok" and 40 <= st["three"]["budget"] <= 50
    assert st["four"]["status"] == "skipped" and "budget" in st["four"]["reason"]
    text = table(chk.result)
    assert "two" in text and "ValueError" in text and "skipped" in text
