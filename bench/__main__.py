"""``python -m bench cpu|gpu [--quick] [--out PATH] [--budget SECONDS]``; ``python -m bench neighbours [...]``."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["neighbours"]:
        from .neighbours import main as neighbours

        return neighbours(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench", description=(
        "Subclass Explorer benchmarks: our training step vs the bare model step, torch.compile on/off, "
        "embedding vs bare forward, openTSNE vs scikit-learn t-SNE vs UMAP, analyze time and memory."))
    ap.add_argument("mode", choices=("cpu", "gpu", "neighbours"),
                    help="neighbours: approximate against exact neighbour search (its own options)")
    ap.add_argument("--quick", action="store_true", help="toy sizes (a smoke run of every code path)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results file (default ./bench-<mode>.json)")
    ap.add_argument("--budget", type=float, default=None,
                    help="total seconds for the slow jobs' budgets (default: the mode's own, 570 for cpu)")
    a = ap.parse_args(argv)

    if a.mode == "gpu":
        import torch

        if not torch.cuda.is_available():
            print("bench gpu: no CUDA device is visible (torch.cuda.is_available() is False); "
                  "run `python -m bench cpu` on this machine", file=sys.stderr)
            return 2

    from .report import machine, table, to_json, write_json
    from .suite import preset, run_suite

    p = preset(a.mode, quick=a.quick)
    if a.budget is not None:
        if a.budget <= 0:
            ap.error("--budget must be positive")
        p = p.scaled(a.budget)
    out = a.out or Path(f"bench-{a.mode}{'-quick' if a.quick else ''}.json")
    info = machine()
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"bench {a.mode}{' --quick' if a.quick else ''}: {started}, {info.get('gpu') or str(info['cpus']) + ' CPUs'}, "
          f"torch {info['torch']}, deadline {p.total_s:.0f} s", file=sys.stderr, flush=True)
    rows, raw, wall = run_suite(p)
    from dataclasses import asdict

    try:
        info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    settings = {k: v for k, v in asdict(p).items() if k != "notes"}
    obj = to_json(rows, mode=a.mode, quick=a.quick, wall_s=wall, settings=settings, info=info)
    obj["raw"] = raw
    write_json(out, obj)
    print(table(rows))
    print(f"\nwall time {wall:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
