"""Exact and near duplicates in the FER+ images (all 35,710, every folder), and how many cross the
train / test boundary: the figures quoted in docs/RESULTS.md.

    python scripts/fer_duplicates.py ../shared/data/fer [--min-corr 0.95]

Pixels come from ``ferplus_webp.npz`` (48x48 grayscale). Splits are FERPlus's folders
(FER2013Train = train, FER2013Valid = val, FER2013Test = test). Near duplicates use the pixel
thumbnails only (no trained model is involved), then the pixel-correlation check of
:func:`pipeline.quality.find_duplicates`. Where ``fer2013_original_labels.csv`` is present, its
``duplicates`` column (FER2013 rows whose pixels occur more than once in Kaggle's FER2013) is
compared with what we find.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import quality as Q  # noqa: E402
from pipeline.runs import write_json  # noqa: E402

SPLIT = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}


def load_all(fer: Path) -> tuple[pd.DataFrame, np.ndarray]:
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    with np.load(fer / "ferplus_webp.npz", allow_pickle=False) as z:
        webp, off, folder, image = z["webp"], z["offsets"], z["folder"], z["image"]

    def one(k: int) -> np.ndarray:
        with Image.open(io.BytesIO(webp[off[k]:off[k + 1]].tobytes())) as im:
            return np.asarray(im.convert("L").resize((48, 48)) if im.size != (48, 48) else im.convert("L"), np.uint8)

    with ThreadPoolExecutor(4) as ex:
        imgs = np.stack(list(ex.map(one, range(len(image)))))
    table = pd.DataFrame({"folder": folder.astype(str), "image": image.astype(str)})
    table["split"] = table["folder"].map(SPLIT)
    return table, imgs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("fer", type=Path)
    ap.add_argument("--min-corr", type=float, default=Q.MIN_CORR)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    t0 = time.time()
    table, imgs = load_all(a.fer)
    t1 = time.time()
    pairs, counts = Q.find_duplicates(imgs, table["split"].to_numpy(), min_corr=a.min_corr)
    t2 = time.time()
    out = {"images": len(table), "min_corr": a.min_corr, **counts,
           "cross_exact_pairs": int((pairs["cross"] & (pairs["kind"] == "exact")).sum()),
           "cross_near_pairs": int((pairs["cross"] & (pairs["kind"] == "near")).sum()),
           "decode_s": round(t1 - t0, 1), "search_s": round(t2 - t1, 1)}
    orig = a.fer / "fer2013_original_labels.csv"
    if orig.is_file():
        o = pd.read_csv(orig)
        flag = table.merge(o[["folder", "image", "duplicates"]], on=["folder", "image"], how="left")["duplicates"]
        known = flag.fillna(0).to_numpy().astype(bool)
        ours = np.zeros(len(table), bool)
        ours[pairs["a"].to_numpy()] = True
        ours[pairs["b"].to_numpy()] = True
        out["fer2013_duplicates_column"] = int(known.sum())
        out["ours_and_column"] = int((ours & known).sum())
        out["column_not_ours"] = int((known & ~ours).sum())
        out["ours_not_column"] = int((ours & ~known).sum())
    # how sharp the cut is: candidate pairs (thumbnail neighbours) by pixel correlation
    cand = Q._knn_pairs(Q._standardised(imgs, 16), Q.NEAR_K)
    std = Q._standardised(imgs)
    corr = (std[cand[:, 0]] * std[cand[:, 1]]).sum(1)
    edges = [0.85, 0.90, 0.93, 0.95, 0.97, 0.99, 0.999, 1.01]
    out["candidate_corr_histogram"] = {f"{lo:.3f}-{hi:.3f}": int(((corr >= lo) & (corr < hi)).sum())
                                       for lo, hi in zip(edges[:-1], edges[1:])}
    print(json.dumps(out, indent=1))
    if a.json:
        write_json(a.json, out, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
