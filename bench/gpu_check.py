"""Everything one GPU session must show, in one bounded run: ``python -m bench.gpu_check FER_DIR``.

Stages, in this order (the cheapest evidence first, so a session cut short still has it):

1. ``env``: device, torch, CUDA.
2. ``data``: FER+ from ``FER_DIR`` (``ferplus_webp.npz`` or PNGs, plus the three ``label.csv``),
   FER+ majority labels and vote targets, FERPlus's own train / valid / test folders.
3. ``throughput``: our training step (sampler, augmentation, SGM, Adam) against the bare model
   step, and ``embed_images`` against the bare forward pass, alternated round by round in this
   process (:mod:`bench.steps`).
4. ``train_sgm``: SGM on the train split to the paper's protocol (class-balanced batches of 32
   per class, soft vote targets, sigma 0.5, Adam) with a cosine learning rate over the training
   wall clock; at each checkpoint of *training* time (default 60, 150, 240 s) the whole set is
   embedded and the test split scored: kNN (K=11) accuracy against the train split's embeddings
   and K-means NMI. Nothing is chosen on test: the checkpoints are fixed in advance.
5. ``mislabels``: every FER+ image with an original FER2013 label
   (``FER_DIR/fer2013_original_labels.csv``), trained on those labels (votes never reach
   training) with 2-fold cross-fitting, then ``pipeline.analysis.analyze``: AP of our ranking and
   of cleanlab's against FER+ majority disagreement; and :mod:`pipeline.mislabel_select`: the
   constants chosen on one random half of the training split, AP on the other half only, cleanlab
   on 5-fold cross-validated pred_probs and on our trust-weighted votes. Epochs are sized from stage 4's throughput to
   fit the stage budget.
6. ``compile``: ``torch.compile`` of the bare and (CUDA) our step in a child process under what is
   left of the budget (:func:`bench.subproc.run_child`), compile time and compiled vs eager.

Every stage runs inside try/except: a failure is recorded in the JSON (type, message, last
traceback lines) and the next stage runs. A stage is skipped, with the reason, when the global
budget (``--budget``, default 540 s) cannot hold it. The JSON is rewritten after every stage (to
a temporary name, then renamed), so a run killed from outside still leaves what it measured.
Nothing is downloaded. ``--tiny`` is the CPU rehearsal the slow test suite runs: a few hundred
images, the light network, seconds per stage.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.runs import write_json


class Check:
    def __init__(self, out: Path, budget_s: float, meta: dict):
        self.out = Path(out)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": budget_s,
                       **meta, "stages": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def write(self) -> None:
        self.result["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.out, self.result, sort_keys=False, lenient=True)

    def stage(self, name: str, fn, *, need_s: float, share: float = 1.0):
        """Run ``fn(budget_s)`` with ``share`` of what is left (at least ``need_s`` must be left)."""
        left = self.left()
        rec: dict = {}
        self.result["stages"][name] = rec
        if left < need_s:
            rec.update(status="skipped", reason=f"{left:.0f} s of the budget left, the stage needs {need_s:.0f} s")
            self.write()
            print(f"[gpu_check] {name}: skipped ({rec['reason']})", file=sys.stderr, flush=True)
            return None
        t = time.monotonic()
        print(f"[gpu_check] {name}: running ({left:.0f} s of the budget left)", file=sys.stderr, flush=True)
        try:
            value = fn(max(need_s, left * share))
            rec.update(status="ok", **(value if isinstance(value, dict) else {}))
        except BaseException as exc:          # noqa: BLE001 - recorded, then the next stage runs
            if isinstance(exc, KeyboardInterrupt):
                raise
            value = None
            msg = (str(exc).strip().splitlines() or [""])[0][:300]
            rec.update(status="error", error=f"{type(exc).__name__}: {msg}",
                       traceback=traceback.format_exc().strip().splitlines()[-6:])
        rec["wall_s"] = round(time.monotonic() - t, 2)
        self.write()
        print(f"[gpu_check] {name}: {rec['status']} in {rec['wall_s']} s", file=sys.stderr, flush=True)
        return value


# ----------------------------------------------------------------------------- stages
def stage_env(dev: str) -> dict:
    import torch

    out = {"torch": torch.__version__, "device": dev, "cuda_available": torch.cuda.is_available(),
           "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if dev.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(dev))
        out.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2 ** 30, 1), cuda=torch.version.cuda)
    return out


def load_fer(fer_dir: Path, *, tiny: bool, seed: int = 0):
    """FER+ with its majority labels and votes; in tiny mode 240 train, 80 val, 80 test images."""
    from pipeline.config import DataConfig
    from pipeline.sources import load_source

    ds = load_source(f"ferplus:{fer_dir}", DataConfig(spec=f"ferplus:{fer_dir}"))
    if tiny:
        rng = np.random.default_rng(seed)
        split = ds.table["split"].to_numpy()
        rows = np.concatenate([np.sort(rng.choice(np.flatnonzero(split == s), min(n, int((split == s).sum())),
                                                  replace=False)) for s, n in (("train", 240), ("val", 80), ("test", 80))])
        ds = ds.subset(rows)
    return ds


def stage_throughput(backbone: str, dev: str, *, tiny: bool) -> dict:
    from bench.steps import StepSetup, embedding, train_step

    s = StepSetup(backbone=backbone, device=dev, per_class=8 if tiny else 32, n_images=256 if tiny else 4096)
    rounds, round_s = (2, 0.3) if tiny else (3, 3.0)
    st = train_step(s, rounds=rounds, round_s=round_s)
    em = embedding(s, n=256 if tiny else 16384, rounds=rounds, round_s=round_s)
    return {"setup": s.describe(),
            "train_step_images_per_s": {"ours": st["ours"]["ips"], "bare": st["bare"]["ips"],
                                        "ours_over_bare": st["ours"]["ips"] / st["bare"]["ips"]},
            "embedding_images_per_s": {"resident": em["resident"]["ips"], "numpy": em["numpy"]["ips"],
                                       "bare": em["bare"]["ips"],
                                       "resident_over_bare": em["resident"]["ips"] / em["bare"]["ips"]}}


def train_with_checkpoints(ds, *, backbone: str, dev: str, checkpoints: list[float], per_class: int, lr: float,
                           seed: int = 0, log=None) -> dict:
    """SGM training for max(checkpoints) seconds of training wall clock; the test split is scored
    at each checkpoint (evaluation time is not training time and is reported apart)."""
    import torch

    from pipeline import metrics as M
    from pipeline.augment import step_generator
    from pipeline.config import LossConfig, ModelConfig, RunConfig, TrainConfig
    from pipeline.embed import embed_images
    from pipeline.models import build_model
    from pipeline.sampling import ClassBalancedSampler
    from pipeline.step import make_step
    from pipeline.trainer import soft_targets

    device = torch.device(dev)
    cfg = RunConfig(model=ModelConfig(backbone=backbone, embedding_dim=64), loss=LossConfig(name="sgm"),
                    train=TrainConfig(per_class=per_class, lr=lr, device=dev, seed=seed, augment=True, bf16=True))
    torch.manual_seed(seed)
    C = ds.num_classes
    model = build_model(cfg.model, num_classes=C, loss_name="sgm").to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.train.weight_decay)
    step_fn = make_step(model, opt, cfg, C, device)
    y = ds.table["label"].to_numpy().astype(np.int64)
    split = ds.table["split"].to_numpy()
    train_rows, test_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    images = torch.from_numpy(np.ascontiguousarray(ds.images)).to(device)
    tnp = soft_targets(ds)
    targets = torch.from_numpy(tnp).to(device) if tnp is not None else None
    sampler = ClassBalancedSampler(y[train_rows], per_class=per_class, seed=seed)
    steps_per_epoch = max(1, math.ceil(len(train_rows) / sampler.batch_size))
    T = float(max(checkpoints))
    todo = sorted(checkpoints)
    train_s, n_steps, n_images, epoch = 0.0, 0, 0, 0
    points = []
    model.train()
    while todo:
        batches = sampler.epoch(epoch, steps_per_epoch)
        for i, rows_np in enumerate(batches):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(train_s / T, 1.0)))
            rows = torch.from_numpy(train_rows[rows_np]).to(device)
            lab = torch.from_numpy(y[train_rows[rows_np]]).to(device)
            tgt = targets[rows] if targets is not None else None
            terms = step_fn(images[rows], lab, tgt, step_generator(seed, epoch, i))
            if not math.isfinite(terms["loss"]):
                raise RuntimeError(f"loss became {terms['loss']} at step {n_steps + 1}")
            if device.type == "cuda" and (n_steps % 20 == 0):
                torch.cuda.synchronize(device)
            train_s += time.perf_counter() - t
            n_steps += 1
            n_images += len(rows_np)
            if todo and train_s >= todo[0]:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                te = time.perf_counter()
                z = embed_images(model, images, device=device)
                m = M.evaluate_split(z[train_rows], y[train_rows], z[test_rows], y[test_rows], num_classes=C, k=11,
                                     sigma=cfg.loss.sigma, seed=seed)
                model.train()
                pt = {"at_s": todo.pop(0), "train_s": round(train_s, 1), "steps": n_steps, "epochs": round(n_images / len(train_rows), 2),
                      "knn_accuracy": m["knn_accuracy"], "nmi": m["kmeans_nmi"], "knn_f1": m["knn_f1"],
                      "posterior_accuracy": m["posterior_accuracy"], "recall_at_1": m["recall_at"].get("1"),
                      "eval_s": round(time.perf_counter() - te, 1)}
                points.append(pt)
                if log:
                    log(f"train_sgm at {pt['at_s']} s: kNN {pt['knn_accuracy']:.4f} NMI {pt['nmi']:.4f} ({pt['epochs']} epochs)")
            if not todo:
                break
        epoch += 1
    return {"recipe": {"backbone": backbone, "per_class": per_class, "lr": lr, "schedule": "cosine over training wall clock",
                       "sigma": cfg.loss.sigma, "soft_targets": targets is not None, "augment": True,
                       "n_train": int(len(train_rows)), "n_test": int(len(test_rows))},
            "checkpoints": points, "train_images_per_s": round(n_images / max(train_s, 1e-9), 1)}


def original_label_dataset(ds, fer_dir: Path):
    """The FER+ images that have an original FER2013 label, labelled with it; ``gt_mislabeled``
    where it disagrees with the FER+ majority. No votes: they are the ground truth here."""
    import pandas as pd

    from pipeline.sources.base import Dataset
    from pipeline.sources.ferplus import FER2013_TO_FERPLUS

    orig = pd.read_csv(Path(fer_dir) / "fer2013_original_labels.csv", dtype=str, keep_default_na=False)
    orig["fer2013_label"] = orig["fer2013_label"].str.strip().str.lower()
    orig = orig[orig["fer2013_label"] != ""]
    by_id = dict(zip(orig["image"].str.rsplit(".", n=1).str[0], orig["fer2013_label"].map(FER2013_TO_FERPLUS)))
    names = [by_id.get(i) for i in ds.table["id"]]
    rows = np.array([i for i, n in enumerate(names) if isinstance(n, str)], np.int64)
    if len(rows) == 0:
        raise ValueError(f"{fer_dir}: no image of the loaded FER+ set has an original FER2013 label")
    sub = ds.subset(rows)
    t = sub.table.copy()
    cls = list(ds.classes)
    orig_lab = np.array([cls.index(names[i]) for i in rows], np.int64)
    t["gt_label"] = t["label"].to_numpy()
    t["gt_mislabeled"] = orig_lab != t["label"].to_numpy()
    t["label"] = orig_lab
    t["label_name"] = np.asarray(cls, dtype=object)[orig_lab]
    return Dataset(table=t, images=sub.images, classes=cls, votes=None, name=f"fer2013-original:{fer_dir}")


def stage_mislabels(ds, fer_dir: Path, work: Path, *, backbone: str, dev: str, per_class: int, ips: float | None,
                    budget_s: float, tiny: bool, seed: int = 0) -> dict:
    from pipeline.analysis import analyze
    from pipeline.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
    from pipeline.train import train

    od = original_label_dataset(ds, fer_dir)
    n_train = int((od.table["split"] == "train").sum())
    # main model + 2 fold models (each ~45 % of the train split): ~1.9 train splits per epoch
    per_epoch = 1.9 * n_train
    if tiny:
        epochs = 1
    else:
        epochs = int(max(1, min(30, 0.55 * budget_s * (ips or 0.0) / per_epoch)))
    cfg = RunConfig(data=DataConfig(spec="fer2013-original"), model=ModelConfig(backbone=backbone, embedding_dim=64),
                    loss=LossConfig(name="sgm"),
                    train=TrainConfig(epochs=epochs, per_class=per_class, device=dev, seed=seed, crossfit=2,
                                      steps_per_epoch=4 if tiny else 0))
    out = work / "mislabels_run"
    t = time.perf_counter()
    run = train(cfg, out, quiet=True, dataset=od)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    res = analyze(out, maps=())
    mis = res["mislabels"]
    m = run.metrics()
    from pipeline.mislabel_select import for_run

    chosen = for_run(run, seed=seed)          # constants chosen on one half, AP on the other
    return {"n_images": int(len(od.table)), "n_train": n_train, "base_rate": float(od.table["gt_mislabeled"].mean()),
            "epochs": epochs, "crossfit": 2, "train_s": round(train_s, 1), "analyze_s": round(time.perf_counter() - t, 1),
            "evidence": mis.get("evidence"), "k": mis.get("k"),
            "ap_ours": mis.get("ours", {}).get("ap"), "ap_cleanlab": mis.get("cleanlab", {}).get("ap"),
            "precision_at_k_ours": mis.get("ours", {}).get("precision_at_k"),
            "test_knn_accuracy_original_labels": m.get("test", {}).get("knn_accuracy"),
            "leave_one_out": mis.get("leave_one_out"), "crossfit_only": mis.get("crossfit"),
            "selection_report": chosen}


def stage_compile(backbone: str, dev: str, budget_s: float, *, tiny: bool, work: Path) -> dict:
    from bench.steps import StepSetup
    from bench.subproc import run_child

    s = StepSetup(backbone=backbone, device=dev, per_class=8 if tiny else 32, n_images=256 if tiny else 4096)
    cache = work / "inductor-cache"
    res = run_child("compile", {"setup": asdict(s), "per_class": [s.per_class], "rounds": 2 if tiny else 3,
                                "round_s": 0.3 if tiny else 2.0},
                    budget_s=budget_s, env={"TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton")})
    measured = [r for r in res.results if r.get("event") == "measured"]
    out = {"setup": s.describe(), "budget_s": round(budget_s, 1), "timed_out": res.timed_out,
           "returncode": res.returncode,
           "results": [{"kind": r["kind"], "compile_s": round(r["compile_s"], 1), "compiled_images_per_s": r["compiled"],
                        "eager_images_per_s": r["eager"], "speedup": r["compiled"] / r["eager"]} for r in measured]}
    err = res.error
    if err:
        raise RuntimeError(f"compile child failed: {err}")
    if res.timed_out:
        out["note"] = f"stopped at the stage budget ({budget_s:.0f} s); results above arrived before that"
    return out


# ----------------------------------------------------------------------------- table
def table(result: dict) -> str:
    st = result["stages"]
    lines = [f"gpu_check  {result.get('mode')}  device={st.get('env', {}).get('gpu') or st.get('env', {}).get('device')}"
             f"  elapsed {result.get('elapsed_s')} s of {result.get('budget_s')} s"]
    for name, rec in st.items():
        lines.append(f"  {name:<11} {rec.get('status'):<8} {rec.get('wall_s', '')!s:>7} s"
                     + (f"   {rec.get('error') or rec.get('reason')}" if rec.get("status") != "ok" else ""))
    tr = st.get("train_sgm", {})
    for p in tr.get("checkpoints", []):
        lines.append(f"  SGM {tr['recipe']['backbone']} at {p['at_s']:>5} s training: test kNN(11) {100 * p['knn_accuracy']:.2f} %"
                     f"  NMI {100 * p['nmi']:.2f} %  ({p['epochs']} epochs, {p['steps']} steps)")
    th = st.get("throughput", {})
    if th.get("status") == "ok":
        a, e = th["train_step_images_per_s"], th["embedding_images_per_s"]
        lines.append(f"  train step images/s ours {a['ours']:.0f} bare {a['bare']:.0f} (x{a['ours_over_bare']:.2f});"
                     f" embedding ours {e['resident']:.0f} bare {e['bare']:.0f} (x{e['resident_over_bare']:.2f})  [{th['setup']}]")
    for r in st.get("compile", {}).get("results", []):
        lines.append(f"  compile {r['kind']}: {r['compile_s']} s to compile, compiled {r['compiled_images_per_s']:.0f}"
                     f" vs eager {r['eager_images_per_s']:.0f} images/s (x{r['speedup']:.2f})")
    ml = st.get("mislabels", {})
    if ml.get("status") == "ok":
        lines.append(f"  mislabels ({ml['n_images']} images, base rate {ml['base_rate']:.3f}, {ml['epochs']} epochs, "
                     f"cross-fit 2): AP ours {ml['ap_ours']:.3f}, cleanlab {ml['ap_cleanlab']:.3f} (all images, default constants)")
        sr = ml.get("selection_report") or {}
        if sr:
            r = sr["rankings"]
            lines.append(f"  report half ({sr['report_n']} images; constants {sr['chosen']} chosen on the other "
                         f"{sr['selection_n']}): ours {r['ours']['report']:.3f}, cleanlab on 5-fold pred_probs "
                         f"{r['cleanlab_cv']['report']:.3f}, on our trust-weighted votes {r['cleanlab_trusted']['report']:.3f}, "
                         f"plain votes {r['cleanlab_plain']['report']:.3f}; best on selection: {sr['best_on_selection']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("fer_dir", type=Path, help="FER+ folder: ferplus_webp.npz (or PNGs), the three label.csv, "
                                               "fer2013_original_labels.csv")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON written (default gpu_check.json)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: next to --out)")
    ap.add_argument("--budget", type=float, default=None, help="global wall-clock budget in seconds (540; tiny 240)")
    ap.add_argument("--checkpoints", default=None, help="training-time checkpoints in seconds (60,150,240; tiny 3,6)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backbone", default=None, help="resnet18 (tiny: light)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--compile-budget", type=float, default=None,
                    help="cap on the compile stage's seconds (default: what is left; tiny 40)")
    ap.add_argument("--tiny", action="store_true", help="CPU rehearsal: a few hundred images, light network, seconds")
    a = ap.parse_args(argv)
    import torch

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    backbone = a.backbone or ("light" if a.tiny else "resnet18")
    budget = a.budget if a.budget is not None else (240.0 if a.tiny else 540.0)
    cps = [float(x) for x in (a.checkpoints or ("3,6" if a.tiny else "60,150,240")).split(",") if x.strip()]
    per_class = 8 if a.tiny else 32
    work = a.work or a.out.parent / (a.out.stem + "_work")
    work.mkdir(parents=True, exist_ok=True)
    chk = Check(a.out, budget, {"mode": "tiny" if a.tiny else "full", "fer_dir": str(a.fer_dir), "backbone": backbone,
                                "checkpoints_s": cps})
    log = lambda m: print(f"[gpu_check] {m}", file=sys.stderr, flush=True)  # noqa: E731
    chk.stage("env", lambda b: stage_env(dev), need_s=0)
    holder: dict = {}

    def data(b):
        t = time.perf_counter()
        holder["ds"] = ds = load_fer(a.fer_dir, tiny=a.tiny)
        sp = ds.table["split"].value_counts().to_dict()
        return {"n_images": int(len(ds.table)), "splits": {k: int(v) for k, v in sp.items()}, "load_s": round(time.perf_counter() - t, 1)}

    chk.stage("data", data, need_s=5)
    chk.stage("throughput", lambda b: stage_throughput(backbone, dev, tiny=a.tiny), need_s=10 if a.tiny else 60)
    need_train = sum(cps[-1:]) + (10 if a.tiny else 60)
    tr = chk.stage("train_sgm", lambda b: train_with_checkpoints(holder["ds"], backbone=backbone, dev=dev, checkpoints=cps,
                                                                  per_class=per_class, lr=a.lr, log=log),
                   need_s=need_train) if "ds" in holder else chk.stage("train_sgm", _needs_data, need_s=0)
    ips = (tr or {}).get("train_images_per_s")
    compile_need = 20 if a.tiny else 90
    if "ds" in holder:
        chk.stage("mislabels", lambda b: stage_mislabels(holder["ds"], a.fer_dir, work, backbone=backbone, dev=dev,
                                                         per_class=per_class, ips=ips, budget_s=b - compile_need,
                                                         tiny=a.tiny),
                  need_s=30 if a.tiny else 150)
    else:
        chk.stage("mislabels", _needs_data, need_s=0)
    cap = a.compile_budget if a.compile_budget is not None else (40.0 if a.tiny else float("inf"))
    chk.stage("compile", lambda b: stage_compile(backbone, dev, min(b - 5, cap), tiny=a.tiny, work=work), need_s=compile_need)
    chk.write()
    print(table(chk.result))
    return 0


def _needs_data(b):
    raise RuntimeError("no data: the data stage failed")


if __name__ == "__main__":
    sys.exit(main())
