"""The gain of reviewing labels, measured on real faces (docs/RESULTS.md, "Closing the loop").

FER+ images with their ORIGINAL FER2013 labels (about a third wrong), a light network on the CPU:

1. ``base``: train on the original labels (this is also the "no review" point), ``analyze`` it;
2. a simulated curator reviews the top k training images of our mislabel ranking and corrects each
   to its FER+ majority label (an image whose original label already agrees is left as it is);
   the same with k training images drawn at random; k in ``--ks``;
3. every correction set goes back through ``pipeline train --labels-from corrections.csv`` with
   the base run's recipe and seed;
4. each run is scored on the test split, whose labels are the FER+ majority labels (corrections
   never touch it): kNN accuracy (K = 11 over the training embeddings and their labels) and the
   Eq. 5 posterior accuracy.

    python scripts/gain_experiment.py ../shared/data/fer --work /tmp/gain --out-json docs/img/gain_ferplus.json \
        --plot docs/img/gain_ferplus.png

Subset (seeded): ``--train`` FER+ training images, ``--val`` validation images (original labels,
for model selection, as a user would have them), ``--test`` test images; images whose FER+
majority is contempt (no FER2013 class) or that FER2013 holds with conflicting labels are left
out. Steps already complete in ``--work`` are reused, so an interrupted run continues; results an
earlier call wrote to ``--out-json`` on the same setup (sizes, epochs, seed) are kept, marked
``earlier_call``, so k can be added a few at a time. The plot needs matplotlib (``pip install -e ".[docs]"``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.runs import ITEMS_TABLE, METRICS_JSON, MISLABELS_TABLE  # noqa: E402


def build_manifest(fer: Path, work: Path, n_train: int, n_val: int, n_test: int, seed: int) -> Path:
    from pipeline.sources import ferplus as F

    out = work / "manifest.csv"
    if out.is_file():
        return out
    fp = F.read_ferplus_labels(fer)
    orig = pd.read_csv(fer / "fer2013_original_labels.csv", dtype=str, keep_default_na=False)
    m = orig.merge(fp[["folder", "image", "split", "majority"]], on=["folder", "image"])
    contempt = F.FERPLUS_CLASSES.index("contempt")
    m = m[(m["majority"] >= 0) & (m["majority"] != contempt) & (m["fer2013_label"].str.strip() != "")]
    rng = np.random.default_rng(seed)
    parts = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        s = m[m["split"] == split]
        parts.append(s.iloc[np.sort(rng.choice(len(s), min(n, len(s)), replace=False))])
    sub = pd.concat(parts)
    sub_csv = work / "original_subset.csv"
    sub[["folder", "image", "fer2013_label"]].to_csv(sub_csv, index=False)
    tmp = work / "manifest_original.csv"
    F.write_original_labels_manifest(fer, sub_csv, tmp, image_root=work / "img")
    man = pd.read_csv(tmp)
    test = man["split"] == "test"
    man.loc[test, "label"] = man.loc[test, "gt_label"]       # the yardstick: FER+ majority labels
    man.to_csv(out, index=False)
    return out


def pipeline(*args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"pipeline {' '.join(map(str, args[:3]))} failed: {p.stderr.strip()[-500:]}")
    print(f"  pipeline {args[0]} {args[-1] if args[0] == 'analyze' else ''} {time.time() - t0:.0f} s", flush=True)


def complete(run: Path) -> bool:
    try:
        return json.loads((run / "manifest.json").read_text())["status"] == "complete"
    except (OSError, ValueError, KeyError):
        return False


def scores(run: Path) -> dict:
    m = json.loads((run / METRICS_JSON).read_text())["test"]
    man = json.loads((run / "manifest.json").read_text())
    return {"knn_accuracy": m["knn_accuracy"], "posterior_accuracy": m.get("posterior_accuracy"),
            "wall_s": man.get("wall_s")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fer", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--ks", default="250,500,1000,2000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    a = ap.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ks = [int(k) for k in a.ks.split(",")]
    t_all = time.time()
    man = build_manifest(a.fer.resolve(), work, a.train, a.val, a.test, a.seed)
    recipe = ["--data", f"csv:{man}", "--backbone", "light", "--epochs", str(a.epochs), "--seed", str(a.seed),
              "--device", "cpu", "--no-progress-bar", "--quiet"]
    base = work / "base"
    if not complete(base):
        pipeline("train", *recipe, "--out", base, *(["--resume"] if (base / "manifest.json").exists() else []))
    if not (base / MISLABELS_TABLE).is_file():
        pipeline("analyze", "--maps", "none", base)
    items = pd.read_parquet(base / ITEMS_TABLE)
    mis = pd.read_parquet(base / MISLABELS_TABLE)
    train_rows = np.flatnonzero(items["split"].to_numpy() == "train")
    wrong = (items["label_name"].astype(str) != items["gt_label"].astype(str)).to_numpy()
    ranked = train_rows[np.argsort(mis["rank"].to_numpy()[train_rows], kind="stable")]
    shuffled = np.random.default_rng(a.seed + 1).permutation(train_rows)
    results = {"no review": {"k": 0, "corrected": 0, **scores(base)}}
    print(f"base: {results['no review']}", flush=True)
    for how, order in (("ranked", ranked), ("random", shuffled)):
        for k in ks:
            rows = order[:k]
            name = f"{how}-{k}"
            corr = work / f"{name}.csv"
            pd.DataFrame({"id": items["id"].to_numpy()[rows], "label": items["gt_label"].to_numpy()[rows]}).to_csv(corr, index=False)
            out = work / name
            if not complete(out):
                pipeline("train", *recipe, "--out", out, "--labels-from", corr, "--parent", base,
                         *(["--resume"] if (out / "manifest.json").exists() else []))
            results[name] = {"k": k, "how": how, "corrected": int(wrong[rows].sum()), **scores(out)}
            print(f"{name}: {results[name]}", flush=True)
    info = {"train": int(len(train_rows)), "wrong_in_train": int(wrong[train_rows].sum()),
            "test": int((items["split"] == "test").sum()), "val": int((items["split"] == "val").sum()),
            "epochs": a.epochs, "backbone": "light", "seed": a.seed, "wall_s": round(time.time() - t_all, 1),
            "load_average": os.getloadavg(), "results": results}
    if a.out_json and a.out_json.is_file():     # keep what an earlier call measured on the same setup
        try:
            old = json.loads(a.out_json.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        setup = ("train", "wrong_in_train", "test", "val", "epochs", "backbone", "seed")
        if all(old.get(f) == info[f] for f in setup):
            for name, res in (old.get("results") or {}).items():
                if name not in results:
                    results[name] = {**res, "earlier_call": True}
            info["results"] = dict(sorted(results.items(), key=lambda kv: (kv[1].get("how", ""), kv[1]["k"])))
    print(json.dumps(info, indent=1))
    if a.out_json:
        a.out_json.parent.mkdir(parents=True, exist_ok=True)
        a.out_json.write_text(json.dumps(info, indent=1))
    if a.plot:
        plot(info, a.plot)
    return 0


def plot(info: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"--plot {path}: matplotlib is not installed (pip install -e \".[docs]\"); the JSON has every figure",
              file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = info["results"]
    base = r["no review"]["knn_accuracy"] * 100
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for how, style in (("ranked", "o-"), ("random", "s--")):
        pts = sorted((v["k"], v["knn_accuracy"] * 100) for v in r.values() if v.get("how") == how)
        ax.plot([0] + [p[0] for p in pts], [base] + [p[1] for p in pts], style,
                label=f"top k of our ranking" if how == "ranked" else "k at random")
    ax.set_xlabel("training images reviewed (k)")
    ax.set_ylabel("test kNN accuracy vs FER+ labels (%)")
    ax.set_title(f"FER+ {info['train']:,} training images, original labels", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
