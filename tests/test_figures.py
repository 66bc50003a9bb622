"""explorer.figures: pure Plotly builders (no Streamlit)."""
from __future__ import annotations

import json

import numpy as np
import plotly.io as pio
import pytest
from hypothesis import given, settings, strategies as st

from explorer import figures


def test_map_sends_lean_traces_one_colour_each():
    n = 35_000
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    labels = rng.integers(0, 8, n)
    col = figures.categorical(labels, names=[f"c{i}" for i in range(8)], title="label")
    mf = figures.map_figure(xy, col)
    assert len(mf.fig.data) == 8 and all(t.type == "scattergl" for t in mf.fig.data)
    spec = json.loads(pio.to_json(mf.fig, validate=False))
    for k, tr in enumerate(spec["data"]):
        # numpy arrays go out as base64 typed arrays; one colour per trace, no per-point strings
        assert tr["x"]["dtype"] == "f4" and isinstance(tr["marker"]["color"], str)
        assert "customdata" not in tr and "text" not in tr and "hovertext" not in tr
        np.testing.assert_array_equal(np.asarray(mf.fig.data[k].x), xy[mf.trace_rows[k], 0])
        assert (labels[mf.trace_rows[k]] == k).all()
    assert sorted(np.concatenate(mf.trace_rows).tolist()) == list(range(n))
    size = len(json.dumps(spec, separators=(",", ":")))
    assert size < 400_000, size  # 35k points: x, y float32 in base64 (~0.37 MB), nothing per point else


def test_continuous_and_many_categories_are_one_trace():
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(500, 2)).astype(np.float32)
    mf = figures.map_figure(xy, figures.continuous(rng.random(500), title="score"))
    assert len(mf.fig.data) == 1 and mf.fig.data[0].marker.colorbar.title.text == "score"
    assert mf.trace_rows[0].tolist() == list(range(500))
    mf = figures.map_figure(xy, figures.categorical(np.arange(500) % 100, title="many"))
    assert len(mf.fig.data) == 1 and mf.fig.data[0].marker.colorbar.showticklabels is False


def test_user_strings_are_escaped_for_plotly():
    col = figures.categorical(np.array([0, 1]), names=['<a href="javascript:x">hi</a>', "ok"], title="<b>t</b>")
    fig = figures.map_figure(np.zeros((2, 2), np.float32), col).fig
    assert "<" not in fig.data[0].name and "&lt;a href" in fig.data[0].name
    assert "<b>" not in fig.layout.legend.title.text
    cm = figures.confusion_figure(np.eye(2, dtype=int), ["<i>x</i>", "y"])
    assert "<i>" not in json.dumps(cm.layout.xaxis.ticktext)


def test_categorical_codes_and_orders():
    c = figures.categorical(np.array(["b", "a", "b", None], dtype=object), title="t")
    assert c.names == ("(none)", "a", "b") or c.names == ("a", "b", "(none)")
    assert c.codes.dtype == np.uint8
    assert [c.names[k] for k in c.codes] == ["b", "a", "b", "(none)"]
    c = figures.categorical(np.array(["flag", "keep"]), title="t", order=["not reviewed", "keep", "flag"])
    assert c.names[:3] == ("not reviewed", "keep", "flag") and list(c.codes) == [2, 1]
    big = figures.categorical(np.arange(300), title="many")
    assert big.codes.dtype == np.uint16 and len(big.names) == 300
    with pytest.raises(ValueError):
        figures.categorical(np.array([0, 5]), names=["a", "b"], title="t")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=False, width=32), min_size=1, max_size=50))
def test_continuous_levels_are_monotone(vals):
    v = np.asarray(vals, dtype=np.float64)
    c = figures.continuous(v, title="s")
    assert c.codes.dtype == np.uint8
    fin = np.isfinite(v)
    order = np.argsort(v[fin], kind="stable")
    assert np.all(np.diff(c.codes[fin][order].astype(int)) >= 0)


