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
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import hierarchy as hier
from . import maps as maps_mod
from . import mislabels as mis
from .metrics import class_means
from .runs import Run, open_run

__all__ = ["analyze", "confusion", "album_summary", "subclass_scores", "mislabel_scores",
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
def write_hierarchy(run: Run, h: hier.Hierarchy, *, save: bool = True) -> None:
    """Store a :class:`pipeline.hierarchy.Hierarchy` as ``analysis/subclasses.{parquet,json}``
    and ``analysis/subclass_means.npy`` (the training loop uses this for Algorithm 2 levels)."""
    run.put_table("analysis/subclasses.parquet", hier.to_table(h))
    run.put_json("analysis/subclasses.json", hier.to_json(h, run.classes))
    run.put_array("analysis/subclass_means.npy", h.means.astype(np.float32))
    if save:
        run.save_manifest()


def read_hierarchy(run: Run) -> tuple[str, np.ndarray, list[np.ndarray]] | None:
    """(mode, final sub-labels (N,), levels) as stored, or None when the run has none."""
    if not (run.has("analysis/subclasses.parquet") and run.has("analysis/subclasses.json")):
        return None
    t = run.table("analysis/subclasses.parquet")
    mode = run.json("analysis/subclasses.json").get("mode", "bic")
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


# ----------------------------------------------------------------------------- orchestrator
def analyze(run_path: str | Path, *, maps: Sequence[str] = ("tsne", "umap", "pca"),
            hierarchy_mode: str = "auto", summary_size: int = 32, seed: int = 0,
            knn_k: int | None = None, sigma: float | None = None,
            max_components: int | None = None, min_per_subclass: int | None = None,
            topk: int | None = None, features: str | None = None,
            log: Callable[[str], None] | None = None) -> dict:
    """Compute and store every analysis of the run at ``run_path``; return what was measured.

    maps: the map methods to compute (or read back), with :data:`pipeline.maps.DEFAULTS`.
    hierarchy_mode: "bic" (fast per-class mixtures), "dgms" (describe the Algorithm 2 sub-labels
    that training stored: the ``dgms_subclass`` column of items.parquet, with
    ``dgms_subclass_l<i>`` level columns when present, or an earlier ``write_hierarchy``; an
    error when there are none) or "auto" (dgms when stored, else bic). ``features``: what the
    fast mode fits on, "embedding", "posterior+votes" (:func:`pipeline.hierarchy.crowd_features`;
    needs the crowd votes training stores as ``vote_<class>`` columns) or "auto" (the latter when
    the run has votes). ``knn_k``: neighbours of
    the mislabel evidence (default :data:`pipeline.mislabels.MISLABEL_K`). Options left None come
    from the run's config (hierarchy, loss.sigma).
    Returns {"subclass": ..., "mislabels": ..., "timings": {step: seconds}}.
    """
    say = log or (lambda _msg: None)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    run = open_run(run_path)
    cfg = run.config
    hcfg = cfg.get("hierarchy", {})
    max_components = int(max_components if max_components is not None else hcfg.get("max_components", 5))
    min_per_subclass = int(min_per_subclass if min_per_subclass is not None else hcfg.get("min_per_subclass", 64))
    topk = int(topk if topk is not None else hcfg.get("topk", 16))
    knn_k = int(knn_k if knn_k is not None else mis.MISLABEL_K)
    sigma = float(sigma if sigma is not None else cfg.get("loss", {}).get("sigma", 0.5))
    features = str(features if features is not None else hcfg.get("features", "auto"))
    classes = run.classes
    items = run.items()
    z = np.asarray(run.embeddings(), dtype=np.float32)
    labels = items["label"].to_numpy(np.int64)
    train = (items["split"] == "train").to_numpy()
    cm = np.asarray(run.array("class_means.npy"), dtype=np.float64) if run.has("class_means.npy") else None
    if cm is not None and cm.shape != (len(classes), z.shape[1]):
        cm = None
    vote_cols = [f"vote_{c}" for c in classes]
    try:
        features = hier.resolve_features(features, all(c in items.columns for c in vote_cols))
    except ValueError as exc:
        raise ValueError(f"{run.path}: {exc}") from None

    # -- sub-classes
    t0 = time.perf_counter()
    if hierarchy_mode not in ("auto", "bic", "dgms"):
        raise ValueError(f"hierarchy_mode must be auto, bic or dgms, not {hierarchy_mode!r}")
    stored = _stored_dgms(run, items) if hierarchy_mode != "bic" else None
    if hierarchy_mode == "dgms" and stored is None:
        raise ValueError(f"{run.path}: no Algorithm 2 sub-classes stored (train with --levels > 1)")
    if stored is not None:
        h = hier.describe(z, stored[0], labels, topk=topk, mode="dgms", levels=stored[1])
    elif features == "posterior+votes":
        means = cm if cm is not None else class_means(z[train], labels[train], len(classes))
        feats = hier.crowd_features(z, means, items[vote_cols].to_numpy(np.float64), sigma=sigma)
        # 2C low-dimensional features: full covariances (the embedding's 64 dims need diagonal ones)
        h = hier.fit_fast(z, labels, max_components=max_components, min_per_subclass=min_per_subclass,
                          seed=seed, topk=topk, features=feats, features_name=features, covariance_type="full")
    else:
        h = hier.fit_fast(z, labels, max_components=max_components, min_per_subclass=min_per_subclass,
                          seed=seed, topk=topk)
    write_hierarchy(run, h)
    timings["hierarchy"] = time.perf_counter() - t0
    say(f"sub-classes: {h.n_subclasses} ({h.mode}) in {timings['hierarchy']:.1f}s")

    # -- mislabels
    t0 = time.perf_counter()
    ev_loo = mis.oos_evidence(z, labels, train_mask=train, class_means=cm, k=knn_k, sigma=sigma,
                              n_classes=len(classes), seed=seed)
    crossfit = run.has("crossfit_posterior.npy") and run.has("crossfit_votes.npy")
    ev_cf = mis.evidence_from_arrays(run.array("crossfit_posterior.npy"), run.array("crossfit_votes.npy")) \
        if crossfit else None
    # Cross-fit evidence comes from embeddings that never saw the image's label, but from models
    # trained on (K-1)/K of the data; pooled with leave-one-out on the full model. 9k FER+ images,
    # 2 folds (RESULTS.md): AP leave-one-out 0.644, cross-fit 0.551, pooled 0.631: weak 3k-image
    # folds cost a little; kept for evidence that never saw the label at all.
    ev = mis.pool(ev_loo, ev_cf) if crossfit else ev_loo
    table = mis.scores(z, labels, train_mask=train, class_means=cm, k=knn_k, sigma=sigma, seed=seed,
                       classes=classes, evidence=ev)
    run.put_table("analysis/mislabels.parquet", table)
    run.save_manifest()
    timings["mislabels"] = time.perf_counter() - t0
    say(f"mislabels in {timings['mislabels']:.1f}s")

    # -- outliers and duplicates
    t0 = time.perf_counter()
    from .quality import describe_counts, write_quality

    quality = write_quality(run, items, z)
    run.save_manifest()
    timings["quality"] = time.perf_counter() - t0
    say(f"outliers and {describe_counts(quality['duplicates'])} in {timings['quality']:.1f}s")

    # -- confusion (kNN predictions stored by training; recomputed the same way if absent)
    if "pred" in items.columns:
        pred = items["pred"].to_numpy(np.int64)
    else:
        pred = ev_loo.votes.argmax(1)
    run.put_json("analysis/confusion.json", confusion(labels, pred, classes))

    # -- album summary
    rows = album_summary(z, h, n=summary_size)
    run.put_json("analysis/summary.json", {"rows": [int(r) for r in rows],
                                          "method": "medoids of the largest sub-classes, then farthest-point picks"})
    run.save_manifest()

    # -- scores against ground truth, into metrics.json
    sub_metrics: dict = {"mode": h.mode, "features": h.features, "n_subclasses": h.n_subclasses,
                         "per_class": {classes[c]: {"subclasses": int((h.sub_class == c).sum())}
                                       for c in range(len(classes))}}
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
    run.put_json("metrics.json", metrics)
    run.save_manifest()

    # -- maps last: the slow part, and each is saved as soon as it exists
    for method in maps:
        t0 = time.perf_counter()
        maps_mod.get_or_compute(run, method, seed=seed, save=True)
        timings[f"map_{method}"] = time.perf_counter() - t0
        say(f"{method} map in {timings[f'map_{method}']:.1f}s")
    timings["total"] = time.perf_counter() - t_all
    return {"subclass": sub_metrics, "mislabels": mis_metrics, "quality": quality, "timings": timings}
