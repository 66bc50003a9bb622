"""Training progress: the events ``progress.jsonl`` holds, their writer and their reader.

Training writes one :class:`Event` per line through :func:`write`; the explorer's status line and
its training curve read them back with :func:`read` / :func:`summarize`, which works out the global
step axis once (:attr:`Progress.losses`, :attr:`Progress.epoch_losses`).

Event kinds: ``step`` (every tenth of an epoch), ``epoch`` (end of an epoch, with the validation
score), ``level`` (Algorithm 2 re-labelled the data), ``error`` (training stopped; ``message``),
``done`` (``wall_s``). ``step``/``steps`` count within an epoch; ``epoch``/``epochs`` over all
levels of Algorithm 2, so the global step of a step event is ``(epoch - 1) * steps + step``.
``analyze`` appends its own: ``stage`` (analysis stage ``stage_index`` of ``stages``, named
``stage``, starts; ``plan`` names them all) and ``analysed`` (``wall_s``); an analysis that fails
writes ``error`` too.

:func:`job_progress` folds both into one bar and one ETA for a whole job (training, then analysis):
the training part from the pace measured over the last few epochs, the analysis part from a
per-stage estimate (:data:`STAGE_COST`) rescaled by how long its finished stages actually took.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import runs
from .runs import PROGRESS, read_jsonl

KINDS = ("step", "epoch", "level", "error", "done", "stage", "analysed")
ANALYSIS_KINDS = ("stage", "analysed")


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
    wall_s: float | None = None         # done: seconds training took (analysed: the analysis)
    images: int | None = None           # step, epoch, stage: images in the run (what analysis goes through)
    stage: str | None = None            # stage: the analysis stage starting now
    stage_index: int | None = None      # stage: 1-based
    stages: int | None = None           # stage: how many the analysis has
    plan: list | None = None            # stage: every stage's name, in order

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
            if f.name in ("message", "stage"):
                kw[f.name] = str(v)
            elif f.name == "plan":
                kw[f.name] = [str(x) for x in v] if isinstance(v, list) else None
            elif f.name == "terms":
                kw[f.name] = v if isinstance(v, dict) else None
            elif f.name == "best":
                kw[f.name] = bool(v)
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            elif f.name in ("epoch", "epochs", "level", "step", "steps", "subclasses", "images", "stage_index",
                            "stages"):
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
    """Fold training's progress events into one status line's worth of numbers and the loss curve
    (analysis events are skipped; :func:`job_progress` reads both).

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
        if ev is None or ev.event in ANALYSIS_KINDS:     # training's numbers only (job_progress: both)
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


# ---------------------------------------------------------------------------- analysis stages
ANALYSIS_STAGES = ("sub-classes", "mislabels", "outliers and duplicates", "summary and scores")
DEFAULT_MAPS = ("tsne", "umap", "pca")   # analyze's default maps (pipeline.maps.METHODS)

# Seconds a stage is expected to take on a 2-core CPU: (fixed, per image). Rough: the 4,000-image
# demo analysed in 26 s with all three maps on an idle machine (RESULTS.md), UMAP's first use
# compiles numba code. Only the estimate before a stage has run: job_progress rescales the stages
# still to come by how long the finished ones actually took.
STAGE_COST = {"sub-classes": (2.0, 2e-3), "mislabels": (1.0, 2e-4), "outliers and duplicates": (1.0, 2e-4),
              "summary and scores": (0.5, 5e-5), "tsne map": (3.0, 2.5e-3), "umap map": (15.0, 1.5e-3),
              "pca map": (0.3, 1e-5)}
OTHER_STAGE_COST = (1.0, 1e-3)
DEFAULT_IMAGES = 4000                    # when no event says how many images the run has
RATE_EPOCHS = 3                          # the training ETA: the pace over (up to) the last 3 epochs
# after the last epoch the trainer embeds every image and scores the run before it writes ``done``
# (12 s for 320 images on 2 busy cores, about 1.5 of that run's short epochs; on real data an
# embedding pass is a fraction of an epoch): FINISH_S + FINISH_EPOCHS epochs at the measured pace
FINISH_S, FINISH_EPOCHS = 3.0, 0.5
ANALYSIS_START_S = 5.0                   # the analyze process's imports and loading, before its first stage


