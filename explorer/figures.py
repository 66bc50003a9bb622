"""Pure Plotly figure builders: arrays and frames in, ``go.Figure`` out. No Streamlit here.

Conventions: N images, C classes. The map is ONE Scattergl trace whose point ``i`` is row ``i``
of the run, so a box or lasso selection's ``point_index`` *is* the row: no per-point
``customdata`` or hover strings go over the wire. Colours travel as small integer codes
(``uint8``/``uint16``) against a stepped colour scale; coordinates as float32. Plotly encodes
numpy arrays as base64 typed arrays, so 35,000 points cost about 0.4 MB, not 3 MB of JSON.

Every user string (class, sub-class or tag names) is HTML-escaped before it reaches Plotly,
whose text renderer understands a few tags (``<a href>``, ``<b>``, ...).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

# 48 distinct colours (Plotly's Dark24 + Light24): categories beyond that repeat colours.
PALETTE = [
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86",
    "#EB663B", "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE",
    "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038",
    "#FD3216", "#00FE35", "#6A76FC", "#FED4C4", "#FE00CE", "#0DF9FF", "#F6F926", "#FF9616",
    "#479B55", "#EEA6FB", "#DC587D", "#D626FF", "#6E899C", "#00B5F7", "#B68E00", "#C9FBE5",
    "#FF0092", "#22FFA7", "#E3EE9E", "#86CE00", "#BC7196", "#7E7DCD", "#FC6955", "#E48F72",
]
CONTINUOUS = "Viridis"
MAX_LEGEND = 40  # more categories than this get no colour-bar labels


def plain(text: object) -> str:
    """A user string made inert for Plotly's text renderer."""
    return html.escape(str(text), quote=False)


def short(text: object, n: int) -> str:
    """``text`` cut to at most ``n`` characters, an ellipsis marking the cut."""
    s = str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


@dataclass(frozen=True)
class Colouring:
    """How the map's points are coloured.

    ``codes``: (N,) uint8/uint16 category codes (``kind="category"``) or uint8 0..255 levels of a
    continuous value (``kind="value"``). ``names``: category names, or for values the
    ``(lo, hi)`` range as strings. ``title``: the colour bar title.
    """
    codes: np.ndarray
    kind: str
    names: tuple[str, ...]
    title: str
    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self):
        if self.kind not in ("category", "value"):
            raise ValueError(f"unknown colouring kind {self.kind!r}")


def categorical(values: Sequence | np.ndarray, *, title: str, names: Sequence[str] | None = None,
                order: Sequence | None = None) -> Colouring:
    """(N,) labels (ints or strings) -> category codes. ``names`` maps code -> display name when
    ``values`` are already codes 0..K-1; otherwise categories are the sorted unique values."""
    v = np.asarray(values)
    if names is not None and np.issubdtype(v.dtype, np.integer):
        codes = v.astype(np.int64)
        cats = tuple(str(n) for n in names)
        if len(codes) and (codes.min() < 0 or codes.max() >= len(cats)):
            raise ValueError("category code outside names")
    else:
        s = pd.Series(v)
        s = s.astype(str).where(s.notna(), "(none)")
        uniq = list(order) if order is not None else sorted(s.unique().tolist(), key=_natural)
        uniq = [str(u) for u in uniq]
        lookup = {u: i for i, u in enumerate(uniq)}
        missing = set(s.unique()) - set(lookup)
        for m in sorted(missing, key=_natural):
            lookup[m] = len(uniq)
            uniq.append(m)
        codes = s.map(lookup).to_numpy(dtype=np.int64)
        cats = tuple(uniq)
    dtype = np.uint8 if len(cats) <= 256 else np.uint16
    return Colouring(codes=codes.astype(dtype), kind="category", names=cats, title=title)


