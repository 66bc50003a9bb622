"""Two runs side by side on the same test images: what changed between a run and its retrained child.

Images are matched by ``items.id``. The test split is the yardstick: corrections never change a
test label (pipeline.corrections), so both runs are scored against the same labels (run A's).
Conventions: N images, C classes.

* per class: kNN accuracy of each run on the common test images of that class, and the NMI
  between the two runs' sub-class partitions of the class's common images (1 = the same groups);
* per sub-class (of each run): kNN accuracy on its test members;
* overall: kNN accuracy, and each run's k-means NMI on the test split (metrics.json);
* changed: the common test images whose prediction differs (``fixed`` when only B is right,
  ``broken`` when only A is, else ``other``);
* matches: every sub-class of A with the sub-class of B sharing the most members (Jaccard of
  their common ids), so a named group can be followed from one run to the next.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import normalized_mutual_info_score

from .runs import SUBCLASSES_TABLE, Run, RunError, open_run


def _sub_rows(run: Run) -> np.ndarray | None:
    name = SUBCLASSES_TABLE
    if not run.has(name):
        return None
    t = run.table(name)
    return t["subclass"].to_numpy(np.int64) if "subclass" in t and len(t) == len(run.items()) else None


def _sub_accuracy(sub: np.ndarray | None, rows: np.ndarray, ok: np.ndarray, labels: np.ndarray, classes) -> pd.DataFrame:
    if sub is None or not len(rows):
        return pd.DataFrame(columns=["subclass", "class", "n_test", "accuracy"])
    s = sub[rows]
    out = []
    for sid in np.unique(s):
        m = s == sid
        cls = np.bincount(labels[m]).argmax()
        out.append((int(sid), classes[cls], int(m.sum()), float(ok[m].mean())))
    return pd.DataFrame(out, columns=["subclass", "class", "n_test", "accuracy"])


def match_subclasses(ids_a: np.ndarray, sub_a: np.ndarray, ids_b: np.ndarray, sub_b: np.ndarray) -> pd.DataFrame:
    """For every sub-class of A: the sub-class of B with the largest Jaccard overlap of members
    (over the ids both runs hold). Columns ``a``, ``b``, ``overlap``, ``size_a``, ``size_b``,
    ``jaccard`` (``b`` = -1 where no member is shared)."""
    a = pd.Series(sub_a, index=pd.Index(ids_a).astype(str))
    b = pd.Series(sub_b, index=pd.Index(ids_b).astype(str))
    common = a.index.intersection(b.index)
    sa, sb = a.loc[common].to_numpy(), b.loc[common].to_numpy()
    ct = pd.crosstab(sa, sb)
    size_a = pd.Series(sa).value_counts()
    size_b = pd.Series(sb).value_counts()
    rows = []
    for s in sorted(np.unique(sub_a)):
        if s not in ct.index:
            rows.append((int(s), -1, 0, 0, 0, 0.0))
            continue
        r = ct.loc[s]
        jac = r / (size_a[s] + size_b.reindex(r.index).to_numpy() - r)
        best = jac.idxmax()
        rows.append((int(s), int(best), int(r[best]), int(size_a[s]), int(size_b[best]), float(jac[best])))
    return pd.DataFrame(rows, columns=["a", "b", "overlap", "size_a", "size_b", "jaccard"])


def compare(run_a: Run | str, run_b: Run | str) -> dict:
    """Everything the compare view shows; see the module docstring. Raises RunError when the two
    runs share no test image or their classes differ."""
    A = run_a if isinstance(run_a, Run) else open_run(run_a)
    B = run_b if isinstance(run_b, Run) else open_run(run_b)
    if list(A.classes) != list(B.classes):
        raise RunError(f"{A.path.name} and {B.path.name} have different classes; nothing to compare")
    classes = list(A.classes)
    ia, ib = A.items(), B.items()
    ta = ia.index[ia["split"] == "test"].to_numpy()
    pos_b = pd.Series(np.arange(len(ib)), index=ib["id"].astype(str))
    pos_b = pos_b[(ib["split"] == "test").to_numpy()]
    ids_test = ia["id"].astype(str).to_numpy()[ta]
    keep = np.isin(ids_test, pos_b.index)
    ra = ta[keep]
    rb = pos_b.loc[ids_test[keep]].to_numpy()
    if not len(ra):
        raise RunError(f"{A.path.name} and {B.path.name} share no test image; nothing to compare")
    y = ia["label"].to_numpy(np.int64)[ra]                    # the yardstick: A's test labels
    pa = ia["pred"].to_numpy(np.int64)[ra]
    pb = ib["pred"].to_numpy(np.int64)[rb]
    ok_a, ok_b = pa == y, pb == y
    sub_a, sub_b = _sub_rows(A), _sub_rows(B)
    per_class = []
    for c, name in enumerate(classes):
        m = y == c
        if not m.any():
            continue
        nmi = (float(normalized_mutual_info_score(sub_a[ra][m], sub_b[rb][m]))
               if sub_a is not None and sub_b is not None and m.sum() > 1 else float("nan"))
        per_class.append((name, int(m.sum()), float(ok_a[m].mean()), float(ok_b[m].mean()), nmi))
    per_class = pd.DataFrame(per_class, columns=["class", "n_test", "accuracy_a", "accuracy_b", "subclass_nmi"])
    per_class["delta"] = per_class["accuracy_b"] - per_class["accuracy_a"]
    changed = np.flatnonzero(pa != pb)
    kind = np.where(ok_b[changed] & ~ok_a[changed], "fixed", np.where(ok_a[changed] & ~ok_b[changed], "broken", "other"))
    changed_df = pd.DataFrame({"id": ids_test[keep][changed], "row_a": ra[changed], "row_b": rb[changed],
                               "label": np.asarray(classes, dtype=object)[y[changed]],
                               "pred_a": np.asarray(classes, dtype=object)[pa[changed]],
                               "pred_b": np.asarray(classes, dtype=object)[pb[changed]], "kind": kind})
    ma, mb = A.metrics().get("test", {}), B.metrics().get("test", {})
    out = {
        "a": A.path.name, "b": B.path.name, "n_test": int(len(ra)),
        "overall": {"accuracy_a": float(ok_a.mean()), "accuracy_b": float(ok_b.mean()),
                    "nmi_a": ma.get("kmeans_nmi"), "nmi_b": mb.get("kmeans_nmi"),
                    "fixed": int((kind == "fixed").sum()), "broken": int((kind == "broken").sum()),
                    "changed": int(len(changed))},
        "per_class": per_class,
        "per_subclass_a": _sub_accuracy(sub_a, ra, ok_a, y, classes),
        "per_subclass_b": _sub_accuracy(sub_b, rb, ok_b, y, classes),
        "changed": changed_df,
        "matches": (match_subclasses(ia["id"].to_numpy(), sub_a, ib["id"].to_numpy(), sub_b)
                    if sub_a is not None and sub_b is not None else None),
    }
    return out
