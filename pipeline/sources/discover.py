"""Finding data sources under the data roots, and the paths a spec reads (for the app's menu and
its checks). The spec forms are :mod:`pipeline.sources`'; :func:`spec_paths` reads them with
:func:`pipeline.sources.parse_spec`."""
from __future__ import annotations

from pathlib import Path

from . import parse_spec
from .folder import IMAGE_EXTS

FERPLUS_MARKERS = {"FER2013Train", "FER2013Test"}


def spec_paths(spec: str) -> list[str]:
    """The file-system paths a data spec reads (none for ``synthetic``); DataError for an unknown kind."""
    kind, arg = parse_spec(spec)
    if kind == "synthetic" or not arg:
        return []
    return [p.strip() for p in arg.split(",") if p.strip()]


def csv_kind(name: str) -> str:
    """The source a CSV file name suggests: Kaggle's fer2013.csv, AffectNet's training/validation
    CSV, or a generic ``csv`` (path,label[,split])."""
    n = name.lower()
    if n.startswith("fer2013") and "new" not in n:
        return "fer2013"
    return "affectnet" if "training" in n or "validation" in n else "csv"


def discover(roots: list[Path], *, depth: int = 2, limit: int = 200) -> list[str]:
    """Data specs found under the data roots (a guess per folder: the FER+ layout, a
    class-per-folder tree, a CSV). Only looks ``depth`` levels down; at most ``limit`` specs."""
    out: list[str] = []

    def visit(d: Path, level: int) -> None:
        if len(out) >= limit:
            return
        try:
            entries = sorted(d.iterdir())
        except OSError:
            return
        names = {e.name for e in entries}
        if FERPLUS_MARKERS <= names:
            out.append(f"ferplus:{d}")
        elif level > 0 and any(e.is_dir() and not e.name.startswith(".") for e in entries) and _has_images_below(d):
            out.append(f"folder:{d}")
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_file() and e.suffix.lower() == ".csv":
                out.append(f"{csv_kind(e.name)}:{e}")
            elif e.is_dir() and level < depth and not e.name.startswith("FER2013"):
                visit(e, level + 1)

    for r in roots:
        visit(Path(r), 0)
    return out[:limit]


def _has_images_below(d: Path) -> bool:
    """An image file in one of the first 20 sub-folders' first 20 entries (cheap on big trees)."""
    try:
        for sub in list(d.iterdir())[:20]:
            if sub.is_dir():
                for f in list(sub.iterdir())[:20]:
                    if f.suffix.lower() in IMAGE_EXTS:
                        return True
    except OSError:
        return False
    return False
