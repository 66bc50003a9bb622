"""The run directory: the contract between ``pipeline`` and ``explorer``.

A run is a folder::

    manifest.json        written last; schema version, status, config, versions, artifacts
    items.parquet        one row per image (N rows, row order = row order of every array)
    images.npy           (N, S, S) uint8, the grayscale pixels the model saw (thumbnails come from here)
    embeddings.npy       (N, D) float32
    class_means.npy      (C, D) float32, Eq. 5 means over the training split
    metrics.json         the paper's protocol (and ground-truth scores when known)
    progress.jsonl       one JSON event per line (epoch, step, loss terms, images/s, ETA)
    checkpoints/last.pt, checkpoints/best.pt
    analysis/...         written by ``pipeline analyze`` (hierarchy, maps, mislabels, ...)

Every file is written to a temporary name in the same folder and renamed into place, so a
reader sees either the old file or the new one, never half of one. ``manifest.json`` lists each
artifact with its shape and size; :func:`open_run` checks them and names the first problem.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .config import RunConfig
from .errors import one_line

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.jsonl"       # written through pipeline.progress

# what ``pipeline train`` writes into a run (RUN_FORMAT.md)
ITEMS_TABLE = "items.parquet"                         # one row per image
IMAGES_ARRAY = "images.npy"                           # (N, S, S) uint8
EMBEDDINGS_ARRAY = "embeddings.npy"                   # (N, D) float32
FEATURES_ARRAY = "features.npy"                       # the backbone's pooled feature maps
MID_FEATURES_ARRAY = "features_mid.npy"               # the same halfway up (the expression facet's)
CLASS_MEANS_ARRAY = "class_means.npy"                 # (C, D) float32
METRICS_JSON = "metrics.json"
CROSSFIT_POSTERIOR = "crossfit_posterior.npy"         # (N, C), train --crossfit K
CROSSFIT_VOTES = "crossfit_votes.npy"                 # (N, C), train --crossfit K

# what ``pipeline analyze`` writes into a run (RUN_FORMAT.md); the writers and the explorer name them by these
SUBCLASSES_JSON = "analysis/subclasses.json"          # the sub-class hierarchy, its facets and entries
SUBCLASSES_TABLE = "analysis/subclasses.parquet"      # row-aligned: each image's sub-class per facet
SUBCLASS_MEANS = "analysis/subclass_means.npy"
CLASS_IMAGES = "analysis/class_images.npy"            # mean image of each class
SUBCLASS_IMAGES = "analysis/subclass_images.npy"      # mean image of each sub-class
MISLABELS_TABLE = "analysis/mislabels.parquet"        # row-aligned mislabel scores
OUTLIERS_TABLE = "analysis/outliers.parquet"          # row-aligned outlier scores and ranks
DUPLICATES_TABLE = "analysis/duplicates.parquet"      # one row per duplicate pair
CONFUSION_JSON = "analysis/confusion.json"
SUMMARY_JSON = "analysis/summary.json"
MAPS_INDEX = "analysis/maps.json"                     # the stored 2-D maps, each under MAPS_DIR
MAPS_DIR = "analysis/maps"

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"


class RunError(Exception):
    """A run directory is missing, incomplete, corrupt or from a newer schema. One-line message."""


# ----------------------------------------------------------------------------- atomic writes
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: Path, obj: Any, *, sort_keys: bool = True, lenient: bool = False) -> None:
    """The project's one atomic JSON writer (a temporary name in the same folder, then a rename).
    ``lenient``: values JSON cannot hold are written as their ``str`` (a report must not fail on a
    torch dtype); otherwise they raise TypeError."""
    default = (lambda o: _json_default(o) if isinstance(o, (np.generic, np.ndarray, Path)) else str(o)) \
        if lenient else _json_default

    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=sort_keys, default=default)
            fh.write("\n")

    _atomic(path, w)


def write_npy(path: Path, arr: np.ndarray) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)

    _atomic(path, w)


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_bytes(path: Path, data: bytes) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    _atomic(path, w)


def save_torch(path: Path, obj: Any) -> None:
    import torch

    _atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: Path, map_location: Any = "cpu") -> Any:
    """Load a checkpoint without executing pickled code (``weights_only=True``)."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: checkpoint is missing") from None
    except Exception as exc:  # weights_only refusal, truncation, garbage
        first = one_line(exc, 160)
        raise RunError(f"{path}: checkpoint refused or unreadable ({first})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def append_jsonl(path: Path, event: dict) -> None:
    """Append one event line. A torn last line (killed writer) is skipped by :func:`read_jsonl`;
    it is ended with a newline first, so the event written after it is not glued onto it and lost."""
    line = (json.dumps(event, default=_json_default, sort_keys=True) + "\n").encode("utf-8")
    with open(path, "ab+") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end > 0:
            fh.seek(end - 1)
            if fh.read(1) != b"\n":
                line = b"\n" + line
        fh.write(line)
        fh.flush()


def read_jsonl(path: Path) -> list[dict]:
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        return []
    return out


# ----------------------------------------------------------------------------- describing artifacts
def describe(path: Path) -> dict:
    """What the manifest records about one artifact: its size and, for arrays and tables, its shape."""
    path = Path(path)
    info: dict[str, Any] = {"bytes": path.stat().st_size}
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        info.update(shape=list(arr.shape), dtype=str(arr.dtype))
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        md = pq.read_metadata(path)
        info.update(rows=md.num_rows, columns=md.num_columns)
    return info


def package_versions() -> dict:
    import platform
    import importlib.metadata as im

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "openTSNE", "umap-learn", "cleanlab"):
        try:
            out[name] = im.version(name)
        except im.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------- the run object
