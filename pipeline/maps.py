"""2-D maps of the embedding: openTSNE (FFT gradients), UMAP and PCA, stored per parameters.

Conventions: N images, D embedding size. :func:`compute_map` is pure (``(N, D)`` in,
``(N, 2)`` float32 out, seeded). :func:`get_or_compute` keeps one file per method and parameter
set under ``analysis/maps/`` and the index ``analysis/maps.json`` (RUN_FORMAT.md); asked again
with the same parameters it reads the stored map instead of computing it.

UMAP is imported inside :func:`compute_map` only: the first import and fit compile numba code
(about 45 s), which nothing else should pay for.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .runs import MAPS_DIR, MAPS_INDEX

__all__ = ["METHODS", "DEFAULTS", "compute_map", "map_key", "get_or_compute", "list_maps", "load_map"]

METHODS = ("tsne", "umap", "pca")

# Lean defaults: 4,000 points take ~10 s with openTSNE and a few seconds with UMAP after compile.
# t-SNE's FFT grid grows with the span of the map (one interval per unit by default), and a
# well-clustered embedding spans 100+ units: two units per interval halves the cost, unseen at
# thumbnail scale.
#
# ``max_fit``: above this many points t-SNE and UMAP are fit on a seeded sample of ``max_fit`` and
# the rest are placed with the fitted model's ``transform`` (openTSNE: a short optimisation of
# each new point against the fixed map; UMAP: its own transform), so a 450k-image run gets its
# maps in minutes on a laptop instead of hours.
MAX_FIT = 100_000
# Barnes-Hut below this many fitted points, FFT above: FFT's grid has a fixed cost per iteration
# that dominates small maps (measured on this project's 2-core box, 500 iterations: 800 points
# 13.5 s FFT vs 1.4 s BH; 4,000 points 14.2 s vs 11.3 s; openTSNE's docs put the crossover near 10k).
BH_BELOW = 10_000
DEFAULTS: dict[str, dict[str, Any]] = {
    "tsne": {"perplexity": 30.0, "n_iter": 500, "early_exaggeration_iter": 250, "ints_in_interval": 2,
             "max_fit": MAX_FIT, "transform_iter": 100},
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": 200, "max_fit": MAX_FIT},
    "pca": {},
}


def _params(method: str, params: dict) -> dict:
    if method not in METHODS:
        raise ValueError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    unknown = set(params) - set(DEFAULTS[method])
    if unknown:
        raise ValueError(f"unknown {method} parameter(s): {', '.join(sorted(unknown))}")
    out = dict(DEFAULTS[method])
    out.update(params)
    return out


def compute_map(z: np.ndarray, *, method: str, seed: int = 0, **params: Any) -> np.ndarray:
    """z: (N, D) float -> (N, 2) float32. ``method``: "tsne", "umap" or "pca"; ``params`` override
    :data:`DEFAULTS`. The same ``seed`` gives the same map."""
    p = _params(method, params)
    z = np.ascontiguousarray(z, dtype=np.float32)
    n = z.shape[0]
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        return np.asarray(PCA(n_components=2, random_state=seed).fit_transform(z), dtype=np.float32)
    max_fit = int(p["max_fit"])
    if max_fit < 3:
        raise ValueError(f"{method} max_fit={max_fit} must be at least 3")
    if n > max_fit:
        fit_rows = np.sort(np.random.default_rng(seed).choice(n, size=max_fit, replace=False))
        rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
    else:
        fit_rows, rest = np.arange(n), np.arange(0)
    zf = z[fit_rows] if len(rest) else z
    y = np.empty((n, 2), dtype=np.float32)
    if method == "tsne":
        from openTSNE import TSNE

        nf = zf.shape[0]
        perplexity = float(min(p["perplexity"], max(1.0, (nf - 1) / 3.0)))
        emb = TSNE(n_components=2, perplexity=perplexity, n_iter=int(p["n_iter"]),
                   early_exaggeration_iter=int(p["early_exaggeration_iter"]),
                   ints_in_interval=float(p["ints_in_interval"]),
                   negative_gradient_method="bh" if nf < BH_BELOW else "fft", initialization="pca",
                   n_jobs=2, random_state=seed, verbose=False).fit(zf)
        y[fit_rows] = np.asarray(emb)
        for lo in range(0, len(rest), 50_000):      # bounded memory: the affinity matrix of one chunk
            part = rest[lo:lo + 50_000]
            y[part] = np.asarray(emb.transform(z[part], n_iter=int(p["transform_iter"])))
    else:  # umap
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap

            model = umap.UMAP(n_components=2, n_neighbors=int(min(p["n_neighbors"], zf.shape[0] - 1)),
                              min_dist=float(p["min_dist"]), n_epochs=int(p["n_epochs"]),
                              random_state=seed, n_jobs=1)
            y[fit_rows] = model.fit_transform(zf)
            if len(rest):
                y[rest] = model.transform(z[rest])
    return y


def map_key(method: str, seed: int = 0, **params: Any) -> str:
    """Short hash of method + full parameters (defaults filled in) + seed."""
    p = _params(method, params)
    blob = json.dumps({"method": method, "params": p, "seed": int(seed)}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _fingerprint(z: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(z).tobytes()).hexdigest()[:16]


def list_maps(run) -> list[dict]:
    """The stored map index of a run (``[]`` when there is none)."""
    return list(run.json(MAPS_INDEX)) if run.has(MAPS_INDEX) else []


def load_map(run, entry: dict) -> np.ndarray:
    return np.asarray(run.array(entry["file"], mmap=False), dtype=np.float32)


def get_or_compute(run, method: str, *, seed: int = 0, save: bool = True, **params: Any) -> np.ndarray:
    """The (N, 2) float32 map of ``run``'s embeddings for ``method`` and ``params``.

    Read back from ``analysis/maps/<method>_<key>.npy`` when the index lists it for the same
    parameters, seed and embeddings; otherwise computed, stored and added to
    ``analysis/maps.json``. ``save``: also rewrite the manifest (the caller may batch this).
    """
    full = _params(method, params)
    key = map_key(method, seed, **params)
    z = np.asarray(run.embeddings())
    fp = _fingerprint(z)
    index = list_maps(run)
    name = f"{MAPS_DIR}/{method}_{key}.npy"
    for e in index:
        if e.get("file") == name and e.get("embeddings") == fp and run.has(name):
            y = load_map(run, e)
            if y.shape == (z.shape[0], 2):
                return y
    y = compute_map(z, method=method, seed=seed, **full)
    run.put_array(name, y)
    index = [e for e in index if e.get("file") != name]
    index.append({"method": method, "params": full, "seed": int(seed), "key": key,
                  "file": name, "embeddings": fp})
    run.put_json(MAPS_INDEX, index)
    if save:
        run.save_manifest()
    return y
