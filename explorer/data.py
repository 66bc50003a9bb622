"""The only module that reads runs (through ``pipeline.runs``); everything is cached.

Cache keys are ``(run path, manifest mtime)``: the pipeline rewrites ``manifest.json`` last after
every change (training finishing, ``analyze`` adding a table), so a changed run is re-read and an
unchanged one never is. Small things (tables, JSON) use ``st.cache_data``; large arrays, the
thumbnail store, the kNN index and per-colouring arrays use ``st.cache_resource`` (shared, never
copied: callers treat them as read-only).

Every function raises :class:`pipeline.runs.RunError` (one-line message) when a run is missing,
incomplete or corrupt; views show it with ``widgets.run_guard`` and carry on.
Conventions: N images, C classes, K sub-classes.
"""
from __future__ import annotations

import base64
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from pipeline.runs import (CLASS_IMAGES, CLASS_MEANS_ARRAY, CONFUSION_JSON, EMBEDDINGS_ARRAY, ITEMS_TABLE, MANIFEST,
                           MAPS_INDEX, METRICS_JSON, MISLABELS_TABLE, PROGRESS, STATUS_COMPLETE, SUBCLASSES_JSON,
                           SUBCLASSES_TABLE, SUBCLASS_IMAGES, SUMMARY_JSON, Run, RunError, list_runs, open_run,
                           read_jsonl)

from . import figures

ANALYSIS_FILES = (SUBCLASSES_JSON, MAPS_INDEX, MISLABELS_TABLE,
                  CONFUSION_JSON, SUMMARY_JSON)


# ---------------------------------------------------------------------------- run identity
def stamp(path: str | Path) -> int:
    """The manifest's mtime in ns: part of every cache key."""
    try:
        return (Path(path) / MANIFEST).stat().st_mtime_ns
    except FileNotFoundError:
        raise RunError(f"{Path(path) / MANIFEST}: missing (the run was moved or deleted)") from None


@dataclass(frozen=True)
class RunInfo:
    """One row of the run picker."""
    name: str
    path: str
    status: str                    # complete / running / failed / interrupted / broken
    problem: str = ""              # RunError message for a broken run
    updated: float = 0.0
    n_images: int | None = None
    spec: str = ""
    loss: str = ""
    backbone: str = ""
    analysed: bool = False

    @property
    def usable(self) -> bool:
        return self.status == STATUS_COMPLETE and not self.problem

    def label(self) -> str:
        bits = [self.name]
        if self.problem:
            bits.append("(unreadable)")
        elif self.status != STATUS_COMPLETE:
            bits.append(f"({self.status})")
        elif not self.analysed:
            bits.append("(not analysed)")
        return " ".join(bits)


def runs(root: str | Path) -> list[RunInfo]:
    """Every run folder under ``root``, newest first. Cheap (one manifest read + stats per run)."""
    out = []
    for path, run, problem in list_runs(Path(root)):
        if run is None:
            out.append(RunInfo(name=path.name, path=str(path), status="broken", problem=problem))
            continue
        try:
            cfg = run.config
        except RunError as exc:
            out.append(RunInfo(name=path.name, path=str(path), status="broken", problem=str(exc)))
            continue
        out.append(RunInfo(
            name=path.name, path=str(path), status=run.status, updated=float(run.manifest.get("updated", 0) or 0),
            n_images=(run.manifest.get("data") or {}).get("n_images"),
            spec=cfg.data.spec, loss=cfg.loss.name, backbone=cfg.model.backbone,
            analysed=all(a in run.artifacts for a in ANALYSIS_FILES)))
    return out


@st.cache_data(max_entries=32, show_spinner=False)
def _run(path: str, stamp_: int) -> Run:
    return open_run(Path(path))


def run(path: str | Path) -> Run:
    """The validated, complete run at ``path``."""
    return _run(str(path), stamp(path))


def analysed(path: str | Path) -> bool:
    r = run(path)
    return all(r.has(a) for a in ANALYSIS_FILES)