def continuous(values: np.ndarray, *, title: str) -> Colouring:
    """(N,) floats -> 256 levels (NaN shown at the lowest level)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    q = np.clip(np.round((np.nan_to_num(v, nan=lo) - lo) / span * 255.0), 0, 255).astype(np.uint8)
    return Colouring(codes=q, kind="value", names=(f"{lo:.3g}", f"{hi:.3g}"), title=title, lo=lo, hi=hi)


def _natural(s: str):
    try:
        return (0, float(s), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(s))


def _stepped(n: int) -> list:
    """A colour scale with flat steps so code k (on cmin=-0.5, cmax=n-0.5) gets PALETTE[k]."""
    if n <= 1:
        return [[0.0, PALETTE[0]], [1.0, PALETTE[0]]]
    scale = []
    for k in range(n):
        c = PALETTE[k % len(PALETTE)]
        scale.append([k / n, c])
        scale.append([(k + 1) / n, c])
    return scale


@dataclass
class MapFigure:
    """The map figure and, for every trace, the run rows its points are (point i of trace k is
    row ``trace_rows[k][i]``), so a selection maps back to rows without per-point ``customdata``."""
    fig: go.Figure
    trace_rows: list[np.ndarray]


def map_figure(xy: np.ndarray, colouring: Colouring, *, highlight: np.ndarray | None = None,
               point_size: float = 4.0, height: int = 600, title: str = "") -> MapFigure:
    """xy: (N, 2) float coordinates -> the map.

    Categories (up to ``MAX_LEGEND``) become one Scattergl trace each with ONE colour: the browser
    then has no per-point colour to compute (the costly part of drawing 35,000 coloured points),
    and the legend toggles categories. Continuous values, and very many categories, are one trace
    with per-point colour levels and a colour bar. ``highlight``: rows to emphasise (the others are
    dimmed), e.g. a class or a sub-class.
    """
    xy = np.asarray(xy, dtype=np.float32)
    n = len(colouring.names)
    codes = np.asarray(colouring.codes)
    hl = None if highlight is None else np.unique(np.asarray(highlight, dtype=np.int64))
    traces, trace_rows = [], []
    base = dict(mode="markers", hoverlabel=dict(namelength=-1))
    if colouring.kind == "category" and n <= MAX_LEGEND:
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(n + 1))
        for k in range(n):
            rows = order[bounds[k]:bounds[k + 1]]
            if rows.size == 0:
                continue
            name = plain(short(colouring.names[k], 40))  # cut first: cutting after escaping left "&lt"
            tr = go.Scattergl(x=xy[rows, 0], y=xy[rows, 1], name=name, legendgroup=name,
                              marker=dict(color=PALETTE[k % len(PALETTE)], size=point_size, line=dict(width=0)),
                              hovertemplate="%{fullData.name}<extra></extra>", **base)
            traces.append(tr)
            trace_rows.append(rows)
        legend = True
    else:
        marker: dict = dict(color=codes, size=point_size, line=dict(width=0), showscale=True)
        if colouring.kind == "category":
            marker.update(colorscale=_stepped(n), cmin=-0.5, cmax=n - 0.5,
                          colorbar=dict(showticklabels=False, thickness=12, len=0.9,
                                        title=dict(text=plain(f"{colouring.title} ({n})"))))
        else:
            ticks = np.linspace(0, 255, 5)
            marker.update(colorscale=CONTINUOUS, cmin=0, cmax=255, colorbar=dict(
                title=dict(text=plain(colouring.title)), thickness=12, len=0.9, tickmode="array",
                tickvals=ticks.tolist(),
                ticktext=[f"{colouring.lo + t / 255 * (colouring.hi - colouring.lo):.3g}" for t in ticks]))
        traces.append(go.Scattergl(x=xy[:, 0], y=xy[:, 1], marker=marker, showlegend=False,
                                   hovertemplate="row %{pointNumber}<extra></extra>", **base))
        trace_rows.append(np.arange(len(xy)))
        legend = False
    if hl is not None:
        for tr, rows in zip(traces, trace_rows):
            tr.selectedpoints = np.flatnonzero(np.isin(rows, hl, assume_unique=False)).tolist()
            tr.unselected = dict(marker=dict(opacity=0.12))
    fig = go.Figure(traces)
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=40, b=10), dragmode="lasso",  # t: room for the toolbar
        xaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None),
        yaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None, scaleanchor="x"),
        uirevision="map", hovermode="closest", showlegend=legend,
        legend=dict(title=dict(text=plain(colouring.title)), itemsizing="constant", yanchor="top", y=1),
    )
    if title:
        fig.update_layout(title=dict(text=plain(title)))
    return MapFigure(fig=fig, trace_rows=trace_rows)


def selected_rows(selection: dict | None, trace_rows: Sequence[np.ndarray]) -> np.ndarray:
    """The rows of a map selection event (``st.plotly_chart(on_select=...)``'s ``selection``),
    sorted and unique. ``trace_rows``: :attr:`MapFigure.trace_rows` of the figure that was shown."""
    if not selection:
        return np.zeros(0, dtype=np.int64)
    out = []
    for p in selection.get("points") or []:
        c = p.get("curve_number", 0)
        i = p.get("point_index", p.get("point_number"))
        if c is None or i is None:
            continue
        c, i = int(c), int(i)
        if 0 <= c < len(trace_rows) and 0 <= i < len(trace_rows[c]):
            out.append(int(trace_rows[c][i]))
    return np.unique(np.asarray(out, dtype=np.int64))


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], *, normalise: bool = True,
                     highlight: tuple[int, int] | None = None) -> go.Figure:
    """matrix: (C, C) counts, given label rows x predicted columns. Colour = share of the row.

    The axes are numeric (cell (i, j) sits at x=j, y=i) with class names as tick labels, so a
    click reports the cell's position, whatever the names are.
    """
    m = np.asarray(matrix, dtype=np.float64)
    C = m.shape[0]
    rows = m.sum(1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    names = [plain(c)[:24] for c in classes]
    text = [[str(int(m[i, j])) for j in range(C)] for i in range(C)]
    fig = go.Figure(go.Heatmap(
        z=share if normalise else m, x=list(range(C)), y=list(range(C)), text=text, texttemplate="%{text}",
        colorscale="Blues", zmin=0, zmax=1 if normalise else None,
        colorbar=dict(title=dict(text="share of row" if normalise else "count"), thickness=12),
        hoverinfo="skip",
    ))
    # Heat maps send no click selections; an invisible marker on every cell centre does, so a click
    # on a cell selects point (i * C + j) of trace 1.
    gi, gj = np.divmod(np.arange(C * C), C)
    fig.add_trace(go.Scatter(
        x=gj, y=gi, mode="markers", showlegend=False, text=[t for row in text for t in row],
        marker=dict(size=28, symbol="square", color="rgba(0,0,0,0)"),
        hovertemplate="%{text} images<extra></extra>",
    ))
    if highlight is not None:
        i, j = highlight
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line=dict(color="#FB0D0D", width=3))
    ticks = dict(tickmode="array", tickvals=list(range(C)), ticktext=names, showgrid=False, zeroline=False)
    fig.update_layout(
        height=140 + 40 * C, margin=dict(l=10, r=10, t=10, b=10),
        xaxis=dict(title=dict(text="predicted (kNN)"), **ticks),
        yaxis=dict(title=dict(text="given label"), autorange="reversed", **ticks),
    )
    return fig


def confusion_cell(selection: dict | None, n_classes: int) -> tuple[int, int] | None:
    """The (given, predicted) cell picked in the confusion heat map, if any."""
    if not selection:
        return None
    for p in selection.get("points") or []:
        try:
            if int(p.get("curve_number", 1)) == 1 and p.get("point_index") is not None:
                i, j = divmod(int(p["point_index"]), n_classes)
            else:
                j, i = int(round(float(p["x"]))), int(round(float(p["y"])))
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= i < n_classes and 0 <= j < n_classes:
            return i, j
    return None


def training_curve(events: list[dict]) -> go.Figure | None:
    """Loss per step and per epoch from ``progress.jsonl`` events; None when there is none.

    The trainer reports ``step``/``steps`` within an epoch and a global ``epoch`` (over all levels
    of Algorithm 2), so the x axis is ``(epoch - 1) * steps + step``. Events without ``epoch``
    count steps in all (a restart of the count starts a new level).
    """
    steps, losses, ep_x, ep_y = [], [], [], []
    offset = last = 0
    per_epoch = None
    for ev in events:
        if not isinstance(ev, dict):
            continue
        if ev.get("steps"):
            per_epoch = int(ev["steps"])
        loss = ev.get("loss")
        if not isinstance(loss, (int, float)):
            continue
        kind = ev.get("event")
        epoch = ev.get("epoch")
        if kind == "step" and ev.get("step") is not None:
            s = int(ev["step"])
            if epoch is not None and per_epoch:
                x = (int(epoch) - 1) * per_epoch + s
            else:
                if s < last:
                    offset += last
                x = offset + s
            last = s
            steps.append(x)
            losses.append(float(loss))
        elif kind == "epoch":
            x = int(epoch) * per_epoch if epoch is not None and per_epoch else (steps[-1] if steps else len(ep_x) + 1)
            ep_x.append(x)
            ep_y.append(float(loss))
    if not steps and not ep_x:
        return None
    fig = go.Figure()
    if steps:
        fig.add_trace(go.Scatter(x=np.asarray(steps, np.int32), y=np.asarray(losses, np.float32), mode="lines",
                                 name="step loss", line=dict(width=1, color="#9ab")))
    if ep_x:
        fig.add_trace(go.Scatter(x=ep_x, y=ep_y, mode="lines+markers", name="epoch mean", line=dict(color="#2E91E5")))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="step", yaxis_title="loss",
                      legend=dict(orientation="h", y=1.1))
    return fig


def class_counts_figure(counts: pd.DataFrame) -> go.Figure:
    """counts: rows = classes (index = class name), columns = splits -> stacked bars."""
    fig = go.Figure()
    for k, split in enumerate(counts.columns):
        fig.add_trace(go.Bar(x=[plain(c) for c in counts.index], y=counts[split].to_numpy(), name=plain(split),
                             marker_color=PALETTE[k % len(PALETTE)]))
    fig.update_layout(barmode="stack", height=280, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", y=1.12), yaxis_title="images")
    return fig


METRIC_COLUMNS = [
    ("knn_accuracy", "kNN acc"), ("knn_precision", "precision"), ("knn_recall", "recall"), ("knn_f1", "F1"),
    ("kmeans_nmi", "NMI"), ("kmeans_f1", "K-means F1"), ("posterior_accuracy", "Eq. 5 acc"),
]


def metrics_table(metrics: dict) -> pd.DataFrame:
    """The paper's table for one run: one row per split (test first), values in percent."""
    rows = []
    for split in ("test", "val", "train"):
        m = metrics.get(split)
        if not isinstance(m, dict):
            continue
        row = {"split": split, "n": m.get("n")}
        for key, name in METRIC_COLUMNS:
            v = m.get(key)
            row[name] = round(100 * float(v), 2) if isinstance(v, (int, float)) else None
        for kk in ("1", "2", "4", "8", "16", "32"):
            v = (m.get("recall_at") or {}).get(kk)
            if isinstance(v, (int, float)):
                row[f"R@{kk}"] = round(100 * float(v), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def bic_figure(bic: dict) -> go.Figure | None:
    """BIC against the number of components, one line per class (``subclasses.json`` ``bic``)."""
    if not bic:
        return None
    fig = go.Figure()
    for k, (cls, pts) in enumerate(bic.items()):
        if not pts:
            continue
        a = np.asarray(pts, dtype=np.float64)
        fig.add_trace(go.Scatter(x=a[:, 0], y=a[:, 1], mode="lines+markers", name=plain(cls),
                                 line=dict(color=PALETTE[k % len(PALETTE)])))
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="components",
                      yaxis_title="BIC (lower is better)")
    return fig


@dataclass
class MapPayload:
    """What one map figure sends to the browser (for the speed notes and tests)."""
    spec_bytes: int
    points: int
    traces: int
    extras: list = field(default_factory=list)


def payload(fig: go.Figure) -> MapPayload:
    import plotly.io as pio

    spec = pio.to_json(fig, validate=False)
    return MapPayload(spec_bytes=len(spec), points=sum(len(t.x) if t.x is not None else 0 for t in fig.data),
                      traces=len(fig.data))
