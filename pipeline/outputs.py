"""A trained model's run files: every image embedded, predictions and the protocol's metrics
(:func:`write_outputs`), and the softmax baseline's own classifier prediction."""
from __future__ import annotations

import numpy as np
import torch

from . import metrics as M
from .config import RunConfig
from .distributed import NullRun, embed_sharded
from .embed import backbone_feature_levels
from .errors import TrainingError
from .runs import (CLASS_MEANS_ARRAY, EMBEDDINGS_ARRAY, FEATURES_ARRAY, IMAGES_ARRAY, ITEMS_TABLE, METRICS_JSON,
                   MID_FEATURES_ARRAY, Run)
from .sources import Dataset


def _classifier_head(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray] | None:
    """(W (C, D), b (C,)) of the softmax baseline's linear classifier; None for metric losses."""
    lin = getattr(model, "classifier", None)
    if lin is None:
        return None
    return lin.weight.detach().float().cpu().numpy(), lin.bias.detach().float().cpu().numpy()



def classifier_predict(z: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The softmax baseline's own prediction: argmax of its classifier's logits on the embedding."""
    return (np.asarray(z, np.float32) @ weight.T + bias).argmax(1)


def write_outputs(run: Run, ds: Dataset, model: torch.nn.Module, cfg: RunConfig, dev: torch.device,
                  sub_levels: np.ndarray | None = None) -> dict:
    """Embed every image; write items.parquet, images.npy, embeddings.npy, features.npy, class_means.npy and
    metrics.json into ``run`` (not the manifest's status: the caller does that)."""
    z = embed_sharded(model, ds.images, device=dev, bf16=cfg.train.bf16)
    if isinstance(run, NullRun):
        return {}
    if not np.isfinite(z).all():
        raise TrainingError("embeddings hold NaN or inf; the model diverged")
    y = ds.table["label"].to_numpy().astype(np.int64)
    split = ds.table["split"].to_numpy()
    tr = split == "train"
    C = ds.num_classes
    mu = M.class_means(z[tr], y[tr], C)
    post = M.gaussian_posterior(z, mu, sigma=cfg.loss.sigma)
    k = cfg.train.knn_k
    pred = np.empty(len(y), np.int64)
    pred[tr] = M.knn_predict(z[tr], y[tr], z[tr], k=k, num_classes=C, exclude_self=True)
    if (~tr).any():
        pred[~tr] = M.knn_predict(z[tr], y[tr], z[~tr], k=k, num_classes=C)
    items = ds.table.copy()
    if ds.votes is not None:
        for j, c in enumerate(ds.classes):
            items[f"vote_{c}"] = ds.votes[:, j].astype(np.float32)
    items["pred"] = pred
    items["pred_name"] = np.asarray(ds.classes, dtype=object)[pred]
    items["posterior_pred"] = post[np.arange(len(y)), pred].astype(np.float32)
    items["p_given"] = post[np.arange(len(y)), y].astype(np.float32)
    if sub_levels is not None and cfg.hierarchy.levels > 1:
        items["dgms_subclass"] = sub_levels.astype(np.int64)
    metrics = {}
    for s in ("train", "val", "test"):
        m = split == s
        if m.sum() < 2:
            continue
        metrics[s] = M.evaluate_split(z[tr], y[tr], z[m], y[m], num_classes=C, k=k, sigma=cfg.loss.sigma,
                                      means=mu, seed=cfg.train.seed, exclude_self=(s == "train"))
    head = _classifier_head(model)
    if head is not None:
        cls_pred = classifier_predict(z, *head)
        for s in metrics:
            metrics[s]["classifier_accuracy"] = float((cls_pred[split == s] == y[split == s]).mean())
    run.put_array(IMAGES_ARRAY, ds.images)
    run.put_array(EMBEDDINGS_ARRAY, z)
    # the backbone's pooled feature maps: what analyze finds sub-classes on (pipeline.embed)
    feats = backbone_feature_levels(model, ds.images, fit_rows=np.flatnonzero(tr), device=dev, seed=cfg.train.seed,
                                    levels=("last", "mid"))
    run.put_array(FEATURES_ARRAY, feats["last"])
    run.put_array(MID_FEATURES_ARRAY, feats["mid"])
    run.put_array(CLASS_MEANS_ARRAY, mu)
    run.put_table(ITEMS_TABLE, items)
    old = run.json(METRICS_JSON) if run.has(METRICS_JSON) else {}
    old.update(metrics)
    run.put_json(METRICS_JSON, old)
    return metrics
