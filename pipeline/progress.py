"""Training progress: the events ``progress.jsonl`` holds, their writer and their reader.

Training writes one :class:`Event` per line through :func:`write`; the explorer's status line and
its training curve read them back with :func:`read` / :func:`summarize`, which works out the global
step axis once (:attr:`Progress.losses`, :attr:`Progress.epoch_losses`).

Event kinds: ``step`` (every tenth of an epoch), ``epoch`` (end of an epoch, with the validation
score), ``level`` (Algorithm 2 re-labelled the data), ``error`` (training stopped; ``message``),
``done`` (``wall_s``). ``step``/``steps`` count within an epoch; ``epoch``/``epochs`` over all
levels of Algorithm 2, so the global step of a step event is ``(epoch - 1) * steps + step``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from . import runs
from .runs import PROGRESS, read_jsonl

KINDS = ("step", "epoch", "level", "error", "done")


@dataclass(frozen=True)
class Event:
    event: str                          # one of KINDS (older runs may hold others, e.g. "start")
    time: float | None = None           # time.time() when written
    epoch: int | None = None            # 1-based, over all levels
    epochs: int | None = None
    level: int | None = None            # 1-based level of Algorithm 2
    step: int | None = None             # 1-based, within the epoch
    steps: int | None = None            # steps per epoch
    loss: float | None = None
    terms: dict | None = None           # the loss's terms (step: this batch; epoch: the epoch's means)
    images_per_s: float | None = None
    eta_s: float | None = None          # the trainer's estimate of the time left
    val_score: float | None = None      # epoch: the validation score checkpoints are chosen by
    best: bool | None = None            # epoch: the best so far (best.pt was written)
    subclasses: int | None = None       # level: sub-classes of the new labels
    message: str | None = None          # error: one line
    wall_s: float | None = None         # done: seconds training took

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Any) -> "Event | None":
        """A line of progress.jsonl -> an Event; None for a line that is not an event. Fields of the
        wrong type are dropped (a reader must not fail on a damaged or older file)."""
        if not isinstance(d, dict):
            return None
        kw: dict[str, Any] = {"event": str(d.get("event", "") or "")}
        for f in fields(cls):
            v = d.get(f.name)
            if f.name == "event" or v is None:
                continue
            if f.name in ("message",):
                kw[f.name] = str(v)
            elif f.name == "terms":
                kw[f.name] = v if isinstance(v, dict) else None
            elif f.name == "best":
                kw[f.name] = bool(v)
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            elif f.name in ("epoch", "epochs", "level", "step", "steps", "subclasses"):
                kw[f.name] = int(v)
            else:
                kw[f.name] = float(v)
        return cls(**kw)


def write(path: Path, event: Event) -> None:
    """Append ``event`` to the progress file at ``path`` (a torn line from a killed writer is skipped)."""
    runs.append_jsonl(Path(path), event.to_dict())     # looked up per call: the crash tests wrap it


def read(path: Path) -> list[Event]:
    """The events of a progress file (a run directory or the file itself); [] when there is none."""
    p = Path(path)
    if p.is_dir():
        p = p / PROGRESS
    return [e for e in map(Event.from_dict, read_jsonl(p)) if e is not None]


@dataclass
class Progress:
    fraction: float | None = None   # 0..1 of the training steps, None when unknown
    step: int | None = None         # step within the epoch (as the trainer reports it)
    steps: int | None = None        # steps per epoch when ``epochs`` is known, else in all
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    last_event: str = ""
    message: str = ""
    losses: list[tuple[int, float]] = field(default_factory=list)        # (global step, loss) of step events
    epoch_losses: list[tuple[int, float]] = field(default_factory=list)  # (global step, mean loss) of epochs


def summarize(events: Iterable[Event | dict], *, now: float | None = None) -> Progress:
    """Fold progress events into one status line's worth of numbers and the loss curve.

    The global step: ``(epoch - 1) * steps + step`` (an epoch event closes its epoch); events without
    ``epoch`` (older runs) count steps in all, a restarted count (a new level) continuing the axis.
    ETA: the trainer's own ``eta_s`` when given, aged by the time since that event; otherwise the
    remaining steps at the rate seen between the first and last step events.
    """
    p = Progress()
    now = time.time() if now is None else now
    first_t = first_step = last_t = None
    done = total = None             # global steps done / in all
    offset = last_raw = 0           # the step axis of events without ``epoch``
    for raw in events:
        ev = raw if isinstance(raw, Event) else Event.from_dict(raw)
        if ev is None:
            continue
        kind = ev.event
        p.last_event = kind or p.last_event
        if ev.steps:
            p.steps = ev.steps
        if ev.epochs:
            p.epochs = ev.epochs
        if ev.epoch is not None:
            p.epoch = ev.epoch
        if ev.step is not None:
            p.step = ev.step
        elif kind == "epoch" and p.steps:
            p.step = p.steps        # an epoch event closes its epoch
        x = None                    # this event's global step
        if ev.epoch is not None and p.steps and (ev.step is not None or kind == "epoch"):
            x = (ev.epoch - 1) * p.steps + (ev.step if ev.step is not None else p.steps)
        elif ev.step is not None:
            if ev.step < last_raw:
                offset += last_raw
            x = offset + ev.step
        elif kind == "epoch":
            x = p.losses[-1][0] if p.losses else len(p.epoch_losses) + 1
        if ev.step is not None:
            last_raw = ev.step
        if x is not None and kind in ("step", "epoch"):
            done = x
            total = p.epochs * p.steps if (p.epochs and p.steps and ev.epoch is not None) else p.steps
        if ev.loss is not None:
            p.loss = ev.loss
            if kind == "step" and x is not None:
                p.losses.append((x, ev.loss))
            elif kind == "epoch" and x is not None:
                p.epoch_losses.append((x, ev.loss))
        if ev.images_per_s is not None:
            p.images_per_s = ev.images_per_s
        if ev.message:
            p.message = ev.message
        if ev.time is not None:
            last_t = ev.time
            if done is not None and first_t is None:
                first_t, first_step = ev.time, done
        if ev.eta_s is not None:
            p.eta_s = max(0.0, ev.eta_s - (now - last_t if last_t else 0.0))
    if total and done is not None:
        p.fraction = min(1.0, max(0.0, done / total))
    if p.last_event == "done":
        p.fraction, p.eta_s = 1.0, 0.0
    elif p.eta_s is None and p.fraction is not None and first_t is not None and last_t and done and done > (first_step or 0):
        rate = (last_t - first_t) / (done - (first_step or 0))
        p.eta_s = max(0.0, rate * (total - done) - (now - last_t))
    return p


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating…"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"