@dataclass
class Run:
    """A validated run directory. Arrays are memory-mapped; nothing is loaded until asked for."""

    path: Path
    manifest: dict = field(default_factory=dict)

    # -- reading -----------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.manifest.get("status", "unknown")

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.get("classes", []))

    @property
    def config(self) -> RunConfig:
        """The run's configuration read back as a :class:`pipeline.config.RunConfig` (fields an older
        run did not store take today's defaults); a RunError naming the run when it cannot be read."""
        try:
            return RunConfig.from_dict(self.manifest.get("config") or {})
        except (TypeError, ValueError) as exc:
            raise RunError(f"{self.path}: unreadable config in the manifest ({one_line(exc, 120)})") from None

    @property
    def artifacts(self) -> dict:
        return self.manifest.get("artifacts", {})

    def has(self, name: str) -> bool:
        return name in self.artifacts and (self.path / name).exists()

    def file(self, name: str) -> Path:
        if name not in self.artifacts:
            raise RunError(f"{self.path / name}: not listed in {MANIFEST} (run `pipeline analyze`?)")
        p = artifact_path(self.path, name)
        if not p.exists():
            raise RunError(f"{p}: listed in {MANIFEST} but missing")
        return p

    def array(self, name: str, mmap: bool = True) -> np.ndarray:
        p = self.file(name)
        try:
            arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as exc:
            raise RunError(f"{p}: unreadable array ({type(exc).__name__}: {one_line(exc, 120)})") from None
        want = self.artifacts[name].get("shape")
        if want is not None and list(arr.shape) != list(want):
            raise RunError(f"{p}: shape {list(arr.shape)} but {MANIFEST} says {want}")
        return arr

    def table(self, name: str = ITEMS_TABLE) -> pd.DataFrame:
        p = self.file(name)
        try:
            with open(p, "rb") as fh:          # pyarrow reads the footer only: an empty table with a
                head = fh.read(4)               # damaged start would otherwise read as valid
        except OSError as exc:
            raise RunError(f"{p}: unreadable table ({type(exc).__name__}: {one_line(exc, 120)})") from None
        if head != b"PAR1":
            raise RunError(f"{p}: unreadable table (its Parquet header is damaged)")
        try:
            df = pd.read_parquet(p)
        except Exception as exc:
            raise RunError(f"{p}: unreadable table ({type(exc).__name__}: {one_line(exc, 120)})") from None
        want = self.artifacts[name].get("rows")
        if want is not None and len(df) != want:
            raise RunError(f"{p}: {len(df)} rows but {MANIFEST} says {want}")
        return df

    def json(self, name: str) -> Any:
        p = self.file(name)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except Exception as exc:
            raise RunError(f"{p}: unreadable JSON ({type(exc).__name__})") from None

    def items(self) -> pd.DataFrame:
        return self.table(ITEMS_TABLE)

    def embeddings(self) -> np.ndarray:
        return self.array(EMBEDDINGS_ARRAY)

    def images(self) -> np.ndarray:
        return self.array(IMAGES_ARRAY)

    def metrics(self) -> dict:
        return self.json(METRICS_JSON) if self.has(METRICS_JSON) else {}

    def progress(self) -> list[dict]:
        return read_jsonl(self.path / PROGRESS)

    # -- writing -----------------------------------------------------------------------------
    def put_array(self, name: str, arr: np.ndarray) -> None:
        write_npy(self.path / name, arr)
        self.artifacts[name] = describe(self.path / name)

    def put_table(self, name: str, df: pd.DataFrame) -> None:
        write_parquet(self.path / name, df)
        self.artifacts[name] = describe(self.path / name)

    def put_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)
        self.artifacts[name] = describe(self.path / name)

    def register(self, name: str) -> None:
        """Record an artifact written by someone else (a checkpoint, say)."""
        self.artifacts[name] = describe(self.path / name)

    def save_manifest(self, **updates: Any) -> None:
        self.manifest.update(updates)
        self.manifest.setdefault("artifacts", {})
        self.manifest["schema_version"] = SCHEMA_VERSION
        self.manifest["updated"] = time.time()
        write_json(self.path / MANIFEST, self.manifest)


