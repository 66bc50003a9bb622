"""``python -m bench.large_maps``: t-SNE and UMAP maps of an AffectNet-size run (450,000 images).

Above ``pipeline.maps.MAX_FIT`` (100,000) points the maps are fit on a seeded sample and the
rest are placed with the fitted model's ``transform``. This measures, for each method in its own
child process (so peak memory is the method's own): the whole map at N points, and, in the same
child and on the same embeddings, the fit on the sample alone, so the table shows what placing
the other N - 100,000 points costs next to the fit. It also checks the placement: the share of
placed points whose 15 nearest fitted points (on the map) mostly carry their own class.

Embeddings: the synthetic Gaussian mixture of ``bench.synthetic`` (64-D, 8 unbalanced classes
of 1-4 sub-clusters each). Writes ``bench-large-maps.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bigmap_task(args: dict) -> None:
    """Worker: the map of ``args["path"]`` with ``args["method"]`` at the pipeline's defaults."""
    from pipeline.maps import DEFAULTS, compute_map

    from .subproc import emit, peak_rss_mb

    z = np.load(args["path"])
    y = np.load(args["labels"])
    method = args["method"]
    max_fit = int(args.get("max_fit") or DEFAULTS[method]["max_fit"])
    n = z.shape[0]
    fit_rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, max_fit), replace=False))
    t0 = time.perf_counter()
    if method == "umap":                                 # numba compiles on the first fit: not counted
        compute_map(z[:2000], method=method, seed=0, max_fit=max_fit)
    emit({"event": "start", "n": n, "max_fit": max_fit, "warmup_s": time.perf_counter() - t0})
    t0 = time.perf_counter()
    compute_map(z[fit_rows], method=method, seed=0, max_fit=max_fit)      # the sample alone
    t_fit = time.perf_counter() - t0
    emit({"event": "fit", "seconds": t_fit, "peak_rss_mb": peak_rss_mb()})
    t0 = time.perf_counter()
    m = compute_map(z, method=method, seed=0, max_fit=max_fit)   # what analyze runs: fit the sample, place the rest
    t_all = time.perf_counter() - t0
    if not np.isfinite(m).all():
        raise RuntimeError(f"{method} map at {n} points holds NaN/inf")
    from sklearn.neighbors import KNeighborsClassifier

    rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
    agree = None
    if len(rest):
        probe = np.random.default_rng(1).choice(rest, size=min(len(rest), 20_000), replace=False)
        agree = float((KNeighborsClassifier(15).fit(m[fit_rows], y[fit_rows]).predict(m[probe]) == y[probe]).mean())
    emit({"event": "done", "seconds": t_all, "placed_agreement": agree,
          "peak_rss_mb": peak_rss_mb()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.large_maps", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=450_000, help="images (default 450,000)")
    ap.add_argument("--budget", type=float, default=1200.0, help="seconds per method (default 1200)")
    ap.add_argument("--max-fit", type=int, default=None, help="sample size (default: pipeline.maps.MAX_FIT)")
    ap.add_argument("--out", type=Path, default=Path("bench-large-maps.json"))
    a = ap.parse_args(argv)

    from .report import machine
    from .subproc import run_child
    from .synthetic import gaussian_mixture

    info = machine()
    z, y = gaussian_mixture(a.n, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        zp, yp = Path(tmp) / "z.npy", Path(tmp) / "y.npy"
        np.save(zp, z)
        np.save(yp, y)
        for method in ("tsne", "umap"):
            print(f"{method} at {a.n:,} points ...", file=sys.stderr, flush=True)
            r = run_child("bigmap", {"path": str(zp), "labels": str(yp), "method": method, "max_fit": a.max_fit}, budget_s=a.budget)
            ev = {e.get("event"): e for e in r.results}
            rows.append({
                "method": method, "n": a.n, "max_fit": ev.get("start", {}).get("max_fit"),
                "fit_sample_s": ev.get("fit", {}).get("seconds"),
                "whole_map_s": ev.get("done", {}).get("seconds"),
                "placed_agreement": ev.get("done", {}).get("placed_agreement"),
                "peak_rss_mb": ev.get("done", {}).get("peak_rss_mb") or r.peak_rss_mb,
                "timed_out": r.timed_out, "error": r.error,
            })
    print(f"{'method':8s} {'points':>9s} {'fit on sample':>14s} {'whole map':>10s} {'placing share':>14s} "
          f"{'placed agree':>13s} {'peak RSS':>9s}")
    for r in rows:
        fit, whole = r["fit_sample_s"], r["whole_map_s"]
        share = f"{(whole - fit) / whole:.0%}" if fit and whole else "?"
        print(f"{r['method']:8s} {r['n']:>9,d} {fit or float('nan'):>13.1f}s {whole or float('nan'):>9.1f}s "
              f"{share:>14s} {r['placed_agreement'] if r['placed_agreement'] is not None else float('nan'):>13.3f} {r['peak_rss_mb'] or float('nan'):>7.0f}MB"
              + ("  (cut by the budget)" if r["timed_out"] else "") + (f"  {r['error']}" if r["error"] else ""))
    a.out.write_text(json.dumps({"machine": info, "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M")}, indent=2))
    print(f"results in {a.out}")
    return 0 if all(not r["timed_out"] and not r["error"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