# ---------------------------------------------------------------------------- tables and JSON
@st.cache_data(max_entries=8, show_spinner=False)
def _items(path: str, stamp_: int) -> pd.DataFrame:
    return _run(path, stamp_).items()


def items(path: str | Path) -> pd.DataFrame:
    """items.parquet: one row per image (row i = row i of every array)."""
    return _items(str(path), stamp(path))


@st.cache_resource(max_entries=8, show_spinner=False)
def _columns(path: str, stamp_: int) -> dict[str, np.ndarray]:
    """The few items columns the hot paths need, as shared numpy arrays (no per-call copy)."""
    df = _run(path, stamp_).items()
    out = {}
    for c in ("id", "label", "label_name", "split", "pred", "pred_name"):
        if c in df:
            out[c] = df[c].to_numpy(dtype=object if df[c].dtype.kind not in "iufb" else None)
    out["n"] = np.asarray(len(df))
    return out


def columns(path: str | Path) -> dict[str, np.ndarray]:
    return _columns(str(path), stamp(path))


@st.cache_data(max_entries=16, show_spinner=False)
def _json(path: str, stamp_: int, name: str):
    return _run(path, stamp_).json(name)


def _optional_json(path: str | Path, name: str):
    r = run(path)
    return _json(str(path), stamp(path), name) if r.has(name) else None


def metrics(path: str | Path) -> dict:
    return _optional_json(path, METRICS_JSON) or {}


def subclasses(path: str | Path) -> dict | None:
    """analysis/subclasses.json, or None before ``analyze``."""
    return _optional_json(path, SUBCLASSES_JSON)


def confusion(path: str | Path) -> dict | None:
    return _optional_json(path, CONFUSION_JSON)


def summary(path: str | Path) -> dict | None:
    return _optional_json(path, SUMMARY_JSON)


def maps_index(path: str | Path) -> list[dict]:
    return _optional_json(path, MAPS_INDEX) or []


@st.cache_data(max_entries=8, show_spinner=False)
def _table(path: str, stamp_: int, name: str) -> pd.DataFrame:
    return _run(path, stamp_).table(name)


def mislabels(path: str | Path) -> pd.DataFrame | None:
    r = run(path)
    name = MISLABELS_TABLE
    return _table(str(path), stamp(path), name) if r.has(name) else None


@st.cache_data(max_entries=4, show_spinner="Comparing the two runs…")
def _compare(path_a: str, stamp_a: int, path_b: str, stamp_b: int) -> dict:
    from pipeline.compare import compare as compare_runs

    return compare_runs(_run(path_a, stamp_a), _run(path_b, stamp_b))


def compare(path_a: str | Path, path_b: str | Path) -> dict:
    """pipeline.compare.compare of two runs, cached until either changes."""
    return _compare(str(path_a), stamp(path_a), str(path_b), stamp(path_b))


def analysis_table(path: str | Path, name: str) -> pd.DataFrame | None:
    """The analysis table ``name`` (``pipeline.runs.OUTLIERS_TABLE``, ...) of a run (cached per run
    state), or None when analyze has not written it (a run analysed before that table existed)."""
    r = run(path)
    return _table(str(path), stamp(path), name) if r.has(name) else None


@st.cache_resource(max_entries=8, show_spinner=False)
def _subclass_rows(path: str, stamp_: int) -> np.ndarray | None:
    r = _run(path, stamp_)
    if not r.has(SUBCLASSES_TABLE):
        return None
    return r.table(SUBCLASSES_TABLE)["subclass"].to_numpy(dtype=np.int64)


def subclass_of_rows(path: str | Path, column: str = "subclass") -> np.ndarray | None:
    """(N,) global sub-class id of every row: the primary facet's (``subclass``), or the facet stored in
    ``column`` (``facet_<name>``, subclasses.json ``facets``); None before ``analyze`` or without it."""
    if column == "subclass":
        return _subclass_rows(str(path), stamp(path))
    return _facet_rows(str(path), stamp(path), column)


