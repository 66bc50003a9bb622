"""pipeline.progress: the event schema, its writer and reader, one global step axis."""
from __future__ import annotations

import pytest

from explorer import figures
from pipeline import progress
from pipeline.progress import Event


def test_summarize_progress_eta():
    now = 1000.0
    ev = [{"event": "start", "time": 900.0, "steps": 100},
          {"event": "step", "step": 10, "steps": 100, "loss": 0.5, "time": 910.0},
          {"event": "step", "step": 30, "steps": 100, "loss": 0.3, "time": 930.0}]
    p = progress.summarize(ev, now=now)
    assert p.fraction == pytest.approx(0.3)
    # 1 s per step from the step events, 70 steps left, 70 s since the last event
    assert p.eta_s == pytest.approx(0.0)
    p = progress.summarize(ev, now=940.0)
    assert p.eta_s == pytest.approx(60.0)
    ev.append({"event": "epoch", "epoch": 1, "step": 50, "steps": 100, "eta_s": 40.0, "time": 950.0, "loss": 0.2})
    p = progress.summarize(ev, now=955.0)
    assert p.eta_s == pytest.approx(35.0) and p.epoch == 1 and p.loss == 0.2
    assert [s for s, _ in p.losses] == [10, 30]  # step events only
    ev.append({"event": "done", "time": 999.0})
    # the trainer's form: step and steps within an epoch, plus epoch / epochs
    tr = [{"event": "step", "epoch": 2, "epochs": 4, "step": 5, "steps": 10, "loss": 0.4, "time": 10.0, "eta_s": 30.0},
          {"event": "epoch", "epoch": 2, "epochs": 4, "loss": 0.35, "time": 12.0, "eta_s": 20.0}]
    p = progress.summarize(tr[:1], now=10.0)
    assert p.fraction == pytest.approx(15 / 40) and p.epochs == 4 and p.losses == [(15, 0.4)]
    assert progress.summarize(tr, now=12.0).fraction == pytest.approx(0.5)
    assert progress.summarize(ev, now=now).fraction == 1.0
    empty = progress.summarize([], now=now)
    assert empty.fraction is None and empty.eta_s is None
    assert progress.format_eta(None) == "estimating…"
    assert progress.format_eta(75) == "1 min 15 s" and progress.format_eta(3 * 3600 + 120) == "3 h 02 min"


def test_events_round_trip_and_damaged_lines_are_skipped(tmp_path):
    f = tmp_path / "progress.jsonl"
    a = Event("step", 1.0, epoch=1, epochs=2, level=1, step=3, steps=4, loss=0.5, terms={"loss": 0.5},
              images_per_s=10.0, eta_s=2.0)
    b = Event("epoch", 2.0, epoch=1, epochs=2, level=1, loss=0.4, val_score=0.7, best=True)
    progress.write(f, a)
    with open(f, "a") as fh:
        fh.write('{"event": "step", "step": "three"}\n[1, 2]\n{"torn": ')   # damaged and torn lines
    progress.write(f, b)
    got = progress.read(tmp_path)
    assert got[0] == a and got[-1] == b and got[1] == Event("step") and len(got) == 3
    assert progress.read(tmp_path / "nothing") == []


def test_status_and_curve_share_one_step_axis():
    # two epochs of 4 steps, the trainer's form; the status line and the curve agree on the axis
    ev = [Event("step", float(e * 10 + s), epoch=e, epochs=2, step=s, steps=4, loss=1.0 / (e * 4 + s)).to_dict()
          for e in (1, 2) for s in (2, 4)] + [Event("epoch", 30.0, epoch=2, epochs=2, loss=0.1).to_dict()]
    p = progress.summarize(ev[:3], now=21.0)
    assert [x for x, _ in p.losses] == [2, 4, 6] and p.fraction == pytest.approx(6 / 8)
    fig = figures.training_curve(ev)
    assert list(fig.data[0].x) == [x for x, _ in progress.summarize(ev).losses] == [2, 4, 6, 8]
    assert list(fig.data[1].x) == [8] and progress.summarize(ev).fraction == 1.0


