"""``folder:DIR``: one sub-folder per class, optionally below ``train/ val/ test/`` folders (CK+ ships so).

Class names are the sorted names of the class folders that hold at least one image. Without split
folders every image gets a seeded 80/20 train/test split by hashing its path relative to DIR, so adding
files never moves the others. ``valid/`` and ``validation/`` count as ``val/``.

This module also holds the helpers the other file-based sources share (directory and file checks,
hashed splits, building the :class:`Dataset` once the rows are known).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .base import DataError, Dataset, check_under_roots, load_images, make_table

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm"})
SPLIT_SEED = 0
TEST_FRACTION = 0.2
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


# --------------------------------------------------------------------------- shared helpers
def hash_split(keys: Iterable[str], *, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> list[str]:
    """"train"/"test" per key from a seeded hash of the key alone: adding keys never moves the others."""
    out = []
    for k in keys:
        h = hashlib.sha1(f"{seed}:{k}".encode("utf-8")).digest()
        u = int.from_bytes(h[:8], "big") / 2.0**64
        out.append("test" if u < test_fraction else "train")
    return out


def subject_split(subjects: Iterable[str], *, test_fraction: float = TEST_FRACTION,
                  seed: int = SPLIT_SEED) -> dict[str, str]:
    """Subject -> "train"/"test", subjects disjoint across splits.

    Posed-expression sets have few subjects (JAFFE: 10), where a per-key hash threshold can easily
    put nobody in test. So subjects are ranked by their seeded hash and the first ``test_fraction``
    of them (at least one when there are two or more) go to test.
    """
    subs = sorted(set(subjects))
    ranked = sorted(subs, key=lambda s: hashlib.sha1(f"{seed}:{s}".encode("utf-8")).digest())
    n_test = int(round(test_fraction * len(subs)))
    if len(subs) >= 2:
        n_test = min(max(n_test, 1), len(subs) - 1)
    else:
        n_test = 0
    test = set(ranked[:n_test])
    return {s: ("test" if s in test else "train") for s in subs}


def open_dir(arg: str, cfg, *, source: str) -> Path:
    """Check a source directory argument: given, under the data roots, existing, listable."""
    if not arg or not str(arg).strip():
        raise DataError(f"{source}: give a directory, e.g. --data {source}:/path/to/data")
    p = Path(str(arg).strip()).expanduser()
    check_under_roots(p, tuple(getattr(cfg, "data_roots", ()) or ()))
    if not p.exists():
        raise DataError(f"{p}: no such directory")
    if not p.is_dir():
        raise DataError(f"{p}: not a directory")
    try:
        with os.scandir(p) as it:
            next(it, None)
    except OSError as exc:
        raise DataError(f"{p}: cannot read directory ({exc.strerror or type(exc).__name__})") from None
    return p


def open_file(arg: str, cfg, *, source: str, what: str = "file") -> Path:
    """Check a source file argument: given, under the data roots, an existing readable file."""
    if not arg or not str(arg).strip():
        raise DataError(f"{source}: give a {what}, e.g. --data {source}:/path/to/{what}")
    p = Path(str(arg).strip()).expanduser()
    check_under_roots(p, tuple(getattr(cfg, "data_roots", ()) or ()))
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a {what}")
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise DataError(f"{p}: cannot read file ({exc.strerror or type(exc).__name__})") from None
    return p


def list_images(root: Path) -> list[Path]:
    """Image files below ``root`` (recursive, hidden entries skipped), sorted by relative path."""
    found = []

    def err(exc: OSError) -> None:
        raise DataError(f"{exc.filename}: cannot read directory ({exc.strerror or type(exc).__name__})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=err, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                found.append(Path(dirpath) / f)
    return sorted(found, key=lambda q: q.relative_to(root).as_posix())


def decode_many(n: int, decode_one, size: int, *, on_bad_image: str = "skip", names: Sequence[str] | None = None,
                workers: int | None = None, block: int = 512) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Like :func:`base.load_images` for pixels that are not plain files: ``decode_one(i)`` returns row i's
    (size, size) uint8 image or raises DataError (one line, naming the item).

    Rows are decoded in blocks on a thread pool: one future per image costs more than a 48x48 WebP decode.
    """
    from concurrent.futures import ThreadPoolExecutor

    if on_bad_image not in ("skip", "fail"):
        raise DataError(f"on_bad_image must be 'skip' or 'fail', not {on_bad_image!r}")
    out = np.zeros((n, size, size), np.uint8)
    errors: list[str | None] = [None] * n

    def run(lo: int) -> None:
        for i in range(lo, min(lo + block, n)):
            try:
                out[i] = decode_one(i)
            except DataError as exc:
                if on_bad_image == "fail":
                    raise
                errors[i] = str(exc)

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as ex:
        list(ex.map(run, range(0, n, block)))   # re-raises the first DataError in "fail" mode
    bad = [i for i in range(n) if errors[i] is not None]
    skipped = [((names[i] if names is not None else str(i)), errors[i].split(": ", 1)[-1]) for i in bad]
    kept = np.asarray([i for i in range(n) if errors[i] is None], dtype=np.int64)
    return (out[kept] if bad else out), kept, skipped


