"""Run fixtures for the explorer's tests.

- :func:`pipeline_run_dir` builds ONE small real run per test session with the real pipeline
  (``python -m pipeline train --data synthetic:600 --epochs 1`` then ``analyze``).
- :func:`fake_run` writes a contract-conforming run (docs/RUN_FORMAT.md) straight through
  ``pipeline.runs`` in well under a second, at any size: the speed tests use it at 35,000 images,
  where training for real would take far longer than the measurement.

Import the fixtures you use into a test module: ``from explorer_fixtures import pipeline_run_dir``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.runs import STATUS_COMPLETE, create_run

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def _pipeline(*args: str, timeout: float = 600) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def pipeline_run_dir(tmp_path_factory) -> Path:
    """A small complete, analysed run made by the real pipeline (once per session; ~1 min)."""
    # Each test module that imports this fixture gets its own definition (and cache), so the run
    # is kept at a fixed place under the session's base temp and built only by the first one.
    out = tmp_path_factory.getbasetemp() / "explorer-pipeline-run" / "fixture"
    if (out / "analysis" / "summary.json").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _pipeline("train", "--data", "synthetic:600", "--epochs", "1", "--out", str(out), "--no-progress-bar")
    _pipeline("analyze", str(out), "--maps", "pca")  # t-SNE / UMAP add ~30 s each here; the views read any map
    return out


@pytest.fixture
def runs_root(tmp_path, pipeline_run_dir, monkeypatch) -> Path:
    """A fresh runs root holding a copy of the pipeline run, with the explorer pointed at it."""
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(pipeline_run_dir, root / "fixture")
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(root))
    monkeypatch.setenv("SUBCLASS_EXPLORER_DATA_ROOTS", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    return root


def _face(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 90 + 60 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.12)
    mouth = np.abs(yy - 0.72 + 0.03 * np.sin(label) * (xx - 0.5) * 4) < 0.03
    img[mouth & (np.abs(xx - 0.5) < 0.2)] = 40
    for ex in (0.35, 0.65):
        img[(np.abs(xx - ex) < 0.05) & (np.abs(yy - 0.4) < 0.03 + 0.01 * (label % 3))] = 30
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def fake_run(path: Path, n: int = 600, *, seed: int = 0, image_size: int = 48, analysed: bool = True,
             subclasses_per_class: int = 3) -> Path:
    """Write a complete run of ``n`` images through ``pipeline.runs`` (no training)."""
    rng = np.random.default_rng(seed)
    C, D = len(CLASSES), 16
    run = create_run(path, config={"data": {"spec": f"fake:{n}"}, "model": {"backbone": "light"},
                                   "loss": {"name": "sgm"}, "train": {"epochs": 1}}, classes=CLASSES)
    gt = rng.integers(0, C, n)
    flipped = rng.random(n) < 0.08
    label = np.where(flipped, rng.integers(0, C, n), gt)
    sub_in = rng.integers(0, subclasses_per_class, n)
    split = rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1])
    centers = rng.normal(0, 3, (C * subclasses_per_class, D))
    z = (centers[gt * subclasses_per_class + sub_in] + rng.normal(0, 1, (n, D))).astype(np.float32)
    pred = np.where(rng.random(n) < 0.8, gt, rng.integers(0, C, n))
    items = pd.DataFrame({
        "id": [f"fake-{i:06d}" for i in range(n)],
        "source": "fake", "split": split, "label": label.astype(np.int64),
        "label_name": np.asarray(CLASSES, dtype=object)[label], "path": "",
        "gt_label": gt.astype(np.int64), "gt_label_name": np.asarray(CLASSES, dtype=object)[gt],
        "gt_subclass": (gt * subclasses_per_class + sub_in).astype(np.int64),
        "gt_subclass_name": [f"{CLASSES[g]}: kind {s}" for g, s in zip(gt, sub_in)],
        "gt_flipped": flipped, "gt_glasses": rng.random(n) < 0.2, "gt_baby": rng.random(n) < 0.1,
        "gt_skin": rng.random(n).astype(np.float32),
        "pred": pred.astype(np.int64), "pred_name": np.asarray(CLASSES, dtype=object)[pred],
        "posterior_pred": rng.random(n).astype(np.float32), "p_given": rng.random(n).astype(np.float32),
    })
    run.put_table("items.parquet", items)
    protos = np.stack([_face(rng, c, image_size) for c in range(C)])
    imgs = np.clip(protos[gt].astype(np.int16) + rng.integers(-20, 20, (n, image_size, image_size)), 0, 255).astype(np.uint8)
    run.put_array("images.npy", imgs)
    run.put_array("embeddings.npy", z)
    run.put_array("class_means.npy", np.stack([z[label == c].mean(0) if (label == c).any() else np.zeros(D, np.float32)
                                               for c in range(C)]).astype(np.float32))
    split_metrics = {"knn_accuracy": 0.8, "knn_precision": 0.78, "knn_recall": 0.77, "knn_f1": 0.775,
                     "kmeans_nmi": 0.6, "kmeans_f1": 0.7, "recall_at": {"1": 0.8, "32": 0.99},
                     "acc_at": {"1": 0.8}, "posterior_accuracy": 0.79}
    run.put_json("metrics.json", {s: dict(split_metrics, n=int((split == s).sum())) for s in ("train", "val", "test")})
    t0 = 1_700_000_000.0
    with open(path / "progress.jsonl", "w") as fh:
        import json
        fh.write(json.dumps({"event": "start", "time": t0, "steps": 20}) + "\n")
        for s in range(1, 21):
            fh.write(json.dumps({"event": "step", "step": s, "steps": 20, "epoch": 1 + (s - 1) // 10,
                                 "loss": 1.0 / s, "time": t0 + s, "eta_s": 20 - s, "level": 1}) + "\n")
            if s % 10 == 0:
                fh.write(json.dumps({"event": "epoch", "epoch": s // 10, "loss": 1.0 / s, "time": t0 + s, "level": 1}) + "\n")
        fh.write(json.dumps({"event": "done", "time": t0 + 21}) + "\n")
    if analysed:
        K = C * subclasses_per_class
        sub = (label * subclasses_per_class + sub_in).astype(np.int64)
        run.put_table("analysis/subclasses.parquet", pd.DataFrame({"subclass": sub}))
        subs = []
        for k in range(K):
            members = np.flatnonzero(sub == k)
            c = k // subclasses_per_class
            if members.size == 0:
                members = np.array([0])
            mean = z[members].mean(0)
            order = members[np.argsort(((z[members] - mean) ** 2).sum(1))]
            subs.append({"id": k, "class": c, "class_name": CLASSES[c], "index_in_class": k % subclasses_per_class,
                         "size": int((sub == k).sum()), "share": float((sub == k).sum() / max(1, (label == c).sum())),
                         "medoid": int(order[0]), "topk": [int(r) for r in order[:16]], "variance": 1.0})
        run.put_json("analysis/subclasses.json", {"mode": "bic", "subclasses": subs,
                                                  "bic": {c: [[1, 10.0], [2, 8.0], [3, 7.5]] for c in CLASSES}})
        run.put_array("analysis/subclass_means.npy", np.zeros((K, D), np.float32))
        maps = []
        for m in ("tsne", "umap", "pca"):
            xy = (z[:, :2] + rng.normal(0, 0.3, (n, 2))).astype(np.float32)
            name = f"analysis/maps/{m}_fake.npy"
            run.put_array(name, xy)
            maps.append({"method": m, "params": {}, "seed": 0, "key": "fake", "file": name})
        run.put_json("analysis/maps.json", maps)
        score = rng.random(n) + flipped
        suggested = np.where(flipped, gt, pred)
        order = np.argsort(-score, kind="stable")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(1, n + 1)
        cl = rng.random(n) * (1 - 0.6 * flipped)
        cl_rank = np.empty(n, np.int64)
        cl_rank[np.argsort(cl, kind="stable")] = np.arange(1, n + 1)
        run.put_table("analysis/mislabels.parquet", pd.DataFrame({
            "score": score.astype(np.float32), "suggested": suggested.astype(np.int64),
            "suggested_name": np.asarray(CLASSES, dtype=object)[suggested],
            "p_given_oos": rng.random(n).astype(np.float32), "knn_disagree": rng.random(n).astype(np.float32),
            "rank": rank, "cleanlab_score": cl.astype(np.float32), "cleanlab_rank": cl_rank,
            "cleanlab_issue": cl < 0.1}))
        m = np.zeros((C, C), np.int64)
        np.add.at(m, (label, pred), 1)
        cells: dict = {}
        for r in range(n):
            cells.setdefault(f"{label[r]},{pred[r]}", []).append(r)
        run.put_json("analysis/confusion.json", {"classes": CLASSES, "matrix": m.tolist(), "cells": cells})
        run.put_json("analysis/summary.json", {"rows": [s["medoid"] for s in subs][:32], "method": "fake"})
    run.save_manifest(status=STATUS_COMPLETE, data={"spec": f"fake:{n}", "n_images": n,
                                                     "splits": {s: int((split == s).sum()) for s in ("train", "val", "test")}},
                      device="cpu", wall_s=1.0)
    return path
