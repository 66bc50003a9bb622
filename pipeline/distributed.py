"""Training under ``torchrun``: the process's rank, embedding split across ranks, and the stand-in
run that ranks other than 0 hold (rank 0 alone writes the run directory)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .embed import embed_images


class NullRun:
    """What ranks other than 0 hold instead of a run: they read checkpoints, they write nothing."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest: dict = {}

    def __getattr__(self, name):
        if name in ("put_array", "put_table", "put_json", "register", "save_manifest"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def has(self, name: str) -> bool:
        return False


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def embed_sharded(model: torch.nn.Module, images: np.ndarray | torch.Tensor, *, device, bf16: bool = True) -> np.ndarray:
    """embed_images, split across the ranks of a torchrun job (each embeds rows rank::world) and
    gathered on every rank; a plain call outside torchrun."""
    rank, world, _ = distributed()
    if world == 1:
        return embed_images(model, images, device=device, bf16=bf16)
    import torch.distributed as dist

    part = embed_images(model, images[rank::world], device=device, bf16=bf16)
    parts: list = [None] * world
    dist.all_gather_object(parts, part)
    out = np.empty((len(images), parts[0].shape[1]), np.float32)
    for r in range(world):
        out[r::world] = parts[r]
    return out
