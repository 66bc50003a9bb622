"""Background pipeline jobs: start, poll and cancel ``python -m pipeline`` outside Streamlit.
(What to train is :mod:`explorer.train_form`'s business; this module only supervises processes.)

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

No Streamlit import here: the views call these functions (and :func:`pipeline.progress.summarize`
for a job's progress).
"""
from __future__ import annotations

import fcntl
import json
import os
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

from pipeline.runs import write_json

STATE_DIR = ".explorer"
ACTIVE = ("running", "cancelling")
BACKGROUND_NICE = 10  # the demo's full build, once its preview is up: the page a curator is reading comes first
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class JobError(RuntimeError):
    """A job could not be started or controlled. One-line message."""


@dataclass
class Job:
    id: str
    kind: str                       # "demo", "train", "retrain", "resume" or "analyze"
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
    preview: str = ""               # the demo's quick first run (shown while the full run builds), if any
    optional: list[int] = field(default_factory=list)   # steps whose failure does not stop the job
    nice_from: int | None = None    # steps from this index on run at lower CPU priority (BACKGROUND_NICE)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def parts(self) -> tuple[bool, bool]:
        """(trains, analyses): what the job's steps do, for its one progress bar."""
        names = self.step_names
        return "train" in names, "analyze" in names or any("--analyze" in s for s in self.steps)

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
    write_json(_job_file(root), asdict(job))


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


def start(root: Path, kind: str, run_dir: Path, steps: list[list[str]], *, title: str = "",
          preview: Path | None = None, optional: tuple[int, ...] = (), nice_from: int | None = None) -> Job:
    """Start ``steps`` in a new session; refuses while another job of this root is active.
    ``optional``: indexes of steps whose failure is logged and the job goes on (the demo's preview:
    the full demo must not depend on it). ``nice_from``: steps from this index on run with
    :data:`BACKGROUND_NICE` (the demo's full build behind its preview, which a person is reading)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        old = _load(root)
        if old is not None and old.active and _alive(old):
            raise JobError(f"a {old.kind} job is already running ({old.title or old.run_dir}); cancel it first")
        job = Job(id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], kind=kind, run_dir=str(run_dir),
                  steps=[list(map(str, s)) for s in steps], started=time.time(), title=title,
                  preview=str(preview) if preview else "", optional=sorted(int(i) for i in optional),
                  nice_from=nice_from)
        jd = _jobs_dir(root)
        jd.mkdir(parents=True, exist_ok=True)
        spec = jd / f"{job.id}.json"
        write_json(spec, {"steps": job.steps, "id": job.id, "optional": job.optional, "nice_from": job.nice_from})
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


def start_analyze(root: Path, run_dir: Path) -> Job:
    return start(root, "analyze", Path(run_dir), [pipeline_argv("analyze", str(run_dir))],
                 title=f"analyze {Path(run_dir).name}")


def command_line(job: Job) -> str:
    return " && ".join(shlex.join(s) for s in job.steps)


# ---------------------------------------------------------------------------- the runner
def _run(spec_path: Path) -> int:
    """Run each step in turn in this process group; on SIGTERM wait for the step to save and stop."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    jd = Path(spec_path).parent
    job_id = spec["id"]
    optional = set(spec.get("optional") or ())
    nice_from = spec.get("nice_from")
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
        lower = nice_from is not None and i >= int(nice_from)
        child["p"] = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      preexec_fn=(lambda: os.nice(BACKGROUND_NICE)) if lower else None)
        while True:
            try:
                rc = child["p"].wait()
                break
            except InterruptedError:
                continue
        if rc != 0 and i in optional and not cancelled["flag"]:
            print(f"(step {i + 1} failed with {rc}; it is optional, the job goes on)", flush=True)
            rc = 0
            continue
        if rc != 0:
            failed = i
            break
    write_json(jd / f"{job_id}.exit", {"returncode": rc, "failed_step": failed,
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
