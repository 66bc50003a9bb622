"""The explorer app under streamlit.testing.v1.AppTest, on a small run made by the real pipeline.

Every view opens without an exception or an error, and each main action works: pick a class,
flag images (queue and map), rename a sub-class, pick a confusion cell, query similar images,
start and cancel a training job; a broken run shows one line and the app goes on.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer import jobs
from pipeline.config import RunConfig
from explorer.review import ReviewStore
from explorer_fixtures import fake_run, pipeline_run_dir, runs_root  # noqa: F401  (fixtures)

APP = Path(__file__).resolve().parent.parent / "explorer" / "app.py"
VIEWS = ["overview", "map", "subclasses", "confusion", "mislabels", "tags", "similar", "summary", "train"]


def start(timeout: float = 60) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def goto(at: AppTest, view: str) -> AppTest:
    at.switch_page(f"views/{view}.py")
    at.run()
    ok(at)
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "subheader", "caption", "markdown", "info", "success", "warning")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_every_view_opens(runs_root):
    at = start()
    assert at.session_state["run_path"] == str(runs_root / "fixture")
    assert at.title[0].value.startswith("Run fixture")
    for view in VIEWS:
        goto(at, view)
    # the sidebar names the run and the training form is there
    assert at.selectbox(key="run_picker").value == str(runs_root / "fixture")
    assert at.button(key="open_train") is not None


def test_map_colourings_and_class_highlight(runs_root):
    at = goto(start(), "map")
    opts = at.selectbox(key="map_colour").options
    assert len(opts) >= 8  # label, sub-class, prediction, scores, split, review, gt_* columns
    for i in range(len(opts)):
        at.selectbox(key="map_colour").select_index(i).run()
        ok(at)
    at.selectbox(key="map_class").select_index(2).run()  # "select a class": highlight it
    ok(at)


def test_subclass_rename_is_kept_and_opens_on_the_map(runs_root):
    at = goto(start(), "subclasses")
    at.selectbox(key="sub_class").select_index(1).run()
    ok(at)
    key = next(t.key for t in at.text_input if t.key.startswith("subname_"))
    sid = int(key.split("_")[1])
    at.text_input(key=key).input("babies <b>&</b>").run()
    ok(at)
    assert ReviewStore(runs_root / "fixture").subclass_names() == {sid: "babies <b>&</b>"}
    # a fresh session (a reload) shows the name
    at2 = goto(start(), "subclasses")
    at2.selectbox(key="sub_class").select_index(1).run()
    assert at2.text_input(key=key).value == "babies <b>&</b>"
    assert any("babies" in s.value for s in at2.subheader)
    # open it on the map: the map shows that sub-class as the selection, ready to act on
    at2.button(key=f"submap_{sid}").click().run()
    ok(at2)
    assert any("babies" in s.value for s in at2.subheader), [s.value for s in at2.subheader]
    at2.switch_page("views/map.py")  # AppTest keeps its own page; st.switch_page moved the real one
    at2.text_input(key="map_tag").set_value("glasses")
    next(b for b in at2.button if b.label.startswith("Apply to")).click().run()
    ok(at2)
    store = ReviewStore(runs_root / "fixture")
    assert store.decisions().empty  # a tag alone flags nothing
    n_tagged = len(store.tags())
    assert n_tagged > 0 and set(store.tags()["tag"]) == {"glasses"}
    at2.selectbox(key="map_decision").set_value("flag")
    next(b for b in at2.button if b.label.startswith("Apply to")).click().run()
    ok(at2)
    flagged = store.decisions()
    assert len(flagged) == n_tagged and set(flagged["decision"]) == {"flag"}
    # undo (the flag), then clear the selection's decisions from the same form, then undo that
    assert "flagged" in at2.button(key="map_undo").label
    at2.button(key="map_undo").click().run()
    ok(at2)
    assert store.decisions().empty and len(store.tags()) == n_tagged
    at2.selectbox(key="map_decision").set_value("flag")
    next(b for b in at2.button if b.label.startswith("Apply to")).click().run()
    at2.selectbox(key="map_decision").set_value("clear")
    at2.text_input(key="map_tag").set_value("")
    next(b for b in at2.button if b.label.startswith("Apply to")).click().run()
    ok(at2)
    assert store.decisions().empty
    assert [e["action"] for e in store.log()][:4] == ["undecide", "flag_and_tag", "undo", "flag_and_tag"]


def test_subclass_cards_say_what_sets_a_group_apart_and_switch_facets(runs_root):
    at = goto(start(), "subclasses")
    # the facets analyze stored, images first; the crowd's reading is there (the fixture has votes) but not first
    assert at.segmented_control(key="sub_facet").value == "expression"
    opts = at.segmented_control(key="sub_facet").options
    assert opts[:2] == ["What varies inside this class", "Look shared across classes"]
    assert "How the crowd read it" in opts
    # every card: medoid, the group's mean image, its class's mean image, their difference
    cards = [[i.caption for i in im.proto.imgs] for im in at.get("image")]
    assert ["medoid", "its mean", "class mean", "difference"] in cards, cards
    caps = [c.value for c in at.caption]
    assert any("leaning to" in c and "% of" in c for c in caps), caps
    # more like it: the nearest images outside the group
    toggle = next(t for t in at.toggle if t.key.startswith("submore_"))
    toggle.set_value(True).run()
    ok(at)
    assert any("Nearest outside the group" in c.value for c in at.caption)
    # another facet: other sub-classes (ids run on after the first facet's), its own description
    first_ids = {k.key for k in at.text_input if k.key.startswith("subname_")}
    at.segmented_control(key="sub_facet").set_value("look").run()
    ok(at)
    look_ids = {k.key for k in at.text_input if k.key.startswith("subname_")}
    assert look_ids and not look_ids & first_ids
    assert any("recur across classes" in c.value for c in at.caption)
    # the overview reports the hidden groups found (synthetic ground truth)
    ov = goto(at, "overview")
    assert "expression variants" in str([d.value for d in ov.dataframe])


def test_mislabel_queue_actions_and_export(runs_root):
    at = goto(start(), "mislabels")
    keeps = [b.key for b in at.button if b.key and b.key.startswith("keep_")]
    assert len(keeps) == 12
    # the fixture run has no cross-fit: the page says its evidence came from a model that saw the labels
    assert any("the model saw this label" in c.value for c in at.caption)
    first, second, third = (k.split("_", 1)[1] for k in keeps[:3])
    at.button(key=f"flag_{first}").click().run()
    ok(at)
    at.button(key=f"keep_{second}").click().run()
    at.selectbox(key=f"prop_{third}").select_index(1).run()
    ok(at)
    store = ReviewStore(runs_root / "fixture")
    d = store.decision_map()
    assert d[first] == ("flag", None) and d[second] == ("keep", None) and d[third][0] == "relabel"
    # reviewed items leave the queue; progress counts them
    keys_now = {b.key for b in at.button if b.key and b.key.startswith("keep_")}
    assert f"keep_{first}" not in keys_now and len(keys_now) == 12
    assert "Reviewed 3 of" in at.get("progress")[0].proto.text
    # clear a decision (the image is back in the queue) and undo the last action, from the page
    at.toggle(key="ml_hide").set_value(False).run()
    at.button(key=f"clear_{second}").click().run()
    ok(at)
    assert second not in store.decision_map()
    assert "cleared the decision" in at.button(key="ml_undo").label
    at.button(key="ml_undo").click().run()
    ok(at)
    assert store.decision_map()[second] == ("keep", None)
    assert [e["what"] for e in store.history(second)] == ["kept 1 image", "cleared the decision on 1 image",
                                                          "undid action #4 (undecide)"]
    at.toggle(key="ml_hide").set_value(True).run()
    # filters: a class, the cleanlab ranking, a score threshold
    at.multiselect(key="ml_classes").select(0).run()
    ok(at)
    at.button_group(key="ml_rank").set_value("cleanlab").run() if hasattr(at, "button_group") else None
    ok(at)
    dl = at.get("download_button")
    assert len(dl) == 3


def test_confusion_cell_shows_its_images(runs_root):
    at = goto(start(), "confusion")
    at.selectbox(key="cm_given").select_index(1).run()
    at.selectbox(key="cm_pred").select_index(2).run()
    ok(at)
    conf = json.loads((runs_root / "fixture" / "analysis" / "confusion.json").read_text())
    n = conf["matrix"][1][2]
    assert any(s.value.replace("\\", "").endswith(f": {n:,} image" + ("" if n == 1 else "s")) for s in at.subheader)


def _run_face_png(root: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.load(root / "fixture" / "images.npy", mmap_mode="r")[7]).save(buf, "PNG")
    return buf.getvalue()


def test_similar_from_a_row_and_from_an_upload(runs_root):
    from PIL import Image

    at = goto(start(), "similar")
    at.number_input(key="sim_row").set_value(5).run()
    ok(at)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 16
    assert 5 not in set(at.dataframe[0].value["row"])
    at.button_group(key="sim_src").set_value("upload").run()
    ok(at)
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(buf, "PNG")
    at.file_uploader(key="sim_upload").upload("face.png", buf.getvalue(), "image/png").run()
    ok(at)
    assert len(at.dataframe[0].value) == 16
    assert any("No close match" in w.value for w in at.warning)  # noise is far from every face
    at.file_uploader(key="sim_upload").upload("face.png", _run_face_png(runs_root), "image/png").run()
    ok(at)
    assert not any("No close match" in w.value for w in at.warning)  # one of the run's own faces is not
    at.file_uploader(key="sim_upload").upload("evil.png", b"<script>alert(1)</script>", "image/png").run()
    assert at.error and "not a readable image" in at.error[0].value
    assert not at.exception


def test_find_similar_from_a_gallery(runs_root):
    at = goto(start(), "mislabels")
    key = next(b.key for b in at.button if b.key and b.key.startswith("mlsim_"))
    at.button(key=key).click().run()
    at.switch_page("views/similar.py").run()  # AppTest keeps its own page; st.switch_page moved the real one
    ok(at)
    item = key.split("_", 1)[1]
    assert any(item in c.value.replace("\\", "") for c in at.caption)  # the query is that image
    ids = set(at.dataframe[0].value["id"])
    assert item not in ids and len(ids) == 16


def test_sidebar_opens_the_training_form(runs_root):
    at = start()
    at.button(key="open_train").click().run()
    ok(at)
    assert any(b.key == "FormSubmitter:train_form_sb-Start training" for b in at.button)


def test_train_start_and_cancel(runs_root):
    at = goto(start(), "train")
    at.selectbox(key="page_spec").set_value("synthetic:600")
    at.number_input(key="page_epochs").set_value(1)
    at.button(key="FormSubmitter:train_form_page-Start training").click().run()
    ok(at)
    job = jobs.current(runs_root)
    assert job is not None and job.active and job.kind == "train"
    argv = job.steps[0]
    cfg = RunConfig.load(argv[argv.index("--config") + 1])   # the form trains with a saved config
    assert cfg.data.spec == "synthetic:600" and cfg.train.epochs == 1 and cfg.loss.name == "sgm"
    assert any(b.key == "cancel_f" for b in at.button)
    at.button(key="cancel_f").click().run()
    assert not at.exception
    job = jobs.wait(runs_root, timeout=60)
    assert job.state == "cancelled"
    at.run()
    ok(at)
    assert any("cancelled" in i.value for i in at.info)


def test_train_form_refuses_paths_outside_the_data_roots(runs_root, tmp_path):
    at = goto(start(), "train")
    at.text_input(key="page_other").input(f"folder:{tmp_path.parent}")
    at.button(key="FormSubmitter:train_form_page-Start training").click().run()
    assert at.error and "not under a configured data root" in at.error[0].value
    assert jobs.current(runs_root) is None


def test_train_form_takes_a_bare_folder_or_csv_path_keeping_its_case(runs_root, tmp_path):
    from explorer.train_form import check_spec

    data_root = (tmp_path / "data").resolve()
    faces = data_root / "My Faces"
    (faces / "Happy").mkdir(parents=True)
    (data_root / "List.CSV").write_text("path,label\n")
    assert check_spec(str(faces), [data_root]) == f"folder:{faces}"
    assert check_spec("My Faces", [data_root]) == f"folder:{faces}"  # relative to the data root
    assert check_spec(str(data_root / "List.CSV"), [data_root]) == f"csv:{data_root / 'List.CSV'}"
    at = goto(start(), "train")
    at.text_input(key="page_other").input(str(data_root / "Nowhere" / "Faces"))
    at.button(key="FormSubmitter:train_form_page-Start training").click().run()
    assert at.error and "Nowhere" in at.error[0].value.replace("\\", "") and "does not exist" in at.error[0].value
    at.text_input(key="page_other").input("Faces")
    at.button(key="FormSubmitter:train_form_page-Start training").click().run()
    assert at.error and "folder:/data/faces" in at.error[0].value.replace("\\", "")
    assert jobs.current(runs_root) is None


def test_a_broken_run_shows_one_line_and_the_app_goes_on(runs_root):
    bad = runs_root / "zz-broken"
    shutil.copytree(runs_root / "fixture", bad)
    emb = bad / "embeddings.npy"
    emb.write_bytes(emb.read_bytes()[:100])  # truncated after the manifest was written
    os.utime(bad / "manifest.json")
    at = start()
    picker = at.selectbox(key="run_picker")
    assert "zz-broken (unreadable)" in picker.options
    picker.set_value(str(bad)).run()
    assert not at.exception
    msg = at.error[0].value.replace("\\", "") if at.error else ""
    assert "embeddings.npy" in msg and "\n" not in msg
    goto_err = at.switch_page("views/map.py").run()
    assert not goto_err.exception and at.error
    at.selectbox(key="run_picker").set_value(str(runs_root / "fixture")).run()
    ok(at)


def test_first_launch_builds_the_demo_in_the_background(tmp_path, monkeypatch):
    root = tmp_path / "empty-runs"
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(root))
    monkeypatch.setenv("SUBCLASS_EXPLORER_DEMO_SPEC", "synthetic:600")
    monkeypatch.setenv("SUBCLASS_EXPLORER_DEMO_EPOCHS", "1")
    at = start()
    job = jobs.current(root)
    assert job is not None and job.kind == "demo" and job.active
    # a quick preview first (optional; the full demo behind it runs niced), then the full demo
    assert job.step_names == ["train", "train", "analyze"] and job.run_dir == str(root / "demo")
    assert job.preview == str(root / "demo-preview") and job.optional == [0] and job.nice_from == 1
    first = job.steps[0]
    assert first[first.index("--out") + 1] == job.preview and "--analyze" in first
    assert first[first.index("--maps") + 1] == "tsne,pca"          # no UMAP compile in the first minute
    assert any("quick preview" in str(m.value) for m in at.markdown)
    assert at.title[0].value == "Subclass Explorer" and at.get("progress")
    # a reload (new session) does not start a second job
    start()
    assert jobs.current(root).id == job.id
    jobs.cancel(root)
    assert jobs.wait(root, timeout=60).state == "cancelled"
    # after a cancel the page offers to build it again instead of restarting by itself
    at = start()
    assert jobs.current(root).state == "cancelled"
    assert any(b.label == "Build the demo" for b in at.button)


def test_the_preview_shows_while_the_demo_builds_and_the_demo_replaces_it(tmp_path, monkeypatch):
    """While the demo job runs, the app opens its preview run with a banner saying so; when the job
    is done the session moves to the full demo by itself."""
    root = tmp_path / "runs"
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(root))
    preview = fake_run(root / "demo-preview", 120, seed=2)
    demo = fake_run(root / "demo", 120, seed=3)     # stands for the full demo being written
    gate = tmp_path / "go"
    jobs.start(root, "demo", demo, [py_wait(gate)], title="the synthetic demo", preview=preview, nice_from=0)
    try:
        at = start()
        assert at.session_state["run_path"] == str(preview)
        assert at.title[0].value.replace("\\", "") == "Run demo-preview"
        assert any("quick preview of the demo" in str(i.value) for i in at.info)
        assert str(demo) not in at.selectbox(key="run_picker").options   # not usable while it builds
        gate.write_text("go")
        assert jobs.wait(root, timeout=30).state == "done"
        at.run()
        ok(at)
        assert at.session_state["run_path"] == str(demo) and at.title[0].value == "Run demo"
        assert not any("quick preview of the demo" in str(i.value) for i in at.info)
    finally:
        jobs.cancel(root, force=True)
        jobs.wait(root, timeout=30)


def test_a_failed_preview_leaves_the_welcome_page_waiting_for_the_full_demo(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(root))
    gate = tmp_path / "go"
    import sys

    jobs.start(root, "demo", root / "demo", [[sys.executable, "-c", "import sys; sys.exit(2)"], py_wait(gate)],
               title="the synthetic demo", preview=root / "demo-preview", optional=(0,), nice_from=1)
    try:
        for _ in range(100):                      # the optional step has failed, the next one runs
            if jobs.running_step(root, jobs.current(root)) == 1:
                break
            time.sleep(0.05)
        at = start(timeout=20)                    # one rerun at most, no loop
        at.run()
        ok(at)
        assert at.title[0].value == "Subclass Explorer" and jobs.current(root).active
        assert any("quick preview" in str(m.value) for m in at.markdown)
    finally:
        gate.write_text("go")
        jobs.cancel(root, force=True)
        jobs.wait(root, timeout=30)


def py_wait(gate: Path) -> list[str]:
    import sys

    return [sys.executable, "-c", f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)"]


@pytest.mark.slow
def test_first_launch_opens_the_demo_when_done(tmp_path, monkeypatch):
    root = tmp_path / "fresh"
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(root))
    monkeypatch.setenv("SUBCLASS_EXPLORER_DEMO_SPEC", "synthetic:600")
    monkeypatch.setenv("SUBCLASS_EXPLORER_DEMO_EPOCHS", "1")
    monkeypatch.setenv("SUBCLASS_EXPLORER_DEMO_PREVIEW", "synthetic:300")
    at = start()
    job = jobs.wait(root, timeout=600)
    assert job.state == "done", job.message
    at.run()
    ok(at)
    assert at.title[0].value == "Run demo"


# ------------------------------------------------------------------------------- speed at 35k
@pytest.fixture(scope="module")
def big_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    fake_run(root / "big", 35_000, seed=1)
    return root


def test_map_speed_at_35k(big_root, monkeypatch):
    """Issue 4: once cached, a new session's first script run of the map < 1 s and a rerun after a
    colouring or class change < 300 ms (server side, AppTest timing). Medians / best of two, so a
    busy shared machine does not make it flaky; the printed figures go to docs/RESULTS.md."""
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(big_root))
    warm = goto(start(), "map")  # fills the caches (as a first visitor would)
    for i in range(len(warm.selectbox(key="map_colour").options)):
        warm.selectbox(key="map_colour").select_index(i).run()
    firsts = []
    for _ in range(2):
        at = AppTest.from_file(str(APP), default_timeout=60)  # a new session that opens the map directly
        at.switch_page("views/map.py")
        t0 = time.perf_counter()
        at.run()
        firsts.append(time.perf_counter() - t0)
        ok(at)
        assert len(at.get("plotly_chart")) == 1
    colour, klass = [], []
    for i in (1, 0, 2, 0, 4, 0):
        t0 = time.perf_counter()
        at.selectbox(key="map_colour").select_index(i).run()
        colour.append(time.perf_counter() - t0)
    for i in (1, 3, 0, 5, 0):
        t0 = time.perf_counter()
        at.selectbox(key="map_class").select_index(i).run()
        klass.append(time.perf_counter() - t0)
    ok(at)
    print(f"\n35k map: first script run {[round(x, 3) for x in firsts]} s, "
          f"colour reruns {[round(x, 3) for x in colour]}, class reruns {[round(x, 3) for x in klass]}")
    assert min(firsts) < 1.0
    assert float(np.median(colour)) < 0.3 and float(np.median(klass)) < 0.3


_STORAGES: list = []


@pytest.fixture
def media(monkeypatch):
    """Keep AppTest's in-memory media storage reachable after a run, to read download bytes."""
    from streamlit.runtime import memory_media_file_storage as mm

    orig = mm.MemoryMediaFileStorage.__init__

    def init(self, *a, **k):
        orig(self, *a, **k)
        _STORAGES.append(self)

    monkeypatch.setattr(mm.MemoryMediaFileStorage, "__init__", init)
    yield _STORAGES
    _STORAGES.clear()


