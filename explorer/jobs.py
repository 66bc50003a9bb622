"""Background pipeline jobs: start, poll and cancel ``python -m pipeline`` outside Streamlit.

One job at a time per runs root. A job is a list of steps (``train`` then ``analyze`` for the
demo) run by a small runner process (``python -m explorer.jobs run JOBFILE``) started with
``start_new_session=True``: it is its own process group, so closing the browser or restarting
Streamlit does not stop it, and cancel is one ``SIGTERM`` to the group (the pipeline then saves
a resumable run marked ``interrupted``).

State lives in files under ``<runs root>/.explorer/`` so any Streamlit session (a reload, a new
tab, a restarted server) sees the same job:

    job.json            the current or last job (written by the app, under ``job.lock``)
    jobs/<id>.log       stdout and stderr of every step
    jobs/<id>.step      index of the step now running (written by the runner)
    jobs/<id>.exit      {"returncode", "failed_step", "cancelled", "ended"} (written by the runner)

No Streamlit import here: the views call these functions and :func:`summarize_progress`.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

STATE_DIR = ".explorer"
ACTIVE = ("running", "cancelling")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOSSES = ("sgm", "triplet", "softmax")
BACKBONES = ("auto", "light", "resnet18")  # auto: the pipeline picks (resnet18 on a GPU, light on a CPU)


class JobError(RuntimeError):
    """A job could not be started or controlled. One-line message."""


@dataclass
class Job:
    id: str
    kind: str                       # "demo", "train", "retrain" or "analyze"
    run_dir: str
    steps: list[list[str]]          # argv of each step
    pid: int = 0
    proc_start: int | None = None   # /proc start time, to tell our pid from a reused one
    started: float = 0.0
    state: str = "running"          # running | cancelling | done | failed | cancelled
    ended: float | None = None
    returncode: int | None = None
    failed_step: int | None = None
    message: str = ""
    title: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def step_names(self) -> list[str]:
        out = []
        for argv in self.steps:
            i = argv.index("pipeline") if "pipeline" in argv else -1
            out.append(argv[i + 1] if 0 <= i < len(argv) - 1 else Path(argv[0]).name)
        return out


# ---------------------------------------------------------------------------- files
def state_dir(root: Path) -> Path:
    return Path(root) / STATE_DIR


def _job_file(root: Path) -> Path:
    return state_dir(root) / "job.json"


def _jobs_dir(root: Path) -> Path:
    return state_dir(root) / "jobs"


def log_path(root: Path, job: Job) -> Path:
    return _jobs_dir(root) / f"{job.id}.log"


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    d = state_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "job.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None


def _load(root: Path) -> Job | None:
    d = _read_json(_job_file(root))
    if not d:
        return None
    try:
        return Job(**{k: v for k, v in d.items() if k in Job.__dataclass_fields__})
    except TypeError:
        return None


def _save(root: Path, job: Job) -> None:
    _write_json(_job_file(root), asdict(job))


# ---------------------------------------------------------------------------- processes
_CHILDREN: dict[int, subprocess.Popen] = {}  # reaped here so a finished child is not a zombie


def _proc_start(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _alive(job: Job) -> bool:
    if not job.pid:
        return False
    child = _CHILDREN.get(job.pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(job.pid, None)
        return False
    try:
        os.kill(job.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{job.pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] == "Z":
            try:
                os.waitpid(job.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return False
    except OSError:
        pass
    if job.proc_start is not None:
        now = _proc_start(job.pid)
        if now is not None and now != job.proc_start:
            return False  # the pid was reused by another process
    return True


def current(root: Path) -> Job | None:
    """The current or last job, with its state brought up to date."""
    root = Path(root)
    job = _load(root)
    if job is None or not job.active:
        return job
    if _alive(job):
        return job
    with _locked(root):
        job = _load(root)
        if job is None or not job.active or _alive(job):
            return job
        ex = _read_json(_jobs_dir(root) / f"{job.id}.exit") or {}
        job.ended = ex.get("ended") or time.time()
        job.returncode = ex.get("returncode")
        job.failed_step = ex.get("failed_step")
        if job.state == "cancelling" or ex.get("cancelled"):
            job.state = "cancelled"
            job.message = "cancelled; the run was left resumable"
        elif job.returncode == 0:
            job.state = "done"
        else:
            job.state = "failed"
            step = job.step_names[job.failed_step] if job.failed_step is not None and job.failed_step < len(job.steps) else "runner"
            tail = last_error_line(log_tail(root, job, 40))
            job.message = f"{step} exited with {job.returncode}" + (f": {tail}" if tail else "")
        _save(root, job)
        return job


def start(root: Path, kind: str, run_dir: Path, steps: list[list[str]], *, title: str = "") -> Job:
    """Start ``steps`` in a new session; refuses while another job of this root is active."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        old = _load(root)
        if old is not None and old.active and _alive(old):
            raise JobError(f"a {old.kind} job is already running ({old.title or old.run_dir}); cancel it first")
        job = Job(id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], kind=kind, run_dir=str(run_dir),
                  steps=[list(map(str, s)) for s in steps], started=time.time(), title=title)
        jd = _jobs_dir(root)
        jd.mkdir(parents=True, exist_ok=True)
        spec = jd / f"{job.id}.json"
        _write_json(spec, {"steps": job.steps, "id": job.id})
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        with open(jd / f"{job.id}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "explorer.jobs", "run", str(spec)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=str(PROJECT_ROOT), env=env, start_new_session=True, close_fds=True)
        _CHILDREN[proc.pid] = proc
        job.pid = proc.pid
        job.proc_start = _proc_start(proc.pid)
        _save(root, job)
        return job


def cancel(root: Path, *, force: bool = False) -> Job | None:
    """SIGTERM the job's process group (SIGKILL with ``force``); the state settles on the next poll."""
    root = Path(root)
    with _locked(root):
        job = _load(root)
        if job is None or not job.active:
            return job
        if _alive(job):
            try:
                os.killpg(job.pid, signal.SIGKILL if force else signal.SIGTERM)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                raise JobError(f"cannot stop process group {job.pid}: {exc}") from None
        job.state = "cancelling"
        _save(root, job)
    return current(root)


def wait(root: Path, timeout: float = 60.0, poll: float = 0.2) -> Job | None:
    """Block until the current job is no longer active (tests, scripts)."""
    end = time.time() + timeout
    job = current(root)
    while job is not None and job.active and time.time() < end:
        time.sleep(poll)
        job = current(root)
    return job


def running_step(root: Path, job: Job) -> int:
    try:
        return int((_jobs_dir(root) / f"{job.id}.step").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def log_tail(root: Path, job: Job, lines: int = 20, max_bytes: int = 16384) -> list[str]:
    """The last ``lines`` lines of the job's log (progress-bar carriage returns folded)."""
    p = log_path(root, job)
    try:
        with open(p, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    out = [ln.rsplit("\r", 1)[-1].rstrip() for ln in data.splitlines()]
    if size > max_bytes and out:
        out = out[1:]  # first line may be cut
    return [ln for ln in out if ln.strip()][-lines:]


def last_error_line(lines: list[str]) -> str:
    for ln in reversed(lines):
        s = ln.strip()
        if s and not s.startswith(("File ", "^", "~")) and ("Error" in s or "error" in s or "refused" in s):
            return s[:200]
    return lines[-1].strip()[:200] if lines else ""


# ---------------------------------------------------------------------------- commands
def pipeline_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *map(str, args)]


@dataclass(frozen=True)
class TrainRequest:
    """What the training form asks for; turned into ``pipeline train`` flags."""
    spec: str = "synthetic"
    loss: str = "sgm"
    backbone: str = "light"         # "auto" lets the pipeline choose
    epochs: int = 0                 # 0: the pipeline's default
    levels: int = 1
    seed: int = 0
    data_roots: tuple[str, ...] = field(default_factory=tuple)
    resume: bool = False

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise JobError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.backbone not in BACKBONES:
            raise JobError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if not (0 <= int(self.epochs) <= 1000):
            raise JobError("epochs must be between 1 and 1000")
        if not (1 <= int(self.levels) <= 8):
            raise JobError("levels must be between 1 and 8")
        if not self.spec or any(c in self.spec for c in "\n\r\0"):
            raise JobError("data source is empty or not one line")

    def train_argv(self, out: Path) -> list[str]:
        self.validate()
        argv = ["train", "--data", self.spec, "--out", str(out), "--loss", self.loss,
                "--levels", str(int(self.levels)), "--seed", str(int(self.seed)), "--no-progress-bar"]
        if self.backbone != "auto":
            argv += ["--backbone", self.backbone]
        if self.epochs:
            argv += ["--epochs", str(int(self.epochs))]
        for r in self.data_roots:
            argv += ["--data-root", str(r)]
        if self.resume:
            argv.append("--resume")
        return pipeline_argv(*argv)


IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def discover_sources(roots: list[Path], *, depth: int = 2, limit: int = 200) -> list[str]:
    """Data specs found under the data roots, for the training form's menu (a guess per folder:
    FER+ layout, a class-per-folder tree, a CSV). Only looks ``depth`` levels down."""
    out: list[str] = []

    def visit(d: Path, level: int) -> None:
        if len(out) >= limit:
            return
        try:
            entries = sorted(d.iterdir())
        except OSError:
            return
        names = {e.name for e in entries}
        if {"FER2013Train", "FER2013Test"} <= names:
            out.append(f"ferplus:{d}")
        elif level > 0 and any(e.is_dir() and not e.name.startswith(".") for e in entries) and _has_images_below(d):
            out.append(f"folder:{d}")
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_file() and e.suffix.lower() == ".csv":
                n = e.name.lower()
                kind = "fer2013" if n.startswith("fer2013") and "new" not in n else (
                    "affectnet" if "training" in n or "validation" in n else "csv")
                out.append(f"{kind}:{e}")
            elif e.is_dir() and level < depth and not e.name.startswith("FER2013"):
                visit(e, level + 1)

    for r in roots:
        visit(Path(r), 0)
    return out[:limit]


def _has_images_below(d: Path) -> bool:
    try:
        for sub in list(d.iterdir())[:20]:
            if sub.is_dir():
                for f in list(sub.iterdir())[:20]:
                    if f.suffix.lower() in IMAGE_EXT:
                        return True
    except OSError:
        return False
    return False


def spec_paths(spec: str) -> list[str]:
    """The file-system paths a data spec reads (none for ``synthetic``)."""
    kind, _, arg = spec.partition(":")
    if kind.strip().lower() == "synthetic" or not arg.strip():
        return []
    return [p.strip() for p in arg.split(",") if p.strip()]


def slug(text: str, n: int = 24) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", Path(str(text).split(":", 1)[-1] or str(text)).name or str(text)).strip("-")
    return (s or "data")[:n].lower()


def new_run_dir(root: Path, req: TrainRequest) -> Path:
    kind = req.spec.split(":", 1)[0] or "data"
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(kind, 12)}"
    if ":" in req.spec:
        base += f"-{slug(req.spec)}"
    base += f"-{req.loss}-{req.backbone}"
    p = Path(root) / base
    i = 2
    while p.exists():
        p = Path(root) / f"{base}-{i}"
        i += 1
    return p


def start_train(root: Path, req: TrainRequest, *, analyze: bool = True, run_dir: Path | None = None,
                kind: str = "train") -> Job:
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(root, req)
    steps = [req.train_argv(run_dir)]
    if analyze:
        steps.append(pipeline_argv("analyze", str(run_dir)))
    title = f"{req.loss} / {req.backbone} on {req.spec}"
    return start(root, kind, run_dir, steps, title=title)


def retrain_argv(parent: Path, out: Path) -> list[str]:
    """``pipeline train`` with the parent run's own configuration plus ``--labels-from`` its review
    database: the same recipe on the corrected labels, so the two runs compare like for like."""
    from pipeline.config import RunConfig
    from pipeline.runs import RunError, open_run

    parent = Path(parent).resolve()
    try:
        cfg = RunConfig.from_dict(open_run(parent).config)
    except (RunError, ValueError, TypeError) as exc:
        raise JobError(f"cannot retrain from {parent.name}: {exc}") from None
    db = parent / "review.sqlite"
    if not db.is_file():
        raise JobError(f"{parent.name} has no review decisions yet: flag or relabel images first")
    d, m, lo, t, h = cfg.data, cfg.model, cfg.loss, cfg.train, cfg.hierarchy
    argv = ["train", "--data", d.spec, "--out", out, "--labels-from", db, "--parent", parent,
            "--image-size", d.image_size, "--on-bad-image", d.on_bad_image,
            "--backbone", m.backbone, "--embedding-dim", m.embedding_dim,
            "--loss", lo.name, "--sigma", lo.sigma, "--norm-lambda", lo.norm_lambda, "--triplets", lo.triplets,
            "--margin", lo.margin, "--epochs", t.epochs, "--per-class", t.per_class,
            "--steps-per-epoch", t.steps_per_epoch, "--lr", t.lr, "--weight-decay", t.weight_decay,
            "--seed", t.seed, "--device", t.device, "--knn-k", t.knn_k, "--crossfit", t.crossfit,
            "--levels", h.levels, "--min-per-subclass", h.min_per_subclass, "--max-components", h.max_components,
            "--topk", h.topk, "--subclass-features", h.features, "--no-progress-bar"]
    argv += [f for f, on in (("--hard-targets", not lo.soft_targets), ("--no-augment", not t.augment),
                             ("--compile", t.compile), ("--no-bf16", not t.bf16), ("--dedupe", d.dedupe)) if on]
    for r in d.data_roots:
        argv += ["--data-root", r]
    return pipeline_argv(*argv)


def start_retrain(root: Path, parent: Path, *, analyze: bool = True) -> Job:
    """"Retrain with my corrections": the parent's recipe on its review decisions, in a new run
    next to it (then analyze it)."""
    parent = Path(parent)
    base = f"{parent.name[:40]}-corrected-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(root) / base
    i = 2
    while out.exists():
        out = Path(root) / f"{base}-{i}"
        i += 1
    steps = [retrain_argv(parent, out)]
    if analyze:
        steps.append(pipeline_argv("analyze", str(out)))
    return start(root, "retrain", out, steps, title=f"{parent.name} retrained with its corrections")


def start_analyze(root: Path, run_dir: Path) -> Job:
    return start(root, "analyze", Path(run_dir), [pipeline_argv("analyze", str(run_dir))],
                 title=f"analyze {Path(run_dir).name}")


def start_demo(root: Path, *, spec: str = "synthetic", epochs: int = 0, name: str = "demo") -> Job:
    """Build the first-launch demo in ``root/name``: train then analyze, or whatever is left of it
    (resume an interrupted training, analyze a trained but unanalysed run)."""
    from pipeline.runs import RunError, open_run

    root = Path(root)
    demo = root / name
    req = TrainRequest(spec=spec, epochs=epochs)
    status = None
    if (demo / "manifest.json").exists():
        try:
            status = open_run(demo, require_complete=False).status
        except RunError:
            status = "broken"
    if status == "complete":
        return start(root, "demo", demo, [pipeline_argv("analyze", str(demo))], title="the demo (analysis)")
    if status in ("interrupted", "failed", "running"):
        req = TrainRequest(spec=spec, epochs=epochs, resume=True)
    elif status == "broken" or (status is None and demo.exists() and any(demo.iterdir())):
        demo = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return start(root, "demo", demo, [req.train_argv(demo), pipeline_argv("analyze", str(demo))],
                 title="the synthetic demo")


def command_line(job: Job) -> str:
    return " && ".join(shlex.join(s) for s in job.steps)


# ---------------------------------------------------------------------------- progress
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
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) for a curve


