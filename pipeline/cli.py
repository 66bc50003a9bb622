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

from . import config as C
from .config import DataConfig, HierarchyConfig, LossConfig, ModelConfig, RunConfig, TrainConfig

# ``train`` flag (argparse dest) -> the RunConfig field it sets. Every flag defaults to None ("not
# given") so the defaults live only in pipeline.config: the dataclasses and recipe().
TRAIN_FLAGS = {
    "image_size": "data.image_size", "on_bad_image": "data.on_bad_image",
    "embedding_dim": "model.embedding_dim",
    "loss": "loss.name", "sigma": "loss.sigma", "norm_lambda": "loss.norm_lambda", "triplets": "loss.triplets",
    "margin": "loss.margin", "instance_weight": "loss.instance_weight",
    "instance_temperature": "loss.instance_temperature",
    "epochs": "train.epochs", "per_class": "train.per_class", "steps_per_epoch": "train.steps_per_epoch",
    "lr": "train.lr", "weight_decay": "train.weight_decay", "seed": "train.seed", "device": "train.device",
    "knn_k": "train.knn_k", "crossfit": "train.crossfit",
    "levels": "hierarchy.levels", "min_per_subclass": "hierarchy.min_per_subclass",
    "max_components": "hierarchy.max_components", "topk": "hierarchy.topk",
    "subclass_features": "hierarchy.features",
}
# on/off flags: dest -> (field, the value the flag sets)
TRAIN_SWITCHES = {"hard_targets": ("loss.soft_targets", False), "no_augment": ("train.augment", False),
                  "compile": ("train.compile", True), "no_bf16": ("train.bf16", False)}


def build_config(a: argparse.Namespace) -> RunConfig:
    """The ``train`` flags -> a RunConfig: a saved config (``--config FILE``) or else
    :func:`pipeline.config.recipe` for the data, the backbone and the device, then every flag given."""
    if getattr(a, "config", None):
        cfg = RunConfig.load(a.config)
        if a.data is not None:
            cfg = C.with_values(cfg, {"data.spec": a.data})
        if a.backbone is not None:
            cfg = C.with_values(cfg, {"model.backbone": a.backbone})
    else:
        cfg = C.recipe(a.data if a.data is not None else DataConfig.spec, a.backbone,
                       a.device if a.device is not None else TrainConfig.device)
    values = {field: getattr(a, dest, None) for dest, field in TRAIN_FLAGS.items()}
    values.update({field: on for dest, (field, on) in TRAIN_SWITCHES.items() if getattr(a, dest, None)})
    if getattr(a, "data_root", None):
        values["data.data_roots"] = tuple(a.data_root)
    for dest in ("labels_from", "parent"):
        if getattr(a, dest, None):
            values[f"data.{dest}"] = str(getattr(a, dest))
    if getattr(a, "dedupe", None):
        values["data.dedupe"] = True
    return C.with_values(cfg, values)


