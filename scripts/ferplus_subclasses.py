"""FER+ without its votes: train the CPU light network on a subset, analyze, and draw a contact sheet
of every class's sub-classes per image facet (medoid first, then the images nearest it).

    python scripts/ferplus_subclasses.py ../shared/data/fer runs/fer_novotes docs/img --n 8000 --epochs 8

The votes are dropped before training (``Dataset.votes = None``), so the run is what a folder of
faces gives: labels only. Sheets: ``<img>/fer_<facet>_<class>.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.analysis import analyze  # noqa: E402
from pipeline.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from pipeline.runs import IMAGES_ARRAY, METRICS_JSON, SUBCLASSES_JSON, open_run  # noqa: E402
from pipeline.sources import load_source  # noqa: E402
from pipeline.train import train  # noqa: E402


def contact_sheet(images: np.ndarray, groups: list[tuple[str, list[int]]], out: Path, *, k: int = 12,
                  scale: int = 2) -> None:
    """One row per group: its caption, then up to ``k`` images (the first is the medoid), each 48 px x scale."""
    from PIL import Image, ImageDraw

    S = images.shape[1] * scale
    label_w, pad = 190, 4
    W = label_w + k * (S + pad)
    H = len(groups) * (S + pad) + pad
    sheet = Image.new("L", (W, H), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (caption, rows) in enumerate(groups):
        y = pad + i * (S + pad)
        for j, line in enumerate(caption.split("\n")):
            draw.text((4, y + 4 + 14 * j), line, fill=0)
        for j, r in enumerate(rows[:k]):
            im = Image.fromarray(np.asarray(images[r], dtype=np.uint8)).resize((S, S), Image.NEAREST)
            sheet.paste(im, (label_w + j * (S + pad), y))
    tmp = out.with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fer_dir")
    ap.add_argument("run_dir")
    ap.add_argument("img_dir")
    ap.add_argument("--n", type=int, default=8000, help="training images (a seeded sample); val/test keep 1/8 each")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=12)
    a = ap.parse_args(argv)
    out = Path(a.run_dir)
    t0 = time.time()
    if not (out / METRICS_JSON).exists():
        ds = load_source(f"ferplus:{a.fer_dir}", DataConfig())
        split = ds.table["split"].to_numpy()
        rng = np.random.default_rng(a.seed)
        keep = []
        for s, n in (("train", a.n), ("val", a.n // 8), ("test", a.n // 8)):
            rows = np.flatnonzero(split == s)
            keep.append(np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False)))
        ds = ds.subset(np.concatenate(keep))
        ds = dataclasses.replace(ds, votes=None)          # labels only, like a folder of faces
        cfg = RunConfig(data=DataConfig(spec=f"ferplus:{a.fer_dir} (subset {a.n}, votes dropped)"),
                        model=ModelConfig(backbone="light"),
                        train=TrainConfig(epochs=a.epochs, per_class=16, seed=a.seed, device="cpu"))
        train(cfg, out, quiet=True, progress_bar=False, dataset=ds)
    res = analyze(out, maps=())
    run = open_run(out)
    print(f"trained and analysed in {time.time() - t0:.0f} s; test kNN {run.metrics()['test']['knn_accuracy']:.3f}")
    js = run.json(SUBCLASSES_JSON)
    images = run.array(IMAGES_ARRAY)
    img_dir = Path(a.img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    for f in js["facets"]:
        for c, cname in enumerate(run.classes):
            subs = sorted((s for s in js["subclasses"] if s["facet"] == f["name"] and s["class"] == c),
                          key=lambda s: -s["size"])
            if not subs:
                continue
            groups = [(f"{cname} #{s['index_in_class'] + 1}\n{s['size']} images ({100 * s['share']:.0f} %)\n"
                       f"leans to {s['lean']['class_name']}\n({100 * s['lean']['p']:.0f} %)", s["topk"]) for s in subs]
            contact_sheet(images, groups, img_dir / f"fer_{f['name']}_{cname}.png", k=a.k)
        print(f["name"], f["n_subclasses"], "sub-classes:", f["about"])
    print({k: v for k, v in res["timings"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
