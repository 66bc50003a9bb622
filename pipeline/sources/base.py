"""What every data source returns: one table plus the pixels.

Conventions: N images, C classes, S = image size. Every source returns a :class:`Dataset`:

* ``table``: pandas DataFrame, one row per image, columns
  ``id`` (str, unique), ``source`` (str, e.g. "ferplus"), ``split`` ("train" / "val" / "test"),
  ``label`` (int in [0, C)), ``label_name`` (str), ``path`` (str or "" when there is no file),
  and optional ground-truth columns named ``gt_*`` (``gt_label``, ``gt_subclass``, ``gt_flipped``,
  ``gt_glasses`` ...).
* ``images``: (N, S, S) uint8 grayscale, row-aligned with the table.
* ``votes``: (N, C) float32 vote counts or None; the soft target P(w|x) is ``votes / votes.sum(1)``.
* ``classes``: the C class names, in label-index order.
* ``skipped``: files that could not be read (path, reason), when ``on_bad_image="skip"``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

FERPLUS_CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]

# The usual spellings of the FER+ classes in other data sets' folder and label names (FER2013's
# Kaggle folders, RAF-DB, CK+, KDEF, AffectNet's exports): happy, sad, angry, surprised, disgusted, fearful.
CLASS_SYNONYMS = {
    "neutral": ("neutral", "neutrality", "neu"),
    "happiness": ("happiness", "happy", "joy", "joyful", "hap"),
    "surprise": ("surprise", "surprised", "sur"),
    "sadness": ("sadness", "sad"),
    "anger": ("anger", "angry", "ang"),
    "disgust": ("disgust", "disgusted", "dis"),
    "fear": ("fear", "fearful", "afraid", "scared", "fea"),
    "contempt": ("contempt", "contemptuous", "con"),
}
_CANONICAL = {syn: name for name, syns in CLASS_SYNONYMS.items() for syn in syns}


def canonical_class(name: str) -> str:
    """A class name in FER+ spelling when it is one of :data:`CLASS_SYNONYMS` (case, spaces, ``-``
    and ``_`` ignored), else the name lower-cased and stripped."""
    key = "".join(ch for ch in str(name).strip().lower() if ch.isalnum())
    return _CANONICAL.get(key, str(name).strip().lower())


@dataclass(frozen=True)
class ClassMatch:
    """How another data set's classes map onto a run's (by name, then by FER+ synonym)."""
    index: dict[str, int]          # other class name -> run class index
    left_out: list[str]            # other class names that match no run class

    def matched(self, run_classes: Sequence[str]) -> dict[str, str]:
        return {name: run_classes[i] for name, i in self.index.items()}


def match_classes(run_classes: Sequence[str], other_classes: Sequence[str]) -> ClassMatch:
    """Map ``other_classes`` onto ``run_classes``: the same name (case ignored) first, else the same
    FER+ class through :data:`CLASS_SYNONYMS` ("happy" -> "happiness", and the other way round)."""
    exact = {str(n).strip().lower(): i for i, n in enumerate(run_classes)}
    canon: dict[str, int] = {}
    for i, n in enumerate(run_classes):
        canon.setdefault(canonical_class(n), i)
    index, left = {}, []
    for n in other_classes:
        i = exact.get(str(n).strip().lower(), canon.get(canonical_class(n)))
        if i is None:
            left.append(str(n))
        else:
            index[str(n)] = i
    return ClassMatch(index=index, left_out=left)

# Pillow refuses images above this many pixels (decompression-bomb guard): 8000 x 8000.
MAX_IMAGE_PIXELS = 64_000_000


class DataError(Exception):
    """Bad input data. The message is one line naming the file and the problem."""

    def __init__(self, message: object = "") -> None:
        # file names, column names and labels come from strangers: a control character in one (a newline
        # inside a quoted CSV header, say) is shown escaped, so the message stays one line
        s = str(message)
        super().__init__("".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in s))


@dataclass
class Dataset:
    table: pd.DataFrame
    images: np.ndarray
    classes: list[str]
    votes: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        t = self.table
        need = {"id", "source", "split", "label", "label_name", "path"}
        missing = need - set(t.columns)
        if missing:
            raise DataError(f"{self.name or 'data source'}: table lacks column(s) {', '.join(sorted(missing))}")
        if len(t) == 0:
            raise DataError(f"{self.name or 'data source'}: no images found")
        if len(self.classes) < 2:
            raise DataError(f"{self.name or 'data source'}: needs at least 2 classes, found {len(self.classes)}")
        if self.images.shape[0] != len(t) or self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise DataError(f"{self.name or 'data source'}: images must be (N, S, S) uint8 aligned with the table, got {self.images.shape} {self.images.dtype}")
        lab = t["label"].to_numpy()
        if lab.min() < 0 or lab.max() >= len(self.classes):
            raise DataError(f"{self.name or 'data source'}: label index outside 0..{len(self.classes) - 1}")
        if t["id"].duplicated().any():
            dup = t.loc[t["id"].duplicated(), "id"].iloc[0]
            raise DataError(f"{self.name or 'data source'}: duplicate image id {dup!r}")
        bad_split = set(t["split"].unique()) - {"train", "val", "test"}
        if bad_split:
            raise DataError(f"{self.name or 'data source'}: unknown split(s) {sorted(bad_split)}; use train, val or test")
        if self.votes is not None:
            if self.votes.shape != (len(t), len(self.classes)):
                raise DataError(f"{self.name or 'data source'}: votes shape {self.votes.shape} != (N, C)")
            if not np.isfinite(self.votes).all() or (self.votes < 0).any():
                raise DataError(f"{self.name or 'data source'}: votes hold NaN, infinite or negative values")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.table["split"].to_numpy() == split)

    def subset(self, rows: np.ndarray) -> "Dataset":
        rows = np.asarray(rows)
        return Dataset(
            table=self.table.iloc[rows].reset_index(drop=True),
            images=self.images[rows],
            classes=list(self.classes),
            votes=None if self.votes is None else self.votes[rows],
            skipped=list(self.skipped),
            name=self.name,
        )


def check_under_roots(path: Path, roots: Sequence[str]) -> Path:
    """Resolve ``path`` and refuse it when ``roots`` is non-empty and it lies under none of them."""
    if "\0" in str(path):
        raise DataError(f"{str(path)!r}: a path cannot contain a NUL character")
    p = Path(path).expanduser().resolve()
    if roots:
        for r in roots:
            rr = Path(r).expanduser().resolve()
            if p == rr or rr in p.parents:
                return p
        raise DataError(f"{path}: outside the allowed data roots ({', '.join(roots)})")
    return p


def safe_join(base: Path, rel: str) -> Path:
    """Join a path read from a manifest/CSV to its folder; refuse absolute paths and ``..`` escapes."""
    if rel is None or str(rel).strip() == "":
        raise DataError(f"{base}: empty file name in the listing")
    rel = str(rel)
    if "\0" in rel:
        raise DataError(f"{rel!r}: a file name in the listing contains a NUL character")
    if os.path.isabs(rel) or rel.startswith(("\\", "/")) or (len(rel) > 1 and rel[1] == ":"):
        raise DataError(f"{rel}: absolute paths are not allowed in a listing (paths are relative to {base})")
    base_r = Path(base).resolve()
    p = (base_r / rel).resolve()
    if p != base_r and base_r not in p.parents:
        raise DataError(f"{rel}: path escapes its folder {base}")
    return p


def check_pixels(im, name: str) -> None:
    """Refuse an opened (header-only) image over :data:`MAX_IMAGE_PIXELS` before it is decoded.
    PIL's own guard is a warning that only ``warnings.catch_warnings`` turns into an error, and that
    context is not thread-safe: with images decoded on several threads, one thread leaving it restored
    the filters of another, and a 9,000 x 9,000 bomb was decoded now and then."""
    if im.width * im.height > MAX_IMAGE_PIXELS:
        raise DataError(f"{name}: image too large ({im.width}x{im.height} is over {MAX_IMAGE_PIXELS:,} pixels; "
                        "decompression-bomb guard)")


def decode_image(data_or_path, size: int) -> np.ndarray:
    """Open one image (a path or bytes), convert to 8-bit grayscale, resize to (size, size).

    Raises :class:`DataError` (one line) for anything that is not a readable image.
    16-bit, RGBA, palette and CMYK inputs are converted; a decompression bomb is refused.
    """
    import io

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    name = str(data_or_path) if not isinstance(data_or_path, (bytes, bytearray)) else "<upload>"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            src = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else data_or_path
            with Image.open(src) as im:
                check_pixels(im, name)
                im.load()
                if im.width < 1 or im.height < 1:
                    raise DataError(f"{name}: empty image")
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    a = np.asarray(im, dtype=np.float64)
                    hi = a.max() if a.size and a.max() > 0 else 1.0
                    im = Image.fromarray((a / hi * 255.0).clip(0, 255).astype(np.uint8))
                elif im.mode == "F":
                    a = np.nan_to_num(np.asarray(im, dtype=np.float64))
                    lo, hi = a.min(), a.max()
                    im = Image.fromarray(((a - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8))
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    im = im.convert("RGBA")
                    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(bg, im)
                im = im.convert("L")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8).copy()
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{name}: image too large (over {MAX_IMAGE_PIXELS:,} pixels; decompression-bomb guard)") from None
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except Exception as exc:
        raise DataError(f"{name}: not a readable image ({type(exc).__name__})") from None


def load_images(paths: Iterable[str], size: int, *, on_bad_image: str = "skip",
                workers: int | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Decode many files. Returns (images (M, S, S) uint8, kept row positions (M,), skipped list).

    ``on_bad_image="fail"`` raises :class:`DataError` at the first bad file instead.
    """
    from concurrent.futures import ThreadPoolExecutor

    if on_bad_image not in ("skip", "fail"):
        raise DataError(f"on_bad_image must be 'skip' or 'fail', not {on_bad_image!r}")
    paths = list(paths)

    def one(p: str):
        try:
            return decode_image(p, size), None
        except DataError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as ex:
        results = list(ex.map(one, paths))
    kept, imgs, skipped = [], [], []
    for i, (img, err) in enumerate(results):
        if err is not None:
            if on_bad_image == "fail":
                raise DataError(err)
            skipped.append((paths[i], err.split(": ", 1)[-1]))
        else:
            kept.append(i)
            imgs.append(img)
    arr = np.stack(imgs) if imgs else np.zeros((0, size, size), np.uint8)
    return arr, np.asarray(kept, dtype=np.int64), skipped