def _default(cls: type, name: str) -> str:
    return f"default {getattr(cls, name)}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train an embedder (Algorithm 1; --levels > 1 runs Algorithm 2)",
                       argument_default=None,
                       epilog="Defaults come from pipeline.config (the dataclasses and recipe()); with "
                              "--config, from that file, and any flag given replaces its value.")
    t.add_argument("--config", metavar="FILE",
                   help="a saved RunConfig (JSON, or a run's manifest.json) to train with")
    t.add_argument("--data", help=f"data source spec, e.g. synthetic, ferplus:DIR, csv:FILE ({_default(DataConfig, 'spec')})")
    t.add_argument("--out", required=True, help="run directory to create (or resume)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--data-root", action="append", help="only read data under this folder (repeatable)")
    t.add_argument("--labels-from", metavar="FILE",
                   help="apply label corrections before training: a run's review.sqlite, a CSV "
                        "(id,label[,decision]) or a Label Studio JSON export of our tasks")
    t.add_argument("--parent", metavar="RUN",
                   help="the run the corrections were made on (default: the run holding a review.sqlite)")
    t.add_argument("--dedupe", action="store_true", default=None,
                   help="leave exact and near duplicate images out of training: every train/val copy of a "
                        "test image, and all but one copy within train/val (test images are kept)")
    t.add_argument("--image-size", type=int, help=_default(DataConfig, "image_size"))
    t.add_argument("--on-bad-image", choices=C.BAD_IMAGE, help=_default(DataConfig, "on_bad_image"))
    t.add_argument("--backbone", choices=C.BACKBONES, help="default: resnet18 on a GPU, light on the CPU")
    t.add_argument("--embedding-dim", type=int, help=_default(ModelConfig, "embedding_dim"))
    t.add_argument("--loss", choices=C.LOSSES, help=_default(LossConfig, "name"))
    t.add_argument("--sigma", type=float, help=_default(LossConfig, "sigma"))
    t.add_argument("--norm-lambda", type=float, help=_default(LossConfig, "norm_lambda"))
    t.add_argument("--hard-targets", action="store_true", default=None,
                   help="ignore vote distributions; one-hot targets")
    t.add_argument("--triplets", type=int, help=_default(LossConfig, "triplets"))
    t.add_argument("--margin", type=float, help=_default(LossConfig, "margin"))
    t.add_argument("--instance-weight", type=float,
                   help="weight of the within-class appearance term (two augmented views, contrastive; "
                        "keeps what sets sub-classes apart; 0 turns it off); " + _default(LossConfig, "instance_weight"))
    t.add_argument("--instance-temperature", type=float, help=_default(LossConfig, "instance_temperature"))
    t.add_argument("--epochs", type=int, help="default: 20 (synthetic), 30 otherwise")
    t.add_argument("--per-class", type=int,
                   help="images per class per batch (default: 16 with the light network, 32 with resnet18)")
    t.add_argument("--steps-per-epoch", type=int, help="0: about one pass over the training split")
    t.add_argument("--lr", type=float, help=_default(TrainConfig, "lr"))
    t.add_argument("--weight-decay", type=float, help=_default(TrainConfig, "weight_decay"))
    t.add_argument("--seed", type=int, help=_default(TrainConfig, "seed"))
    t.add_argument("--device", help=_default(TrainConfig, "device"))
    t.add_argument("--no-augment", action="store_true", default=None)
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (CUDA only)")
    t.add_argument("--no-bf16", action="store_true", default=None)
    t.add_argument("--knn-k", type=int, help=_default(TrainConfig, "knn_k"))
    t.add_argument("--crossfit", type=int, metavar="K",
                   help="also train K fold models so mislabel evidence is out-of-sample (K >= 2; 0: none); "
                        "default 2 on a GPU, 0 on a CPU")
    t.add_argument("--levels", type=int, help="L of Algorithm 2 (DGMS); 1 = plain SGM (the default)")
    t.add_argument("--min-per-subclass", type=int, help=f"Mc of Algorithm 2 ({_default(HierarchyConfig, 'min_per_subclass')})")
    t.add_argument("--max-components", type=int, help=_default(HierarchyConfig, "max_components"))
    t.add_argument("--topk", type=int, help=_default(HierarchyConfig, "topk"))
    t.add_argument("--subclass-features", choices=C.SUBCLASS_FEATURES,
                   help="what Algorithm 2's per-class mixtures (and analyze's first facet, unless told otherwise) "
                        "fit on; auto (the default): the embedding; posterior+votes: the SGM posterior and the "
                        "crowd's votes (needs votes)")
    t.add_argument("--analyze", action="store_true", help="run `analyze` when training is done")
    t.add_argument("--maps", default=None, help="with --analyze: the maps to compute, comma-separated "
                                                "(tsne, umap, pca or none; default tsne,umap,pca)")
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
    an.add_argument("--subclass-features", choices=C.SUBCLASS_FEATURES, default=None,
                    help="which facet comes first (default auto: the image facets; posterior+votes: the "
                         "crowd's reading, which needs votes and is added after the image facets anyway)")
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

    maps = _maps(a.maps) if a.maps is not None else None      # checked before hours of training
    if maps is not None and not a.analyze:
        raise ValueError("--maps goes with --analyze")

    if getattr(a, "labels_from", None):
        from .corrections import parent_of

        a.labels_from = str(Path(a.labels_from).expanduser().resolve())
        if not a.parent and Path(a.labels_from).is_file():
            a.parent = parent_of(a.labels_from)
        if a.parent:
            from .runs import MANIFEST

            a.parent = str(Path(a.parent).expanduser().resolve())
            if not (Path(a.parent) / MANIFEST).is_file():
                raise ValueError(f"--parent {a.parent}: not a run directory")
    elif getattr(a, "parent", None):
        raise ValueError("--parent goes with --labels-from")
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

        out = analyze(run.path, **({"maps": maps} if maps is not None else {}))
        if not a.quiet:
            from .quality import describe_counts

            print(describe_counts(out["quality"].get("duplicates")))
            print(f"analysis written to {run.path / 'analysis'}")
            if format_recovery(out["subclass"]):
                print(format_recovery(out["subclass"]))
    return 0


