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




def _training_file(f, *, epochs=4, steps=10, t0=0.0, images=4000, start_epoch=1):
    """A trainer's events: steps of 1 s (every third one 2 s), an epoch's validation 1.5 s."""
    t = t0
    for e in range(start_epoch, epochs + 1):
        for s in range(1, steps + 1):
            t += 2.0 if s % 3 == 0 else 1.0
            progress.write(f, Event("step", t, epoch=e, epochs=epochs, level=1, step=s, steps=steps, loss=1.0 / e,
                                    images_per_s=100.0, eta_s=99.0, images=images))
        t += 1.5
        progress.write(f, Event("epoch", t, epoch=e, epochs=epochs, level=1, loss=1.0 / e, images=images))
    return t


def test_one_bar_over_training_then_the_analysis_stages(tmp_path):
    f = tmp_path / "progress.jsonl"
    per_epoch = 10 + 3 + 1.5                                 # 10 steps, 3 of them 2 s, validation
    end = _training_file(f, epochs=4)
    ev = progress.read(f)
    plan = progress.analysis_stages()
    prior = [progress.stage_estimate(s, 4000) for s in plan]
    assert len(plan) == 7 and plan[0] == "sub-classes" and plan[-1] == "pca map"

    # training: the ETA is the pace of the last epochs times what is left, plus the analysis estimate;
    # the finish it predicts stays put from one event to the next (no swings)
    finishes = []
    for i, e in enumerate(ev):
        if e.epoch >= 2:
            jp = progress.job_progress(ev[:i + 1], since=0.0, now=e.time)
            assert jp.phase == "train" and jp.eta_s is not None
            finishes.append(e.time + jp.eta_s)
    true_finish = (end + progress.FINISH_S + progress.FINISH_EPOCHS * per_epoch + progress.ANALYSIS_START_S
                   + sum(prior))
    assert max(abs(x - true_finish) for x in finishes) < 0.06 * end
    jp = progress.job_progress(ev[:25], since=0.0, now=ev[24].time + 0.5)       # mid epoch 3
    assert "ETA" in jp.line() and "training: epoch 3/4, step 3/10" in jp.line()
    assert jp.fraction == pytest.approx((ev[24].time + 0.5) / (ev[24].time + 0.5 + jp.eta_s))

    # training done, the analyze step not yet reporting: analysis next, at its estimate
    progress.write(f, Event("done", end + 2, wall_s=end))
    jp = progress.job_progress(progress.read(f), since=0.0, now=end + 4)
    assert jp.phase == "analyse" and jp.line().endswith("analysing: starting…")
    assert jp.eta_s == pytest.approx(progress.ANALYSIS_START_S - 2 + sum(prior))
    # the analysis's stages: the first two took twice their estimate, so the rest is expected to too
    t1 = end + 10
    t3 = t1 + 2 * (prior[0] + prior[1])
    for i, t in ((1, t1), (2, t1 + 2 * prior[0]), (3, t3)):
        progress.write(f, Event("stage", t, stage=plan[i - 1], stage_index=i, stages=7, plan=plan, images=4000))
    jp = progress.job_progress(progress.read(f), since=0.0, now=t3 + 1)
    assert jp.phase == "analyse" and (jp.stage, jp.stage_index, jp.stages) == ("outliers and duplicates", 3, 7)
    assert jp.line().endswith("analysing: outliers and duplicates (3/7)")
    assert jp.eta_s == pytest.approx(2 * prior[2] - 1 + 2 * sum(prior[3:]))
    assert jp.fraction == pytest.approx((t3 + 1) / (t3 + 1 + jp.eta_s)) and 0.5 < jp.fraction < 1
    assert jp.train.epoch == 4 and jp.train_done                  # training's numbers are still there
    # the training summary (status line, loss curve) ignores the analysis events
    assert progress.summarize(progress.read(f)).last_event == "done"
    progress.write(f, Event("analysed", t3 + 30, wall_s=40.0))
    jp = progress.job_progress(progress.read(f), since=0.0, now=t3 + 31)
    assert (jp.phase, jp.fraction, jp.eta_s) == ("done", 1.0, 0.0)

    # an analyze-only job later on the same run: the earlier analysis is history
    again = t3 + 100
    progress.write(f, Event("stage", again, stage="sub-classes", stage_index=1, stages=7, plan=plan, images=4000))
    jp = progress.job_progress(progress.read(f), train=False, since=again - 1, now=again + 1)
    assert jp.phase == "analyse" and jp.stage_index == 1 and jp.eta_s == pytest.approx(prior[0] - 1 + sum(prior[1:]))


