"""Cross-fitting: K fold models, each trained (a complete run under ``<run>/crossfit/fold<k>``) on
the other folds of the training split, give every image mislabel evidence from a model its label
never shaped."""
from __future__ import annotations

from dataclasses import replace as dc_replace

import numpy as np

from . import metrics as M
from .config import RunConfig
from .runs import CLASS_MEANS_ARRAY, CROSSFIT_POSTERIOR, CROSSFIT_VOTES, MANIFEST, Run, RunError, open_run
from .sources import Dataset
from .trainer import Trainer, say


def crossfit(run: Run, ds: Dataset, cfg: RunConfig, *, quiet: bool = True, progress_bar: bool = False) -> None:
    """Out-of-sample evidence for mislabel ranking by cross-fitting.

    The training split is cut into K label-stratified folds; for each fold a model is trained on the
    other K-1 (a complete run under ``<run>/crossfit/fold<k>``, resumable like any run; its checkpoint
    is chosen on 10 % of those K-1 folds, carved per class) and embeds the held-out fold, so no image's label ever shaped the embedding that judges it. Rows outside the
    training split are scored by every fold model and averaged. Writes ``crossfit_posterior.npy``
    (N, C) (Eq. 5 against the fold's training class means) and ``crossfit_votes.npy`` (N, C) (labels
    of the k nearest fold-training images) into the run.
    """
    K = int(cfg.train.crossfit)
    C = ds.num_classes
    y = ds.table["label"].to_numpy().astype(np.int64)
    split = ds.table["split"].to_numpy()
    train_rows = np.flatnonzero(split == "train")
    other_rows = np.flatnonzero(split != "train")
    rng = np.random.default_rng([cfg.train.seed, 7919])
    fold = np.empty(len(y), np.int64)
    for c in np.unique(y[train_rows]):
        rows = rng.permutation(train_rows[y[train_rows] == c])
        fold[rows] = np.arange(len(rows)) % K
    post = np.zeros((len(y), C), np.float64)
    votes = np.zeros((len(y), C), np.float64)
    fold_cfg = cfg.replace(train=dc_replace(cfg.train, crossfit=0), hierarchy=dc_replace(cfg.hierarchy, levels=1))
    # each fold model picks its checkpoint on a validation set carved (label-stratified, 10 %) from
    # its own training rows: the images it will judge (its held-out fold) and the run's val and
    # test rows never choose its weights
    for f in range(K):
        held = train_rows[fold[train_rows] == f]
        fit_all = train_rows[fold[train_rows] != f]
        is_val = np.zeros(len(fit_all), bool)
        for c in np.unique(y[fit_all]):
            idx = np.flatnonzero(y[fit_all] == c)
            if len(idx) >= 10:
                is_val[rng.permutation(idx)[: len(idx) // 10]] = True
        fit, fval = fit_all[~is_val], fit_all[is_val]
        rows = np.concatenate([fit, fval, held, other_rows])
        sub = ds.subset(rows)
        sub.table["split"] = np.concatenate([np.full(len(fit), "train"), np.full(len(fval), "val"),
                                             np.full(len(held) + len(other_rows), "test")]).astype(object)
        out = run.path / "crossfit" / f"fold{f}"
        say(f"cross-fitting fold {f + 1}/{K}: training on {len(fit)} images, judging {len(held)}", quiet)
        try:
            fr = open_run(out)                      # already done (a resumed run)
        except RunError:
            resume = (out / MANIFEST).exists()
            fr = Trainer(fold_cfg, out, resume=resume, quiet=True, progress_bar=progress_bar, dataset=sub).run()
        z = np.asarray(fr.embeddings())
        mu = np.asarray(fr.array(CLASS_MEANS_ARRAY))
        nf = len(fit) + len(fval)       # judged rows follow the fold's train and val rows
        p = M.gaussian_posterior(z[nf:], mu, sigma=cfg.loss.sigma)
        v = M.knn_votes(z[:len(fit)], y[fit], z[nf:], k=cfg.train.knn_k, num_classes=C) * cfg.train.knn_k
        nh = len(held)
        post[held] = p[:nh]
        votes[held] = v[:nh]
        post[other_rows] += p[nh:] / K
        votes[other_rows] += v[nh:] / K
    run.put_array(CROSSFIT_POSTERIOR, post.astype(np.float32))
    run.put_array(CROSSFIT_VOTES, votes.astype(np.float32))
    run.save_manifest()