@st.cache_resource(max_entries=8, show_spinner=False)
def _facet_rows(path: str, stamp_: int, column: str) -> np.ndarray | None:
    import pyarrow.parquet as pq

    r = _run(path, stamp_)
    name = SUBCLASSES_TABLE
    if not r.has(name) or column not in pq.read_schema(r.file(name)).names:
        return None
    return r.table(name)[column].to_numpy(dtype=np.int64)


def facets(path: str | Path) -> list[dict]:
    """The stored sub-class facets (subclasses.json ``facets``), primary first; a run analysed before
    facets existed has one, made from its ``mode``/``features``."""
    info = subclasses(path) or {}
    if info.get("facets"):
        return list(info["facets"])
    return [{"name": "subclass", "title": "Sub-classes", "about": "", "column": "subclass", "first_id": 0,
             "n_subclasses": len(info.get("subclasses", []))}]


def in_facet(entry: dict, facet: dict, primary: str) -> bool:
    """Whether a subclasses.json entry belongs to ``facet`` (entries of older runs have no facet)."""
    return entry.get("facet", primary) == facet.get("name", primary) or facet.get("name") == "subclass"


@st.cache_resource(max_entries=4, show_spinner=False)
def _mean_images(path: str, stamp_: int):
    r = _run(path, stamp_)
    if not (r.has(SUBCLASS_IMAGES) and r.has(CLASS_IMAGES)):
        return None
    return np.asarray(r.array(SUBCLASS_IMAGES)), np.asarray(r.array(CLASS_IMAGES))


def mean_image_pngs(path: str | Path, sid: int, cls: int) -> tuple[bytes, bytes, bytes] | None:
    """PNGs of the sub-class's mean image, its class's mean image, and their difference (mid-grey: no
    difference; lighter: brighter in the sub-class), or None when analyze stored no mean images.
    Encoded once per run and sub-class (a page of cards reruns on every click)."""
    return _mean_image_pngs(str(path), stamp(path), int(sid), int(cls))


@st.cache_data(max_entries=512, show_spinner=False)
def _mean_image_pngs(path: str, stamp_: int, sid: int, cls: int) -> tuple[bytes, bytes, bytes] | None:
    got = _mean_images(path, stamp_)
    if got is None:
        return None
    subs, cls_imgs = got
    if not (0 <= sid < len(subs) and 0 <= cls < len(cls_imgs)):
        return None
    a, b = subs[sid].astype(np.float32), cls_imgs[cls].astype(np.float32)
    diff = a - b
    scale = max(float(np.abs(diff).max()), 1.0)
    diff_img = np.clip(128 + 127 * diff / scale, 0, 255).astype(np.uint8)
    return _png(subs[sid]), _png(cls_imgs[cls]), _png(diff_img)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8), mode="L").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def progress(path: str | Path) -> list[dict]:
    """progress.jsonl events; works on runs still training (no manifest check)."""
    p = Path(path) / PROGRESS
    try:
        st_ = p.stat()
    except FileNotFoundError:
        return []
    return _progress(str(p), st_.st_mtime_ns, st_.st_size)


@st.cache_data(max_entries=16, show_spinner=False)
def _progress(p: str, mtime: int, size: int) -> list[dict]:
    return read_jsonl(Path(p))


# ---------------------------------------------------------------------------- arrays
@st.cache_resource(max_entries=8, show_spinner=False)
def _map_xy(path: str, stamp_: int, file: str) -> np.ndarray:
    r = _run(path, stamp_)
    xy = np.asarray(r.array(file), dtype=np.float32)
    n = len(r.items()) if ITEMS_TABLE in r.artifacts else xy.shape[0]
    if xy.ndim != 2 or xy.shape != (n, 2):
        raise RunError(f"{Path(path) / file}: map has shape {list(xy.shape)}, expected [{n}, 2]")
    # three significant decimals of the map's extent are plenty on screen
    return np.round(xy, 3).astype(np.float32)


