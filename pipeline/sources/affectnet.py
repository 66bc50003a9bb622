"""``affectnet:CSV``: AffectNet's manually annotated training.csv / validation.csv.

Columns: subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks, expression,
valence, arousal (validation.csv ships without the header line; both forms are read). Expression codes
0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt map to the FER+ classes
(:data:`base.FERPLUS_CLASSES` order); 8 none, 9 uncertain, 10 no-face are dropped; anything else is an error.

Images are found relative to the CSV's folder, or to a ``Manually_Annotated_Images`` folder beside or
inside it (AffectNet's own layout), and cropped to the face box when one is given. Split from the file
name: training* -> train, validation* -> test (AffectNet's test set is not public); any other name gets
the hashed 80/20 split of ``folder:``.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import one_line
from .base import (FERPLUS_CLASSES, MAX_IMAGE_PIXELS, DataError, Dataset, check_pixels, check_under_roots,
                   decode_image, safe_join)
from .folder import build_dataset, decode_many, hash_split, open_file

COLUMNS = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal"]
CODE_TO_CLASS = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust",
                 6: "anger", 7: "contempt"}
DROPPED = {8, 9, 10}   # none, uncertain, no-face
IMAGE_DIR = "Manually_Annotated_Images"
BOX = ["face_x", "face_y", "face_width", "face_height"]


def _read(path: Path) -> tuple[pd.DataFrame, int]:
    """The table and the file line number of its first data row."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, header=None)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        msg = one_line(exc, empty="")
        raise DataError(f"{path}: cannot read CSV ({type(exc).__name__}: {msg})") from None
    first = [str(c).strip() for c in df.iloc[0]] if len(df) else []
    if "subDirectory_filePath" in first or "expression" in first:
        df = df.iloc[1:].reset_index(drop=True)
        first_line = 2
        df.columns = first
        dup = sorted({c for c in first if first.count(c) > 1})
        if dup:
            raise DataError(f"{path}: duplicated column name(s) {', '.join(dup)}")
    elif df.shape[1] == len(COLUMNS):
        first_line = 1
        df.columns = COLUMNS     # AffectNet's validation.csv has no header line
    else:
        raise DataError(f"{path}: no AffectNet header and {df.shape[1]} columns; expected "
                        f"{', '.join(COLUMNS)}; found first row {', '.join(first[:9])}")
    missing = [c for c in ("subDirectory_filePath", "expression") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{path}: no rows below the header")
    return df, first_line


def _image_base(csv: Path, rel: list[str]) -> Path:
    """The folder the listed paths are relative to: the one where most of the first rows exist."""
    here = csv.parent
    cands = [here, here / IMAGE_DIR, here.parent / IMAGE_DIR]
    probe = rel[:20]
    best, hits = here, -1
    for c in cands:
        if not c.is_dir():
            continue
        n = 0
        for r in probe:
            try:
                n += safe_join(c, r).is_file()
            except DataError:
                pass
        if n > hits:
            best, hits = c, n
    return best


def _decode_crop(path: str, box: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    if box is None:
        return decode_image(path, size)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_pixels(im, path)
                im.load()
                x, y, w, h = box
                x0, y0 = max(0, x), max(0, y)
                x1, y1 = min(im.width, x + w), min(im.height, y + h)
                if x1 - x0 < 1 or y1 - y0 < 1:
                    raise DataError(f"{path}: face box {box} lies outside the {im.width}x{im.height} image")
                crop = im.crop((x0, y0, x1, y1))
                buf = io.BytesIO()
                crop.save(buf, format="TIFF")   # keeps every mode decode_image converts (16-bit, CMYK, alpha)
    except DataError:
        raise
    except Exception:
        return decode_image(path, size)     # raises decode_image's own one-line message
    try:
        return decode_image(buf.getvalue(), size)
    except DataError as exc:
        raise DataError(f"{path}: {str(exc).split(': ', 1)[-1]}") from None


def load(arg: str, cfg) -> Dataset:
    csv = open_file(arg, cfg, source="affectnet", what="training.csv")
    name = f"affectnet:{csv}"
    df, first_line = _read(csv)
    code = pd.to_numeric(df["expression"].str.strip(), errors="coerce")
    bad = code.isna() | ~code.isin(list(CODE_TO_CLASS) + sorted(DROPPED))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{csv}: line {i + first_line}: expression {df['expression'].iloc[i]!r} is not an AffectNet code "
                        f"0..10 (0-7 {', '.join(CODE_TO_CLASS.values())}; 8-10 dropped)")
    keep = ~code.isin(sorted(DROPPED))
    df, code = df[keep].reset_index(drop=True), code[keep].astype(int).to_numpy()
    if len(df) == 0:
        raise DataError(f"{csv}: every row has expression 8-10 (none, uncertain, no-face); nothing to load")
    rel = df["subDirectory_filePath"].str.strip().tolist()
    base = _image_base(csv, rel)
    files = [str(safe_join(base, r)) for r in rel]
    if cfg.data_roots:
        for f in files:
            check_under_roots(Path(f), tuple(cfg.data_roots))
    ids = [Path(r).as_posix() for r in rel]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DataError(f"{csv}: {dup!r} is listed twice")

    boxes: list[tuple[int, int, int, int] | None] = [None] * len(df)
    if all(c in df.columns for c in BOX):
        b = df[BOX].apply(lambda s: pd.to_numeric(s.str.strip(), errors="coerce")).to_numpy(dtype=np.float64)
        for i, (x, y, w, h) in enumerate(b):
            if np.isfinite([x, y, w, h]).all() and w > 0 and h > 0:
                boxes[i] = (int(x), int(y), int(w), int(h))

    stem = csv.stem.lower()
    if stem.startswith("train"):
        split = ["train"] * len(df)
    elif stem.startswith("val"):
        split = ["test"] * len(df)
    else:
        split = hash_split(ids)
    classes = FERPLUS_CLASSES
    index = {c: i for i, c in enumerate(classes)}
    size = cfg.image_size
    imgs, kept, skipped = decode_many(len(df), lambda i: _decode_crop(files[i], boxes[i], size), size,
                                      on_bad_image=cfg.on_bad_image, names=files, block=32)
    return build_dataset(source="affectnet", name=name, cfg=cfg, ids=ids, split=split,
                         label=[index[CODE_TO_CLASS[c]] for c in code], classes=classes, paths=files,
                         images=imgs, kept=kept, skipped=skipped)