def summarize_progress(events: list[dict], *, now: float | None = None) -> Progress:
    """Fold ``progress.jsonl`` events into one status line's worth of numbers.

    ETA: the trainer's own ``eta_s`` when given, aged by the time since that event; otherwise
    the remaining steps at the rate seen between the first and last step events.
    With ``epochs`` in the events, ``step``/``steps`` count within an epoch (the trainer's form);
    without it, ``steps`` is the total.
    """
    p = Progress()
    now = time.time() if now is None else now
    first_t = first_step = None
    last_t = None
    done = total = None  # global steps done / in all
    for ev in events:
        if not isinstance(ev, dict):
            continue
        kind = str(ev.get("event", ""))
        p.last_event = kind or p.last_event
        if ev.get("steps"):
            p.steps = int(ev["steps"])
        if ev.get("epochs"):
            p.epochs = int(ev["epochs"])
        if ev.get("epoch") is not None:
            p.epoch = int(ev["epoch"])
        if ev.get("step") is not None:
            p.step = int(ev["step"])
        elif kind == "epoch" and p.steps:
            p.step = p.steps  # an epoch event closes its epoch
        if p.step is not None and p.steps:
            if p.epochs and p.epoch:
                done, total = (p.epoch - 1) * p.steps + p.step, p.epochs * p.steps
            else:
                done, total = p.step, p.steps
        if isinstance(ev.get("loss"), (int, float)):
            p.loss = float(ev["loss"])
            if done is not None and kind == "step":
                p.losses.append((done, p.loss))
        if ev.get("images_per_s") is not None:
            p.images_per_s = float(ev["images_per_s"])
        if ev.get("message"):
            p.message = str(ev["message"])
        t = ev.get("time")
        if isinstance(t, (int, float)):
            last_t = float(t)
            if done is not None and first_t is None:
                first_t, first_step = float(t), done
        if ev.get("eta_s") is not None:
            p.eta_s = max(0.0, float(ev["eta_s"]) - (now - last_t if last_t else 0.0))
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