def analysis_stages(maps: Sequence[str] = DEFAULT_MAPS) -> list[str]:
    """The stages ``analyze`` reports, in order: the fixed ones, then one per map."""
    return list(ANALYSIS_STAGES) + [f"{m} map" for m in maps]


def stage_estimate(stage: str, images: int | None) -> float:
    base, per = STAGE_COST.get(stage, OTHER_STAGE_COST)
    return base + per * (images if images else DEFAULT_IMAGES)


class StageWriter:
    """What ``analyze`` calls at each stage: ``stage(name)`` writes a ``stage`` event (the plan, the
    stage's index), ``done()`` the ``analysed`` event, ``failed(exc)`` an ``error`` one."""

    def __init__(self, path: Path, plan: Sequence[str], images: int | None = None):
        self.path, self.plan, self.images = Path(path), list(plan), images
        self.t0 = time.time()
        self.started = False

    def stage(self, name: str) -> None:
        self.started = True
        i = self.plan.index(name) + 1 if name in self.plan else None
        write(self.path, Event("stage", time.time(), stage=name, stage_index=i, stages=len(self.plan),
                               plan=self.plan, images=self.images))

    def done(self) -> None:
        write(self.path, Event("analysed", time.time(), wall_s=round(time.time() - self.t0, 2)))

    def failed(self, exc: BaseException) -> None:
        """Only once a stage was written: before that the folder may not be a run at all."""
        from .errors import one_line

        if not self.started:
            return
        write(self.path, Event("error", time.time(), message=f"analysis: {one_line(exc, 200)}"))


# ---------------------------------------------------------------------------- the whole job
@dataclass
class JobProgress:
    """One bar and one ETA over a job's training and analysis (:func:`job_progress`)."""
    phase: str = ""                  # "train", "analyse", "done" or "" (nothing reported yet)
    fraction: float | None = None    # 0..1 of the job's expected time
    eta_s: float | None = None       # the job's time left
    train: Progress = field(default_factory=Progress)   # training's numbers (epoch, step, loss, ...)
    train_done: bool = False
    stage: str = ""                  # the analysis stage running now ("" before the first)
    stage_index: int | None = None
    stages: int | None = None
    fold: int | None = None          # cross-fitting: the fold model training now (1-based), of ``folds``
    folds: int | None = None
    fold_train: Progress | None = None

    def line(self) -> str:
        """``42 % · ETA 3 min 10 s · training: epoch 4/20, step 3/10, 120 img/s, loss 0.532`` or
        ``… · analysing: sub-classes (1/7)``."""
        head = []
        if self.fraction is not None:
            head.append(f"{int(100 * self.fraction)} %")
        if self.phase not in ("", "done"):
            head.append(f"ETA {format_eta(self.eta_s)}")
        if self.phase == "train":
            t = self.train
            if t.fraction is not None and t.fraction >= 1.0:
                what = "training: embedding every image…"
            else:
                bits = []
                if t.epoch is not None:
                    bits.append(f"epoch {t.epoch}" + (f"/{t.epochs}" if t.epochs else ""))
                if t.step is not None and t.steps:
                    bits.append(f"step {t.step}/{t.steps}")
                if t.images_per_s:
                    bits.append(f"{t.images_per_s:.0f} img/s")
                if t.loss is not None:
                    bits.append(f"loss {t.loss:.3f}")
                what = "training: " + (", ".join(bits) if bits else "preparing data…")
        elif self.phase == "analyse":
            what = (f"analysing: {self.stage} ({self.stage_index}/{self.stages})" if self.stage and self.stage_index
                    else "analysing: starting…")
        elif self.phase == "crossfit":
            f = self.fold_train
            bits = []
            if f is not None and f.epoch is not None:
                bits.append(f"epoch {f.epoch}" + (f"/{f.epochs}" if f.epochs else ""))
            if f is not None and f.images_per_s:
                bits.append(f"{f.images_per_s:.0f} img/s")
            what = f"cross-fitting: fold model {self.fold}/{self.folds}" + (", " + ", ".join(bits) if bits else "")
        elif self.phase == "done":
            what = "done"
        else:
            what = "training: preparing data…"
        return " · ".join(head + [what])


def _coerce(events: Iterable[Event | dict]) -> list[Event]:
    out = []
    for raw in events:
        ev = raw if isinstance(raw, Event) else Event.from_dict(raw)
        if ev is not None:
            out.append(ev)
    return out


