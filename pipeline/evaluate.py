"""``pipeline evaluate``: the protocol recomputed from a run's stored embeddings, or another data
source embedded with the run's model and scored against the run's training embeddings."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics as M
from .embed import embed_images, pick_device
from .outputs import classifier_predict
from .runs import CLASS_MEANS_ARRAY, METRICS_JSON, Run, load_torch, open_run
from .sources import DataError, load_source
from .sources.base import match_classes


def _checkpoint_head(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    """The softmax classifier of the checkpoint the run's embeddings came from (best, else last)."""
    ckdir = run.path / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (ckdir / name).exists():
            sd = load_torch(ckdir / name, map_location="cpu")["model"]
            if "classifier.weight" in sd:
                return sd["classifier.weight"].float().numpy(), sd["classifier.bias"].float().numpy()
            return None
    return None



def evaluate(run_path: Path | str, *, data_spec: str | None = None, device: str = "auto",
             data_roots: tuple[str, ...] = ()) -> dict:
    """Recompute the protocol from a run's stored embeddings, or (``data_spec``) embed another data
    source with the run's model and score it against the run's training embeddings, classes matched
    by name or FER+ synonym (:func:`pipeline.sources.base.match_classes`; the result says which
    matched and which were left out). Stores the result in metrics.json and returns it."""
    from .embed import load_embedder
    from .config import DataConfig

    run = open_run(run_path)
    cfg = run.config
    items = run.items()
    z = np.asarray(run.embeddings())
    y = items["label"].to_numpy()
    split = items["split"].to_numpy()
    tr = split == "train"
    C = len(run.classes)
    mu = np.asarray(run.array(CLASS_MEANS_ARRAY))
    head = _checkpoint_head(run) if cfg.loss.name == "softmax" else None
    if data_spec is None:
        out = {}
        for s in ("train", "val", "test"):
            m = split == s
            if m.sum() < 2:
                continue
            out[s] = M.evaluate_split(z[tr], y[tr], z[m], y[m], num_classes=C, k=cfg.train.knn_k,
                                      sigma=cfg.loss.sigma, means=mu, seed=cfg.train.seed, exclude_self=(s == "train"))
            if head is not None:
                out[s]["classifier_accuracy"] = float((classifier_predict(z[m], *head) == y[m]).mean())
    else:
        dcfg = DataConfig(spec=data_spec, image_size=cfg.data.image_size, on_bad_image=cfg.data.on_bad_image,
                          data_roots=tuple(data_roots))
        other = load_source(data_spec, dcfg)
        match = match_classes(run.classes, other.classes)
        mapped = np.array([match.index.get(str(n), -1) for n in other.table["label_name"]])
        keep = mapped >= 0
        if not keep.any():
            raise DataError(f"{data_spec}: none of its classes ({', '.join(other.classes)}) match the run's ({', '.join(run.classes)})")
        dev = pick_device(device)
        model = load_embedder(run, device=str(dev))
        zo = embed_images(model, other.images[keep], device=dev)
        yo = mapped[keep]
        shared = np.unique(yo)
        tr_shared = tr & np.isin(y, shared)
        res = M.evaluate_split(z[tr_shared], y[tr_shared], zo, yo, num_classes=C, k=cfg.train.knn_k,
                               sigma=cfg.loss.sigma, means=np.where(np.isin(np.arange(C), shared)[:, None], mu, np.nan),
                               seed=cfg.train.seed)
        if head is not None:
            res["classifier_accuracy"] = float((classifier_predict(zo, *head) == yo).mean())
        res["classes_matched"] = [run.classes[c] for c in shared]
        res["images_unmatched"] = int((~keep).sum())
        res["class_match"] = match.matched(run.classes)      # its folder/label name -> the run's class
        res["classes_left_out"] = match.left_out
        out = {f"cross:{data_spec}": res}
    metrics = run.metrics()
    metrics.update(out)
    run.put_json(METRICS_JSON, metrics)
    run.save_manifest()
    return out
