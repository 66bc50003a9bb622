"""explorer.review: the only writer of <run>/review.sqlite."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from explorer import review
from explorer.review import ReviewError, ReviewStore


@pytest.fixture
def store(tmp_path):
    (tmp_path / "run").mkdir()
    return ReviewStore(tmp_path / "run")


def items_frame(n=6):
    return pd.DataFrame({
        "id": [f"img{i}" for i in range(n)],
        "path": [f"/data/{i}.png" for i in range(n)],
        "source": ["synthetic"] * n,
        "split": ["train"] * n,
        "label": [i % 2 for i in range(n)],
        "label_name": ["happy" if i % 2 else "=cmd()" for i in range(n)],
    })


def test_reads_on_a_fresh_run_create_nothing(store):
    assert store.decisions().empty and store.tags().empty
    assert store.subclass_names() == {}
    assert store.counts()["flag"] == 0
    assert not store.path.exists()


def test_wal_mode_and_decisions_round_trip(store):
    assert store.decide(["img1", "img2"], "flag", source="queue") == 2
    store.decide("img3", "relabel", proposed_label="  happy \n")
    store.decide("img1", "keep")
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    d = store.decision_map()
    assert d == {"img1": ("keep", None), "img2": ("flag", None), "img3": ("relabel", "happy")}
    assert store.counts() == {"keep": 1, "flag": 1, "relabel": 1, "tagged": 0}
    assert store.undecide("img2") == 1
    assert "img2" not in store.decision_map()
    actions = [e["action"] for e in store.log()]
    assert actions == ["undecide", "decide", "decide", "decide"]


def test_bad_actions_are_refused_and_leave_nothing(store):
    with pytest.raises(ReviewError):
        store.decide("img1", "delete")
    with pytest.raises(ReviewError):
        store.decide("img1", "relabel", proposed_label="   ")
    with pytest.raises(ReviewError):
        store.decide([], "flag")
    with pytest.raises(ReviewError):
        store.tag("img1", "x" * 200)
    assert store.decisions().empty


def test_an_action_is_one_transaction(store, monkeypatch):
    store.flag("img0")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    # The log line is written last inside the action's transaction: failing there must roll back
    # the decisions written before it.
    monkeypatch.setattr(review.json, "dumps", boom)
    with pytest.raises(RuntimeError):
        store.flag(["img1", "img2"])
    monkeypatch.undo()
    assert set(store.decision_map()) == {"img0"}


def test_flag_and_tag_keeps_a_proposed_label(store):
    store.decide("a", "relabel", proposed_label="sad")
    store.flag_and_tag(["a", "b"], flag=True, tag="glasses", source="map")
    assert store.decision_map() == {"a": ("relabel", "sad"), "b": ("flag", None)}
    assert sorted(store.tags()["item_id"]) == ["a", "b"]
    assert store.tag_names() == ["glasses"]
    store.untag("a", "glasses")
    assert list(store.tags()["item_id"]) == ["b"]
    with pytest.raises(ReviewError):
        store.flag_and_tag(["a"], flag=False, tag="")


def test_subclass_names_rename_and_clear(store):
    store.name_subclass(3, "babies")
    store.name_subclass(3, "babies and toddlers")
    store.name_subclass(5, "<b>glasses</b>")
    assert store.subclass_names() == {3: "babies and toddlers", 5: "<b>glasses</b>"}
    store.name_subclass(3, "")
    assert store.subclass_names() == {5: "<b>glasses</b>"}
    store.name_subclass(5, "glasses", anchor="img7")
    assert store.subclass_anchors() == {5: "img7"}


def test_an_old_database_gains_the_anchor_column(store):
    store.run_path.mkdir(exist_ok=True)
    conn = sqlite3.connect(store.path)
    conn.execute("CREATE TABLE subclass_names (subclass_id INTEGER PRIMARY KEY, name TEXT NOT NULL, updated REAL NOT NULL)")
    conn.execute("INSERT INTO subclass_names VALUES (1, 'babies', 0)")
    conn.commit()
    conn.close()
    assert store.subclass_names() == {1: "babies"}
    store.name_subclass(2, "glasses", anchor="x")
    assert store.subclass_names() == {1: "babies", 2: "glasses"}
    assert store.subclass_anchors() == {1: None, 2: "x"}


def test_concurrent_writers_lose_nothing(store):
    store.flag("warmup")

    def work(k):
        for j in range(15):
            store.tag(f"t{k}-{j}", f"tag{k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.tags()) == 60


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=120))
def test_clean_text_is_one_short_line_or_refused(text):
    try:
        s = review.clean_text(text)
    except ReviewError:
        return
    assert s and len(s) <= review.MAX_TEXT
    assert "\n" not in s and "\r" not in s and s == s.strip()


def test_exports(store):
    items = items_frame()
    mis = pd.DataFrame({"score": [0.1, 0.9, 0.5, 0.2, 0.3, 0.4], "suggested_name": ["happy"] * 6})
    store.decide(["img4", "img1"], "flag")
    store.decide("img2", "relabel", proposed_label="happy")
    store.decide("img3", "keep")
    store.tag(["img1"], "-blurry")
    store.flag("not-in-this-run")
    fl = review.flagged_frame(items, store.decisions(), store.tags(), mis,
                              subclass=np.array([0, 1, 1, 2, 3, 3]), subclass_names={3: "glasses <i>"})
    assert list(fl["subclass_name"]) == ["", "", "glasses <i>"] and list(fl["subclass"]) == [1, 1, 3]
    assert list(fl["id"]) == ["img1", "img2", "img4"]  # item order, keep and unknown ids left out
    assert list(fl["row"]) == [1, 2, 4]
    rows = list(csv.reader(io.StringIO(review.to_csv(fl).decode())))
    assert rows[0] == review.EXPORT_COLUMNS
    rec = dict(zip(rows[0], rows[2]))
    assert rec["given_label"] == "'=cmd()" and rec["proposed_label"] == "happy"
    assert dict(zip(rows[0], rows[1]))["tags"] == "'-blurry"
    tasks = json.loads(review.to_label_studio(fl, image_ref=lambda row, path: f"/img/{row}"))
    assert [t["data"]["image"] for t in tasks] == ["/img/1", "/img/2", "/img/4"]
    choice = tasks[1]["predictions"][0]["result"][0]
    assert choice["value"] == {"choices": ["happy"]} and choice["from_name"] == "label"
    cfg = review.label_studio_config(["happy", 'a"<b>'])
    assert "&lt;b&gt;" in cfg and "<b>" not in cfg


def test_export_of_an_empty_store(store):
    fl = review.flagged_frame(items_frame(), store.decisions(), store.tags(), None)
    assert fl.empty
    assert review.to_csv(fl).decode().strip() == ",".join(review.EXPORT_COLUMNS)
    assert json.loads(review.to_label_studio(fl)) == []


def test_undo_puts_back_what_each_action_replaced_and_logs_itself(store):
    store.decide(["img1", "img2"], "keep")
    store.decide("img2", "relabel", proposed_label="happy")
    store.flag_and_tag(["img2", "img3"], flag=True, tag="glasses", source="map")
    store.tag(["img3", "img4"], "glasses")           # img3 had it: only img4 is new
    store.name_subclass(4, "babies")
    assert store.last_undoable()["action"] == "name_subclass"
    assert store.undo()["action"] == "name_subclass" and store.subclass_names() == {}
    store.undo()                                      # the tag: img4 loses it, img3 keeps it
    assert set(store.tags()["item_id"]) == {"img2", "img3"}
    store.undo()                                      # flag_and_tag: img2 back to relabel, img3 to nothing
    assert store.decision_map() == {"img1": ("keep", None), "img2": ("relabel", "happy")}
    assert store.tags().empty
    store.undecide(["img1", "img9"])                  # clearing is an action too, and undoable
    assert "img1" not in store.decision_map()
    store.undo()
    assert store.decision_map()["img1"] == ("keep", None)
    store.undo()
    store.undo()
    assert store.decision_map() == {}
    with pytest.raises(ReviewError, match="nothing to undo"):
        store.undo()
    actions = [e["action"] for e in store.log(limit=100)]
    assert actions.count("undo") == 6 and len(actions) == 12  # nothing deleted from the log
    # the history of one image names every action on it, undone ones marked
    h = store.history("img2")
    assert [e["what"] for e in h][:3] == ["kept 2 images", "proposed “happy” for 1 image",
                                          "flagged and tagged “glasses” 2 images"]
    assert h[0]["undone"] and any(e["action"] == "undo" for e in h)
    assert store.history("img") == []  # a prefix of an id is not that id


def test_an_undo_that_cannot_be_logged_changes_nothing(store, monkeypatch):
    store.decide(["img1", "img2"], "flag")
    store.tag("img1", "x")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(review.json, "dumps", boom)  # the undo's own log line fails, after restoring
    with pytest.raises(RuntimeError):
        store.undo()
    monkeypatch.undo()
    assert len(store.tags()) == 1 and [e["action"] for e in store.log()] == ["tag", "decide"]


def test_group_export_carries_tags_decisions_and_sub_class_names(store):
    items = items_frame()
    store.tag(["img3", "img1"], "glasses")
    store.tag("img1", "baby")
    store.decide("img3", "relabel", proposed_label="happy")
    g = review.group_frame(items, [3, 1, 5], store.decisions(), store.tags(), None,
                           subclass=np.array([0, 1, 1, 2, 3, 3]), subclass_names={1: "round", 2: "=evil()"})
    assert list(g["id"]) == ["img3", "img1", "img5"]  # the group's order
    assert list(g["tags"]) == ["glasses", "baby;glasses", ""]
    assert list(g["decision"]) == ["relabel", "", ""] and g["proposed_label"][0] == "happy"
    assert list(g["subclass_name"]) == ["=evil()", "round", ""]
    rows = list(csv.reader(io.StringIO(review.to_csv(g).decode())))
    assert rows[0] == review.EXPORT_COLUMNS and dict(zip(rows[0], rows[1]))["subclass_name"] == "'=evil()"
    tasks = json.loads(review.to_label_studio(g))
    assert tasks[1]["data"]["subclass_name"] == "round" and tasks[1]["data"]["tags"] == "baby;glasses"
