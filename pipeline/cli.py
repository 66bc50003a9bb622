"""``python -m pipeline``: train | evaluate | analyze | similar | runs.

Every failure the user can fix (bad data, a clashing run directory, a NaN loss) ends with one line
on stderr and exit status 1 (2 for usage errors, 130 for Ctrl-C), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .config import DataConfig, HierarchyConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from .hierarchy import FEATURES


def default_crossfit(device: str) -> int:
    """Cross-fit folds when none are asked for: 2 when training on a GPU (out-of-sample mislabel
    evidence; two more models, each on half the training split), 0 on a CPU, where those two
    models would add to the demo's few minutes; ``--crossfit 2`` turns it on there. Off under
    torchrun (WORLD_SIZE > 1): the fold models are trained by rank 0 alone."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 0
    if device == "auto":
        import torch

        return 2 if torch.cuda.is_available() else 0
    return 2 if str(device).startswith("cuda") else 0


def build_config(a: argparse.Namespace) -> RunConfig:
    """The one place the CLI (and, through the same flags, the explorer's form) becomes a RunConfig."""
    return RunConfig(
        data=DataConfig(spec=a.data, image_size=a.image_size, on_bad_image=a.on_bad_image,
                        data_roots=tuple(a.data_root or ())),
        model=ModelConfig(backbone=a.backbone, embedding_dim=a.embedding_dim),
        loss=LossConfig(name=a.loss, sigma=a.sigma, norm_lambda=a.norm_lambda, soft_targets=not a.hard_targets,
                        triplets=a.triplets, margin=a.margin),
        train=TrainConfig(epochs=a.epochs, per_class=a.per_class, steps_per_epoch=a.steps_per_epoch, lr=a.lr,
                          weight_decay=a.weight_decay, seed=a.seed, device=a.device, augment=not a.no_augment,
                          compile=a.compile, bf16=not a.no_bf16, knn_k=a.knn_k,
                          crossfit=default_crossfit(a.device) if a.crossfit is None else a.crossfit),
        hierarchy=HierarchyConfig(levels=a.levels, min_per_subclass=a.min_per_subclass,
                                  max_components=a.max_components, topk=a.topk,
                                  features=getattr(a, "subclass_features", None) or "auto"),
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train an embedder (Algorithm 1; --levels > 1 runs Algorithm 2)")
    t.add_argument("--data", default="synthetic", help="data source spec, e.g. synthetic, ferplus:DIR, csv:FILE")
    t.add_argument("--out", required=True, help="run directory to create (or resume)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--data-root", action="append", help="only read data under this folder (repeatable)")
    t.add_argument("--image-size", type=int, default=48)
    t.add_argument("--on-bad-image", choices=("skip", "fail"), default="skip")
    t.add_argument("--backbone", choices=("light", "resnet18"), default=None,
                   help="default: resnet18 on a GPU, light on the CPU")
    t.add_argument("--embedding-dim", type=int, default=64)
    t.add_argument("--loss", choices=("sgm", "triplet", "softmax"), default="sgm")
    t.add_argument("--sigma", type=float, default=0.5)
    t.add_argument("--norm-lambda", type=float, default=1e-3)
    t.add_argument("--hard-targets", action="store_true", help="ignore vote distributions; one-hot targets")
    t.add_argument("--triplets", type=int, default=128)
    t.add_argument("--margin", type=float, default=0.2)
    t.add_argument("--epochs", type=int, default=None, help="default: 20 (synthetic), 30 otherwise")
    t.add_argument("--per-class", type=int, default=None,
                   help="images per class per batch (default: 16 with the light network, 32 with resnet18)")
    t.add_argument("--steps-per-epoch", type=int, default=0)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    t.add_argument("--no-bf16", action="store_true")
    t.add_argument("--knn-k", type=int, default=11)
    t.add_argument("--crossfit", type=int, default=None, metavar="K",
                   help="also train K fold models so mislabel evidence is out-of-sample (K >= 2; 0: none); "
                        "default 2 on a GPU, 0 on a CPU")
    t.add_argument("--levels", type=int, default=1, help="L of Algorithm 2 (DGMS); 1 = plain SGM")
    t.add_argument("--min-per-subclass", type=int, default=64, help="Mc of Algorithm 2")
    t.add_argument("--max-components", type=int, default=5)
    t.add_argument("--topk", type=int, default=16)
    t.add_argument("--subclass-features", choices=("auto",) + FEATURES, default="auto",
                   help="what Algorithm 2's per-class mixtures (and analyze's, unless told otherwise) fit on; "
                        "auto: the SGM posterior and the crowd's votes when the data has votes, else the embedding")
    t.add_argument("--analyze", action="store_true", help="run `analyze` when training is done")
    t.add_argument("--no-progress-bar", action="store_true")
    t.add_argument("--quiet", action="store_true")

    e = sub.add_parser("evaluate", help="print (and store) the paper's metrics for a run")
    e.add_argument("run")
    e.add_argument("--data", default=None, help="cross-domain: embed this data source with the run's model")
    e.add_argument("--data-root", action="append")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")

    an = sub.add_parser("analyze", help="sub-classes, maps, mislabel candidates, confusion, summary")
    an.add_argument("run")
    an.add_argument("--maps", default="tsne,umap,pca", help="comma-separated: tsne, umap, pca (or none)")
    an.add_argument("--max-components", type=int, default=None)
    an.add_argument("--subclass-features", choices=("auto",) + FEATURES, default=None,
                    help="what the per-class mixtures are fit on (default auto: the SGM posterior and the "
                         "crowd's votes when the data has votes, else the embedding)")
    an.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("similar", help="nearest images in a run to a new picture")
    s.add_argument("run")
    s.add_argument("--image", required=True)
    s.add_argument("-k", type=int, default=16)

    r = sub.add_parser("runs", help="list runs with status and headline metrics")
    r.add_argument("root", nargs="?", default="runs")
    return p


def _cmd_train(a) -> int:
    from .train import train

    if a.backbone is None:
        import torch

        cuda = torch.cuda.is_available() and a.device in ("auto",) or a.device.startswith("cuda")
        a.backbone = "resnet18" if cuda else "light"
    if a.per_class is None:
        # on a CPU the light network runs about twice the images per second at 16 per class than
        # at 32, and takes twice the steps per epoch (measured in docs/RESULTS.md)
        a.per_class = 16 if a.backbone == "light" else 32
    if a.epochs is None:
        a.epochs = 20 if a.data.strip().lower().startswith("synthetic") else 30
    cfg = build_config(a)
    run = train(cfg, a.out, resume=a.resume, quiet=a.quiet, progress_bar=not a.no_progress_bar)
    from .runs import Run

    if not isinstance(run, Run):      # a torchrun rank other than 0: rank 0 reports and analyses
        return 0
    if not a.quiet:
        from .metrics import format_table

        print(f"run complete: {run.path} ({run.manifest.get('wall_s', 0):.0f} s on {run.manifest.get('device')})")
        print(format_table({k: v for k, v in run.metrics().items() if k in ("train", "val", "test")}))
    if a.analyze:
        from .analysis import analyze

        from .analysis import format_recovery

        out = analyze(run.path)
        if not a.quiet:
            print(f"analysis written to {run.path / 'analysis'}")
            if format_recovery(out["subclass"]):
                print(format_recovery(out["subclass"]))
    return 0


def _cmd_evaluate(a) -> int:
    from .metrics import format_table
    from .train import evaluate

    out = evaluate(a.run, data_spec=a.data, device=a.device, data_roots=tuple(a.data_root or ()))
    print(json.dumps(out, indent=2) if a.json else format_table(out))
    return 0


def _cmd_analyze(a) -> int:
    from .analysis import analyze

    maps = tuple(m.strip() for m in a.maps.split(",") if m.strip() and m.strip() != "none")
    t0 = time.time()
    kw = {"maps": maps, "seed": a.seed}
    if a.max_components is not None:
        kw["max_components"] = a.max_components
    if a.subclass_features is not None:
        kw["features"] = a.subclass_features
    from .analysis import format_recovery

    out = analyze(a.run, **kw)
    print(f"analysis of {a.run} written in {time.time() - t0:.1f} s")
    if format_recovery(out["subclass"]):
        print(format_recovery(out["subclass"]))
    return 0


def _cmd_similar(a) -> int:
    from .similar import similar

    df = similar(a.run, a.image, k=a.k)
    print(df.to_string(index=False))
    return 0


def _cmd_runs(a) -> int:
    from .runs import list_runs

    rows = list_runs(Path(a.root))
    if not rows:
        print(f"no runs under {a.root}")
        return 0
    print(f"{'run':32} {'status':12} {'images':>7} {'kNN acc':>8} {'NMI':>6}  data")
    for path, run, problem in rows:
        if run is None:
            print(f"{path.name[:32]:32} {'unreadable':12} {'':>7} {'':>8} {'':>6}  {problem}")
            continue
        m = {}
        try:
            m = run.metrics().get("test", {}) if run.has("metrics.json") else {}
        except Exception:
            pass
        acc = f"{100 * m['knn_accuracy']:.1f}" if "knn_accuracy" in m else "-"
        nmi = f"{100 * m['kmeans_nmi']:.1f}" if "kmeans_nmi" in m else "-"
        n = run.manifest.get("data", {}).get("n_images", "")
        print(f"{path.name[:32]:32} {run.status:12} {n!s:>7} {acc:>8} {nmi:>6}  {run.config.get('data', {}).get('spec', '')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .runs import RunError
    from .sources import DataError
    from .train import TrainingError

    a = _parser().parse_args(argv)
    handlers = {"train": _cmd_train, "evaluate": _cmd_evaluate, "analyze": _cmd_analyze,
                "similar": _cmd_similar, "runs": _cmd_runs}
    try:
        return handlers[a.cmd](a)
    except KeyboardInterrupt:
        print("interrupted: the run is left resumable (pass --resume)", file=sys.stderr)
        return 130
    except (DataError, RunError, TrainingError, ValueError, RuntimeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