def artifact_path(root: Path, name: str) -> Path:
    """Where artifact ``name`` of the run in ``root`` lives; a RunError for a name (or a symlink) that
    leads out of the run directory: a manifest must not make us read other files."""
    root = Path(root)
    s = str(name)
    parts = s.replace("\\", "/").split("/")
    if (not s or s.startswith(("/", "\\")) or os.path.isabs(s) or (len(s) > 1 and s[1] == ":")
            or ".." in parts or "\0" in s):
        raise RunError(f"{root / MANIFEST}: artifact {s!r} is outside the run directory; refused")
    p = root / s
    try:
        real, base = p.resolve(), root.resolve()
    except (OSError, RuntimeError):
        raise RunError(f"{p}: cannot resolve this artifact's path") from None
    if real != base and base not in real.parents:
        raise RunError(f"{p}: links outside the run directory (to {real}); refused")
    return p


def create_run(path: Path, *, config: dict, classes: list[str], overwrite_compatible: bool = False) -> Run:
    """Start a new run in ``path``; refuse a folder that already holds a different run.

    ``overwrite_compatible``: the folder may hold a run with the *same* config (a restart).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"{path}: exists and is not a directory")
    if (path / MANIFEST).exists():
        try:
            old = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except Exception:
            raise RunError(f"{path}: already holds a run whose {MANIFEST} is unreadable; choose another --out") from None
        if not overwrite_compatible or old.get("config") != json.loads(json.dumps(config, default=_json_default)):
            raise RunError(f"{path}: already holds a different run; choose another --out or pass --resume")
    elif path.exists() and any(p for p in path.iterdir() if not p.name.startswith(".")):
        raise RunError(f"{path}: directory is not empty and holds no run; choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    run = Run(path=path, manifest={
        "schema_version": SCHEMA_VERSION,
        "status": STATUS_RUNNING,
        "created": time.time(),
        "config": json.loads(json.dumps(config, default=_json_default)),
        "classes": list(classes),
        "versions": package_versions(),
        "artifacts": {},
    })
    run.save_manifest()
    return run


def slug(text: str, n: int = 24) -> str:
    """A file-name-safe lower-case short form of ``text`` (a data spec's last path component)."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", Path(str(text).split(":", 1)[-1] or str(text)).name or str(text)).strip("-")
    return (s or "data")[:n].lower()


def new_run_dir(root: Path, cfg: RunConfig) -> Path:
    """A new run folder under ``root`` named after the config: time, source kind, data, loss, backbone
    (``-2``, ``-3``, ... when the name is taken)."""
    spec = cfg.data.spec
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(spec.split(':', 1)[0] or 'data', 12)}"
    if ":" in spec:
        base += f"-{slug(spec)}"
    base += f"-{cfg.loss.name}-{cfg.model.backbone}"
    p = Path(root) / base
    i = 2
    while p.exists():
        p = Path(root) / f"{base}-{i}"
        i += 1
    return p


