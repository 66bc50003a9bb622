"""``csv:FILE``: a listing with columns ``path,label[,split][,votes][,gt_*]``.

* ``path``: image file relative to FILE's folder (absolute paths and ``..`` escapes are refused).
* ``label``: a class name. Classes are the sorted unique names; when every label is an integer the
  integers are kept as names, sorted numerically.
* ``split``: train / val / test (also training, valid, validation, testing); without the column each
  image gets the seeded 80/20 train/test split hashed from its path, as ``folder:`` does.
* votes, either ``vote_<class>`` columns (their order then fixes the class list, and every label must be
  one of them) or one column per class named exactly as the class.
* ``gt_*`` columns pass through unchanged; other columns are ignored.
"""
from __future__ import annotations

import csv as _csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import one_line
from .base import DataError, Dataset, check_under_roots, safe_join
from .folder import SPLIT_ALIASES, build_dataset, hash_split, open_file

RESERVED = {"path", "label", "split"}


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for row in _csv.reader(fh):
                if any(c.strip() for c in row):
                    return [c.strip() for c in row]
    except (OSError, UnicodeDecodeError, _csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV header ({type(exc).__name__})") from None
    raise DataError(f"{path}: empty file")


def _check_row_widths(path: Path, n_header: int) -> None:
    """Refuse a row with more (non-empty) fields than the header: pandas would silently shift that
    row's columns (turning its first field into an index), so a path would be read as a label."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = _csv.reader(fh, skipinitialspace=True)
            header_seen = False
            for row in reader:
                if not header_seen:
                    header_seen = any(c.strip() for c in row)
                    continue
                if len(row) > n_header and any(c.strip() for c in row[n_header:]):
                    raise DataError(f"{path}: line {reader.line_num}: {len(row)} fields but the header names "
                                    f"{n_header} columns")
    except (OSError, UnicodeDecodeError, _csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({type(exc).__name__}: {exc})") from None


def _is_int(s: str) -> bool:
    s = s.strip()
    return bool(s) and (s.isdigit() or (s[0] in "+-" and s[1:].isdigit()))


def load(arg: str, cfg) -> Dataset:
    path = open_file(arg, cfg, source="csv", what="listing.csv")
    name = f"csv:{path}"
    cols = _header(path)
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise DataError(f"{path}: duplicated column name(s) {', '.join(repr(c) for c in dup)}")
    missing = [c for c in ("path", "label") if c not in cols]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(cols)}")
    reserved = [c for c in cols if c in RESERVED]
    _check_row_widths(path, len(cols))
    try:
        with warnings.catch_warnings():   # empty trailing fields ("a.png,happy,") are dropped quietly
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True, index_col=False)
        # path/label/split read again as plain text: a class called "None" or "NA" is not a missing label
            core = pd.read_csv(path, usecols=lambda c: str(c).strip() in RESERVED, dtype=str, keep_default_na=False,
                               na_values=[""], encoding="utf-8-sig", skipinitialspace=True, index_col=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        msg = one_line(exc, empty="")
        raise DataError(f"{path}: cannot read CSV ({type(exc).__name__}: {msg})") from None
    df.columns = [str(c).strip() for c in df.columns]
    core.columns = [str(c).strip() for c in core.columns]
    for c in reserved:
        df[c] = core[c]
    if len(df) == 0:
        raise DataError(f"{path}: no rows below the header")

    # labels
    lab = df["label"]
    if lab.isna().any() or (lab.str.strip() == "").any():
        i = int(np.flatnonzero((lab.isna() | (lab.fillna("").str.strip() == "")).to_numpy())[0])
        raise DataError(f"{path}: line {i + 2}: empty (NaN) label")
    lab = lab.str.strip()
    if lab.map(_is_int).all():
        lab = lab.map(lambda s: str(int(s)))
        uniq = sorted(set(lab), key=int)
    else:
        uniq = sorted(set(lab))

    # votes and the class list
    vote_cols = [c for c in df.columns if c.startswith("vote_") and len(c) > 5]
    if vote_cols:
        classes = [c[5:] for c in vote_cols]
    else:
        classes = uniq
        named = [c for c in classes if c in df.columns and c not in RESERVED]
        if named and len(named) < len(classes):
            lacking = [c for c in classes if c not in named]
            raise DataError(f"{path}: vote columns for some classes but not for {', '.join(lacking[:5])}")
        vote_cols = named
    index = {c: i for i, c in enumerate(classes)}
    unknown = [l for l in uniq if l not in index]
    if unknown:
        i = int(np.flatnonzero(lab.isin(unknown).to_numpy())[0])
        raise DataError(f"{path}: line {i + 2}: label {lab.iloc[i]!r} is not in the class list "
                        f"({', '.join(classes)}) given by the vote columns")
    votes = None
    if vote_cols:
        v = df[vote_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v) | (v < 0)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(f"{path}: line {r + 2}: vote column {vote_cols[c]!r} holds a missing, "
                            f"non-numeric or negative value")
        votes = v.astype(np.float32)

    # paths
    base = path.parent
    rel = df["path"]
    if rel.isna().any():
        i = int(np.flatnonzero(rel.isna().to_numpy())[0])
        raise DataError(f"{path}: line {i + 2}: empty path")
    rel = rel.str.strip().tolist()
    files = [str(safe_join(base, r)) for r in rel]
    if cfg.data_roots:
        for f in files:
            check_under_roots(Path(f), tuple(cfg.data_roots))
    ids = [Path(r).as_posix() for r in rel]
    seen: dict[str, int] = {}
    for i, k in enumerate(files):
        if k in seen:
            raise DataError(f"{path}: rows {seen[k] + 2} and {i + 2} list the same file {rel[i]!r}")
        seen[k] = i

    # splits
    if "split" in df.columns:
        sp = df["split"].fillna("").str.strip().str.lower()
        bad = ~sp.isin(list(SPLIT_ALIASES))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: line {i + 2}: unknown split {df['split'].iloc[i]!r}; use train, val or test")
        split = sp.map(SPLIT_ALIASES).tolist()
    else:
        split = hash_split(ids)

    extra = {c: df[c].to_numpy() for c in df.columns if c.startswith("gt_")}
    return build_dataset(source="csv", name=name, cfg=cfg, ids=ids, split=split,
                         label=[index[l] for l in lab], classes=classes, paths=files,
                         votes=votes, extra=extra)