def test_a_resumed_run_measures_its_pace_after_the_restart(tmp_path):
    f = tmp_path / "progress.jsonl"
    t = _training_file(f, epochs=2)                                          # epochs 1-2 of 4, then a cancel
    progress.write(f, Event("error", t + 1, message="interrupted"))
    restart = t + 3600                                                       # resumed an hour later
    _training_file(f, epochs=4, start_epoch=3, t0=restart + 5)
    ev = progress.read(f)
    mid = next(i for i, e in enumerate(ev) if e.epoch == 3 and e.step == 5)
    now = ev[mid].time
    for since in (None, restart):         # the hour away counts in neither the pace nor the bar
        jp = progress.job_progress(ev[:mid + 1], analyse=False, since=since, now=now)
        assert jp.phase == "train" and jp.train.epoch == 3
        rate = (now - ev[next(i for i, e in enumerate(ev) if e.epoch == 3)].time) / 4   # 4 steps since the first
        finish = progress.FINISH_S + progress.FINISH_EPOCHS * 10 * rate
        assert jp.eta_s == pytest.approx(rate * 15 + finish)
    last = progress.job_progress(ev, analyse=False, since=restart, now=ev[-1].time + 1)   # all epochs done
    assert last.eta_s == pytest.approx(progress.FINISH_S + progress.FINISH_EPOCHS * 14.5 - 1, rel=0.05)
    assert "embedding every image" in last.line()


def test_cross_fitting_folds_keep_the_bar_and_the_eta_moving(tmp_path):
    """`train --crossfit 2`: after the main model's last epoch its own events stop while two fold
    models train (each a run with its own progress file); the bar names the fold and the ETA adds
    the fold left at the main model's pace (scaled by the folds' (K-1)/K share of the images)."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {"train": {"crossfit": 2}}}))
    end = _training_file(run / "progress.jsonl", epochs=4)                  # main model: 0 .. end
    main_first = progress.read(run)[0].time
    jp0 = progress.job_progress(progress.read(run), since=0.0, now=end + 30)
    assert jp0.phase == "train" and jp0.train.fraction == 1.0               # stuck "embedding" before
    fold0 = run / "crossfit" / "fold0"
    fold0.mkdir(parents=True)
    f_end = _training_file(fold0 / "progress.jsonl", epochs=4, t0=end + 20)
    cut = progress.read(fold0)[:24]                                         # fold 1, early in epoch 3
    (fold0 / "progress.jsonl").unlink()
    for e in cut:
        progress.write(fold0 / "progress.jsonl", e)
    now = cut[-1].time + 0.5
    jp = progress.with_crossfit(progress.job_progress(progress.read(run), since=0.0, now=now), run, since=0.0, now=now)
    assert jp.phase == "crossfit" and (jp.fold, jp.folds) == (1, 2)
    assert "cross-fitting: fold model 1/2, epoch 3/4" in jp.line() and "ETA" in jp.line()
    per_fold = (end - main_first) / 2
    fold_left = f_end - cut[-1].time                                          # about 1.7 epochs
    assert per_fold + fold_left * 0.8 < jp.eta_s < per_fold + fold_left * 1.5 + progress.FINISH_S + 60
    assert 0.0 < jp.fraction < 1.0 and jp.fraction == pytest.approx(now / (now + jp.eta_s))
    # a run without cross-fitting, or before any fold: unchanged
    (run / "manifest.json").write_text(json.dumps({"config": {"train": {"crossfit": 0}}}))
    same = progress.job_progress(progress.read(run), since=0.0, now=now)
    assert progress.with_crossfit(same, run, since=0.0, now=now).phase == "train"