def ferplus_majority(votes10: np.ndarray) -> np.ndarray:
    """FERPlus's majority rule on (N, 10) vote counts (8 emotions, unknown, NF).

    Drop every count of 1, then the label is the emotion with a strict majority of what remains;
    -1 where there is none, or where the majority is unknown or not-a-face.
    """
    v = np.asarray(votes10, dtype=np.float64).copy()
    v[v == 1] = 0
    tot = v.sum(axis=1)
    arg = v.argmax(axis=1)
    top = v.max(axis=1)
    ok = (tot > 0) & (top * 2 > tot) & (arg < 8)
    return np.where(ok, arg, -1)


def make_table(*, ids: Sequence[str], source: str, split: Sequence[str], label: Sequence[int],
               classes: Sequence[str], path: Sequence[str] | None = None, **extra) -> pd.DataFrame:
    label = np.asarray(label, dtype=np.int64)
    df = pd.DataFrame({
        "id": [str(i) for i in ids],
        "source": source,
        "split": list(split),
        "label": label,
        "label_name": np.asarray(list(classes), dtype=object)[label] if len(label) else [],
        "path": list(path) if path is not None else [""] * len(label),
    })
    for k, v in extra.items():
        df[k] = list(v) if not isinstance(v, np.ndarray) else v
    return df