def map_xy(path: str | Path, file: str) -> np.ndarray:
    """(N, 2) float32 coordinates of one stored map (``maps.json`` entry ``file``)."""
    names = {m.get("file") for m in maps_index(path)}
    if file not in names:
        raise RunError(f"{Path(path) / file}: not in {MAPS_INDEX}")
    return _map_xy(str(path), stamp(path), file)


class Thumbs:
    """PNG thumbnails of one run's images, encoded on first use and kept (a few KB each)."""

    def __init__(self, images: np.ndarray):
        self.images = images
        self._png: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def png(self, row: int) -> bytes:
        row = int(row)
        b = self._png.get(row)
        if b is None:
            from PIL import Image

            if not 0 <= row < len(self):
                raise IndexError(f"row {row} outside 0..{len(self) - 1}")
            buf = io.BytesIO()
            Image.fromarray(np.asarray(self.images[row], dtype=np.uint8), mode="L").save(buf, "PNG", compress_level=1)
            b = buf.getvalue()
            with self._lock:
                self._png[row] = b
        return b

    def many(self, rows) -> list[bytes]:
        return [self.png(r) for r in rows]

    def data_uri(self, row: int) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png(row)).decode("ascii")

    def pixels(self, row: int) -> np.ndarray:
        return np.asarray(self.images[int(row)], dtype=np.uint8)


@st.cache_resource(max_entries=8, show_spinner=False)
def _thumbs(path: str, stamp_: int) -> Thumbs:
    return Thumbs(_run(path, stamp_).images())


def thumbs(path: str | Path) -> Thumbs:
    return _thumbs(str(path), stamp(path))


@dataclass(frozen=True)
class QueueOrder:
    """Our mislabel ranking as the queue shows it: scores on [0, 1], ties broken, the cut-off."""
    score: np.ndarray          # (N,) float64 on [0, 1]
    rank: np.ndarray           # (N,) int64, 1 = most suspicious, no ties
    likely_wrong: np.ndarray   # (N,) bool
    tie_break: str             # what breaks equal scores, for the help text


@st.cache_resource(max_entries=4, show_spinner=False)
def _queue_order(path: str, stamp_: int) -> QueueOrder:
    from . import queue

    r = _run(path, stamp_)
    m = _table(path, stamp_, MISLABELS_TABLE)
    w = float(((_optional_json(path, METRICS_JSON) or {}).get("mislabels") or {}).get("posterior_weight", 0.1))
    score = queue.display_scores(m["score"].to_numpy(), w)
    tie, how = None, "row order"
    if r.has(CLASS_MEANS_ARRAY) and r.has(EMBEDDINGS_ARRAY) and "suggested" in m:
        labels = _items(path, stamp_)["label"].to_numpy()
        tie = queue.margins(r.embeddings(), labels, m["suggested"].to_numpy(), r.array(CLASS_MEANS_ARRAY))
        how = "how much nearer the image lies to the suggested class's mean than to its own"
    lw = queue.likely_wrong(m["knn_disagree"].to_numpy(), m["p_given_oos"].to_numpy()) \
        if {"knn_disagree", "p_given_oos"} <= set(m.columns) else score > 0.5
    return QueueOrder(score, queue.ranking(score, tie), lw, how)


def queue_order(path: str | Path) -> QueueOrder:
    return _queue_order(str(path), stamp(path))


COLLAPSE_MAX = 5000  # larger groups are shown without collapsing near-identical frames (O(n^2))


