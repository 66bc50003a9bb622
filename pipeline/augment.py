"""Training-time augmentation on the training device, and the seeded generators every random draw
of training comes from (so a run resumed at an epoch boundary repeats an uninterrupted one)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def step_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by ``keys`` (seed, epoch, step[, rank]) through numpy's SeedSequence."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1))
    return g


def augment(x: torch.Tensor, gen: torch.Generator, *, max_rot_deg: float = 10.0, max_shift: float = 0.1,
            erase_p: float = 0.25) -> torch.Tensor:
    """x: (B, 1, S, S) float in [0, 1] on any device; random numbers come from a CPU generator."""
    B = x.shape[0]
    dev = x.device
    r = torch.rand((B, 9), generator=gen).to(dev)
    flip = torch.where(r[:, 0] < 0.5, -1.0, 1.0)
    ang = (r[:, 1] * 2 - 1) * math.radians(max_rot_deg)
    tx, ty = (r[:, 2] * 2 - 1) * max_shift, (r[:, 3] * 2 - 1) * max_shift
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = 0.8 + 0.4 * r[:, 4]
    bright = (r[:, 5] - 0.5) * 0.2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast.view(B, 1, 1, 1) + mean + bright.view(B, 1, 1, 1)).clamp_(0, 1)
    # random erasing: a rectangle of 4-16% of the area, filled with its image's mean
    S = x.shape[-1]
    e = torch.rand((B, 5), generator=gen).to(dev)
    do = e[:, 0] < erase_p
    area = 0.04 + 0.12 * e[:, 1]
    aspect = 0.5 + e[:, 2]
    h = (torch.sqrt(area * aspect) * S).clamp(1, S)
    w = (torch.sqrt(area / aspect) * S).clamp(1, S)
    y0 = e[:, 3] * (S - h)
    x0 = e[:, 4] * (S - w)
    ar = torch.arange(S, device=dev, dtype=x.dtype)
    my = (ar[None, :] >= y0[:, None]) & (ar[None, :] < (y0 + h)[:, None])
    mx = (ar[None, :] >= x0[:, None]) & (ar[None, :] < (x0 + w)[:, None])
    mask = (my[:, :, None] & mx[:, None, :] & do[:, None, None]).unsqueeze(1)
    return torch.where(mask, mean.expand_as(x), x)
