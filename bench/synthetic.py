"""Synthetic embeddings and runs for the map and ``analyze`` benchmarks.

The embeddings are a Gaussian mixture in D dimensions: C classes, each made of 1 to 4
sub-clusters of different spread, which is roughly how a trained SGM embedding looks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


def gaussian_mixture(n: int, *, dim: int = 64, classes: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns z: (n, dim) float32 and labels: (n,) int64."""
    rng = np.random.default_rng(seed)
    subs = rng.integers(1, 5, size=classes)
    centers, owner, spread = [], [], []
    for c in range(classes):
        base = rng.normal(0.0, 4.0, dim)
        for _ in range(subs[c]):
            centers.append(base + rng.normal(0.0, 1.5, dim))
            owner.append(c)
            spread.append(rng.uniform(0.6, 1.2))
    centers, owner, spread = np.asarray(centers), np.asarray(owner), np.asarray(spread)
    # class sizes as unbalanced as FER+'s (the largest class about 10x the smallest)
    weights = rng.uniform(0.1, 1.0, size=len(centers))
    comp = rng.choice(len(centers), size=n, p=weights / weights.sum())
    z = centers[comp] + rng.normal(0.0, 1.0, (n, dim)) * spread[comp, None]
    return z.astype(np.float32), owner[comp].astype(np.int64)


def build_run(path: Path, n: int, *, seed: int = 0, image_size: int = 8):
    """A complete run with ``n`` synthetic images, as training would leave it for ``analyze``:
    items (label, split 80/10/10, kNN prediction with 15% disagreement), embeddings, class means.
    images.npy holds blank ``image_size`` thumbnails: ``analyze`` never reads them."""
    import pandas as pd

    from pipeline.config import RunConfig
    from pipeline.runs import (CLASS_MEANS_ARRAY, EMBEDDINGS_ARRAY, IMAGES_ARRAY, ITEMS_TABLE, METRICS_JSON, STATUS_COMPLETE,
                               create_run)

    z, y = gaussian_mixture(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    split = rng.choice(np.array(["train", "val", "test"]), size=n, p=[0.8, 0.1, 0.1])
    pred = np.where(rng.random(n) < 0.15, rng.integers(0, len(CLASSES), n), y)
    tr = split == "train"
    means = np.stack([z[tr & (y == c)].mean(0) for c in range(len(CLASSES))]).astype(np.float32)
    run = create_run(Path(path), config=RunConfig().to_dict(), classes=list(CLASSES))
    run.put_array(IMAGES_ARRAY, np.zeros((n, image_size, image_size), np.uint8))
    run.put_array(EMBEDDINGS_ARRAY, z)
    run.put_array(CLASS_MEANS_ARRAY, means)
    run.put_table(ITEMS_TABLE, pd.DataFrame({
        "label": y, "label_name": np.asarray(CLASSES, dtype=object)[y], "split": split,
        "pred": pred.astype(np.int64), "pred_name": np.asarray(CLASSES, dtype=object)[pred]}))
    run.put_json(METRICS_JSON, {})
    run.save_manifest(status=STATUS_COMPLETE, message="synthetic run for python -m bench")
    return run