@st.cache_data(max_entries=64, show_spinner=False)
def _group_layout(path: str, stamp_: int, rows: tuple[int, ...], mode: str, collapse: bool) -> tuple[np.ndarray, np.ndarray]:
    from . import groups

    r = _run(path, stamp_)
    idx = np.asarray(rows, dtype=np.int64)
    z = np.asarray(r.embeddings()[np.sort(idx)], dtype=np.float32)[np.argsort(np.argsort(idx))]
    order = groups.spread_order(z) if mode == "spread" else groups.centre_order(z)
    if collapse and len(idx) <= COLLAPSE_MAX:
        imgs = np.asarray(r.images()[np.sort(idx)])[np.argsort(np.argsort(idx))]
        kept, count = groups.collapse(order, groups.dhash(imgs))
    else:
        kept, count = order, np.ones(len(order), np.int64)
    return idx[kept], count


def group_layout(path: str | Path, rows, mode: str = "centre", collapse: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A group's rows in gallery order (``centre`` or ``spread``, see explorer.groups) with
    near-identical frames collapsed: (rows shown, how many images each stands for)."""
    return _group_layout(str(path), stamp(path), tuple(int(r) for r in rows), mode, bool(collapse))


@st.cache_resource(max_entries=4, show_spinner="Building the neighbour index…")
def _similar(path: str, stamp_: int):
    from pipeline.similar import SimilarIndex

    return SimilarIndex(_run(path, stamp_))


@st.cache_data(max_entries=8, show_spinner=False)
def _nn_reference(path: str, stamp_: int, sample: int = 500) -> float:
    from pipeline.similar import query

    idx = _similar(path, stamp_)
    rows = np.random.default_rng(0).choice(len(idx.z), size=min(sample, len(idx.z)), replace=False)
    dist, _ = query(idx.index, idx.z[rows], k=2)
    return float(np.percentile(dist[:, 1], 95))  # column 0 is the image itself


def nn_reference(path: str | Path) -> float:
    """The 95th percentile of the run's own nearest-neighbour distances (500 images sampled):
    an upload whose nearest image is farther than this has no close match in the run."""
    return _nn_reference(str(path), stamp(path))


def similar_index(path: str | Path):
    """pipeline.similar.SimilarIndex for the run (kNN over embeddings; model loaded on first upload)."""
    return _similar(str(path), stamp(path))


# ---------------------------------------------------------------------------- map colourings
def colour_options(path: str | Path) -> dict[str, str]:
    """key -> menu label of every way the map can be coloured for this run."""
    return _colour_options(str(path), stamp(path))


@st.cache_data(max_entries=16, show_spinner=False)
def _colour_options(path: str, stamp_: int) -> dict[str, str]:
    import pyarrow.parquet as pq

    r = _run(path, stamp_)
    cols = pq.read_schema(r.file(ITEMS_TABLE)).names  # the schema only, not the table
    opts = {"label": "Given label"}
    if r.has(SUBCLASSES_TABLE):
        opts["subclass"] = "Sub-class"
        info = _json(path, stamp_, SUBCLASSES_JSON) or {}
        for f in (info.get("facets") or [])[1:]:     # the primary facet is "subclass" itself
            opts[str(f["column"])] = f"Sub-class: {f.get('title', f['name'])}"
    if "pred" in cols:
        opts["pred"] = "kNN prediction"
    if r.has(MISLABELS_TABLE):
        opts["mislabel"] = "Mislabel score (ours)"
        opts["cleanlab"] = "Label quality (cleanlab)"
    if "p_given" in cols:
        opts["p_given"] = "P(given label | z)"
    if "split" in cols:
        opts["split"] = "Split"
    opts["review"] = "Review decision"
    opts["tag"] = "Tag"
    for c in cols:
        if c.startswith("gt_"):
            opts[c] = f"Ground truth: {c[3:]}"
    return opts


@st.cache_resource(max_entries=32, show_spinner=False)
def _colouring(path: str, stamp_: int, by: str, names: tuple) -> figures.Colouring:
    r = _run(path, stamp_)
    df = r.items()
    classes = r.classes
    if by == "label":
        return figures.categorical(df["label"].to_numpy(), names=classes, title="given label")
    if by == "pred":
        return figures.categorical(df["pred"].to_numpy(), names=classes, title="kNN prediction")
    if by == "subclass" or by.startswith("facet_"):
        sub = _subclass_rows(path, stamp_) if by == "subclass" else _facet_rows(path, stamp_, by)
        info = {s["id"]: s for s in (_json(path, stamp_, SUBCLASSES_JSON) or {}).get("subclasses", [])}
        named = dict(names)
        ids = sorted(set(np.unique(sub).tolist()))       # this facet's sub-classes only
        labels = [subclass_label(info.get(i, {"id": i}), named.get(i)) for i in ids]
        lookup = np.zeros(max(ids) + 1 if ids else 1, dtype=np.int64)
        lookup[ids] = np.arange(len(ids))
        return figures.categorical(lookup[sub], names=labels, title="sub-class")
    if by in ("mislabel", "cleanlab"):
        m = _table(path, stamp_, MISLABELS_TABLE)
        col = "score" if by == "mislabel" else "cleanlab_score"
        return figures.continuous(m[col].to_numpy(), title="mislabel score" if by == "mislabel" else "label quality")
    if by in df.columns:
        s = df[by]
        if s.dtype.kind == "f":
            return figures.continuous(s.to_numpy(), title=by)
        return figures.categorical(s.astype(str).to_numpy(), title=by)
    raise RunError(f"{path}: no column {by!r} to colour by")


def colouring(path: str | Path, by: str, *, subclass_names: dict[int, str] | None = None,
              decisions: dict[str, tuple] | None = None, tags: pd.DataFrame | None = None) -> figures.Colouring:
    """The map colouring ``by`` one of :func:`colour_options` (``review`` needs ``decisions``,
    ``tag`` the review store's tags)."""
    if by == "review":
        ids = columns(path)["id"]
        d = decisions or {}
        vals = np.fromiter((d.get(i, ("not reviewed",))[0] for i in ids), dtype=object, count=len(ids)) if d \
            else np.full(len(ids), "not reviewed", dtype=object)
        return figures.categorical(vals, title="review", order=["not reviewed", "keep", "flag", "relabel"])
    if by == "tag":
        return tag_colouring(columns(path)["id"], tags)
    names = tuple(sorted((subclass_names or {}).items())) if by == "subclass" or by.startswith("facet_") else ()
    return _colouring(str(path), stamp(path), by, names)


NO_TAG = "(no tag)"


def tag_colouring(ids: np.ndarray, tags: pd.DataFrame | None) -> figures.Colouring:
    """One colour per tag; an image with several tags gets their combination (``a + b``)."""
    vals = np.full(len(ids), NO_TAG, dtype=object)
    if tags is not None and len(tags):
        joined = tags.groupby("item_id")["tag"].agg(lambda t: " + ".join(sorted(t)))
        pos = pd.Series(np.arange(len(ids)), index=pd.Index(ids).astype(str))
        pos = pos[~pos.index.duplicated()]
        hit = pos.reindex(joined.index).dropna().astype(int)
        vals[hit.to_numpy()] = joined.loc[hit.index].to_numpy()
    order = [NO_TAG] + sorted(set(vals.tolist()) - {NO_TAG})
    return figures.categorical(vals, title="tag", order=order)


def tag_rows(ids: np.ndarray, tags: pd.DataFrame, tag: str) -> np.ndarray:
    """The rows carrying ``tag``, in row order."""
    want = set(tags.loc[tags["tag"] == tag, "item_id"].astype(str))
    return np.flatnonzero(np.fromiter((i in want for i in ids), dtype=bool, count=len(ids)))


def subclass_label(info: dict, name: str | None = None) -> str:
    """How a sub-class is called on screen: the person's name, else ``class #k``."""
    if name:
        return name
    cls = info.get("class_name", "?")
    k = info.get("index_in_class")
    return f"{cls} #{int(k) + 1}" if k is not None else f"sub-class {info.get('id', '?')}"