def build_dataset(*, source: str, name: str, cfg, ids: Sequence[str], split: Sequence[str],
                  label: Sequence[int], classes: Sequence[str], paths: Sequence[str],
                  votes: np.ndarray | None = None, extra: dict | None = None,
                  images: np.ndarray | None = None, kept: np.ndarray | None = None,
                  skipped: list | None = None) -> Dataset:
    """Decode ``paths`` (unless ``images`` and ``kept`` are given), drop unreadable rows, build the Dataset.

    ``images``/``kept``/``skipped`` are what :func:`base.load_images` returns, for sources that decode
    pixels themselves. With ``cfg.on_bad_image == "fail"`` the first unreadable file raises a DataError.
    """
    n = len(ids)
    label = np.asarray(label, dtype=np.int64)
    if images is None:
        if cfg.data_roots:
            for p in paths:
                if p:
                    check_under_roots(Path(p), tuple(cfg.data_roots))
        images, kept, skipped = load_images(paths, cfg.image_size, on_bad_image=cfg.on_bad_image)
    elif kept is None:
        kept = np.arange(n)
    skipped = list(skipped or [])
    if len(kept) == 0:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"{name}: no readable images ({n} listed, {len(skipped)} unreadable{first})")
    present = np.unique(label[kept])
    if len(present) < 2:
        raise DataError(f"{name}: needs images of at least 2 classes, found only "
                        f"{', '.join(str(classes[i]) for i in present)}")
    extra = {k: [v[i] for i in kept] if not isinstance(v, np.ndarray) else v[kept] for k, v in (extra or {}).items()}
    table = make_table(ids=[ids[i] for i in kept], source=source, split=[split[i] for i in kept],
                       label=label[kept], classes=classes, path=[str(paths[i]) for i in kept], **extra)
    return Dataset(table=table, images=images, classes=list(classes),
                   votes=None if votes is None else np.asarray(votes, dtype=np.float32)[kept],
                   skipped=skipped, name=name)


# --------------------------------------------------------------------------- folder:DIR
def _children(p: Path) -> list[Path]:
    try:
        return sorted((c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")), key=lambda c: c.name)
    except OSError as exc:
        raise DataError(f"{p}: cannot read directory ({exc.strerror or type(exc).__name__})") from None


def load(arg: str, cfg) -> Dataset:
    root = open_dir(arg, cfg, source="folder")
    name = f"folder:{root}"
    subs = _children(root)
    split_dirs = [(SPLIT_ALIASES[c.name.lower()], c) for c in subs if c.name.lower() in SPLIT_ALIASES]
    groups: list[tuple[str | None, Path]] = split_dirs if split_dirs else [(None, root)]
    if split_dirs:
        others = [c.name for c in subs if c.name.lower() not in SPLIT_ALIASES]
        if others:
            raise DataError(f"{root}: mixes split folders ({', '.join(c.name for _, c in split_dirs)}) "
                            f"with other folders ({', '.join(others[:5])}); put every class folder below a split folder")
    rows: list[tuple[str, str, str]] = []   # (relative path, class, split or None)
    for split, gdir in groups:
        for cdir in _children(gdir):
            for f in list_images(cdir):
                rows.append((f.relative_to(root).as_posix(), cdir.name, split))
    if not rows:
        raise DataError(f"{root}: no images found (expected one sub-folder of images per class, "
                        f"extensions {', '.join(sorted(e[1:] for e in IMAGE_EXTS))})")
    classes = sorted({c for _, c, _ in rows})
    if len(classes) < 2:
        raise DataError(f"{root}: needs at least 2 class folders with images, found {len(classes)} ({', '.join(classes)})")
    rel = [r for r, _, _ in rows]
    hashed = hash_split(rel) if not split_dirs else None
    split = [s if s is not None else hashed[i] for i, (_, _, s) in enumerate(rows)]
    index = {c: i for i, c in enumerate(classes)}
    return build_dataset(source="folder", name=name, cfg=cfg, ids=rel, split=split,
                         label=[index[c] for _, c, _ in rows], classes=classes,
                         paths=[str(root / r) for r in rel])