def open_run(path: Path, *, require_complete: bool = True, check_files: bool = True) -> Run:
    """Open and validate a run directory. Raises :class:`RunError` naming the first problem."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    mf = path / MANIFEST
    if not mf.exists():
        raise RunError(f"{mf}: missing (not a run, or training never got far enough to write it)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except Exception:
        raise RunError(f"{mf}: unreadable or truncated JSON") from None
    if not isinstance(manifest, dict):
        raise RunError(f"{mf}: not a JSON object")
    ver = manifest.get("schema_version")
    if not isinstance(ver, int):
        raise RunError(f"{mf}: no schema_version")
    if ver > SCHEMA_VERSION:
        raise RunError(f"{mf}: schema version {ver} is newer than this program reads ({SCHEMA_VERSION}); upgrade subclass-explorer")
    for key, typ, what in (("status", str, "a string"), ("config", dict, "an object"), ("classes", list, "a list"),
                           ("artifacts", dict, "an object")):
        if key in manifest and not isinstance(manifest[key], typ):
            raise RunError(f"{mf}: '{key}' is not {what}")
    run = Run(path=path, manifest=manifest)
    if require_complete and run.status != STATUS_COMPLETE:
        raise RunError(f"{path}: run is {run.status}, not complete" + (" (resume it with `pipeline train --resume`)" if run.status in (STATUS_RUNNING, STATUS_INTERRUPTED, STATUS_FAILED) else ""))
    for name in run.artifacts:
        artifact_path(path, name)
    if check_files:
        for name, info in run.artifacts.items():
            p = path / name
            if not isinstance(info, dict):
                raise RunError(f"{mf}: entry for {name!r} is not a JSON object")
            if not p.exists():
                raise RunError(f"{p}: listed in {MANIFEST} but missing")
            size = p.stat().st_size
            if "bytes" in info and size != info["bytes"]:
                raise RunError(f"{p}: {size} bytes but {MANIFEST} says {info['bytes']} (truncated or changed)")
    return run


def list_runs(root: Path) -> list[tuple[Path, Run | None, str]]:
    """Every run folder under ``root`` (one level), newest first: (path, run or None, problem)."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for p in root.iterdir():
        if not p.is_dir() or not (p / MANIFEST).exists():
            continue
        try:
            out.append((p, open_run(p, require_complete=False), ""))
        except RunError as exc:
            out.append((p, None, str(exc)))
    out.sort(key=lambda t: (t[1].manifest.get("updated", 0) if t[1] else 0, t[0].stat().st_mtime), reverse=True)
    return out


TRASH = ".trash"  # under the runs root: runs moved out of the way, never deleted by us


def trash_run(path: Path) -> Path:
    """Move the run folder ``path`` into ``<its root>/.trash/<name>-<time>`` (one rename on the
    same file system: all or nothing) and return where it went. Nothing is deleted; moving the
    folder back restores the run. Refuses anything that is not a run folder."""
    path = Path(path)
    if not path.is_dir() or not (path / MANIFEST).exists():
        raise RunError(f"{path}: not a run folder; nothing moved")
    trash = path.parent / TRASH
    trash.mkdir(exist_ok=True)
    dest = trash / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    i = 2
    while dest.exists():
        dest = trash / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{i}"
        i += 1
    os.rename(path, dest)
    return dest
