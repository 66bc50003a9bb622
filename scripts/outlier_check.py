"""How well the outlier ranking finds images that are not faces, on data where the answer is known
(docs/RESULTS.md, "Outliers").

Synthetic faces (``synthetic:N``) plus injected non-faces with random labels, spread over the splits
like the faces: blank images (a few grey levels), uniform noise, printed text, geometric patterns
(checkerboards, stripes, gradients, circles). A light network is trained on all of it (the
outliers are in the training data, as they would be in a user's), then the run is analysed, and
``analysis/outliers.parquet``'s ranking is scored against the injected set: AUROC, average
precision, precision at the number injected; next to its parts and to cleanlab
OutOfDistribution on the embedding, on the same run.

    python scripts/outlier_check.py --work /tmp/outliers [--n 2000 --per-kind 15 --epochs 8]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def non_faces(per_kind: int, size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out, kinds = [], []
    yy, xx = np.indices((size, size))
    words = ["SALE", "hello", "42", "RUN", "Figure 3", "abc", "OK", "stop", "page 7", "xyz", "FER", "no", "test", "2013", "id"]
    for i in range(per_kind):
        out.append(np.full((size, size), int(rng.integers(0, 256)), np.uint8)); kinds.append("blank")
        out.append(rng.integers(0, 256, (size, size), dtype=np.uint8)); kinds.append("noise")
        im = Image.new("L", (size, size), int(rng.integers(180, 256)))
        ImageDraw.Draw(im).text((int(rng.integers(0, 10)), int(rng.integers(5, 30))), words[i % len(words)],
                                fill=int(rng.integers(0, 80)))
        out.append(np.asarray(im, np.uint8)); kinds.append("text")
        p = i % 4
        if p == 0:
            g = ((yy // (3 + i % 5) + xx // (3 + i % 5)) % 2) * 255
        elif p == 1:
            g = ((xx // (2 + i % 6)) % 2) * 255
        elif p == 2:
            g = np.clip((xx + yy) * 255 / (2 * size), 0, 255)
        else:
            g = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (6 + i) ** 2) * 255
        out.append(np.asarray(g, np.uint8)); kinds.append("pattern")
    return np.stack(out), kinds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--per-kind", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-json", type=Path, default=None)
    a = ap.parse_args()
    from pipeline import quality as Q
    from pipeline.analysis import analyze
    from pipeline.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from pipeline.runs import OUTLIERS_TABLE, open_run, write_json
    from pipeline.sources import Dataset, load_source
    from pipeline.train import train

    t0 = time.time()
    faces = load_source(f"synthetic:{a.n}")
    odd, kinds = non_faces(a.per_kind, faces.images.shape[1], a.seed)
    rng = np.random.default_rng(a.seed)
    extra = pd.DataFrame({"id": [f"odd-{k}-{i}" for i, k in enumerate(kinds)], "source": "injected",
                          "split": rng.choice(faces.table["split"].to_numpy(), len(odd)),
                          "label": rng.integers(0, faces.num_classes, len(odd)), "path": ""})
    extra["label_name"] = np.asarray(faces.classes, dtype=object)[extra["label"]]
    for c in faces.table.columns:          # the faces' ground-truth columns, filled for the non-faces
        if not c.startswith("gt_"):
            continue
        col = faces.table[c]
        if c == "gt_label":
            extra[c] = extra["label"]
        elif c == "gt_subclass":
            extra[c] = int(col.max()) + 1       # one more hidden group: "not a face"
        elif col.dtype == bool:
            extra[c] = False
        elif pd.api.types.is_numeric_dtype(col):
            extra[c] = col.dtype.type(0)
        else:
            extra[c] = "not a face"
    table = pd.concat([faces.table.assign(gt_outlier=False), extra.assign(gt_outlier=True)], ignore_index=True)
    votes = None if faces.votes is None else np.concatenate([faces.votes, np.eye(faces.num_classes, dtype=np.float32)[extra["label"]] * 10])
    ds = Dataset(table=table, images=np.concatenate([faces.images, odd]), classes=faces.classes, votes=votes,
                 name=f"synthetic:{a.n}+{len(odd)} non-faces")
    cfg = RunConfig(data=DataConfig(spec=f"synthetic:{a.n}"), model=ModelConfig(backbone="light"),
                    train=TrainConfig(epochs=a.epochs, per_class=16, seed=a.seed, device="cpu"))
    out = a.work / "run"
    if not (out / OUTLIERS_TABLE).is_file():
        if out.exists():
            import shutil
            shutil.rmtree(out)
        train(cfg, out, quiet=True, dataset=ds)
        analyze(out, maps=())
    run = open_run(out)
    items = run.items()
    truth = items["gt_outlier"].to_numpy(bool)
    ours = run.table(OUTLIERS_TABLE)["outlier_score"].to_numpy()
    pix = Q.outlier_scores(Q._standardised(np.asarray(run.images()), 16))
    post = 1 - items["posterior_pred"].to_numpy()
    res = {"images": len(items), "injected": int(truth.sum()), "kinds": sorted(set(kinds)), "epochs": a.epochs,
           "test_knn_accuracy": run.metrics()["test"]["knn_accuracy"],
           "stored by analyze (outliers.parquet outlier_score)": Q.ranking_auc(truth, ours),
           "cleanlab OOD on the embedding": Q.ranking_auc(truth, Q.outlier_scores(np.asarray(run.embeddings()))),
           "cleanlab OOD on 16x16 pixel thumbnails": Q.ranking_auc(truth, pix),
           "1 - posterior of the predicted class": Q.ranking_auc(truth, post),
           "per_kind_recall_in_top_n": {}, "wall_s": round(time.time() - t0, 1), "load_average": os.getloadavg()}
    top = np.argsort(-ours, kind="stable")[: int(truth.sum())]
    src = items["id"].astype(str).to_numpy()
    for k in sorted(set(kinds)):
        m = np.char.startswith(src.astype(str), f"odd-{k}-")
        res["per_kind_recall_in_top_n"][k] = float(np.isin(np.flatnonzero(m), top).mean())
    print(json.dumps(res, indent=1))
    if a.out_json:
        write_json(a.out_json, res, sort_keys=False, lenient=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
