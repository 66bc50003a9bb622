"""Two runs side by side (pipeline.compare and the Compare page), on a run and its real retrained child."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer.review import ReviewStore
from explorer_fixtures import pipeline_run_dir  # noqa: F401  (fixtures)
from pipeline.compare import compare, match_subclasses

ROOT = Path(__file__).resolve().parent.parent


def cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    return p


def test_match_subclasses_follows_groups_across_renumbering():
    ids = np.array([f"i{k}" for k in range(12)])
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    b = np.array([7, 7, 7, 5, 5, 5, 5, 5, 9, 9, 9, 9])      # 0 -> 7 (3 of 4), 1 -> 5, 2 -> 9
    perm = np.random.default_rng(0).permutation(12)
    m = match_subclasses(ids, a, ids[perm], b[perm]).set_index("a")
    assert m.loc[0, "b"] == 7 and m.loc[1, "b"] == 5 and m.loc[2, "b"] == 9
    assert m.loc[2, "jaccard"] == 1.0 and m.loc[0, "jaccard"] == pytest.approx(3 / 4)
    assert m.loc[1, "jaccard"] == pytest.approx(4 / 5)


@pytest.fixture(scope="module")
def parent_and_child(pipeline_run_dir, tmp_path_factory):
    """The fixture run and a child retrained (one epoch) on 40 of its training images relabelled,
    in a runs folder of their own (built once for this module)."""
    import shutil

    root = tmp_path_factory.mktemp("compare") / "runs"
    parent = root / "fixture"
    shutil.copytree(pipeline_run_dir, parent)
    items = pd.read_parquet(parent / "items.parquet")
    tr = items[items["split"] == "train"].head(40)
    classes = json.loads((parent / "manifest.json").read_text())["classes"]
    ReviewStore(parent).decide(tr["id"].tolist(), "relabel", proposed_label=classes[0])
    child = root / "child"
    cli("train", "--data", "synthetic:600", "--epochs", "1", "--out", child, "--no-progress-bar", "--quiet",
        "--labels-from", parent / "review.sqlite")
    cli("analyze", child, "--maps", "none")
    return parent, child


def test_compare_a_run_with_its_child(parent_and_child):
    parent, child = parent_and_child
    res = compare(parent, child)
    items = pd.read_parquet(parent / "items.parquet")
    n_test = int((items["split"] == "test").sum())
    assert res["n_test"] == n_test                              # test images are never dropped or changed
    o = res["overall"]
    ch = res["changed"]
    assert o["changed"] == len(ch) and o["fixed"] == int((ch["kind"] == "fixed").sum())
    # the per-class accuracies add up to the overall one
    pc = res["per_class"]
    assert (pc["n_test"] * pc["accuracy_b"]).sum() / pc["n_test"].sum() == pytest.approx(o["accuracy_b"])
    assert o["accuracy_b"] - o["accuracy_a"] == pytest.approx((o["fixed"] - o["broken"]) / n_test)
    assert (ch["pred_a"] != ch["pred_b"]).all()
    m = res["matches"]
    sub_a = pd.read_parquet(parent / "analysis" / "subclasses.parquet")["subclass"]
    assert ((m["jaccard"] >= 0) & (m["jaccard"] <= 1)).all() and sorted(m["a"]) == sorted(sub_a.unique())
    same = compare(parent, parent)
    assert same["overall"]["changed"] == 0 and (same["matches"]["jaccard"] == 1.0).all()
    assert np.allclose(same["per_class"]["subclass_nmi"].dropna().to_numpy(), 1.0)


def test_compare_page(parent_and_child, monkeypatch):
    from streamlit.testing.v1 import AppTest

    parent, child = parent_and_child
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(parent.parent))
    ReviewStore(parent).name_subclass(0, "glasses")
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
    at.run()
    at.selectbox(key="run_picker").set_value(str(child)).run()
    at.switch_page("views/compare.py")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="cmp_a").value == str(parent)       # the child's parent by default
    assert at.selectbox(key="cmp_b").value == str(child)
    res = compare(parent, child)
    assert at.metric[0].value == f"{100 * res['overall']['accuracy_b']:.1f} %"
    assert len(at.dataframe) == 2
    matches = at.dataframe[1].value
    assert "glasses" in set(matches["name_a"])
    for kind in ("fixed", "broken", "other"):
        at.segmented_control(key="cmp_kind").set_value(kind).run()
        assert not at.exception
        n = int((res["changed"]["kind"] == kind).sum())
        assert any(c.value.startswith(f"{n:,} image(s)") for c in at.caption)
    at.selectbox(key="cmp_a").set_value(str(child)).run()
    assert not at.exception and any("two different runs" in i.value for i in at.info)
