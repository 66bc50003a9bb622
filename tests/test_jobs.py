"""explorer.jobs: background processes, one at a time, state in files, cancel by process group."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from explorer import jobs
from explorer.jobs import JobError


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_steps_run_in_order_and_the_job_finishes(tmp_path):
    root = tmp_path / "runs"
    job = jobs.start(root, "train", root / "r1", [py("print('one')"), py("print('two')")], title="t")
    assert job.active and job.pid
    job = jobs.wait(root, timeout=30)
    assert job.state == "done" and job.returncode == 0
    tail = jobs.log_tail(root, job)
    assert "one" in tail and "two" in tail
    assert jobs.running_step(root, job) == 1
    assert len(job.step_names) == 2


def test_a_failing_step_stops_the_chain_with_its_error(tmp_path):
    root = tmp_path / "runs"
    jobs.start(root, "demo", root / "r", [py("import sys; print('ValueError: bad spec'); sys.exit(3)"),
                                          py("open('ran', 'w')")])
    job = jobs.wait(root, timeout=30)
    assert job.state == "failed" and job.returncode == 3 and job.failed_step == 0
    assert "bad spec" in job.message
    assert not (jobs.PROJECT_ROOT / "ran").exists()


def test_an_optional_step_that_fails_does_not_stop_the_job_and_later_steps_run_niced(tmp_path):
    """The demo's preview is optional (the full demo must not depend on it); the steps after it
    run at lower CPU priority, behind the page a person is reading."""
    root = tmp_path / "runs"
    out = tmp_path / "nice.txt"
    jobs.start(root, "demo", root / "r", [py("import sys; sys.exit(4)"),
                                          py(f"import os; open({str(out)!r}, 'w').write(str(os.nice(0)))")],
               optional=(0,), nice_from=1, preview=root / "r-preview")
    job = jobs.wait(root, timeout=30)
    assert job.state == "done" and job.returncode == 0, job.message
    assert int(out.read_text()) == os.nice(0) + jobs.BACKGROUND_NICE
    assert job.preview == str(root / "r-preview") and job.optional == [0]
    assert any("optional" in ln for ln in jobs.log_tail(root, job))
    # a step that is not optional still stops the chain
    jobs.start(root, "demo", root / "r2", [py("import sys; sys.exit(5)"), py("import sys; sys.exit(6)")],
               optional=(1,))
    job = jobs.wait(root, timeout=30)
    assert job.state == "failed" and job.failed_step == 0 and job.returncode == 5


def test_one_job_at_a_time_and_cancel_kills_the_group(tmp_path):
    root = tmp_path / "runs"
    marker = tmp_path / "child.pid"
    # The step starts a grandchild; cancel must reach it too (process group).
    code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    job = jobs.start(root, "train", root / "r", [py(code)])
    with pytest.raises(JobError, match="already running"):
        jobs.start(root, "train", root / "r2", [py("pass")])
    for _ in range(100):
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.05)
    grandchild = int(marker.read_text())
    t0 = time.time()
    jobs.cancel(root)
    job = jobs.wait(root, timeout=20)
    assert job.state == "cancelled" and time.time() - t0 < 10
    for _ in range(100):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("grandchild survived cancel")
    # A new job may start now.
    jobs.start(root, "train", root / "r3", [py("pass")])
    assert jobs.wait(root, timeout=30).state == "done"


def test_the_trainer_gets_one_sigterm_and_may_save(tmp_path):
    root = tmp_path / "runs"
    out = tmp_path / "saved"
    code = ("import signal, sys, time\n"
            "n = []\n"
            "def h(s, f):\n"
            "    n.append(s)\n"
            "signal.signal(signal.SIGTERM, h)\n"
            f"open({str(out)!r} + '.ready', 'w').close()\n"
            "while not n: time.sleep(0.02)\n"
            "time.sleep(0.3)\n"
            f"open({str(out)!r}, 'w').write(str(len(n)))\n"
            "sys.exit(130)\n")
    jobs.start(root, "train", root / "r", [py(code), py("open('never', 'w')")])
    for _ in range(200):
        if Path(str(out) + ".ready").exists():
            break
        time.sleep(0.05)
    jobs.cancel(root)
    job = jobs.wait(root, timeout=20)
    assert job.state == "cancelled"
    assert out.read_text() == "1"


def test_state_survives_a_new_server_process(tmp_path):
    root = tmp_path / "runs"
    job = jobs.start(root, "train", root / "r", [py("import time; time.sleep(30)")])
    jobs._CHILDREN.clear()  # as if Streamlit restarted: only the files remain
    again = jobs.current(root)
    assert again.id == job.id and again.state == "running"
    jobs.cancel(root)
    assert jobs.wait(root, timeout=20).state == "cancelled"


def test_a_dead_runner_without_exit_file_is_failed(tmp_path):
    root = tmp_path / "runs"
    job = jobs.start(root, "train", root / "r", [py("pass")])
    jobs.wait(root, timeout=30)
    # Pretend the job file still says running with a pid that no longer exists.
    d = json.loads((root / ".explorer" / "job.json").read_text())
    d.update(state="running", pid=2 ** 22 - 3, proc_start=None)
    (root / ".explorer" / "job.json").write_text(json.dumps(d))
    (root / ".explorer" / "jobs" / f"{job.id}.exit").unlink()
    assert jobs.current(root).state == "failed"


def test_log_tail_folds_carriage_returns(tmp_path):
    root = tmp_path / "runs"
    job = jobs.start(root, "train", root / "r", [py("import sys; sys.stdout.write('a\\r50%\\r100%\\nlast\\n')")])
    job = jobs.wait(root, timeout=30)
    assert jobs.log_tail(root, job)[-2:] == ["100%", "last"]
