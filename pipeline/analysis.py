"""``pipeline analyze``: everything the explorer shows beyond training, computed once and stored.

:func:`analyze` opens a finished run and writes, under ``analysis/`` (RUN_FORMAT.md): the
sub-class hierarchy, the 2-D maps (t-SNE, UMAP, PCA; stored maps are read back), the mislabel
table, the confusion matrix with the rows in every cell and the album summary; it adds
``subclass`` and ``mislabels`` sections to ``metrics.json``, scored against ground truth when the
items carry ``gt_*`` columns. The manifest is saved after every step, so a crash leaves a valid
run behind.

The pieces (:func:`confusion`, :func:`album_summary`, :func:`subclass_scores`,
:func:`mislabel_scores`) are pure: arrays in, plain dicts / arrays out.
Conventions: N images, C classes, K sub-classes, D embedding size.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from . import hierarchy as hier
from . import maps as maps_mod
from . import mislabels as mis
from .config import RunConfig
from .metrics import class_means, gaussian_posterior
from .progress import StageWriter, analysis_stages
from .runs import (CLASS_IMAGES, CLASS_MEANS_ARRAY, CONFUSION_JSON, CROSSFIT_POSTERIOR, CROSSFIT_VOTES, FEATURES_ARRAY,
                   IMAGES_ARRAY, MID_FEATURES_ARRAY, METRICS_JSON, MISLABELS_TABLE, PROGRESS, SUBCLASSES_JSON, SUBCLASSES_TABLE,
                   SUBCLASS_IMAGES, SUBCLASS_MEANS, SUMMARY_JSON, Run, open_run)

__all__ = ["analyze", "confusion", "album_summary", "subclass_scores", "mislabel_scores", "group_recovery",
           "recovery_scores", "RECOVERY_FACTORS",
           "write_hierarchy", "read_hierarchy", "MISLABEL_TRUTH"]

# ground-truth columns that mark a wrong given label, in order of preference
MISLABEL_TRUTH = ("gt_flipped", "gt_mislabeled")


# ----------------------------------------------------------------------------- pure pieces
def confusion(given: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict:
    """given, pred: (N,) int. Returns the ``analysis/confusion.json`` object: ``matrix`` (given
    rows x predicted columns, counts) and ``cells`` {"i,j": [rows]} for every non-empty cell."""
    given = np.asarray(given).astype(np.int64)
    pred = np.asarray(pred).astype(np.int64)
    C = len(classes)
    m = np.zeros((C, C), dtype=np.int64)
    np.add.at(m, (given, pred), 1)
    cells: dict[str, list[int]] = {}
    order = np.lexsort((np.arange(len(given)), pred, given))
    for r in order:
        cells.setdefault(f"{given[r]},{pred[r]}", []).append(int(r))
    return {"classes": list(classes), "matrix": m.tolist(), "cells": cells}


def album_summary(z: np.ndarray, h: hier.Hierarchy, *, n: int = 32) -> np.ndarray:
    """n representative rows: medoids of the largest sub-classes first, then farthest-point picks.

    z: (N, D) float. Returns (min(n, N),) int64 rows, in pick order. Deterministic (ties go to
    the lower row / the smaller sub-class id).
    """
    z = np.asarray(z, dtype=np.float64)
    n = int(min(n, z.shape[0]))
    by_size = np.lexsort((np.arange(h.n_subclasses), -h.size))
    picks = [int(h.medoid[s]) for s in by_size[:n]]
    if len(picks) < n:
        d = np.full(z.shape[0], np.inf)
        for p in picks:
            d = np.minimum(d, ((z - z[p]) ** 2).sum(1))
        if not picks:
            picks.append(0)
            d = ((z - z[0]) ** 2).sum(1)
        while len(picks) < n:
            nxt = int(np.argmax(d))
            picks.append(nxt)
            d = np.minimum(d, ((z - z[nxt]) ** 2).sum(1))
    return np.asarray(picks, dtype=np.int64)


def _purity(found: np.ndarray, hidden: np.ndarray) -> float:
    """Share of images whose found group's majority hidden group is their own."""
    if len(found) == 0:
        return float("nan")
    tab = pd.crosstab(found, hidden).to_numpy()
    return float(tab.max(1).sum() / len(found))


def subclass_scores(found: np.ndarray, hidden: np.ndarray, labels: np.ndarray) -> dict:
    """Found sub-classes against hidden ones. found, hidden, labels: (N,) int.

    ``nmi_within`` / ``purity_within``: averages over classes of NMI / purity computed inside
    each (given) class; ``nmi`` / ``purity``: over all images at once.
    """
    from sklearn.metrics import normalized_mutual_info_score as nmi

    found, hidden, labels = (np.asarray(a).astype(np.int64) for a in (found, hidden, labels))
    per_class = {}
    for c in np.unique(labels):
        r = labels == c
        per_class[int(c)] = {"nmi": float(nmi(hidden[r], found[r])), "purity": _purity(found[r], hidden[r]),
                             "found": int(len(np.unique(found[r]))), "hidden": int(len(np.unique(hidden[r])))}
    return {
        "nmi_within": float(np.mean([v["nmi"] for v in per_class.values()])),
        "purity_within": float(np.mean([v["purity"] for v in per_class.values()])),
        "nmi": float(nmi(hidden, found)),
        "purity": _purity(found, hidden),
        "n_found": int(len(np.unique(found))),
        "n_hidden": int(len(np.unique(hidden))),
        "per_class": per_class,
    }


