"""``jaffe:DIR``: the JAFFE posed-expression set, labelled from its file names (``KA.AN1.39.tiff``).

Name = subject . expression code + repetition . image number . extension. Codes: AN anger, DI disgust,
FE fear, HA happiness, NE neutral, SA sadness, SU surprise (the 7 FER+ names, in FER+ order).
Files not named so are ignored; a well-formed name with an unknown code is an error. Splits are
80/20 by subject (subjects never straddle splits, see :func:`folder.subject_split`); the subject is
kept as ``gt_subject``.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import FERPLUS_CLASSES, DataError, Dataset
from .folder import IMAGE_EXTS, build_dataset, list_images, open_dir, subject_split

CLASSES = FERPLUS_CLASSES[:7]
CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral",
         "SA": "sadness", "SU": "surprise"}
NAME = re.compile(r"^([A-Za-z]{2,3})\.([A-Za-z]{2})(\d*)\.(\d+)\.[A-Za-z]+$")


def coded_images(root: Path, name: re.Pattern, *, what: str, example: str) -> list[tuple[Path, re.Match, str]]:
    """(file, name match, class) for every image under ``root`` whose name ``name`` matches, group 2
    holding the expression code (JAFFE's and BU-3DFE's naming). Other files are ignored; a matching
    name with an unknown code, or no matching image at all, is a one-line :class:`DataError`."""
    out = []
    for f in list_images(root):
        m = name.match(f.name)
        if not m:
            continue
        code = m.group(2).upper()
        if code not in CODES:
            raise DataError(f"{f}: expression code {code!r} is not one of {', '.join(CODES)}")
        out.append((f, m, CODES[code]))
    if not out:
        raise DataError(f"{root}: no {what} images found (names like {example}, "
                        f"extensions {', '.join(sorted(e[1:] for e in IMAGE_EXTS))})")
    return out


def load(arg: str, cfg) -> Dataset:
    root = open_dir(arg, cfg, source="jaffe")
    rows = [(f, m.group(1).upper(), c) for f, m, c in coded_images(root, NAME, what="JAFFE", example="KA.AN1.39.tiff")]
    split_of = subject_split(s for _, s, _ in rows)
    index = {c: i for i, c in enumerate(CLASSES)}
    return build_dataset(source="jaffe", name=f"jaffe:{root}", cfg=cfg,
                         ids=[f.relative_to(root).as_posix() for f, _, _ in rows],
                         split=[split_of[s] for _, s, _ in rows],
                         label=[index[c] for _, _, c in rows], classes=CLASSES,
                         paths=[str(f) for f, _, _ in rows],
                         extra={"gt_subject": [s for _, s, _ in rows]})