def _training_session(events: list[Event]) -> list[Event]:
    """The training events of the latest attempt: after the last ``error`` (an interrupted run
    resumed), or after the global step went back (a restart over an old file)."""
    start, steps, last_x = 0, None, None
    for i, e in enumerate(events):
        if e.event == "error":
            start, last_x = i + 1, None
            continue
        steps = e.steps or steps
        x = _global_step(e, steps)
        if x is not None:
            if last_x is not None and x < last_x:
                start = i
            last_x = x
    return events[start:]


def _global_step(e: Event, steps: int | None) -> int | None:
    if e.event not in ("step", "epoch") or e.epoch is None or not steps:
        return None
    return (e.epoch - 1) * steps + (e.step if e.step is not None else steps)


def _training_eta(session: list[Event], now: float) -> float | None:
    """Time left in training at the pace of (up to) the last :data:`RATE_EPOCHS` epochs, measured
    between the events' own times (so validation and checkpoints count), plus the finishing pass
    (:data:`FINISH_S`, :data:`FINISH_EPOCHS`), aged since the last event."""
    steps = epochs = None
    pts: list[tuple[float, int]] = []
    for e in session:
        steps, epochs = e.steps or steps, e.epochs or epochs
        x = _global_step(e, steps)
        if x is not None and e.time is not None:
            pts.append((e.time, x))
    if len(pts) < 2 or not (steps and epochs):
        return None
    t1, x1 = pts[-1]
    ref = next(p for p in pts if p[1] >= x1 - RATE_EPOCHS * steps)
    if ref[1] >= x1:
        ref = next((p for p in reversed(pts) if p[1] < x1), None)
        if ref is None:
            return None
    rate = (t1 - ref[0]) / (x1 - ref[1])
    finish = FINISH_S + FINISH_EPOCHS * rate * steps
    return max(0.0, rate * (epochs * steps - x1) + finish - max(0.0, now - t1))


def job_progress(events: Iterable[Event | dict], *, train: bool = True, analyse: bool = True,
                 since: float | None = None, now: float | None = None,
                 maps: Sequence[str] = DEFAULT_MAPS) -> JobProgress:
    """The progress of a job that trains (``train``) and/or analyses (``analyse``) one run, from its
    progress events. ``since``: the job's start; older events (an earlier attempt, an earlier
    analysis) are history. ``maps``: the maps the analysis will compute, for its estimate before it
    reports its plan.

    ETA: training's time left at its measured pace (:func:`_training_eta`; the trainer's own
    estimate until two events are in) plus the analysis's estimate (its start-up,
    :data:`ANALYSIS_START_S`, and every stage's); during the analysis, each
    stage's estimate (:data:`STAGE_COST`, per image) scaled by actual / estimated time of the
    finished stages. ``fraction``: elapsed / (elapsed + ETA) since the job's start (``since``, else
    its first event), so the bar and the ETA tell the same story."""
    now = time.time() if now is None else now
    evs = _coerce(events)
    if since is not None:
        evs = [e for e in evs if e.time is not None and e.time >= since]
    last_tr = max((i for i, e in enumerate(evs) if e.event not in ANALYSIS_KINDS), default=-1) if train else -1
    an = [e for e in evs[last_tr + 1:] if e.event in ANALYSIS_KINDS] if analyse else []
    firsts = [i for i, e in enumerate(an) if e.event == "stage" and e.stage_index == 1]
    an = an[firsts[-1]:] if firsts else an
    session = _training_session([e for e in evs if e.event not in ANALYSIS_KINDS]) if train else []
    jp = JobProgress(train=summarize(session, now=now))
    jp.train_done = any(e.event == "done" for e in session)
    images = next((e.images for e in reversed(evs) if e.images), None)
    stage_evs = [e for e in an if e.event == "stage"]
    plan = next((e.plan for e in reversed(stage_evs) if e.plan), None) or analysis_stages(maps)
    prior = [stage_estimate(name, images) for name in plan]

    if an and an[-1].event == "analysed":
        jp.phase, jp.fraction, jp.eta_s = "done", 1.0, 0.0
        return jp
    if stage_evs:
        cur = stage_evs[-1]
        jp.phase, jp.stage, jp.stages = "analyse", cur.stage or "", cur.stages or len(plan)
        k = cur.stage_index or len(stage_evs)
        jp.stage_index = k
        done_prior = sum(prior[:k - 1])
        done_actual = (cur.time or now) - (stage_evs[0].time or now)
        r = min(4.0, max(0.25, done_actual / done_prior)) if k > 1 and done_prior > 0 else 1.0
        left_now = max(0.0, r * (prior[k - 1] if k - 1 < len(prior) else 0.0) - (now - (cur.time or now)))
        jp.eta_s = left_now + r * sum(prior[k:])
        t0 = since if since is not None else (session[0].time if session and session[0].time else stage_evs[0].time)
    elif train and not jp.train_done:
        if not session:
            return jp
        jp.phase = "train"
        t_eta = _training_eta(session, now)
        if t_eta is None:
            t_eta = jp.train.eta_s
        jp.eta_s = None if t_eta is None else t_eta + (ANALYSIS_START_S + sum(prior) if analyse else 0.0)
        t0 = since if since is not None else session[0].time
    elif analyse:                       # training is done (or not part of the job): analysis next
        jp.phase, jp.stages = "analyse", len(plan)
        t_done = next((e.time for e in reversed(session) if e.event == "done" and e.time is not None), None)
        t_from = t_done if t_done is not None else since
        jp.eta_s = max(0.0, ANALYSIS_START_S - (now - t_from if t_from is not None else 0.0)) + sum(prior)
        t0 = since if since is not None else (session[0].time if session else None)
    else:
        jp.phase, jp.fraction, jp.eta_s = "done", 1.0, 0.0
        return jp
    if jp.eta_s is not None and t0 is not None:
        elapsed = max(0.0, now - t0)
        jp.fraction = elapsed / (elapsed + jp.eta_s) if elapsed + jp.eta_s > 0 else 0.0
    return jp