# Hidden factors a synthetic run carries, scored by :func:`group_recovery`: the expression variants
# (gt_subclass, several per class) and two appearance attributes that cut across classes.
RECOVERY_FACTORS = ("gt_subclass", "gt_glasses", "gt_baby")
RECOVERY_MIN_SIZE = 20       # hidden groups smaller than this inside a class are not scored
RECOVERY_F1 = 0.6            # a hidden group is "found" when some sub-class of its class matches it this well


def _group_labels(col: pd.Series) -> np.ndarray:
    """A ground-truth factor column as int codes (bool attributes -> 0/1)."""
    if pd.api.types.is_bool_dtype(col) or col.dtype == object and set(col.dropna().unique()) <= {True, False}:
        return _as_bool(col).astype(np.int64)
    return pd.factorize(col)[0].astype(np.int64)


def group_recovery(partitions: dict[str, np.ndarray] | np.ndarray, hidden: np.ndarray, labels: np.ndarray, *,
                   min_size: int = RECOVERY_MIN_SIZE, threshold: float = RECOVERY_F1,
                   positive_only: bool = False) -> dict:
    """How many hidden groups inside each class some found sub-class recovers.

    partitions: (N,) int found sub-labels, or {name: (N,) int} several of them (facets): a hidden
    group then takes the best F1 over all of them. hidden: (N,) int hidden group of every image (a
    variant id, or 0/1 for an attribute); labels: (N,) int given class. Every (class, hidden value)
    pair with at least ``min_size`` images is one hidden group (with ``positive_only``, value 0 of a
    0/1 attribute is not a group: "not wearing glasses" is not something to find). Its score is the
    best F1 between it and any found sub-class of the same class; it is found when that is at least
    ``threshold``. Returns {"groups", "found", "mean_f1", "per_group": [{class, value, size, f1,
    facet}]}; mean_f1 is NaN when there is no group.
    """
    if not isinstance(partitions, dict):
        partitions = {"subclass": partitions}
    hidden = np.asarray(hidden).astype(np.int64)
    labels = np.asarray(labels).astype(np.int64)
    parts = {k: np.asarray(v).astype(np.int64) for k, v in partitions.items()}
    per_group = []
    for c in np.unique(labels):
        rows = labels == c
        vals, counts = np.unique(hidden[rows], return_counts=True)
        for v, n_v in zip(vals, counts):
            if n_v < min_size or (positive_only and v == 0):
                continue
            truth = hidden[rows] == v
            best, where = 0.0, None
            for name, found in parts.items():
                f = found[rows]
                # F1 of every found sub-class of this class against the hidden group at once
                ids, inv = np.unique(f, return_inverse=True)
                tp = np.bincount(inv, weights=truth, minlength=len(ids))
                size = np.bincount(inv, minlength=len(ids))
                f1 = 2 * tp / (size + truth.sum())
                j = int(np.argmax(f1))
                if f1[j] > best:
                    best, where = float(f1[j]), name
            per_group.append({"class": int(c), "value": int(v), "size": int(n_v), "f1": best, "facet": where})
    f1s = [g["f1"] for g in per_group]
    return {"groups": len(per_group), "found": int(sum(f >= threshold for f in f1s)),
            "mean_f1": float(np.mean(f1s)) if f1s else float("nan"), "per_group": per_group}