def _cmd_evaluate(a) -> int:
    from .metrics import format_table
    from .evaluate import evaluate

    out = evaluate(a.run, data_spec=a.data, device=a.device, data_roots=tuple(a.data_root or ()))
    print(json.dumps(out, indent=2) if a.json else format_table(out))
    for key, res in out.items():
        if not a.json and "class_match" in res:
            print(f"\n{key}: classes matched " + ", ".join(f"{o} -> {r}" for o, r in res["class_match"].items())
                  + "; left out: " + (", ".join(res["classes_left_out"]) or "none")
                  + f" ({res['images_unmatched']} images)")
    return 0


def _maps(arg: str) -> tuple[str, ...]:
    """``--maps tsne,pca`` -> ("tsne", "pca"); "none" -> (); an unknown name is a one-line error."""
    from .maps import METHODS

    maps = tuple(m.strip().lower() for m in arg.split(",") if m.strip() and m.strip().lower() != "none")
    bad = [m for m in maps if m not in METHODS]
    if bad:
        raise ValueError(f"--maps: unknown map {bad[0]!r}; choose from {', '.join(METHODS)} or none")
    return maps


def _cmd_analyze(a) -> int:
    from .analysis import analyze

    t0 = time.time()
    kw = {"maps": _maps(a.maps), "seed": a.seed}
    if a.max_components is not None:
        kw["max_components"] = a.max_components
    if a.subclass_features is not None:
        kw["features"] = a.subclass_features
    from .analysis import format_recovery

    out = analyze(a.run, **kw)
    from .quality import describe_counts

    print(describe_counts(out["quality"].get("duplicates")))
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
    from .runs import METRICS_JSON, list_runs

    rows = list_runs(Path(a.root))
    if not rows:
        print(f"no runs under {a.root}")
        return 0
    print(f"{'run':32} {'status':12} {'images':>7} {'kNN acc':>8} {'NMI':>6}  data / lineage")
    for path, run, problem in rows:
        if run is None:
            print(f"{path.name[:32]:32} {'unreadable':12} {'':>7} {'':>8} {'':>6}  {problem}")
            continue
        m = {}
        try:
            m = run.metrics().get("test", {}) if run.has(METRICS_JSON) else {}
        except Exception:
            pass
        acc = f"{100 * m['knn_accuracy']:.1f}" if "knn_accuracy" in m else "-"
        nmi = f"{100 * m['kmeans_nmi']:.1f}" if "kmeans_nmi" in m else "-"
        n = run.manifest.get("data", {}).get("n_images", "")
        print(f"{path.name[:32]:32} {run.status:12} {n!s:>7} {acc:>8} {nmi:>6}  {_spec(run)}" + lineage(run))
    return 0


def _spec(run) -> str:
    from .runs import RunError

    try:
        return run.config.data.spec
    except RunError as exc:
        return f"(config unreadable: {exc})"


def lineage(run) -> str:
    """`` <- PARENT + 12 relabelled, 3 dropped (review.sqlite 1a2b3c4d)`` for a run trained on
    corrections, else ""."""
    c = run.manifest.get("corrections")
    if not isinstance(c, dict):
        return ""
    a = c.get("applied") or {}
    parent = run.manifest.get("parent")
    head = f" <- {Path(parent).name}" if parent else " <- (no parent run)"
    return (f"{head} + {a.get('relabel', 0)} relabelled, {a.get('drop', 0)} dropped "
            f"({Path(str(c.get('file', ''))).name} {str(c.get('sha256', ''))[:8]})")


def main(argv: list[str] | None = None) -> int:
    from .errors import TrainingError, one_line
    from .runs import RunError
    from .sources import DataError

    a = _parser().parse_args(argv)
    handlers = {"train": _cmd_train, "evaluate": _cmd_evaluate, "analyze": _cmd_analyze,
                "similar": _cmd_similar, "runs": _cmd_runs}
    try:
        return handlers[a.cmd](a)
    except KeyboardInterrupt:
        print("interrupted: the run is left resumable (pass --resume)", file=sys.stderr)
        return 130
    except (DataError, RunError, TrainingError, ValueError, RuntimeError) as exc:
        print(f"error: {one_line(exc, 1000)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
