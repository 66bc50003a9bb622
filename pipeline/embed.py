"""Embedding extraction and loading a run's model.

images: (N, S, S) uint8 -> embeddings (N, D) float32, in eval mode, batched, no gradients.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import RunConfig
from .errors import one_line
from .models import build_model, maps_after_mid, mid_feature_maps
from .runs import Run, RunError, load_torch, open_run


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but no CUDA device is available")
    return dev


def to_input(batch_u8: torch.Tensor) -> torch.Tensor:
    """(B, S, S) uint8 -> (B, 1, S, S) float in [0, 1]."""
    return batch_u8.unsqueeze(1).float().div_(255.0)


@torch.no_grad()
def embed_images(model: torch.nn.Module, images: np.ndarray | torch.Tensor, *, device: str | torch.device = "cpu",
                 batch_size: int = 1024, bf16: bool = True) -> np.ndarray:
    """Embed (N, S, S) uint8 images. Returns (N, D) float32 (on the CPU)."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    was_training = model.training
    model.eval()
    out = []
    use_amp = bf16 and dev.type == "cuda"
    for s in range(0, images.shape[0], batch_size):
        part = images[s:s + batch_size]
        # numpy batches are copied one at a time: a memory-mapped run is read-only and may be large
        part = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.array(part, dtype=np.uint8))
        xb = to_input(part.to(dev, non_blocking=True))
        if dev.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            z = model(xb)
        out.append(z.float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros((0, getattr(model, "out_features", 0)), np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


# What sub-classes are found on (pipeline.hierarchy facets): the backbone's last feature maps, average
# pooled to 2x2 (where in the face a feature fires: glasses at the eyes, a baby's lower-set features),
# each image's vector L2-normalised, then the first FEATURE_DIMS principal components. On synthetic
# faces the embedding head had squeezed out much of this (RESULTS.md: sub-classes from features).
# ``"mid"``: the same on the maps halfway up (models.mid_feature_maps) pooled to 4x4, which keep
# the small within-class differences (a pupil's position, tears) the expression facet splits on.
FEATURE_POOL = 2
MID_FEATURE_POOL = 4
FEATURE_DIMS = 128
FEATURE_FIT = 20000      # images the principal components are fit on (a seeded sample above that)
LEVELS = {"last": FEATURE_POOL, "mid": MID_FEATURE_POOL}   # level -> pooled grid
ONE_PASS_MAX = 8192      # up to this many images one forward pass keeps every image's pooled maps


@torch.no_grad()
def _pooled(model: torch.nn.Module, images, rows: np.ndarray, dev: torch.device, batch_size: int,
            levels: Sequence[str]):
    """Per batch of ``rows``: {level: (B, F) float32 pooled, L2-normalised maps}, every level from
    one forward pass."""
    model.eval()
    net = model
    for attr in ("module", "_orig_mod"):          # DistributedDataParallel, torch.compile
        net = getattr(net, attr, net)
    net = getattr(net, "backbone", net)
    for s in range(0, len(rows), batch_size):
        part = torch.from_numpy(np.array(images[rows[s:s + batch_size]], dtype=np.uint8))
        mid = mid_feature_maps(net, to_input(part.to(dev)))
        maps = {"mid": mid, "last": maps_after_mid(net, mid) if "last" in levels else None}
        out = {}
        for lvl in levels:
            f = torch.nn.functional.adaptive_avg_pool2d(maps[lvl].float(), LEVELS[lvl]).flatten(1)
            out[lvl] = torch.nn.functional.normalize(f, dim=1).cpu().numpy()
        yield out


def backbone_feature_levels(model: torch.nn.Module, images, *, fit_rows: np.ndarray | None = None,
                            device: str | torch.device = "cpu", batch_size: int = 512, dims: int = FEATURE_DIMS,
                            seed: int = 0, levels: Sequence[str] = ("last",)) -> dict[str, np.ndarray]:
    """{level: (N, dims) float16}: every image's pooled backbone feature maps at each of ``levels``
    ("last", "mid": :data:`LEVELS`), projected on their first ``dims`` principal components (fit on
    ``fit_rows``, e.g. the training split, sampled down to FEATURE_FIT). One forward pass serves
    every level; up to :data:`ONE_PASS_MAX` images one pass in all, above it two (the sample, then
    every image), so memory stays at (FEATURE_FIT + batch) x features."""
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ValueError(f"feature levels must be among {', '.join(LEVELS)}, not {list(levels)!r}")
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    was_training = model.training
    n = len(images)
    fit = np.arange(n) if fit_rows is None or len(fit_rows) < 2 else np.asarray(fit_rows)
    if len(fit) > FEATURE_FIT:
        fit = np.sort(np.random.default_rng(seed).choice(fit, size=FEATURE_FIT, replace=False))

    def gather(rows):
        chunks = list(_pooled(model, images, rows, dev, batch_size, levels))
        return {lv: np.concatenate([c[lv] for c in chunks]) for lv in levels}

    every = gather(np.arange(n)) if n <= ONE_PASS_MAX else None
    sample = {lv: every[lv][fit] for lv in levels} if every is not None else gather(fit)
    proj = {}
    for lv in levels:
        x = sample[lv].astype(np.float64)
        mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        proj[lv] = (mean, vt[: min(dims, vt.shape[0])].T)
    if every is not None:
        out = {lv: (every[lv] - proj[lv][0]) @ proj[lv][1] for lv in levels}
    else:
        parts: dict[str, list] = {lv: [] for lv in levels}
        for c in _pooled(model, images, np.arange(n), dev, batch_size, levels):
            for lv in levels:
                parts[lv].append((c[lv] - proj[lv][0]) @ proj[lv][1])
        out = {lv: np.concatenate(parts[lv]) for lv in levels}
    model.train(was_training)
    return {lv: out[lv].astype(np.float16) for lv in levels}


def backbone_features(model: torch.nn.Module, images, *, level: str = "last", **kw) -> np.ndarray:
    """(N, dims) float16 of one level (:func:`backbone_feature_levels`)."""
    return backbone_feature_levels(model, images, levels=(level,), **kw)[level]


def load_embedder(run: Run | str | Path, *, which: str = "best", device: str = "cpu") -> torch.nn.Module:
    """Rebuild a run's model from its checkpoint (``weights_only=True``)."""
    if not isinstance(run, Run):
        run = open_run(run, require_complete=False)
    ckpt_path = run.path / "checkpoints" / f"{which}.pt"
    if not ckpt_path.exists():
        ckpt_path = run.path / "checkpoints" / "last.pt"
    ckpt = load_torch(ckpt_path, map_location=device)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise RunError(f"{ckpt_path}: not a subclass-explorer checkpoint")
    cfg = RunConfig.from_dict(ckpt["config"])
    model = build_model(cfg.model, num_classes=int(ckpt.get("num_train_classes", len(ckpt.get("classes", [])))),
                        loss_name=cfg.loss.name, instance=cfg.loss.instance_weight > 0)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RunError(f"{ckpt_path}: weights do not fit the configured model ({one_line(exc, 120)})") from None
    model.to(device).eval()
    return model