def _download(at: AppTest, key: str) -> bytes:
    """The bytes behind a download button, as the browser would get them."""
    btn = next(e for e in at.get("download_button") if key in e.proto.id)
    name = btn.proto.url.rsplit("/", 1)[-1]
    return _STORAGES[-1].get_file(name).content


def test_tags_colour_filter_list_and_export_a_group(runs_root, media):
    import csv

    store = ReviewStore(runs_root / "fixture")
    ids = [f for f in __import__("pandas").read_parquet(runs_root / "fixture" / "items.parquet")["id"]]
    store.tag(ids[:7], "glasses")
    store.tag(ids[5:9], "baby <b>")
    store.name_subclass(0, "round faces")
    at = goto(start(), "map")
    at.selectbox(key="map_colour").set_value("tag").run()
    ok(at)
    assert at.selectbox(key="map_tag_filter").options[1:] == ["glasses (7)", "baby <b> (4)"]
    at.selectbox(key="map_tag_filter").set_value("glasses").run()
    ok(at)
    assert any("Tag “glasses”: 7 images" in s.value.replace("\\", "") for s in at.subheader)
    # the tag list: counts, its images, remove (and undo), export with tags and sub-class names
    goto(at, "tags")
    assert list(at.dataframe[0].value["images"]) == [7, 4]
    at.selectbox(key="tags_pick").set_value("baby <b>").run()
    ok(at)
    assert any("Tag “baby <b>”: 4 images" in s.value.replace("\\", "") for s in at.subheader)
    data_csv = _download(at, "tags_export_csv").decode()
    rec = list(csv.DictReader(io.StringIO(data_csv)))
    assert [r["id"] for r in rec] == ids[5:9]
    assert {r["tags"] for r in rec} == {"baby <b>;glasses", "baby <b>"}
    assert all(r["subclass_name"] for r in rec) and "subclass" in rec[0]
    assert any("tags_export_ls" in e.proto.id for e in at.get("download_button"))  # built when clicked
    at.button(key="tags_remove").click().run()
    ok(at)
    assert set(store.tags()["tag"]) == {"glasses"}
    at.button(key="tags_undo").click().run()
    ok(at)
    assert len(store.tags()) == 11


