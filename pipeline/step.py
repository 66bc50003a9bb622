"""One training step (Algorithm 1's inner loop body) and the learning-rate schedule: what the
trainer runs and what ``bench`` times, through the same public functions."""
from __future__ import annotations

import math
from typing import Callable

import torch

from .augment import augment
from .config import RunConfig
from .embed import to_input
from .losses import instance_loss, sgm_loss, softmax_loss, triplet_loss

StepFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", torch.Generator], dict]


def cosine_lr(base_lr: float, epoch: int, step: int, epochs_per_level: int, steps: int) -> float:
    """The learning rate at ``step`` of (0-based) ``epoch``: a cosine from ``base_lr`` to 0 over each
    level's ``epochs_per_level`` epochs of ``steps`` steps (Algorithm 2 restarts it every level)."""
    E = epochs_per_level
    return base_lr * 0.5 * (1 + math.cos(math.pi * (((epoch % E) * steps + step) / (E * steps))))


def make_step(model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: RunConfig, num_classes: int,
              dev: torch.device, *, net: torch.nn.Module | None = None, world: int = 1) -> StepFn:
    """The training step of Algorithm 1: ``step(images_u8 (B, S, S), labels (B,), targets (B, C) or
    None, generator) -> {loss term: float}`` augments, embeds, takes the configured loss and one
    optimiser step (skipped when the loss is not finite). ``net``: what the forward runs (a
    DistributedDataParallel wrapper of ``model`` under torchrun); ``world``: the number of ranks."""
    use_amp = cfg.train.bf16 and dev.type == "cuda"
    net = model if net is None else net
    fwd = torch.compile(net) if (cfg.train.compile and dev.type == "cuda") else net
    # the within-class appearance term needs two augmented views and the model's projection head
    instance = cfg.loss.instance_weight > 0 and getattr(model, "instance_head", None) is not None

    def step(xb_u8: torch.Tensor, lab: torch.Tensor, tgt: torch.Tensor | None, gen: torch.Generator) -> dict:
        x = to_input(xb_u8)
        if instance:
            # two views of every image: the appearance term contrasts them; the class loss sees both
            x = torch.cat([augment(x, gen), augment(x, gen)])
            lab = torch.cat([lab, lab])
            tgt = None if tgt is None else torch.cat([tgt, tgt])
        elif cfg.train.augment:
            x = augment(x, gen)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            if instance:
                z, proj = fwd(x, with_instance=True)
            else:
                z = fwd(x)
            if cfg.loss.name == "softmax":
                logits = model.classifier(z)
        if instance:
            inst = instance_loss(proj, temperature=cfg.loss.instance_temperature)["instance"]
        scale = 1.0
        if world > 1 and cfg.loss.name in ("sgm", "triplet"):
            # the metric losses see the whole global batch (class means over every rank's share);
            # DDP averages gradients over ranks, so scale by the world size to keep their sum
            from torch.distributed.nn.functional import all_gather
            z = torch.cat(all_gather(z.float().contiguous()))
            lab = torch.cat(all_gather(lab.contiguous()))
            if tgt is not None:
                tgt = torch.cat(all_gather(tgt.contiguous()))
            scale = float(world)
        if cfg.loss.name == "sgm":
            terms = sgm_loss(z, lab, num_classes=num_classes, sigma=cfg.loss.sigma,
                             norm_lambda=cfg.loss.norm_lambda, targets=tgt)
        elif cfg.loss.name == "triplet":
            terms = triplet_loss(z, lab, triplets=cfg.loss.triplets, margin=cfg.loss.margin, generator=gen)
        else:
            terms = softmax_loss(logits, lab, targets=tgt)
        if instance:
            terms["instance"] = inst
            terms["loss"] = terms["loss"] + cfg.loss.instance_weight * inst / scale
        opt.zero_grad(set_to_none=True)
        if torch.isfinite(terms["loss"]):
            (terms["loss"] * scale).backward()
            opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    return step
