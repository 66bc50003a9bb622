"""The training form's logic, no Streamlit: a :class:`TrainRequest` becomes a RunConfig through
:func:`pipeline.config.recipe` (so the app's defaults are the CLI's), is saved as a config file, and
trains in a background job as ``python -m pipeline train --config FILE --out DIR`` (then ``analyze``).
The form itself is drawn by :func:`explorer.widgets.train_form`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import (BACKBONES, LOSSES, ConfigError, DataConfig, HierarchyConfig, LossConfig, RunConfig,
                             TrainConfig, recipe)
from pipeline.errors import one_line
from pipeline.runs import MANIFEST, PROGRESS, STATUS_COMPLETE, STATUS_RUNNING, TRASH, RunError, new_run_dir, open_run
from pipeline.sources import DataError, parse_spec
from pipeline.sources.discover import spec_paths

from . import settings
from .jobs import STATE_DIR, Job, JobError, pipeline_argv, start, state_dir

FORM_BACKBONES = ("auto",) + BACKBONES  # auto: the recipe picks (resnet18 on a GPU, light on a CPU)
SYNTHETIC_MIN, SYNTHETIC_MAX = 8, 200_000  # synthetic:N the form accepts


@dataclass(frozen=True)
class TrainRequest:
    """What the training form asks for. :meth:`config` turns it into a RunConfig through
    :func:`pipeline.config.recipe`; the job trains with ``pipeline train --config FILE``."""
    spec: str = DataConfig.spec
    loss: str = LossConfig.name
    backbone: str = "auto"          # one of FORM_BACKBONES
    epochs: int = 0                 # 0: the recipe's
    levels: int = HierarchyConfig.levels
    seed: int = TrainConfig.seed
    data_roots: tuple[str, ...] = field(default_factory=tuple)
    resume: bool = False

    def config(self) -> RunConfig:
        """The RunConfig to train with; JobError (one line) when it cannot be trained."""
        if self.backbone not in FORM_BACKBONES:
            raise JobError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(FORM_BACKBONES)}")
        try:
            return recipe(self.spec, self.backbone, **{
                "loss.name": self.loss, "hierarchy.levels": int(self.levels), "train.seed": int(self.seed),
                "train.epochs": int(self.epochs) or None, "data.data_roots": tuple(map(str, self.data_roots)),
            }).validate()
        except (ConfigError, TypeError, ValueError) as exc:
            raise JobError(one_line(exc, empty="bad training options")) from None

    def validate(self) -> None:
        self.config()

    def train_argv(self, out: Path, config_file: Path) -> list[str]:
        """Write the config to ``config_file``; the ``pipeline train`` command that trains with it."""
        self.config().save(config_file)
        argv = ["train", "--config", str(config_file), "--out", str(out), "--no-progress-bar"]
        if self.resume:
            argv.append("--resume")
        return pipeline_argv(*argv)


def config_file(root: Path, run_dir: Path) -> Path:
    """Where the app keeps the config file of a job training into ``run_dir``."""
    return state_dir(root) / "configs" / f"{Path(run_dir).name}.json"


def bare_path_spec(text: str, roots: list[Path]) -> str:
    """``/data/faces`` -> ``folder:/data/faces``, ``/data/list.csv`` -> ``csv:/data/list.csv`` (the
    user's spelling kept); anything else raises JobError naming the forms that work."""
    raw = text.strip()
    if not raw:
        raise JobError("no data chosen: pick one, or type a folder, a CSV file or a data spec")
    p = Path(raw).expanduser()
    if not p.is_absolute() and roots:  # relative to the first data root, as the help says
        p = roots[0] / p
    if p.is_dir():
        return f"folder:{p}"
    if p.is_file() and p.suffix.lower() == ".csv":
        return f"csv:{p}"
    if p.exists():
        raise JobError(f"{raw} is neither a folder nor a .csv file; use folder:DIR (one sub-folder per class) "
                       "or csv:FILE (path,label[,split])")
    if "/" in raw or raw.startswith(("~", ".")):
        raise JobError(f"{raw} does not exist")
    raise JobError(f"unknown data source in {raw!r}: type a folder or CSV path, or a spec such as "
                   "folder:/data/faces, csv:/data/list.csv, ferplus:DIR, synthetic")


def check_spec(spec: str, roots: list[Path]) -> str:
    """A data spec the form may start, or JobError: a known source, its paths under a data root; a
    bare folder or CSV path is taken as ``folder:`` / ``csv:`` (:func:`bare_path_spec`)."""
    from pipeline.sources import SOURCES

    spec = spec.strip()
    kind = spec.partition(":")[0].strip().lower()
    if kind not in SOURCES:
        if ":" in spec and kind.isidentifier():      # "bogus:/x": a misspelt source, not a path
            raise JobError(f"unknown data source {kind!r}; choose one of {', '.join(SOURCES)}, or type a folder "
                           "or CSV path")
        spec = bare_path_spec(spec, roots)
    try:
        kind, arg = parse_spec(spec)
        paths = spec_paths(spec)
    except DataError as exc:
        raise JobError(str(exc)) from None
    if kind == "synthetic":
        if arg and not (arg.isdigit() and SYNTHETIC_MIN <= int(arg) <= SYNTHETIC_MAX):
            raise JobError(f"synthetic:N takes a number of images between {SYNTHETIC_MIN} and {SYNTHETIC_MAX:,}")
        return spec
    if not paths:
        raise JobError(f"{kind} needs a path, e.g. {kind}:/data/...")
    if not roots:
        raise JobError(f"no data roots are configured; set {settings.DATA_ROOTS_ENV}")
    for p in paths:
        if settings.under_data_roots(p, roots) is None:
            raise JobError(f"{p} is not under a configured data root ({', '.join(map(str, roots))})")
        if not Path(p).exists():
            raise JobError(f"{p} does not exist")
    return spec


RUN_NAME_MAX = 100  # characters of a run name (it is a folder name)


def named_run_dir(root: Path, name: str) -> Path:
    """The folder a run the user named ``name`` trains into: one new folder right under ``root``.
    JobError (one line) for a name that cannot be one: empty, a path (separators, ``..``), hidden
    (``.trash`` and ``.explorer`` live there), not one printable line, too long, or already taken."""
    n = str(name).strip()
    if not n:
        raise JobError("the run name is empty: type a name, or leave the field blank for a generated one")
    if "/" in n or "\\" in n:
        raise JobError(f"a run name cannot contain / or \\ (it names one folder in the runs folder): {n[:RUN_NAME_MAX]}")
    if n.startswith("."):
        raise JobError(f"a run name cannot start with a dot ({TRASH} and {STATE_DIR} live in the runs folder): "
                       f"{n[:RUN_NAME_MAX]}")
    if not n.isprintable():
        raise JobError("a run name is one line of printable characters")
    if len(n) > RUN_NAME_MAX:
        raise JobError(f"a run name has at most {RUN_NAME_MAX} characters, not {len(n)}")
    out = Path(root) / n
    if out.exists() or out.is_symlink():
        raise JobError(f"a run named {n} already exists in {Path(root)}: choose another name")
    return out


def start_train(root: Path, req: TrainRequest, *, analyze: bool = True, run_dir: Path | None = None,
                kind: str = "train", name: str = "") -> Job:
    """Train ``req`` in a background job (then analyze): into ``run_dir``, else the folder the user
    named (:func:`named_run_dir`; "": a generated name, spaces only: refused)."""
    cfg = req.config()
    if run_dir is None and name:
        run_dir = named_run_dir(root, name)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(root, cfg)
    steps = [req.train_argv(run_dir, config_file(root, run_dir))]
    if analyze:
        steps.append(pipeline_argv("analyze", str(run_dir)))
    title = f"{cfg.loss.name} / {cfg.model.backbone} on {cfg.data.spec}"
    return start(root, kind, run_dir, steps, title=title)


def retrain_argv(parent: Path, out: Path) -> list[str]:
    """``pipeline train --config <parent>/manifest.json --labels-from <parent>/review.sqlite``: the
    parent run's own recipe on the corrected labels, so the two runs compare like for like."""
    parent = Path(parent).resolve()
    try:
        open_run(parent)
    except RunError as exc:
        raise JobError(f"cannot retrain from {parent.name}: {exc}") from None
    db = parent / "review.sqlite"
    if not db.is_file():
        raise JobError(f"{parent.name} has no review decisions yet: flag or relabel images first")
    return pipeline_argv("train", "--config", parent / MANIFEST, "--out", out, "--labels-from", db,
                         "--parent", parent, "--no-progress-bar")


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


RESUME_QUIET_S = 120  # a run marked running and written to this recently may still be training elsewhere


def resume_argv(run_dir: Path, *, now: float | None = None) -> list[str]:
    """``pipeline train --config <run>/manifest.json --out <run> --resume``: an unfinished run's own
    saved options, continued in its own folder. The trainer checks that the config matches the run's
    and carries on from ``checkpoints/last.pt`` (the last finished epoch; from the first epoch when
    it has none). JobError (one line) for a run that cannot be resumed."""
    run_dir = Path(run_dir).resolve()
    try:
        run = open_run(run_dir, require_complete=False, check_files=False)
    except RunError as exc:
        raise JobError(f"cannot resume {run_dir.name}: {exc}") from None
    if run.status == STATUS_COMPLETE:
        raise JobError(f"{run_dir.name} is complete: there is nothing to resume")
    try:
        RunConfig.load(run_dir / MANIFEST).validate()
    except ConfigError as exc:
        raise JobError(f"cannot resume {run_dir.name}: {one_line(exc)}") from None
    if run.status == STATUS_RUNNING:
        # no job of ours is on it (the caller checks), but a `pipeline train` in a terminal may be
        quiet = (time.time() if now is None else now) - _last_write(run_dir)
        if quiet < RESUME_QUIET_S:
            raise JobError(f"{run_dir.name} was written to {quiet:.0f} s ago: it may still be training in another "
                           f"process; stop that first, or wait {RESUME_QUIET_S} s")
    return pipeline_argv("train", "--config", run_dir / MANIFEST, "--out", run_dir, "--resume", "--no-progress-bar")


def _last_write(run_dir: Path) -> float:
    t = 0.0
    for name in (MANIFEST, PROGRESS):
        try:
            t = max(t, (run_dir / name).stat().st_mtime)
        except OSError:
            pass
    return t


def start_resume(root: Path, run_dir: Path, *, analyze: bool = True) -> Job:
    """"Resume": finish an interrupted (or failed) run with exactly its saved options, in its own
    folder (:func:`resume_argv`), then analyze it."""
    run_dir = Path(run_dir)
    steps = [resume_argv(run_dir)]
    if analyze:
        steps.append(pipeline_argv("analyze", str(run_dir.resolve())))
    return start(root, "resume", run_dir, steps, title=f"resume {run_dir.name}")


# The demo's quick first stage: few steps on small images, maps that need no compile (UMAP's numba
# start-up alone is ~45 s), analysed in the training process (one interpreter start, not two).
PREVIEW_MAPS = ("tsne", "pca")
PREVIEW_OPTIONS = ("--image-size", "32", "--epochs", "3", "--steps-per-epoch", "16", "--seed", "0",
                   "--analyze", "--maps", ",".join(PREVIEW_MAPS), "--no-progress-bar")


def preview_argv(out: Path, spec: str) -> list[str]:
    return pipeline_argv("train", "--data", spec, "--out", str(out), *PREVIEW_OPTIONS)


def start_demo(root: Path, *, spec: str = "synthetic", epochs: int = 0, name: str = "demo",
               preview: str = "") -> Job:
    """Build the first-launch demo in ``root/name``: train then analyze, or whatever is left of it
    (resume an interrupted training, analyze a trained but unanalysed run).

    ``preview``: a data spec for a quick first stage in ``root/<name>-preview`` (:data:`PREVIEW_OPTIONS`),
    built first when the demo is built from scratch and the preview folder does not exist yet; the
    app shows it while the full demo trains. Its failure does not stop the full demo."""
    root = Path(root)
    demo = root / name
    req = TrainRequest(spec=spec, epochs=epochs)
    status = None
    if (demo / MANIFEST).exists():
        try:
            status = open_run(demo, require_complete=False).status
        except RunError:
            status = "broken"
    if status == "complete":
        return start(root, "demo", demo, [pipeline_argv("analyze", str(demo))], title="the demo (analysis)")
    if status in ("interrupted", "failed", "running"):  # as the app's Resume does: the run's own options
        return start(root, "demo", demo, [resume_argv(demo), pipeline_argv("analyze", str(demo.resolve()))],
                     title="the synthetic demo")
    if status == "broken" or (status is None and demo.exists() and any(demo.iterdir())):
        demo = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    steps = [req.train_argv(demo, config_file(root, demo)), pipeline_argv("analyze", str(demo))]
    first = root / f"{name}-preview"
    if preview and not first.exists():
        try:
            parse_spec(preview)  # a bad spec is the caller's one-line error, before anything starts
        except DataError as exc:
            raise JobError(f"demo preview: {one_line(exc)}") from None
        return start(root, "demo", demo, [preview_argv(first, preview)] + steps, title="the synthetic demo",
                     preview=first, optional=(0,), nice_from=1)
    return start(root, "demo", demo, steps, title="the synthetic demo")


def start_default_demo(root: Path) -> Job:
    """The first-launch demo as the settings (and the tests' environment) define it."""
    return start_demo(root, spec=settings.demo_spec(), epochs=settings.demo_epochs(), name=settings.DEMO_NAME,
                      preview=settings.demo_preview_spec())


__all__ = ["retrain_argv", "start_retrain", "resume_argv", "start_resume", "named_run_dir", "TrainRequest", "FORM_BACKBONES", "LOSSES", "check_spec", "bare_path_spec", "config_file", "start_train", "start_demo", "start_default_demo", "preview_argv", "PREVIEW_OPTIONS"]