def test_queue_cut_off_warning_scores_and_live_precision(tmp_path, monkeypatch, media):
    import pandas as pd

    root = tmp_path / "runs"
    run = fake_run(root / "fake", 600, seed=3)
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(root))
    m = pd.read_parquet(run / "analysis" / "mislabels.parquet")
    n_likely = int(((m["knn_disagree"] > 0.5) & (m["p_given_oos"] < 0.5)).sum())
    at = goto(start(), "mislabels")
    assert not at.warning  # kNN accuracy 0.8: no weak-model warning
    assert at.toggle(key="ml_likely").value and f"Only the {n_likely:,} likely wrong" in at.toggle(key="ml_likely").label
    assert f"Reviewed 0 of {n_likely:,} candidates" in at.get("progress")[0].proto.text
    keys = [b.key.split("_", 1)[1] for b in at.button if b.key and b.key.startswith("keep_")]
    # review: flag the first 8, keep the next 2 -> 8 of 10 confirmed wrong, Wilson 49 % to 94 %
    for item in keys[:8]:
        at.button(key=f"flag_{item}").click().run()
    at.button(key=f"keep_{keys[8]}").click().run()
    at.button(key=f"keep_{keys[9]}").click().run()
    ok(at)
    assert f"Reviewed 10 of {n_likely:,}" in at.get("progress")[0].proto.text
    assert at.metric[0].value == "80%" and "49%–94%" in texts(at)
    assert at.metric[1].value.startswith("≈ ")
    at.toggle(key="ml_likely").set_value(False).run()
    ok(at)
    assert "Reviewed 10 of 600 candidates" in at.get("progress")[0].proto.text
    # the export's scores are shares on [0, 1]
    tasks = json.loads(_download(at, "ml_ls"))
    assert len(tasks) == 8 and all(0.0 <= t["predictions"][0]["score"] <= 1.0 for t in tasks)
    # a weak model gets the warning, with its threshold
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test"]["knn_accuracy"] = 0.51
    from pipeline.runs import open_run

    r = open_run(run)
    r.put_json("metrics.json", metrics)
    r.save_manifest()
    at = goto(start(), "mislabels")
    assert at.warning and "51%, below 60%" in at.warning[0].value


