"""(e) ``pipeline.analysis.analyze`` wall time and peak memory on synthetic runs.

The parent builds each run (:func:`bench.synthetic.build_run`); a fresh child process opens it
and runs ``analyze``, so the peak resident memory (VmHWM) is analyze's own plus the imports,
which the child reports separately. Step timings stream back as they happen, so a run cut by
its budget still says how far it got.
"""
from __future__ import annotations

import time


def analyze_task(args: dict) -> None:
    """Worker: analyze the run at ``args["run"]`` with ``args["maps"]``."""
    from .subproc import emit, peak_rss_mb

    from pipeline.analysis import analyze   # imports sklearn, pandas, cleanlab's pieces lazily

    import cleanlab.filter  # noqa: F401  (imported by analyze's mislabel step; counted in the baseline)
    import sklearn.mixture  # noqa: F401
    import sklearn.neighbors  # noqa: F401

    emit({"event": "ready", "rss_after_imports_mb": peak_rss_mb()})
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        emit({"event": "log", "t": time.perf_counter() - t0, "msg": msg, "peak_rss_mb": peak_rss_mb()})

    out = analyze(args["run"], maps=tuple(args["maps"]), seed=0, log=log)
    emit({"event": "done", "seconds": time.perf_counter() - t0, "timings": out["timings"],
          "peak_rss_mb": peak_rss_mb()})
