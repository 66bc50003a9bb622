"""Choose the mislabel ranking's constants on one set of images, report on another (issue 11).

The images of the training split that have ground truth (``gt_mislabeled`` / ``gt_flipped``) are
cut into two random halves: the *selection* half, on which every constant is chosen (neighbours
K, the posterior weight, trust weighting on or off), and the disjoint *report* half, the only one
whose average precision is reported. The test split is left out of both.

cleanlab is compared on the same report half in two ways:

- ``cleanlab_cv``: its documented input, out-of-sample ``pred_probs`` from K-fold cross-validation
  of a classifier (logistic regression) on the same features (the run's embedding);
- ``cleanlab_trusted``: our trust-weighted neighbour votes, smoothed into probabilities, at the K
  chosen on the selection half (the same evidence our ranking reads);
- ``cleanlab_plain``: the plain neighbour votes (what ``analyze`` stores next to ours).

``best`` names the ranking with the highest selection-half AP; the report half only reports.
"""
from __future__ import annotations

import numpy as np

from . import mislabels as mis

KS = (11, 25, 50)
WEIGHTS = (0.0, 0.1, 0.25, 0.5)


def halves(n: int, candidates: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves (selection, report) of the row indices ``candidates``."""
    rng = np.random.default_rng([seed, 11])
    perm = rng.permutation(np.asarray(candidates))
    h = len(perm) // 2
    return np.sort(perm[:h]), np.sort(perm[h:])


def _ap(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(truth, score)) if truth.any() else float("nan")


def cv_pred_probs(z: np.ndarray, labels: np.ndarray, rows: np.ndarray, n_classes: int, *, folds: int = 5,
                  seed: int = 0) -> np.ndarray:
    """(len(rows), C) out-of-sample class probabilities of ``rows`` from ``folds``-fold
    cross-validated logistic regression on ``z`` (cleanlab's documented input)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline

    y = labels[rows]
    present, counts = np.unique(y, return_counts=True)
    k = int(max(2, min(folds, counts.min())))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    p = cross_val_predict(clf, np.asarray(z, np.float64)[rows], y, method="predict_proba",
                          cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=seed))
    out = np.full((len(rows), n_classes), 1e-12)
    out[:, present] = p
    return out / out.sum(1, keepdims=True)


def select_and_report(z: np.ndarray, labels: np.ndarray, split: np.ndarray, truth: np.ndarray, *,
                      n_classes: int, class_means: np.ndarray | None = None, sigma: float = 0.5,
                      crossfit: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0,
                      ks=KS, weights=WEIGHTS) -> dict:
    """Grid on the selection half, AP on the report half (module docstring)."""
    labels = np.asarray(labels).astype(np.int64)
    truth = np.asarray(truth, dtype=bool)
    train = np.asarray(split) == "train"
    sel, rep = halves(len(labels), np.flatnonzero(train), seed=seed)
    rows = np.arange(len(labels))
    ev_cf = mis.evidence_from_arrays(*crossfit) if crossfit is not None else None
    grid = []
    evs = {}
    for k in ks:
        ev = mis.oos_evidence(z, labels, train_mask=train, class_means=class_means, k=k, sigma=sigma,
                              n_classes=n_classes, seed=seed)
        if ev_cf is not None:
            ev = mis.pool(ev, ev_cf)
        evs[k] = ev
        p_given = ev.post[rows, labels]
        for trust in (True, False):
            sv = ev.score_votes if trust else ev.votes
            disagree = np.clip(1.0 - sv[rows, labels] / max(ev.k, 1), 0.0, 1.0)
            for w in weights:
                score = disagree + w * (1.0 - p_given)
                grid.append({"k": k, "trust": trust, "posterior_weight": w,
                             "ap_selection": _ap(truth[sel], score[sel]), "ap_report": _ap(truth[rep], score[rep])})
    best = max(grid, key=lambda g: g["ap_selection"])
    default = next((g for g in grid if g["k"] == mis.MISLABEL_K and g["trust"] and g["posterior_weight"] == mis.POSTERIOR_WEIGHT), None)

    def cl_ap(probs: np.ndarray, on: np.ndarray) -> float:
        q, _ = mis.cleanlab_scores(labels[on], probs)
        return _ap(truth[on], -q)

    kb = best["k"]
    ev = evs[kb]
    trusted_p = mis.knn_probs(ev.score_votes)
    plain_p = mis.knn_probs(ev.votes)
    cv_p = cv_pred_probs(z, labels, np.flatnonzero(train), n_classes, seed=seed)
    cv_full = np.zeros((len(labels), n_classes))
    cv_full[np.flatnonzero(train)] = cv_p
    rankings = {
        "ours": {"selection": best["ap_selection"], "report": best["ap_report"]},
        "cleanlab_cv": {"selection": cl_ap(cv_full[sel], sel), "report": cl_ap(cv_full[rep], rep)},
        "cleanlab_trusted": {"selection": cl_ap(trusted_p[sel], sel), "report": cl_ap(trusted_p[rep], rep)},
        "cleanlab_plain": {"selection": cl_ap(plain_p[sel], sel), "report": cl_ap(plain_p[rep], rep)},
    }
    return {
        "selection_n": int(len(sel)), "report_n": int(len(rep)),
        "selection_base_rate": float(truth[sel].mean()) if len(sel) else float("nan"),
        "report_base_rate": float(truth[rep].mean()) if len(rep) else float("nan"),
        "chosen": {k: best[k] for k in ("k", "trust", "posterior_weight")},
        "default_constants": None if default is None else {**{k: default[k] for k in ("k", "trust", "posterior_weight")},
                                                           "ap_selection": default["ap_selection"], "ap_report": default["ap_report"]},
        "rankings": rankings,
        "best_on_selection": max(rankings, key=lambda r: rankings[r]["selection"]),
        "evidence": "crossfit+leave-one-out" if crossfit is not None else "leave-one-out",
        "grid": grid,
    }


def for_run(run, *, seed: int = 0, **kw) -> dict:
    """:func:`select_and_report` on a stored run (``gt_mislabeled`` or ``gt_flipped`` as truth)."""
    from .analysis import MISLABEL_TRUTH, _as_bool
    from .runs import CLASS_MEANS_ARRAY, CROSSFIT_POSTERIOR, CROSSFIT_VOTES

    items = run.items()
    col = next((c for c in MISLABEL_TRUTH if c in items.columns), None)
    if col is None:
        raise ValueError(f"{run.path}: no ground-truth column ({' or '.join(MISLABEL_TRUTH)}) to score a ranking against")
    cf = (np.asarray(run.array(CROSSFIT_POSTERIOR)), np.asarray(run.array(CROSSFIT_VOTES))) \
        if run.has(CROSSFIT_POSTERIOR) and run.has(CROSSFIT_VOTES) else None
    cfg = run.config
    sigma = float((cfg.get("loss") or {}).get("sigma", 0.5)) if isinstance(cfg, dict) else float(cfg.loss.sigma)
    out = select_and_report(np.asarray(run.embeddings()), items["label"].to_numpy(), items["split"].to_numpy(),
                            _as_bool(items[col]), n_classes=len(run.classes),
                            class_means=np.asarray(run.array(CLASS_MEANS_ARRAY)), sigma=sigma, crossfit=cf,
                            seed=seed, **kw)
    out["truth"] = col
    return out


__all__ = ["halves", "cv_pred_probs", "select_and_report", "for_run"]


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.mislabel_select RUN [--seed S]``: print the report-half table."""
    import argparse
    import json

    from .runs import open_run

    ap = argparse.ArgumentParser(prog="python -m pipeline.mislabel_select")
    ap.add_argument("run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON")
    a = ap.parse_args(argv)
    out = for_run(open_run(a.run), seed=a.seed)
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"selection {out['selection_n']} images (base rate {out['selection_base_rate']:.3f}), report "
          f"{out['report_n']} (base rate {out['report_base_rate']:.3f}); evidence {out['evidence']}; "
          f"chosen on selection: {out['chosen']}")
    for name, r in out["rankings"].items():
        print(f"  {name:<17} AP selection {r['selection']:.3f}   report {r['report']:.3f}")
    if out["default_constants"]:
        d = out["default_constants"]
        print(f"  (current defaults K={d['k']}, weight {d['posterior_weight']}, trust: report {d['ap_report']:.3f})")
    print(f"best on selection: {out['best_on_selection']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