def test_group_gallery_pages_spreads_and_acts_on_one_image(runs_root):
    at = goto(start(), "subclasses")
    key = next(t.key for t in at.get("segmented_control") if t.key and t.key.startswith("subgal_"))
    at.button_group(key=key).set_value("spread").run()
    ok(at)
    assert any("distinct of" in c.value for c in at.caption)
    # a confusion cell: its images captioned by label, each one reachable with its actions
    goto(at, "confusion")
    at.selectbox(key="cm_given").select_index(1).run()
    at.selectbox(key="cm_pred").select_index(2).run()
    ok(at)
    at.selectbox(key="cm_gal_look").select_index(0).run()
    ok(at)
    row = at.selectbox(key="cm_gal_look").value
    flag = next(b for b in at.button if b.key and b.key.startswith("cm_gal_img_flag_"))
    item = flag.key[len("cm_gal_img_flag_"):]
    flag.click().run()
    ok(at)
    store = ReviewStore(runs_root / "fixture")
    assert store.decision_map()[item] == ("flag", None)
    at.text_input(key=f"cm_gal_img_tag_{item}").input("blurry").run()
    ok(at)
    assert set(store.tags()["tag"]) == {"blurry"}
    assert any("flagged 1 image" in t.value for t in at.text), [t.value for t in at.text]
    assert item == str(__import__("pandas").read_parquet(runs_root / "fixture" / "items.parquet")["id"][row])


