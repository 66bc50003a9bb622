"""explorer.figures: pure Plotly builders (no Streamlit)."""
from __future__ import annotations

import json

import numpy as np
import plotly.io as pio
import pytest
from hypothesis import given, settings, strategies as st

from explorer import figures


def test_map_is_one_lean_trace_in_row_order():
    n = 35_000
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    col = figures.categorical(rng.integers(0, 8, n), names=[f"c{i}" for i in range(8)], title="label")
    fig = figures.map_figure(xy, col)
    assert len(fig.data) == 1 and fig.data[0].type == "scattergl"
    spec = json.loads(pio.to_json(fig, validate=False))
    tr = spec["data"][0]
    # numpy arrays go out as base64 typed arrays, not JSON number lists
    assert tr["x"]["dtype"] == "f4" and tr["marker"]["color"]["dtype"] == "u1"
    assert "customdata" not in tr and "text" not in tr and "hovertext" not in tr
    size = len(json.dumps(spec, separators=(",", ":")))
    assert size < 450_000, size  # 35k points: ~0.43 MB (x, y float32 + u1 colours, base64)
    np.testing.assert_array_equal(np.asarray(fig.data[0].x), xy[:, 0])


def test_user_strings_are_escaped_for_plotly():
    col = figures.categorical(np.array([0, 1]), names=['<a href="javascript:x">hi</a>', "ok"], title="<b>t</b>")
    fig = figures.map_figure(np.zeros((2, 2), np.float32), col)
    bar = fig.data[0].marker.colorbar
    assert all("<" not in t for t in bar.ticktext)
    assert "&lt;a href" in bar.ticktext[0]
    assert "<b>" not in bar.title.text
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
    fig = figures.map_figure(np.zeros((300, 2), np.float32), big)
    assert fig.data[0].marker.colorbar.showticklabels is False
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
    col = figures.categorical(np.zeros(10, int), names=["a"], title="t")
    fig = figures.map_figure(np.zeros((10, 2), np.float32), col, highlight=np.array([2, 5]))
    assert list(fig.data[0].selectedpoints) == [2, 5]
    assert fig.data[0].unselected.marker.opacity < 0.5


def test_selected_rows_from_events():
    ev = {"points": [{"curve_number": 0, "point_index": 7}, {"curve_number": 0, "point_index": 3},
                     {"curve_number": 1, "point_index": 1}, {"curve_number": 0, "point_index": 7},
                     {"curve_number": 0, "point_index": 99}], "point_indices": [7, 3, 1, 99]}
    assert figures.selected_rows(ev, 50).tolist() == [3, 7]
    assert figures.selected_rows({"points": [], "point_indices": [4, 2]}, 50).tolist() == [2, 4]
    assert figures.selected_rows(None, 5).size == 0
    assert figures.selected_rows({}, 5).size == 0


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