# ---------------------------------------------------------------------------- the runner
def _run(spec_path: Path) -> int:
    """Run each step in turn in this process group; on SIGTERM wait for the step to save and stop."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    jd = Path(spec_path).parent
    job_id = spec["id"]
    cancelled = {"flag": False}
    child: dict[str, subprocess.Popen | None] = {"p": None}

    def on_term(signum, frame):
        # cancel() signals the whole group, so the step got the signal too: a second one from here
        # could make the trainer quit without saving. Remember it, let the step finish saving.
        cancelled["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    rc, failed = 0, None
    for i, argv in enumerate(spec["steps"]):
        if cancelled["flag"]:
            break
        (jd / f"{job_id}.step").write_text(str(i))
        print(f"$ {shlex.join(argv)}", flush=True)
        child["p"] = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        while True:
            try:
                rc = child["p"].wait()
                break
            except InterruptedError:
                continue
        if rc != 0:
            failed = i
            break
    _write_json(jd / f"{job_id}.exit", {"returncode": rc, "failed_step": failed,
                                         "cancelled": cancelled["flag"], "ended": time.time()})
    return 0 if rc == 0 and not cancelled["flag"] else (rc or 1)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "run":
        return _run(Path(argv[1]))
    print("usage: python -m explorer.jobs run JOBFILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