def test_an_interrupted_run_can_be_moved_to_the_trash(runs_root):
    from pipeline.runs import open_run

    stopped = fake_run(runs_root / "stopped", 60, seed=4, analysed=False)
    r = open_run(stopped)
    r.save_manifest(status="interrupted")
    at = start()
    at.selectbox(key="run_picker").set_value(str(stopped)).run()
    assert not at.exception
    assert at.warning and "stopped before it finished" in at.warning[0].value
    at.button(key="run_delete").click().run()
    assert not at.exception
    at.button(key="run_delete_yes").click().run()
    ok(at)
    assert not stopped.exists()
    moved = list((runs_root / ".trash").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("stopped-") and (moved[0] / "manifest.json").exists()
    assert at.session_state["run_path"] == str(runs_root / "fixture")  # the app goes on with a usable run
    assert "stopped" not in [o for o in at.selectbox(key="run_picker").options]


def test_a_finished_job_offers_to_open_its_run(runs_root):
    import sys

    second = runs_root / "second"
    shutil.copytree(runs_root / "fixture", second)
    at = start()
    jobs.start(runs_root, "train", second, [[sys.executable, "-c", "print('done')"]], title="a quick job")
    assert jobs.wait(runs_root, timeout=30).state == "done"
    at.session_state["run_path"] = str(runs_root / "fixture")
    at.run()
    ok(at)
    at.button(key="open_job_run_c").click().run()
    ok(at)
    assert at.session_state["run_path"] == str(second)


@pytest.fixture
def fake_root(tmp_path, monkeypatch) -> Path:
    """A runs root with one small complete run written straight through pipeline.runs (no training)."""
    root = tmp_path / "runs"
    fake_run(root / "fixture", 120, seed=2)
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(root))
    monkeypatch.setenv("SUBCLASS_EXPLORER_DATA_ROOTS", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    return root


def test_an_interrupted_run_resumes_with_its_own_options_in_its_own_folder(fake_root):
    from pipeline.runs import open_run

    stopped = fake_run(fake_root / "stopped", 60, seed=4, analysed=False)
    open_run(stopped).save_manifest(status="interrupted")
    at = goto(start(), "train")
    assert any(b.key == "resume_run_stopped" for b in at.button)   # the Train page lists it with Resume
    at.selectbox(key="run_picker").set_value(str(stopped)).run()
    goto(at, "overview")
    assert "stopped before it finished" in at.warning[0].value
    at.button(key="run_resume").click().run()
    ok(at)
    job = jobs.current(fake_root)
    try:
        assert job is not None and job.kind == "resume" and job.run_dir == str(stopped)
        train, analyze = job.steps
        assert train[3] == "train" and "--resume" in train
        # exactly the run's saved options (its manifest), continued in its own folder
        assert train[train.index("--config") + 1] == str(stopped.resolve() / "manifest.json")
        assert train[train.index("--out") + 1] == str(stopped.resolve())
        assert analyze[3:] == ["analyze", str(stopped.resolve())]
        assert "being built by the current job" in texts(at).replace("\\", "")
    finally:
        jobs.cancel(fake_root)
        jobs.wait(fake_root, timeout=60)


def test_the_run_name_is_checked_and_names_the_run_folder(fake_root):
    at = goto(start(), "train")
    submit = "FormSubmitter:train_form_page-Start training"
    for name, needle in (("   ", "run name is empty"), ("a/b", "cannot contain /"), ("..", "cannot start with a dot"),
                         ("fixture", "already exists"), ("<b>x</b>", "cannot contain /")):
        at.text_input(key="page_name").input(name)
        at.button(key=submit).click().run()
        assert not at.exception and len(at.error) == 1, name
        msg = at.error[0].value
        assert needle in msg.replace("\\", "") and "\n" not in msg, (name, msg)
        assert "<b>" not in msg    # markdown-escaped, never HTML
        assert jobs.current(fake_root) is None
    at.selectbox(key="page_spec").set_value("synthetic:600")
    at.text_input(key="page_name").input("my first run")
    at.button(key=submit).click().run()
    ok(at)
    job = jobs.current(fake_root)
    try:
        assert job is not None and job.run_dir == str(fake_root / "my first run")
        assert job.steps[0][job.steps[0].index("--out") + 1] == str(fake_root / "my first run")
    finally:
        jobs.cancel(fake_root)
        jobs.wait(fake_root, timeout=60)


def test_the_job_bar_goes_on_through_the_analysis_stages(fake_root):
    import sys

    from pipeline import progress
    from pipeline.progress import Event

    run = fake_root / "training"
    run.mkdir()
    wait = [sys.executable, "-c", "import time; time.sleep(60)"]
    job = jobs.start(fake_root, "train", run, [wait + ["pipeline", "train"], wait + ["pipeline", "analyze"]], title="t")
    try:
        t = job.started
        f = run / "progress.jsonl"
        for k, (e, s) in enumerate(((1, 5), (1, 10), (2, 5))):      # (times just after the job's start)
            progress.write(f, Event("step", t + 0.01 * (k + 1), epoch=e, epochs=2, step=s, steps=10, loss=0.5,
                                    images=600))
        at = start()
        bar = at.get("progress")[0].proto
        assert "training: epoch 2/2, step 5/10" in bar.text and "ETA" in bar.text and bar.value < 100, bar.text
        plan = progress.analysis_stages()
        progress.write(f, Event("done", t + 0.05))
        for i in (1, 2, 3):
            progress.write(f, Event("stage", t + 0.05 + 0.01 * i, stage=plan[i - 1], stage_index=i, stages=len(plan),
                                    plan=plan, images=600))
        at.run()
        bar = at.get("progress")[0].proto
        assert f"analysing: outliers and duplicates (3/{len(plan)})" in bar.text and "ETA" in bar.text
        assert bar.value < 100
    finally:
        jobs.cancel(fake_root)
        jobs.wait(fake_root, timeout=60)
