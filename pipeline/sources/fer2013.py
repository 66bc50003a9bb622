"""``fer2013:CSV[,VOTES]``: Kaggle's fer2013.csv, optionally relabelled with FERPlus's fer2013new.csv.

fer2013.csv has columns ``emotion`` (0..6: angry, disgust, fear, happy, sad, surprise, neutral),
``pixels`` (2304 space-separated grey levels, row-major 48x48) and ``Usage`` (Training / PublicTest /
PrivateTest -> train / val / test). Image ids are ``fer%07d`` of the row number, FERPlus's own names.

With VOTES (fer2013new.csv: Usage, Image name, then the 10 FERPlus vote columns; row i belongs to row i
of fer2013.csv) labels follow the FER+ majority rule, classes are :data:`base.FERPLUS_CLASSES`, votes
are the 8 emotion counts with counts of 1 zeroed, rows without an image name or a majority are dropped,
and the original label is kept as ``gt_fer2013_label``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import one_line
from .base import FERPLUS_CLASSES, DataError, Dataset, ferplus_majority
from .ferplus import VOTE_COLUMNS, soft_votes
from .folder import build_dataset, decode_many, open_file

FER2013_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
SIDE = 48


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        msg = one_line(exc, empty="")
        raise DataError(f"{path}: cannot read CSV ({type(exc).__name__}: {msg})") from None


def _split_arg(arg: str) -> tuple[str, str | None]:
    """'CSV' or 'CSV,VOTES'; a CSV path that itself holds a comma still works when it exists."""
    arg = (arg or "").strip()
    if "," not in arg or Path(arg).expanduser().exists():
        return arg, None
    csv, votes = arg.rsplit(",", 1)
    return csv.strip(), votes.strip() or None


def _usage(path: Path, usage: pd.Series) -> list[str]:
    u = usage.fillna("").astype(str).str.strip().str.lower()
    bad = sorted(set(u) - set(USAGE))
    if bad:
        raise DataError(f"{path}: unknown Usage value(s) {bad[:5]}; expected Training, PublicTest or PrivateTest")
    return u.map(USAGE).tolist()


def load(arg: str, cfg) -> Dataset:
    csv_arg, votes_arg = _split_arg(arg)
    csv = open_file(csv_arg, cfg, source="fer2013", what="fer2013.csv")
    vpath = open_file(votes_arg, cfg, source="fer2013", what="fer2013new.csv") if votes_arg else None
    name = f"fer2013:{csv}" + (f",{vpath}" if vpath else "")
    df = _read_csv(csv, dtype=str, keep_default_na=False)
    df.columns = [str(c).strip() for c in df.columns]
    need = ["emotion", "pixels", "Usage"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns) or 'none'}")
    if len(df) == 0:
        raise DataError(f"{csv}: no rows")
    split = _usage(csv, df["Usage"])
    emo = pd.to_numeric(df["emotion"].str.strip(), errors="coerce")
    bad = emo.isna() | ~emo.isin(range(len(FER2013_CLASSES)))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{csv}: line {i + 2}: emotion {df['emotion'].iloc[i]!r} is not a class index 0..6 "
                        f"({', '.join(FER2013_CLASSES)})")
    emo = emo.to_numpy().astype(np.int64)
    ids = [f"fer{i:07d}" for i in range(len(df))]
    rows = np.arange(len(df))
    classes, label, votes, extra = FER2013_CLASSES, emo, None, {}

    if vpath is not None:
        vt = _read_csv(vpath, dtype=str, keep_default_na=False)
        vt.columns = [str(c).strip() for c in vt.columns]
        vmissing = [c for c in ["Image name"] + VOTE_COLUMNS if c not in vt.columns]
        if vmissing:
            raise DataError(f"{vpath}: missing column(s) {', '.join(vmissing)}; found {', '.join(vt.columns) or 'none'}")
        if len(vt) != len(df):
            raise DataError(f"{vpath}: {len(vt)} rows but {csv} has {len(df)}; row i of one must be row i of the other")
        v10 = vt[VOTE_COLUMNS].apply(lambda s: pd.to_numeric(s.str.strip(), errors="coerce"))
        badv = v10.isna().any(axis=1) | (v10 < 0).any(axis=1)
        if badv.any():
            i = int(np.flatnonzero(badv.to_numpy())[0])
            raise DataError(f"{vpath}: line {i + 2} has a missing, negative or non-numeric vote count")
        v10 = v10.to_numpy(dtype=np.float64)
        names = vt["Image name"].str.strip()
        maj = ferplus_majority(v10)
        rows = np.flatnonzero((names != "").to_numpy() & (maj >= 0))
        if len(rows) == 0:
            raise DataError(f"{vpath}: no row has an image name and a FER+ majority label")
        ids = names.str.rsplit(".", n=1).str[0].tolist()
        classes, label, votes = FERPLUS_CLASSES, maj, soft_votes(v10)
        extra = {"gt_fer2013_label": np.asarray(FER2013_CLASSES, dtype=object)[emo]}

    pixels = df["pixels"].tolist()
    size = cfg.image_size

    def one(k: int) -> np.ndarray:
        i = rows[k]
        try:
            # C-speed parse: a full fer2013.csv holds 80 million numbers
            a = np.fromstring(pixels[i], dtype=np.int64, sep=" ") if pixels[i].strip() else np.zeros(0, np.int64)
        except (ValueError, DeprecationWarning):
            raise DataError(f"{csv}: line {i + 2}: pixels are not all integers") from None
        if a.size != SIDE * SIDE:
            raise DataError(f"{csv}: line {i + 2}: {a.size} pixel values, expected {SIDE * SIDE}")
        if a.min() < 0 or a.max() > 255:
            raise DataError(f"{csv}: line {i + 2}: pixel values outside 0..255")
        img = a.astype(np.uint8).reshape(SIDE, SIDE)
        if size != SIDE:
            from PIL import Image

            img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), dtype=np.uint8)
        return img

    imgs, kept, skipped = decode_many(len(rows), one, size, on_bad_image=cfg.on_bad_image,
                                      names=[f"{csv}:line {i + 2}" for i in rows])
    sel = lambda seq: [seq[i] for i in rows]  # noqa: E731
    return build_dataset(source="fer2013", name=name, cfg=cfg, ids=sel(ids), split=sel(split),
                         label=np.asarray(label)[rows], classes=classes, paths=[""] * len(rows),
                         votes=None if votes is None else votes[rows],
                         extra={k: v[rows] for k, v in extra.items()},
                         images=imgs, kept=kept, skipped=skipped)
