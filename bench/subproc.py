"""Run one bench task in a child process under a time budget.

Slow or unbounded work (torch.compile, t-SNE, UMAP's numba compile, ``analyze`` at 450k) runs in
a child so that it can be stopped cleanly when its budget is spent, and so that its peak memory
(VmHWM) is its own. The child prints result lines ``BENCH {json}`` on stdout as soon as each
result exists; whatever arrived before the budget ran out is kept.
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PREFIX = "BENCH "
_EXC = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")
_ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory (VmHWM) of a process in MB, None where /proc is absent."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    if pid == "self":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux
    return None


def emit(obj: dict) -> None:
    """Child side: hand one result to the parent (on the real stdout, even while it is redirected)."""
    out = sys.__stdout__
    out.write(PREFIX + json.dumps(obj) + "\n")
    out.flush()


@dataclass
class ChildResult:
    results: list[dict] = field(default_factory=list)    # each with "_t": its arrival time
    timed_out: bool = False
    returncode: int | None = None
    wall_s: float = 0.0
    peak_rss_mb: float | None = None     # read just before a timed-out child was stopped
    tail: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        """One line saying why the child failed, None when it exited cleanly or was cut."""
        if self.timed_out or self.returncode == 0:
            return None
        lines = [t.strip() for t in self.tail if t.strip()]
        exc = [t for t in lines if _EXC.match(t)]          # the exception line, not torch's advice after it
        last = exc[-1] if exc else (lines[-1] if lines else "")
        return f"child exited with {self.returncode}: {last[:200]}"


def run_child(task: str, args: dict, *, budget_s: float,
              on_line: Callable[[float, str], None] | None = None, env: dict | None = None) -> ChildResult:
    """Run ``python -m bench._worker task args`` for at most ``budget_s`` seconds.

    ``on_line(t, line)`` sees every other output line with its arrival time (seconds since
    start). ``env``: extra environment variables for the child.
    """
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-u", "-m", "bench._worker", task, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=str(_ROOT), start_new_session=True)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put((time.perf_counter() - t0, line.rstrip("\n")))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    out = ChildResult()
    deadline = t0 + budget_s
    done = False
    while not done:
        left = deadline - time.perf_counter()
        if left <= 0:
            out.timed_out = True
            break
        try:
            item = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if item is None:
            done = True
            break
        t, line = item
        if line.startswith(PREFIX):
            res = json.loads(line[len(PREFIX):])
            res["_t"] = round(t, 3)              # arrival, seconds since the child started
            out.results.append(res)
        else:
            out.tail = (out.tail + [line])[-20:]
            if on_line is not None:
                on_line(t, line)
    if out.timed_out:
        out.peak_rss_mb = peak_rss_mb(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)      # the child's own session: only what we started
        except ProcessLookupError:
            pass
    out.returncode = proc.wait()
    out.wall_s = time.perf_counter() - t0
    return out