def recovery_scores(items: pd.DataFrame, partitions: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """:func:`group_recovery` for every factor of :data:`RECOVERY_FACTORS` that ``items`` carries:
    {factor: {"groups", "found", "mean_f1", "per_group"}}."""
    out = {}
    for factor in RECOVERY_FACTORS:
        if factor not in items.columns:
            continue
        col = items[factor]
        attribute = factor != "gt_subclass"
        hidden = _as_bool(col).astype(np.int64) if attribute else _group_labels(col)
        out[factor] = group_recovery(partitions, hidden, labels, positive_only=attribute)
    return out


def _ranking_scores(truth: np.ndarray, score: np.ndarray) -> dict:
    """AP, precision@k and recall@k with k = number of true positives (they are equal then)."""
    from sklearn.metrics import average_precision_score

    truth = np.asarray(truth, dtype=bool)
    k = int(truth.sum())
    if k == 0 or k == len(truth):
        return {"ap": float("nan"), "precision_at_k": float("nan"), "recall_at_k": float("nan"), "k": k}
    top = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")[:k]
    hits = int(truth[top].sum())
    return {"ap": float(average_precision_score(truth, score)), "precision_at_k": hits / k,
            "recall_at_k": hits / k, "k": k}


def mislabel_scores(table: pd.DataFrame, truth: np.ndarray, *, true_label: np.ndarray | None = None,
                    rows: np.ndarray | None = None) -> dict:
    """Both rankings of ``table`` (the mislabel table) against ``truth``: (N,) bool.

    ``true_label``: (N,) int, to score the suggested labels of the truly wrong rows.
    ``rows``: restrict to these rows (e.g. one split).
    """
    truth = np.asarray(truth, dtype=bool)
    t = table
    if rows is not None:
        t, truth = table.iloc[rows], truth[rows]
        true_label = None if true_label is None else np.asarray(true_label)[rows]
    out = {
        "n": int(len(truth)), "n_true": int(truth.sum()),
        "base_rate": float(truth.mean()) if len(truth) else float("nan"),
        "ours": _ranking_scores(truth, t["score"].to_numpy()),
        "cleanlab": _ranking_scores(truth, -t["cleanlab_score"].to_numpy()),
    }
    flagged = t["cleanlab_issue"].to_numpy(dtype=bool)
    out["cleanlab"]["issues"] = {
        "n_flagged": int(flagged.sum()),
        "precision": float((flagged & truth).sum() / flagged.sum()) if flagged.any() else float("nan"),
        "recall": float((flagged & truth).sum() / truth.sum()) if truth.any() else float("nan"),
    }
    if true_label is not None and truth.any():
        out["suggested_accuracy"] = float((t["suggested"].to_numpy()[truth] == np.asarray(true_label)[truth]).mean())
    return out


# ----------------------------------------------------------------------------- hierarchy storage
def write_hierarchy(run: Run, h: "hier.Hierarchy | Sequence[hier.Facet]", *, save: bool = True,
                    extra: dict | None = None) -> None:
    """Store a :class:`pipeline.hierarchy.Hierarchy`, or several facets (the first is the primary
    one), as ``analysis/subclasses.{parquet,json}`` and ``analysis/subclass_means.npy`` ((K, D), one
    row per global sub-class id, all facets). ``extra``: per-sub-class fields for the JSON."""
    facets = hier._as_facets(h)
    run.put_table(SUBCLASSES_TABLE, hier.to_table(facets))
    run.put_json(SUBCLASSES_JSON, hier.to_json(facets, run.classes, extra=extra))
    run.put_array(SUBCLASS_MEANS,
                  np.concatenate([f.hierarchy.means for f in facets]).astype(np.float32))
    if save:
        run.save_manifest()


def read_hierarchy(run: Run) -> tuple[str, np.ndarray, list[np.ndarray]] | None:
    """(mode, final sub-labels (N,), levels) as stored, or None when the run has none."""
    if not (run.has(SUBCLASSES_TABLE) and run.has(SUBCLASSES_JSON)):
        return None
    t = run.table(SUBCLASSES_TABLE)
    mode = run.json(SUBCLASSES_JSON).get("mode", "bic")
    lev_cols = sorted((c for c in t.columns if c.startswith("subclass_l")), key=lambda c: int(c[len("subclass_l"):]))
    return mode, t["subclass"].to_numpy(np.int64), [t[c].to_numpy(np.int64) for c in lev_cols]


def _as_bool(col: pd.Series) -> np.ndarray:
    """A ground-truth flag column as bool; text from a CSV ("True", "yes", "1") read as people mean it."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.fillna(0).to_numpy().astype(bool)
    return col.astype(str).str.strip().str.lower().isin(["true", "1", "yes", "y", "t"]).to_numpy()


def _stored_dgms(run: Run, items: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Algorithm 2 sub-labels written by training (items columns) or by an earlier analyze."""
    if "dgms_subclass" in items.columns:
        lev_cols = sorted((c for c in items.columns if c.startswith("dgms_subclass_l")),
                          key=lambda c: int(c[len("dgms_subclass_l"):]))
        return items["dgms_subclass"].to_numpy(np.int64), [items[c].to_numpy(np.int64) for c in lev_cols]
    stored = read_hierarchy(run)
    if stored is not None and stored[0] == "dgms":
        return stored[1], stored[2]
    return None


# Per-class directions and shared components kept, by what the facets are fit on (chosen on one
# synthetic training run, data and training seed 0; reported on others: RESULTS.md).
FACET_DIMS = {"features": {"expression": 5, "look": 8}, "embedding": {"expression": 3, "look": 16}}


def image_facets(z: np.ndarray, labels: np.ndarray, *, fit_mask: np.ndarray, max_components: int,
                 min_per_subclass: int, seed: int, topk: int, features: np.ndarray | None = None,
                 mid_features: np.ndarray | None = None) -> list[hier.Facet]:
    """The sub-class facets found from the images alone (no votes, no ground truth):
    "look" (appearance shared across classes: one mixture over every class's deviations) and
    "expression" (each class's own directions), fit on ``features`` (N, F), the backbone's pooled
    feature maps training stores, or on ``z`` without them. With the features, the expression facet
    reads both feature levels (``mid_features``, the maps halfway up, when given, and the last),
    each image compared with the images of its class that share its look (:func:`hier.look_residuals`
    on the posteriors of a look mixture on the last maps), so glasses or a baby's face do not split a
    class that the look facet already splits by them; the look facet reads both levels too. All are
    described (means, medoids) in ``z``. Returned in display order: expression, look, then
    look_last (with both levels: the last maps' looks, which the expression facet is measured
    against) or look_embedding (with the last maps only)."""
    kind = "features" if features is not None else "embedding"
    x = np.asarray(features if features is not None else z, dtype=np.float32)
    dims = FACET_DIMS[kind]
    on = "the backbone's pooled feature maps" if kind == "features" else "the embedding"
    both = kind == "features" and mid_features is not None
    on_both = "the backbone's mid-level (4x4 cells) and last feature maps side by side"
    fl = hier.shared_features(x, labels, fit_mask=fit_mask, dims=dims["look"])
    mix = hier.shared_mixture(fl, fit_mask=fit_mask, min_per_subclass=min_per_subclass, seed=seed)
    xe = hier.equal_blocks([mid_features, x] if both else [x], fit_mask=fit_mask) if kind == "features" else None
    look_last = hier.fit_shared(z, labels, fl, fit_mask=fit_mask, min_per_subclass=min_per_subclass, seed=seed,
                                topk=topk, mixture=mix)
    if both:
        # The look facet shown first reads both levels (glasses are rings around the eyes, a mid-level
        # pattern); the last maps' look mixture stays a facet of its own ("look_last"), and it is the
        # one the expression facet is measured against (it found more variants). Each of the two
        # missed a look the other found on some of eleven synthetic runs (RESULTS.md).
        fl_look = hier.shared_features(xe, labels, fit_mask=fit_mask, dims=dims["look"])
        look = hier.fit_shared(z, labels, fl_look, fit_mask=fit_mask, min_per_subclass=min_per_subclass, seed=seed,
                               topk=topk)
    else:
        look = look_last
    if kind == "features":
        fe = hier.class_specific_features(xe, labels, fit_mask=fit_mask, dims=dims["expression"],
                                          residuals=hier.look_residuals(xe, labels, mix.proba, fit_mask=fit_mask))
        on_e = on_both if both else on
        expr_about = (f"per class, the {dims['expression']} directions of {on_e} along which the class varies "
                      "more than classes vary in general, each image measured against the images of its class "
                      "that share its look; a mixture per class, k by BIC")
    else:
        fe = hier.class_specific_features(x, labels, fit_mask=fit_mask, dims=dims["expression"])
        expr_about = (f"per class, the {dims['expression']} directions of {on} along which the class varies "
                      "more than classes vary in general; a mixture per class, k by BIC")
    expr = hier.fit_fast(z, labels, max_components=max_components, min_per_subclass=min_per_subclass,
                         seed=seed, topk=topk, features=fe, features_name="expression", covariance_type="full")
    out = [
        hier.Facet("expression", expr, about=expr_about),
        hier.Facet("look", look, about=f"one mixture (k by BIC) over every class's deviations from its class "
                   f"mean ({dims['look']} whitened components of {on_both if both else on}): looks that recur "
                   "across classes"),
    ]
    if both:
        out.append(hier.Facet("look_last", look_last, about=f"one mixture (k by BIC) over every class's deviations "
                              f"from its class mean ({dims['look']} whitened components of the backbone's last "
                              "feature maps): the looks the expression facet measures each image against"))
    elif kind == "features":
        # The same on the embedding: on synthetic faces each of the two mixtures missed a look the other
        # found in some training runs (babies in one, glasses in another; RESULTS.md), so both are offered.
        d = FACET_DIMS["embedding"]["look"]
        fz = hier.shared_features(z, labels, fit_mask=fit_mask, dims=d)
        look_z = hier.fit_shared(z, labels, fz, fit_mask=fit_mask, min_per_subclass=min_per_subclass, seed=seed,
                                 topk=topk)
        out.append(hier.Facet("look_embedding", look_z, about=f"one mixture (k by BIC) over every class's deviations "
                              f"from its class mean ({d} whitened components of the embedding)"))
    return out


def mid_features(run, fit_mask: np.ndarray, *, seed: int = 0) -> np.ndarray | None:
    """The run's ``features_mid.npy`` as float32; a run trained before training stored it gets it
    now from its own checkpoint (one pass over the images) and keeps it. None when neither can be
    had (no checkpoint: e.g. a run written by other tools)."""
    n = len(fit_mask)
    if run.has(MID_FEATURES_ARRAY):
        fm = run.array(MID_FEATURES_ARRAY)
        return np.asarray(fm, dtype=np.float32) if fm.shape[0] == n else None
    if not any((run.path / "checkpoints" / f).is_file() for f in ("best.pt", "last.pt")) or not run.has(IMAGES_ARRAY):
        return None
    from .embed import backbone_features, load_embedder
    from .runs import RunError

    try:
        model = load_embedder(run, device="cpu")
    except (RunError, RuntimeError, KeyError, ValueError):
        return None
    fm = backbone_features(model, run.array(IMAGES_ARRAY), fit_rows=np.flatnonzero(fit_mask), seed=seed, level="mid")
    run.put_array(MID_FEATURES_ARRAY, fm)
    return fm.astype(np.float32)


def mean_images(images: np.ndarray, groups: np.ndarray, n_groups: int, *, chunk: int = 8192) -> np.ndarray:
    """(n_groups, S, S) uint8: the mean image of every group id 0..n_groups-1 (ids < 0 ignored).
    images: (N, S, S) uint8 (may be memory-mapped; read in chunks)."""
    return mean_images_many(images, [(groups, n_groups)], chunk=chunk)[0]


def mean_images_many(images: np.ndarray, partitions: Sequence[tuple[np.ndarray, int]], *,
                     chunk: int = 8192) -> list[np.ndarray]:
    """:func:`mean_images` of several partitions ``[(groups, n_groups), ...]`` in one pass over the
    images (a memory-mapped FER-sized file is read once, not once per facet)."""
    S = tuple(images.shape[1:])
    accs = [np.zeros((n,) + S, np.float64) for _, n in partitions]
    cnts = [np.zeros(n, np.int64) for _, n in partitions]
    parts = [np.asarray(g, np.int64) for g, _ in partitions]
    for s in range(0, len(images), chunk):
        block = np.asarray(images[s:s + chunk], dtype=np.float64)
        for g_all, (_, n), acc, cnt in zip(parts, partitions, accs, cnts):
            g = g_all[s:s + chunk]
            ok = g >= 0
            np.add.at(acc, g[ok], block[ok])
            cnt += np.bincount(g[ok], minlength=n)
    return [np.clip(acc / np.maximum(cnt, 1)[:, None, None] + 0.5, 0, 255).astype(np.uint8)
            for acc, cnt in zip(accs, cnts)]


def card_facts(z: np.ndarray, post: np.ndarray, facets: Sequence[hier.Facet], labels: np.ndarray,
               classes: Sequence[str], *, n_outside: int = 32, chunk: int = 65536) -> dict[int, dict]:
    """What sets each sub-class apart, per global sub-class id: ``lean`` (the other class its members'
    mean posterior P(w|z) puts the most on, with that share, and ``p_own``, the share on its own
    class) and ``outside``: the ``n_outside`` rows nearest the sub-class mean that are not in it
    (same class or not), nearest first, for "find more like this group"."""
    z = np.asarray(z, dtype=np.float32)
    out: dict[int, dict] = {}
    for f in facets:
        h = f.hierarchy
        K = h.n_subclasses
        mp = np.zeros((K, post.shape[1]))
        np.add.at(mp, h.labels, post)
        mp /= np.maximum(h.size, 1)[:, None]
        best = np.full((K, n_outside), np.inf)
        best_rows = np.full((K, n_outside), -1, np.int64)
        mu = h.means.astype(np.float32)
        for s in range(0, len(z), chunk):
            zb = z[s:s + chunk]
            d = (zb ** 2).sum(1)[None, :] - 2 * mu @ zb.T + (mu ** 2).sum(1)[:, None]     # (K, B)
            d[h.labels[s:s + chunk][None, :] == np.arange(K)[:, None]] = np.inf            # members are not "more"
            cand = np.concatenate([best, d], 1)
            rows = np.concatenate([best_rows, np.broadcast_to(np.arange(s, s + len(zb)), d.shape)], 1)
            keep = np.argsort(cand, axis=1, kind="stable")[:, :n_outside]
            best, best_rows = np.take_along_axis(cand, keep, 1), np.take_along_axis(rows, keep, 1)
        for k in range(K):
            c = int(h.sub_class[k])
            other = mp[k].copy()
            other[c] = -1
            j = int(np.argmax(other))
            out[f.offset + k] = {
                "lean": {"class": j, "class_name": str(classes[j]), "p": float(mp[k, j])},
                "p_own": float(mp[k, c]),
                "outside": [int(r) for r in best_rows[k][np.isfinite(best[k])]],
            }
    return out


def format_recovery(sub_metrics: dict) -> str:
    """The hidden-group recovery of ``metrics.json`` ``subclass`` as printable lines ("" without ground truth)."""
    rec = sub_metrics.get("recovery") or {}
    if not rec:
        return ""
    names = {"gt_subclass": "expression variants", "gt_glasses": "glasses groups", "gt_baby": "baby groups"}
    lines = ["hidden groups found from the images (F1 >= %.1f):" % RECOVERY_F1]
    for k, v in rec.items():
        by = ", ".join(f"{n} {c}" for n, c in v.get("by_facet", {}).items())
        lines.append(f"  {names.get(k, k):20s} {v['found']:3d} of {v['groups']:3d}   mean best F1 {v['mean_f1']:.2f}"
                     + (f"   ({by})" if by else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- orchestrator
def settings(cfg: RunConfig, **given: Any) -> dict:
    """The options :func:`analyze` runs with: each one ``given`` (not None), else the run's config
    (hierarchy, loss.sigma), and the mislabel evidence's own ``knn_k`` (:data:`pipeline.mislabels.MISLABEL_K`)."""
    h = cfg.hierarchy
    pick = lambda name, default: default if given.get(name) is None else given[name]  # noqa: E731
    return {"max_components": int(pick("max_components", h.max_components)),
            "min_per_subclass": int(pick("min_per_subclass", h.min_per_subclass)),
            "topk": int(pick("topk", h.topk)), "knn_k": int(pick("knn_k", mis.MISLABEL_K)),
            "sigma": float(pick("sigma", cfg.loss.sigma)), "features": str(pick("features", h.features))}


def analyze(run_path: str | Path, *, maps: Sequence[str] = ("tsne", "umap", "pca"),
            hierarchy_mode: str = "auto", summary_size: int = 32, seed: int = 0,
            knn_k: int | None = None, sigma: float | None = None,
            max_components: int | None = None, min_per_subclass: int | None = None,
            topk: int | None = None, features: str | None = None,
            log: Callable[[str], None] | None = None) -> dict:
    """Compute and store every analysis of the run at ``run_path`` (:func:`_analyze`), reporting
    each stage in the run's progress.jsonl (:class:`pipeline.progress.StageWriter`: the app's bar
    reads them) and ``analysed`` at the end, or ``error`` when it fails."""
    maps = tuple(maps)
    stages = StageWriter(Path(run_path) / PROGRESS, analysis_stages(maps))
    try:
        out = _analyze(run_path, stages, maps=maps, hierarchy_mode=hierarchy_mode, summary_size=summary_size,
                       seed=seed, knn_k=knn_k, sigma=sigma, max_components=max_components,
                       min_per_subclass=min_per_subclass, topk=topk, features=features, log=log)
    except Exception as exc:
        stages.failed(exc)
        raise
    stages.done()
    return out


def _analyze(run_path: str | Path, stages: StageWriter, *, maps: Sequence[str], hierarchy_mode: str,
             summary_size: int, seed: int, knn_k: int | None, sigma: float | None, max_components: int | None,
             min_per_subclass: int | None, topk: int | None, features: str | None,
             log: Callable[[str], None] | None) -> dict:
    """Compute and store every analysis of the run at ``run_path``; return what was measured.

    maps: the map methods to compute (or read back), with :data:`pipeline.maps.DEFAULTS`.
    hierarchy_mode: "bic" (fast per-class mixtures), "dgms" (describe the Algorithm 2 sub-labels
    that training stored: the ``dgms_subclass`` column of items.parquet, with
    ``dgms_subclass_l<i>`` level columns when present, or an earlier ``write_hierarchy``; an
    error when there are none) or "auto" (dgms when stored, else bic); the image facets
    (expression, look, look_last or look_embedding; :func:`image_facets`) are always fit. ``features``: what comes
    first, "auto" / "embedding" (the image facets) or "posterior+votes" (the crowd facet,
    :func:`pipeline.hierarchy.crowd_features`; needs the ``vote_<class>`` columns training stores;
    with them the crowd facet is added after the image facets anyway). ``knn_k``: neighbours of
    the mislabel evidence (default :data:`pipeline.mislabels.MISLABEL_K`). Options left None come
    from the run's config (hierarchy, loss.sigma).
    Returns {"subclass": ..., "mislabels": ..., "timings": {step: seconds}}.
    """
    say = log or (lambda _msg: None)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    run = open_run(run_path)
    s = settings(run.config, knn_k=knn_k, sigma=sigma, max_components=max_components,
                 min_per_subclass=min_per_subclass, topk=topk, features=features)
    max_components, min_per_subclass, topk = s["max_components"], s["min_per_subclass"], s["topk"]
    knn_k, sigma, features = s["knn_k"], s["sigma"], s["features"]
    classes = run.classes
    items = run.items()
    z = np.asarray(run.embeddings(), dtype=np.float32)
    labels = items["label"].to_numpy(np.int64)
    train = (items["split"] == "train").to_numpy()
    cm = np.asarray(run.array(CLASS_MEANS_ARRAY), dtype=np.float64) if run.has(CLASS_MEANS_ARRAY) else None
    if cm is not None and cm.shape != (len(classes), z.shape[1]):
        cm = None
    vote_cols = [f"vote_{c}" for c in classes]
    has_votes = all(c in items.columns for c in vote_cols)
    try:
        features = hier.resolve_features(features, has_votes)
    except ValueError as exc:
        raise ValueError(f"{run.path}: {exc}") from None

    # -- sub-classes: facets, the first one is what the app shows first
    stages.images = len(items)
    stages.stage("sub-classes")
    t0 = time.perf_counter()
    if hierarchy_mode not in ("auto", "bic", "dgms"):
        raise ValueError(f"hierarchy_mode must be auto, bic or dgms, not {hierarchy_mode!r}")
    stored = _stored_dgms(run, items) if hierarchy_mode != "bic" else None
    if hierarchy_mode == "dgms" and stored is None:
        raise ValueError(f"{run.path}: no Algorithm 2 sub-classes stored (train with --levels > 1)")
    means = cm if cm is not None else class_means(z[train], labels[train], len(classes))
    fb = np.asarray(run.array(FEATURES_ARRAY), dtype=np.float32) if run.has(FEATURES_ARRAY) else None
    if fb is not None and fb.shape[0] != z.shape[0]:
        fb = None
    fm = mid_features(run, train, seed=seed) if fb is not None else None
    facets = image_facets(z, labels, fit_mask=train, max_components=max_components,
                          min_per_subclass=min_per_subclass, seed=seed, topk=topk, features=fb, mid_features=fm)
    if stored is not None:
        facets.insert(0, hier.Facet("levels", hier.describe(z, stored[0], labels, topk=topk, mode="dgms",
                                                             levels=stored[1]),
                                    about="Algorithm 2: SGM retrained on each level's sub-classes during training"))
    if has_votes:
        feats = hier.crowd_features(z, means, items[vote_cols].to_numpy(np.float64), sigma=sigma)
        # 2C low-dimensional features: full covariances (the embedding's 64 dims need diagonal ones)
        crowd = hier.fit_fast(z, labels, max_components=max_components, min_per_subclass=min_per_subclass,
                              seed=seed, topk=topk, features=feats, features_name="posterior+votes",
                              covariance_type="full")
        crowd_facet = hier.Facet("crowd", crowd, about="the model's class posterior next to the crowd's vote "
                                 "shares: groups that annotators read the same way")
        # asked for by name (--subclass-features posterior+votes): the crowd's reading comes first
        facets.insert(0 if features == "posterior+votes" and stored is None else len(facets), crowd_facet)
    facets = hier.number_facets(facets)
    h = facets[0].hierarchy
    post = gaussian_posterior(z, means, sigma=sigma)
    write_hierarchy(run, facets, save=False,
                    extra=card_facts(z, post, facets, labels, classes))
    K_all = sum(f.hierarchy.n_subclasses for f in facets)
    images = run.array(IMAGES_ARRAY) if run.has(IMAGES_ARRAY) else None
    if images is not None:
        class_imgs, *facet_imgs = mean_images_many(
            images, [(labels, len(classes))] + [(f.hierarchy.labels, f.hierarchy.n_subclasses) for f in facets])
        run.put_array(CLASS_IMAGES, class_imgs)
        sub_images = np.zeros((K_all,) + tuple(images.shape[1:]), np.uint8)
        for f, imgs in zip(facets, facet_imgs):
            sub_images[f.offset:f.offset + f.hierarchy.n_subclasses] = imgs
        run.put_array(SUBCLASS_IMAGES, sub_images)
    run.save_manifest()
    timings["hierarchy"] = time.perf_counter() - t0
    say(f"sub-classes: {' + '.join(f'{f.hierarchy.n_subclasses} {f.name}' for f in facets)} "
        f"in {timings['hierarchy']:.1f}s")

    # -- mislabels
    stages.stage("mislabels")
    t0 = time.perf_counter()
    ev_loo = mis.oos_evidence(z, labels, train_mask=train, class_means=cm, k=knn_k, sigma=sigma,
                              n_classes=len(classes), seed=seed)
    crossfit = run.has(CROSSFIT_POSTERIOR) and run.has(CROSSFIT_VOTES)
    ev_cf = mis.evidence_from_arrays(run.array(CROSSFIT_POSTERIOR), run.array(CROSSFIT_VOTES)) \
        if crossfit else None
    # Cross-fit evidence comes from embeddings that never saw the image's label, but from models
    # trained on (K-1)/K of the data; pooled with leave-one-out on the full model. 9k FER+ images,
    # 2 folds (RESULTS.md): AP leave-one-out 0.644, cross-fit 0.551, pooled 0.631: weak 3k-image
    # folds cost a little; kept for evidence that never saw the label at all.
    ev = mis.pool(ev_loo, ev_cf) if crossfit else ev_loo
    table = mis.scores(z, labels, train_mask=train, class_means=cm, k=knn_k, sigma=sigma, seed=seed,
                       classes=classes, evidence=ev)
    run.put_table(MISLABELS_TABLE, table)
    run.save_manifest()
    timings["mislabels"] = time.perf_counter() - t0
    say(f"mislabels in {timings['mislabels']:.1f}s")

    # -- outliers and duplicates
    stages.stage("outliers and duplicates")
    t0 = time.perf_counter()
    from .quality import describe_counts, write_quality

    quality = write_quality(run, items, z)
    run.save_manifest()
    timings["quality"] = time.perf_counter() - t0
    say(f"outliers and {describe_counts(quality.get('duplicates'))} in {timings['quality']:.1f}s")

    # -- confusion (kNN predictions stored by training; recomputed the same way if absent)
    stages.stage("summary and scores")
    if "pred" in items.columns:
        pred = items["pred"].to_numpy(np.int64)
    else:
        pred = ev_loo.votes.argmax(1)
    run.put_json(CONFUSION_JSON, confusion(labels, pred, classes))

    # -- album summary
    rows = album_summary(z, h, n=summary_size)
    run.put_json(SUMMARY_JSON, {"rows": [int(r) for r in rows],
                                          "method": "medoids of the largest sub-classes, then farthest-point picks"})
    run.save_manifest()

    # -- scores against ground truth, into metrics.json
    sub_metrics: dict = {"mode": h.mode, "features": h.features, "n_subclasses": h.n_subclasses,
                         "primary": facets[0].name,
                         "facets": {f.name: {"n_subclasses": f.hierarchy.n_subclasses} for f in facets},
                         "per_class": {classes[c]: {"subclasses": int((h.sub_class == c).sum())}
                                       for c in range(len(classes))}}
    if any(f in items.columns for f in RECOVERY_FACTORS):
        # hidden groups recovered (F1 >= RECOVERY_F1): by each facet, and by the facets found from the
        # images ("images": what a user without votes sees, any image facet counting)
        for f in facets:
            rec = recovery_scores(items, {f.name: f.hierarchy.labels}, labels)
            sub_metrics["facets"][f.name]["recovery"] = {k: {x: v[x] for x in ("groups", "found", "mean_f1")}
                                                         for k, v in rec.items()}
        image_parts = {f.name: f.hierarchy.labels for f in facets if f.name != "crowd"}
        rec = recovery_scores(items, image_parts, labels)
        sub_metrics["recovery"] = {k: {"groups": v["groups"], "found": v["found"], "mean_f1": v["mean_f1"],
                                       "by_facet": {name: sum(g["facet"] == name and g["f1"] >= RECOVERY_F1
                                                              for g in v["per_group"]) for name in image_parts}}
                                   for k, v in rec.items()}
        sub_metrics["recovery_rule"] = (f"hidden groups of >= {RECOVERY_MIN_SIZE} images inside a class; found when "
                                        f"a sub-class of that class (any image facet: {', '.join(image_parts)}) "
                                        f"matches it with F1 >= {RECOVERY_F1}")
    if "gt_subclass" in items.columns:
        gt_scores = subclass_scores(h.labels, items["gt_subclass"].to_numpy(np.int64), labels)
        for c, v in gt_scores.pop("per_class").items():
            sub_metrics["per_class"][classes[c]].update(nmi=v["nmi"], purity=v["purity"], hidden=v["hidden"])
        sub_metrics.update(gt_scores)
    mis_metrics: dict = {"n_flagged_cleanlab": int(table["cleanlab_issue"].sum()),
                         "k": knn_k, "sigma": sigma, "cleanlab_probs": "knn",
                         "posterior_weight": mis.POSTERIOR_WEIGHT,
                         "evidence": "crossfit+leave-one-out" if crossfit else "leave-one-out"}
    truth_col = next((c for c in MISLABEL_TRUTH if c in items.columns), None)
    if truth_col is not None:
        truth = _as_bool(items[truth_col])
        gt_label = items["gt_label"].to_numpy(np.int64) if (
            "gt_label" in items.columns and pd.api.types.is_integer_dtype(items["gt_label"])) else None
        mis_metrics.update(truth=truth_col, **mislabel_scores(table, truth, true_label=gt_label))
        mis_metrics["train"] = mislabel_scores(table, truth, true_label=gt_label, rows=np.flatnonzero(train))
        # cleanlab on the other out-of-sample probabilities too, so the stored choice stays justified
        alt_quality, alt_issue = mis.cleanlab_scores(labels, ev.post)
        alt = pd.DataFrame({"score": table["score"], "cleanlab_score": alt_quality, "cleanlab_issue": alt_issue,
                            "suggested": table["suggested"]})
        mis_metrics["cleanlab_posterior"] = mislabel_scores(alt, truth)["cleanlab"]
        if crossfit:                 # each kind of evidence alone, for comparison
            for name, e in (("leave_one_out", ev_loo), ("crossfit", ev_cf)):
                t = mis.scores(z, labels, train_mask=train, class_means=cm, k=knn_k, sigma=sigma, seed=seed,
                               classes=classes, evidence=e)
                mis_metrics[name] = {k: v for k, v in mislabel_scores(t, truth).items() if k in ("ours", "cleanlab")}
    metrics = run.metrics()
    metrics["subclass"] = sub_metrics
    metrics["mislabels"] = mis_metrics
    metrics["quality"] = quality
    run.put_json(METRICS_JSON, metrics)
    run.save_manifest()

    # -- maps last: the slow part, and each is saved as soon as it exists
    for method in maps:
        stages.stage(f"{method} map")
        t0 = time.perf_counter()
        maps_mod.get_or_compute(run, method, seed=seed, save=True)
        timings[f"map_{method}"] = time.perf_counter() - t0
        say(f"{method} map in {timings[f'map_{method}']:.1f}s")
    timings["total"] = time.perf_counter() - t_all
    return {"subclass": sub_metrics, "mislabels": mis_metrics, "quality": quality, "timings": timings}