def test_highlight_dims_the_rest():
    col = figures.categorical(np.array([0, 1] * 5), names=["a", "b"], title="t")
    mf = figures.map_figure(np.zeros((10, 2), np.float32), col, highlight=np.array([2, 5]))
    # row 2 is point 1 of trace "a" (rows 0, 2, 4, ...), row 5 is point 2 of trace "b" (rows 1, 3, 5, ...)
    assert list(mf.fig.data[0].selectedpoints) == [1] and list(mf.fig.data[1].selectedpoints) == [2]
    assert mf.fig.data[0].unselected.marker.opacity < 0.5


def test_selected_rows_from_events():
    trace_rows = [np.array([0, 2, 4]), np.array([1, 3])]
    ev = {"points": [{"curve_number": 0, "point_index": 2}, {"curve_number": 1, "point_index": 0},
                     {"curve_number": 0, "point_index": 2}, {"curve_number": 1, "point_index": 9},
                     {"curve_number": 5, "point_index": 0}], "point_indices": [2, 0, 9, 0]}
    assert figures.selected_rows(ev, trace_rows).tolist() == [1, 4]
    assert figures.selected_rows(None, trace_rows).size == 0
    assert figures.selected_rows({}, trace_rows).size == 0


def test_confusion_cell_and_figure():
    m = np.array([[5, 1], [2, 7]])
    fig = figures.confusion_figure(m, ["a", "b"], highlight=(1, 0))
    assert fig.data[0].type == "heatmap"
    assert np.allclose(np.asarray(fig.data[0].z)[1], [2 / 9, 7 / 9])
    assert len(fig.layout.shapes) == 1
    assert figures.confusion_cell({"points": [{"x": 1, "y": 0, "z": 0.1}]}, 2) == (0, 1)
    assert figures.confusion_cell({"points": [{"curve_number": 1, "point_index": 2, "x": 0, "y": 1}]}, 2) == (1, 0)
    assert fig.data[1].type == "scatter" and len(fig.data[1].x) == 4
    assert figures.confusion_cell({"points": [{"x": 5, "y": 0}]}, 2) is None
    assert figures.confusion_cell(None, 2) is None


def test_training_curve_and_tables():
    ev = [{"event": "start"}, {"event": "step", "step": 1, "loss": 1.0, "level": 1},
          {"event": "step", "step": 2, "loss": 0.5, "level": 1}, {"event": "epoch", "loss": 0.7, "level": 1},
          {"event": "step", "step": 1, "loss": 0.4, "level": 2}, {"event": "done"}]
    fig = figures.training_curve(ev)
    assert list(fig.data[0].x) == [1, 2, 3]  # a restarted count continues the step axis
    tr = [{"event": "step", "epoch": e, "epochs": 2, "step": s, "steps": 3, "loss": 1.0 / (3 * e + s)}
          for e in (1, 2) for s in (1, 2, 3)] + [{"event": "epoch", "epoch": 2, "epochs": 2, "loss": 0.1}]
    fig = figures.training_curve(tr)
    assert list(fig.data[0].x) == [1, 2, 3, 4, 5, 6] and list(fig.data[1].x) == [6]
    assert figures.training_curve([{"event": "start"}]) is None
    t = figures.metrics_table({"test": {"knn_accuracy": 0.5, "n": 10, "recall_at": {"1": 0.25}},
                               "train": {"knn_accuracy": 0.75}, "cross_domain": {}})
    assert list(t["split"]) == ["test", "train"] and t.loc[0, "kNN acc"] == 50.0 and t.loc[0, "R@1"] == 25.0
    assert figures.bic_figure({"a": [[1, 3.0], [2, 2.0]]}).data[0].name == "a"
    assert figures.bic_figure({}) is None


def test_legend_names_are_cut_before_escaping():
    from explorer import figures as F

    col = F.categorical(np.array(["<b>" * 20, "plain"]), title="t")
    fig = F.map_figure(np.zeros((2, 2), np.float32), col).fig
    names = [t.name for t in fig.data]
    assert all(not n.endswith(("&lt", "&l", "&", "&lt;b", "&gt")) for n in names), names
    assert any(n.endswith("…") and n.startswith("&lt;b&gt;") for n in names)