def with_crossfit(jp: JobProgress, run_path: str | Path, *, since: float | None = None,
                  now: float | None = None) -> JobProgress:
    """A job whose training goes on into cross-fitting (``train --crossfit K``: K fold models after
    the main one, each a run under ``<run>/crossfit/fold<k>`` with its own progress file): while the
    folds train, the bar names the fold and its epoch, and the ETA adds the folds still to come
    (each about the main model's training time, scaled by its (K-1)/K share of the images) to the
    running fold's own estimate and the analysis's. Unchanged outside that window."""
    if jp.phase != "train" or jp.train_done or (jp.train.fraction or 0.0) < 1.0:
        return jp
    run_path = Path(run_path)
    try:
        k_all = int(json.loads((run_path / runs.MANIFEST).read_text())["config"]["train"]["crossfit"])
    except (OSError, ValueError, KeyError, TypeError):
        return jp
    folds = sorted((p for p in (run_path / "crossfit").glob("fold*") if p.name[4:].isdigit()),
                   key=lambda p: int(p.name[4:]))
    if k_all < 2 or not folds:
        return jp
    now = time.time() if now is None else now
    cur = folds[-1]
    f_evs = read(cur)
    fold_p = summarize(f_evs, now=now)
    fold_eta = _training_eta([e for e in f_evs if e.event not in ANALYSIS_KINDS], now)
    fold_eta = fold_p.eta_s if fold_eta is None else fold_eta
    main_t = [e.time for e in _main_times(run_path)]
    per_fold = (main_t[-1] - main_t[0]) * (k_all - 1) / k_all if len(main_t) >= 2 else None
    left_folds = k_all - 1 - int(cur.name[4:])
    if fold_eta is None or per_fold is None:
        jp.eta_s = None
    else:
        analysis = (jp.eta_s or 0.0)            # what job_progress kept for the analysis after training
        jp.eta_s = fold_eta + left_folds * per_fold + analysis
    jp.phase = "crossfit"
    jp.fold, jp.folds, jp.fold_train = int(cur.name[4:]) + 1, k_all, fold_p
    t0 = since if since is not None else (main_t[0] if main_t else None)
    if jp.eta_s is not None and t0 is not None:
        elapsed = max(0.0, now - t0)
        jp.fraction = elapsed / (elapsed + jp.eta_s) if elapsed + jp.eta_s > 0 else 0.0
    return jp


def _main_times(run_path: Path) -> list[Event]:
    """The main model's step and epoch events with a time (its latest training session)."""
    evs = [e for e in read(run_path) if e.event not in ANALYSIS_KINDS]
    return [e for e in _training_session(evs) if e.time is not None and e.event in ("step", "epoch")]


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating…"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"
