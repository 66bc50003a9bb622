"""Corrupted runs (issue 6, part 3): every artifact of a run truncated, garbled or deleted in turn,
and a manifest from a newer schema.

Pipeline side: ``open_run`` and the artifact readers raise a one-line ``RunError`` naming the file;
``python -m pipeline similar / runs / evaluate / analyze / train`` (through ``pipeline.cli.main``)
exit with status 1 and one ``error:`` line naming the file, or succeed when they never read it; the
read-only ones change no byte in the run, and none of them replaces the damaged file with
something else.

App side (``streamlit.testing.v1.AppTest``): with a damaged run next to a good one, every page of
the damaged run shows one error line naming the file and no exception, writes nothing into it, and
the good run still works in the same session afterwards.

"Garbled" means the first bytes of the file overwritten with random bytes, same size, so the
manifest's byte count still matches: the damage has to be found by reading the file. (A flipped
bit deep inside an array's data cannot be seen without checksums; docs/RELIABILITY.md says so.)
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli
from pipeline.runs import MANIFEST, RunError, load_torch, open_run

MODES = ("truncate", "garble", "delete")
# what `pipeline similar` reads besides the manifest's size check of every artifact
SIMILAR_READS = {MANIFEST, "items.parquet", "embeddings.npy", "images.npy", "checkpoints/best.pt"}


# ----------------------------------------------------------------------------- damage
def damage(path: Path, mode: str, seed: int = 0) -> None:
    data = path.read_bytes()
    if mode == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "garble":
        n = min(64, max(1, len(data) // 2))
        junk = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
        path.write_bytes(junk + data[n:])
    elif mode == "delete":
        path.unlink()
    else:
        raise ValueError(mode)


def newer_schema(run: Path) -> None:
    m = json.loads((run / MANIFEST).read_text())
    m["schema_version"] = 99
    (run / MANIFEST).write_text(json.dumps(m))


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_everything(run_path: Path) -> None:
    """Open the run and read every artifact it lists, the way the pipeline and explorer do."""
    run = open_run(run_path)
    for name in sorted(run.artifacts):
        if name.endswith(".npy"):
            np.asarray(run.array(name))
        elif name.endswith(".parquet"):
            run.table(name)
        elif name.endswith(".json"):
            run.json(name)
        elif name.endswith(".pt"):
            load_torch(run.file(name))
        else:
            raise AssertionError(name)


def one_line(msg: str, name: str) -> None:
    assert "\n" not in msg.strip(), msg
    assert name in msg, f"{name!r} not named in {msg!r}"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.err.strip()


# ----------------------------------------------------------------------------- the pipeline side
@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory, tiny_run):
    """tiny_run (conftest) copied and analysed (PCA map only): every kind of artifact, ~2 s."""
    from pipeline.analysis import analyze

    base = tmp_path_factory.mktemp("corrupt") / "base"
    shutil.copytree(tiny_run.path, base)
    analyze(base, maps=("pca",))
    return base


def cases(run: Path) -> list[tuple[str, str]]:
    names = [MANIFEST] + sorted(json.loads((run / MANIFEST).read_text())["artifacts"])
    return [(n, m) for n in names for m in MODES] + [(MANIFEST, "newer-schema")]


@pytest.fixture
def work(analysed_run, tmp_path):
    w = tmp_path / "runs" / "victim"
    shutil.copytree(analysed_run, w)
    return w


def _apply(w: Path, name: str, mode: str, seed: int) -> None:
    if mode == "newer-schema":
        newer_schema(w)
    else:
        damage(w / name, mode, seed)


def test_every_artifact_damaged_is_named_in_one_line_and_nothing_is_touched(work, capsys, tmp_path):
    """All (artifact x truncate/garble/delete) + newer schema: readers, `similar` and `runs`."""
    from PIL import Image

    face = tmp_path / "face.png"
    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(face)
    pristine = {p: (work / p).read_bytes() for p in snapshot(work)}
    results = []
    for i, (name, mode) in enumerate(cases(work)):
        _apply(work, name, mode, seed=i)
        before = snapshot(work)
        # 1. the readers: the first problem is named in one line (never read as valid)
        with pytest.raises(RunError) as ei:
            read_everything(work)
        one_line(str(ei.value), name)
        if mode == "newer-schema":
            assert "newer" in str(ei.value)
        # 2. `pipeline similar` reads the run and the model: fails naming the file, or never needed it
        rc, err = run_cli(capsys, "similar", work, "--image", face, "-k", "3")
        if rc != 0:
            assert rc == 1 and err.startswith("error: "), (name, mode, rc, err)
            one_line(err, name)
        else:  # it never reads that file (the same damage was caught by the readers above)
            assert mode == "garble" and name not in SIMILAR_READS, (name, mode, "similar read it as valid")
        # 3. `pipeline runs` lists it without failing
        rc, _ = run_cli(capsys, "runs", work.parent)
        assert rc == 0
        assert snapshot(work) == before, (name, mode, "a read-only command changed the run")
        results.append((name, mode, str(ei.value)))
        # restore
        for p in set(snapshot(work)) - set(pristine):
            (work / p).unlink()
        for p, b in pristine.items():
            if not (work / p).exists() or (work / p).read_bytes() != b:
                (work / p).write_bytes(b)
    assert len(results) == 3 * (1 + 21) + 1      # manifest + 21 artifacts (features.npy, features_mid.npy, mean images, outliers, duplicates), x 3; schema
    print(f"\n{len(results)} damaged runs, every one refused naming the file:")
    for name, mode, msg in results:
        print(f"  {mode:12} {name:38} {msg[:150]}")


def _status(run: Path, status: str) -> None:
    m = json.loads((run / MANIFEST).read_text())
    m["status"] = status
    (run / MANIFEST).write_text(json.dumps(m))


def test_writing_commands_refuse_a_damaged_run_without_overwriting_it(analysed_run, tmp_path, capsys):
    """`train --out` (over a damaged run), `train --resume`, `analyze` and `evaluate` on damaged runs:
    exit 1, one line naming the file, no byte of the run changed."""
    work = tmp_path / "victim"
    args = ["train", "--data", "synthetic:320", "--epochs", "2", "--steps-per-epoch", "4", "--per-class", "8",
            "--embedding-dim", "16", "--backbone", "light", "--device", "cpu", "--no-progress-bar", "--quiet",
            "--out", str(work)]
    for name, mode, cmd in [
        (MANIFEST, "garble", args),
        (MANIFEST, "truncate", args + ["--resume"]),
        (MANIFEST, "newer-schema", args + ["--resume"]),
        ("embeddings.npy", "garble", ["analyze", work, "--maps", "pca"]),
        ("items.parquet", "truncate", ["analyze", work, "--maps", "pca"]),
        ("analysis/subclasses.json", "delete", ["analyze", work, "--maps", "pca"]),
        ("class_means.npy", "delete", ["evaluate", work]),
        ("items.parquet", "garble", ["evaluate", work]),
    ]:
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(analysed_run, work)
        _apply(work, name, mode, seed=1)
        before = snapshot(work)
        rc, err = run_cli(capsys, *cmd)
        assert rc == 1 and err.startswith("error: "), (name, mode, cmd[0], rc, err)
        assert len(err.splitlines()) == 1, err
        one_line(err, name)
        assert snapshot(work) == before, (name, mode, cmd[0])


def test_resume_with_a_damaged_checkpoint_says_so_and_leaves_the_run_failed_not_running(analysed_run, tmp_path,
                                                                                         capsys):
    work = tmp_path / "victim"
    shutil.copytree(analysed_run, work)
    _status(work, "interrupted")
    damage(work / "checkpoints" / "last.pt", "truncate")
    before = snapshot(work)
    rc, err = run_cli(capsys, "train", "--data", "synthetic:320", "--epochs", "2", "--steps-per-epoch", "4",
                      "--per-class", "8", "--embedding-dim", "16", "--backbone", "light", "--device", "cpu",
                      "--no-progress-bar", "--quiet", "--out", work, "--resume")
    assert rc == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    one_line(err, "checkpoints/last.pt")
    after = snapshot(work)
    # only the pipeline's own bookkeeping moved: no artifact was replaced
    assert {k: v for k, v in after.items() if k not in (MANIFEST, "progress.jsonl")} == \
        {k: v for k, v in before.items() if k not in (MANIFEST, "progress.jsonl")}
    run = open_run(work, require_complete=False, check_files=False)
    assert run.status == "failed" and "last.pt" in run.manifest.get("message", ""), run.manifest.get("status")
    # a complete run is never resumed, whatever its checkpoint looks like
    shutil.rmtree(work)
    shutil.copytree(analysed_run, work)
    damage(work / "checkpoints" / "last.pt", "garble")
    before = snapshot(work)
    rc, err = run_cli(capsys, "train", "--data", "synthetic:320", "--epochs", "2", "--steps-per-epoch", "4",
                      "--per-class", "8", "--embedding-dim", "16", "--backbone", "light", "--device", "cpu",
                      "--no-progress-bar", "--quiet", "--out", work, "--resume")
    assert rc == 1 and "already complete" in err
    assert snapshot(work) == before


# ----------------------------------------------------------------------------- the app side
APP = Path(__file__).resolve().parent.parent / "explorer" / "app.py"
PAGES = ["overview", "map", "subclasses", "confusion", "mislabels", "tags", "similar", "summary"]


@pytest.fixture(scope="module")
def fake_base(tmp_path_factory):
    from explorer_fixtures import fake_run

    base = tmp_path_factory.mktemp("fakebase")
    fake_run(base / "good", 300, seed=0)
    fake_run(base / "bad", 300, seed=1)
    return base


def app_on_damaged_run(base: Path, tmp_path: Path, monkeypatch, name: str, mode: str) -> dict:
    """Open the app with a good and a damaged run; visit every page of the damaged one, then go back
    to the good one. Returns {page: error line or ""}."""
    from streamlit.testing.v1 import AppTest

    root = tmp_path / f"runs-{name.replace('/', '_')}-{mode}"
    shutil.copytree(base, root)
    bad, good = root / "bad", root / "good"
    _apply(bad, name, mode, seed=3)
    before = snapshot(bad)
    monkeypatch.setenv("SUBCLASS_EXPLORER_RUNS", str(root))
    monkeypatch.setenv("SUBCLASS_EXPLORER_DATA_ROOTS", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    picker = at.selectbox(key="run_picker")
    if (name, mode) == (MANIFEST, "delete"):
        # a folder without a manifest is not a run (or one still being created): not offered
        assert not any(o.startswith("bad") for o in picker.options), picker.options
        assert snapshot(bad) == before
        return {"picker": "not offered"}
    assert any(o.startswith("bad") for o in picker.options), picker.options
    picker.set_value(str(bad)).run()
    seen, crashed = {}, []
    for page in PAGES:
        at.switch_page(f"views/{page}.py")
        at.run()
        if at.exception:   # an uncaught exception: Streamlit's redacted error box instead of one line
            crashed.append(page)
            continue
        errs = [e.value.replace("\\", "") for e in at.error]   # (the app escapes Markdown in messages)
        for e in errs:
            assert "\n" not in e.strip(), (page, e)
        seen[page] = errs[0] if errs else ""
        if errs:
            assert any(name in e for e in errs), (name, mode, page, errs)
    assert not crashed, f"{name} {mode}: uncaught exception on page(s) {', '.join(crashed)}"
    assert snapshot(bad) == before, (name, mode, "the app changed the damaged run")
    # the same session goes on with the good run
    at.selectbox(key="run_picker").set_value(str(good)).run()
    for page in ("overview", "mislabels"):
        at.switch_page(f"views/{page}.py")
        at.run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
    return seen


APP_DEFAULT = [(MANIFEST, "garble"), (MANIFEST, "newer-schema"), ("analysis/mislabels.parquet", "garble"),
               ("images.npy", "garble"),
               ("items.parquet", "garble")]


@pytest.mark.parametrize("name, mode", APP_DEFAULT)
def test_app_names_the_damaged_file_and_goes_on_with_another_run(fake_base, tmp_path, monkeypatch, name, mode):
    seen = app_on_damaged_run(fake_base, tmp_path, monkeypatch, name, mode)
    assert any(seen.values()), (name, mode, "no page reported the damage")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_app_every_artifact_damaged_in_turn(fake_base, tmp_path, monkeypatch):
    """The full matrix for the app: every artifact of the run x truncate/garble/delete, + newer schema."""
    cases_ = cases(fake_base / "bad")
    failures, lines = [], []
    for name, mode in cases_:
        try:
            seen = app_on_damaged_run(fake_base, tmp_path, monkeypatch, name, mode)
        except AssertionError as exc:
            failures.append(f"{mode} {name}: {str(exc).splitlines()[0][:200]}")
            continue
        flagged = [p for p, e in seen.items() if e]
        lines.append(f"  {mode:12} {name:36} error shown on {len(flagged)} of {len(PAGES)} pages")
    print(f"\n{len(cases_)} damaged runs in the app, {len(failures)} failing:\n" + "\n".join(lines))
    assert not failures, "\n".join(failures)
