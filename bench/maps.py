"""(d) openTSNE against scikit-learn's t-SNE and UMAP on the same embeddings.

openTSNE and UMAP run through :func:`pipeline.maps.compute_map` with the project's defaults
(what ``analyze`` runs): t-SNE 250 early-exaggeration + 500 iterations, UMAP 200 epochs.
scikit-learn's Barnes-Hut t-SNE gets the same 750 iterations (sklearn counts its 250
exaggerated ones inside ``max_iter``), perplexity, PCA initialisation
and learning rate, and at most 2 threads like openTSNE. Each method runs in its own child
process under a time budget; UMAP's first fit in a process pays the numba compile, so it is
fitted twice at the first size and the difference is reported as the compile.
"""
from __future__ import annotations

import contextlib
import io
import re
import time

import numpy as np

SK_ITERS = 750      # sklearn counts its 250 early-exaggeration iterations inside max_iter
_ITER = re.compile(r"\[t-SNE\] Iteration (\d+):")


class _Progress(io.TextIOBase):
    """Turns sklearn's verbose lines into progress results (iteration, seconds since the start)."""

    def __init__(self, n: int, t0: float):
        self.n, self.t0, self.buf = n, t0, ""

    def write(self, s: str) -> int:
        from .subproc import emit

        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            m = _ITER.search(line)
            if m:
                emit({"method": "sklearn", "n": self.n, "event": "progress", "iter": int(m.group(1)),
                      "t": time.perf_counter() - self.t0})
        return len(s)


def _sklearn_tsne(z: np.ndarray, *, seed: int, max_iter: int, progress: _Progress) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = z.shape[0]
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
    with threadpool_limits(limits=2), contextlib.redirect_stdout(progress):
        return TSNE(n_components=2, perplexity=perplexity, max_iter=max_iter, init="pca", learning_rate="auto",
                    method="barnes_hut", random_state=seed, n_jobs=2, verbose=2).fit_transform(z)


def map_task(args: dict) -> None:
    """Worker: fit ``args["method"]`` on the embeddings of each size in ``args["sizes"]``."""
    from pipeline.maps import compute_map

    from .subproc import emit

    method = args["method"]
    sizes = [int(n) for n in args["sizes"]]
    paths = {int(n): p for n, p in args["paths"].items()}
    plan = [(n, "first") for n in sizes]
    if method == "umap":                          # the first fit compiles; fit the first size again warm
        plan.insert(1, (sizes[0], "warm"))
    ee, it = args.get("tsne_iters", (250, 500))
    for n, fit in plan:
        z = np.load(paths[int(n)])
        emit({"method": method, "n": int(n), "fit": fit, "event": "start"})
        t0 = time.perf_counter()
        if method == "sklearn":
            y = _sklearn_tsne(z, seed=args.get("seed", 0), max_iter=max(250, ee + it), progress=_Progress(int(n), t0))
        elif method == "opentsne":
            y = compute_map(z, method="tsne", seed=args.get("seed", 0), n_iter=it, early_exaggeration_iter=ee)
        else:
            y = compute_map(z, method="umap", seed=args.get("seed", 0))
        dt = time.perf_counter() - t0
        if not np.isfinite(y).all():
            raise RuntimeError(f"{method} map at {n} points holds NaN/inf")
        emit({"method": method, "n": int(n), "fit": fit, "event": "done", "seconds": dt})


def sklearn_estimate(progress: list[dict], total_iters: int = SK_ITERS) -> float | None:
    """Extrapolated sklearn t-SNE time from its last two progress reports, None with fewer."""
    if len(progress) < 2:
        return None
    a, b = progress[-2], progress[-1]
    if b["iter"] <= a["iter"]:
        return None
    rate = (b["t"] - a["t"]) / (b["iter"] - a["iter"])
    return b["t"] + rate * max(0, total_iters - b["iter"])
