"""(a) our training step against the bare model step, (b) torch.compile on and off, (c) embedding
extraction against the bare forward pass.

"Ours" is the real thing, not a copy: :class:`pipeline.sampling.ClassBalancedSampler` draws the
rows, they index the resident (N, S, S) uint8 tensor, and ``pipeline.step.make_step`` (conversion,
:func:`pipeline.augment.augment`, SGM loss with soft targets, Adam) does the rest. Only the five
lines of glue around it in ``Trainer._fit`` (learning rate, row tensors, per-step generator, the
NaN check) are mirrored here. "Bare" is what a plain PyTorch loop would do at best: the same
architecture, forward + cross-entropy + backward + Adam on a float batch prepared once.

Throughputs are images/s. Every comparison alternates its contenders round by round inside one
process and keeps each one's median round, because other work shares the cores.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class StepSetup:
    backbone: str = "light"
    image_size: int = 48
    classes: int = 8                  # FER+ has 8
    per_class: int = 32               # batch = classes * per_class
    n_images: int = 4096              # resident training images
    embedding_dim: int = 64
    device: str = "cpu"
    bf16: bool = True                 # autocast, CUDA only (as the trainer does)
    seed: int = 0

    @property
    def batch(self) -> int:
        return self.classes * self.per_class

    def describe(self) -> str:
        dev = torch.device(self.device).type
        extra = ", bf16, channels-last" if dev == "cuda" and self.bf16 else ""
        return f"{self.backbone} {self.image_size}px, batch {self.batch}, {dev}{extra}"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _data(s: StepSetup, dev: torch.device):
    """Random resident images (N, S, S) uint8, balanced labels (N,), soft vote targets (N, C)."""
    g = torch.Generator().manual_seed(s.seed)
    images = torch.randint(0, 256, (s.n_images, s.image_size, s.image_size), dtype=torch.uint8, generator=g).to(dev)
    labels = np.arange(s.n_images) % s.classes
    votes = torch.rand((s.n_images, s.classes), generator=g) ** 4
    votes[torch.arange(s.n_images), torch.from_numpy(labels)] += 1.0
    targets = (votes / votes.sum(1, keepdim=True)).to(dev)
    return images, labels.astype(np.int64), targets


def _run_config(s: StepSetup, *, compile: bool):
    from pipeline.config import LossConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(model=ModelConfig(backbone=s.backbone, embedding_dim=s.embedding_dim),
                     loss=LossConfig(name="sgm", soft_targets=True),
                     train=TrainConfig(per_class=s.per_class, device=s.device, bf16=s.bf16, compile=compile,
                                       augment=True, seed=s.seed))


def _model(s: StepSetup, cfg, dev: torch.device):
    from pipeline.models import build_model

    torch.manual_seed(s.seed)
    model = build_model(cfg.model, num_classes=s.classes, loss_name=cfg.loss.name,
                        instance=cfg.loss.instance_weight > 0).to(dev)
    if dev.type == "cuda":                       # as Trainer._fit does
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    return model, opt


def our_step(s: StepSetup, *, compile: bool = False) -> Callable[[], int]:
    """One call = one step of the real training loop; returns the images it consumed."""
    from pipeline.augment import step_generator
    from pipeline.sampling import ClassBalancedSampler
    from pipeline.step import cosine_lr, make_step

    dev = torch.device(s.device)
    cfg = _run_config(s, compile=compile)
    model, opt = _model(s, cfg, dev)
    images, labels, targets = _data(s, dev)
    step_fn = make_step(model, opt, cfg, s.classes, dev)
    train_rows = np.arange(s.n_images)
    sampler = ClassBalancedSampler(labels[train_rows], per_class=s.per_class, seed=s.seed)
    steps = max(1, math.ceil(len(train_rows) / sampler.batch_size))
    lr, E = cfg.train.lr, cfg.train.epochs
    st = {"epoch": -1, "s": steps, "batches": []}

    def step() -> int:
        if st["s"] >= steps:                     # a new epoch: the sampler's cost is in the timing
            st["epoch"] += 1
            st["s"] = 0
            st["batches"] = sampler.epoch(st["epoch"], steps)
        e, i = st["epoch"], st["s"]
        rows_np = st["batches"][i]
        for grp in opt.param_groups:             # --- the body of Trainer._fit's step loop
            grp["lr"] = cosine_lr(lr, e, i, E, steps)
        rows = torch.from_numpy(train_rows[rows_np]).to(dev)
        lab = torch.from_numpy(labels[train_rows[rows_np]]).to(dev)
        tgt = targets[rows]
        terms = step_fn(images[rows], lab, tgt, step_generator(s.seed, e, i))
        if not math.isfinite(terms["loss"]):
            raise RuntimeError("bench: our step produced a non-finite loss")
        st["s"] += 1
        return len(rows_np)

    return step


def bare_step(s: StepSetup, *, compile: bool = False) -> Callable[[], int]:
    """One call = forward + cross-entropy + backward + Adam on a prepared float batch."""
    from pipeline.embed import to_input

    dev = torch.device(s.device)
    cfg = _run_config(s, compile=compile)
    model, opt = _model(s, cfg, dev)
    images, labels, _ = _data(s, dev)
    x = to_input(images[: s.batch])
    if dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels[: s.batch]).to(dev)
    fwd = torch.compile(model) if compile else model
    use_amp = s.bf16 and dev.type == "cuda"

    def step() -> int:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            z = fwd(x)
        loss = F.cross_entropy(z.float()[:, : s.classes], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return s.batch

    return step


def interleave(contenders: dict[str, Callable[[], int]], *, device: str, rounds: int = 3,
               round_s: float = 2.0, min_steps: int = 2, warmup: int = 2,
               max_s: float | None = None) -> dict[str, dict]:
    """Images/s of each contender: ``warmup`` untimed calls each, then ``rounds`` rounds in which
    every contender runs for ``round_s`` seconds (at least ``min_steps`` calls) in turn; no new
    round starts after ``max_s`` seconds in all (at least one round runs).
    Returns {name: {"ips": median, "rounds": [...], "steps": n}}."""
    dev = torch.device(device)
    t_start = time.perf_counter()
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    _sync(dev)
    per: dict[str, list[float]] = {k: [] for k in contenders}
    steps: dict[str, int] = {k: 0 for k in contenders}
    for r in range(rounds):
        if r > 0 and max_s is not None and time.perf_counter() - t_start > max_s:
            break
        for name, fn in contenders.items():
            _sync(dev)
            t0 = time.perf_counter()
            n = k = 0
            while k < min_steps or time.perf_counter() - t0 < round_s:
                n += fn()
                k += 1
            _sync(dev)
            per[name].append(n / (time.perf_counter() - t0))
            steps[name] += k
    return {k: {"ips": statistics.median(v), "rounds": [round(x, 1) for x in v], "steps": steps[k]} for k, v in per.items()}


# ----------------------------------------------------------------------------- (a)
def train_step(s: StepSetup, *, rounds: int, round_s: float, max_s: float | None = None) -> dict:
    res = interleave({"ours": our_step(s), "bare": bare_step(s)}, device=s.device, rounds=rounds, round_s=round_s,
                     min_steps=1, warmup=1, max_s=max_s)
    return {"setup": asdict(s), **res}


# ----------------------------------------------------------------------------- (b), run in a child
def compile_task(args: dict) -> None:
    """Worker: for each batch size, compile time and compiled vs eager images/s of the bare step
    (and of our step on CUDA, where the trainer's ``compile`` option applies)."""
    from .subproc import emit

    base = StepSetup(**args["setup"])
    kinds = ["bare"] + (["ours"] if torch.device(base.device).type == "cuda" else [])
    for per_class in args["per_class"]:
        s = StepSetup(**{**asdict(base), "per_class": per_class})
        for kind in kinds:
            make = bare_step if kind == "bare" else our_step
            eager = make(s, compile=False)
            compiled = make(s, compile=True)
            dev = torch.device(s.device)
            _sync(dev)
            t0 = time.perf_counter()
            compiled()                           # forward and backward graphs compile here
            compiled()
            _sync(dev)
            compile_s = time.perf_counter() - t0
            emit({"kind": kind, "batch": s.batch, "event": "compiled", "compile_s": compile_s})
            res = interleave({"compiled": compiled, "eager": eager}, device=s.device,
                             rounds=args["rounds"], round_s=args["round_s"], warmup=1)
            emit({"kind": kind, "batch": s.batch, "event": "measured", "compile_s": compile_s,
                  "setup": s.describe(), "compiled": res["compiled"]["ips"], "eager": res["eager"]["ips"]})


# ----------------------------------------------------------------------------- (c)
def embedding(s: StepSetup, *, n: int, rounds: int, round_s: float, batch_size: int = 1024,
              max_s: float | None = None) -> dict:
    """embed_images on the resident uint8 tensor and on a NumPy array (as write_outputs calls it)
    against the bare forward pass over the same images, already converted to float batches."""
    from pipeline.embed import embed_images, to_input

    dev = torch.device(s.device)
    cfg = _run_config(s, compile=False)
    model, _ = _model(s, cfg, dev)
    model.eval()
    s_n = StepSetup(**{**asdict(s), "n_images": n})
    images, _, _ = _data(s_n, dev)
    images_np = images.cpu().numpy()
    use_amp = s.bf16 and dev.type == "cuda"
    prepared = []
    for i in range(0, n, batch_size):
        xb = to_input(images[i:i + batch_size])
        if dev.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        prepared.append(xb)

    def ours_resident() -> int:
        z = embed_images(model, images, device=dev, batch_size=batch_size, bf16=s.bf16)
        return z.shape[0]

    def ours_numpy() -> int:
        z = embed_images(model, images_np, device=dev, batch_size=batch_size, bf16=s.bf16)
        return z.shape[0]

    @torch.no_grad()
    def bare() -> int:
        for xb in prepared:
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                model(xb)
        return n

    res = interleave({"resident": ours_resident, "numpy": ours_numpy, "bare": bare}, device=s.device,
                     rounds=rounds, round_s=round_s, min_steps=1, warmup=1, max_s=max_s)
    return {"n": n, **res}
