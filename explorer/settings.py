"""Where the explorer looks for things, and the few limits it enforces.

Everything here is read from the environment once per call (cheap), so tests can point the app
at a temporary runs root with ``monkeypatch.setenv`` before starting an ``AppTest``.

- ``SUBCLASS_EXPLORER_RUNS``: the runs root (default ``./runs``); every run is one folder below it.
- ``SUBCLASS_EXPLORER_DATA_ROOTS``: ``os.pathsep``-separated folders the training form may read
  (default: ``./data`` and ``../shared/data`` when they exist).
"""
from __future__ import annotations

import os
from pathlib import Path

RUNS_ENV = "SUBCLASS_EXPLORER_RUNS"
DATA_ROOTS_ENV = "SUBCLASS_EXPLORER_DATA_ROOTS"

DEMO_NAME = "demo"                 # the first-launch run folder under the runs root

MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # keep in step with .streamlit/config.toml server.maxUploadSize
MAX_UPLOAD_PIXELS = 4096 * 4096    # refuse decompression bombs before decoding
GALLERY_MAX = 64                   # images in one gallery page
THUMB_PX = 84                      # on-page width of a gallery thumbnail
GROUP_THUMB_PX = 128               # thumbnails of a group gallery (sub-class, tag, cell): large enough to judge
GROUP_PAGE = 24                    # images per page of a group gallery
LARGE_PX = 288                     # "look closer": one image, large
QUEUE_PAGE = 12                    # mislabel candidates per page
POLL_S = 2.0                       # how often the job fragment re-reads progress: each poll is a script
                                   # run (~0.25 CPU-s of server + browser on 2 cores: 1 s ate ~20 % of the box)


def demo_spec() -> str:
    """The first-launch demo's data: 4,000 generated faces, a couple of CPU minutes (tests shrink it)."""
    return os.environ.get("SUBCLASS_EXPLORER_DEMO_SPEC") or "synthetic"


def demo_preview_spec() -> str:
    """The data of the demo's quick first stage ("" = none): 1,200 generated faces, trained for a few
    dozen steps at 32 px so that a first view opens within a minute on two cores (RESULTS.md).
    ``SUBCLASS_EXPLORER_DEMO_PREVIEW``: another spec, or ``off``."""
    raw = os.environ.get("SUBCLASS_EXPLORER_DEMO_PREVIEW")
    if raw is None or not raw.strip():
        return "synthetic:1200"
    return "" if raw.strip().lower() in ("0", "off", "no", "none", "false") else raw.strip()


def demo_epochs() -> int:
    """Epochs for the demo; 0 = the pipeline's default."""
    try:
        return max(0, int(os.environ.get("SUBCLASS_EXPLORER_DEMO_EPOCHS", "0") or 0))
    except ValueError:
        return 0


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs").expanduser().resolve()


def data_roots() -> list[Path]:
    """The folders the training form may read from, resolved, existing ones only."""
    raw = os.environ.get(DATA_ROOTS_ENV)
    if raw is not None and raw.strip():
        cands = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    else:
        cands = [Path("data"), Path("..") / "shared" / "data"]
    out: list[Path] = []
    for p in cands:
        try:
            r = p.resolve()
        except OSError:
            continue
        if r.is_dir() and r not in out:
            out.append(r)
    return out


def under_data_roots(path: str | Path, roots: list[Path] | None = None) -> Path | None:
    """``path`` resolved if it lies under one of the data roots (symlinks followed), else None."""
    roots = data_roots() if roots is None else roots
    try:
        p = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return None
    for r in roots:
        if p == r or p.is_relative_to(r):
            return p
    return None
