"""``jaffe:DIR``: the JAFFE posed-expression set, labelled from its file names (``KA.AN1.39.tiff``).

Name = subject . expression code + repetition . image number . extension. Codes: AN anger, DI disgust,
FE fear, HA happiness, NE neutral, SA sadness, SU surprise (the 7 FER+ names, in FER+ order).
Files not named so are ignored; a well-formed name with an unknown code is an error. Splits are
80/20 by subject (subjects never straddle splits, see :func:`folder.subject_split`); the subject is
kept as ``gt_subject``.
"""
from __future__ import annotations

import re

from .base import FERPLUS_CLASSES, DataError, Dataset
from .folder import IMAGE_EXTS, build_dataset, list_images, open_dir, subject_split

CLASSES = FERPLUS_CLASSES[:7]
CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral",
         "SA": "sadness", "SU": "surprise"}
NAME = re.compile(r"^([A-Za-z]{2,3})\.([A-Za-z]{2})(\d*)\.(\d+)\.[A-Za-z]+$")


def load(arg: str, cfg) -> Dataset:
    root = open_dir(arg, cfg, source="jaffe")
    rows = []
    for f in list_images(root):
        m = NAME.match(f.name)
        if not m:
            continue
        code = m.group(2).upper()
        if code not in CODES:
            raise DataError(f"{f}: expression code {code!r} is not one of {', '.join(CODES)}")
        rows.append((f, m.group(1).upper(), CODES[code]))
    if not rows:
        raise DataError(f"{root}: no JAFFE images found (names like KA.AN1.39.tiff, "
                        f"extensions {', '.join(sorted(e[1:] for e in IMAGE_EXTS))})")
    split_of = subject_split(s for _, s, _ in rows)
    index = {c: i for i, c in enumerate(CLASSES)}
    return build_dataset(source="jaffe", name=f"jaffe:{root}", cfg=cfg,
                         ids=[f.relative_to(root).as_posix() for f, _, _ in rows],
                         split=[split_of[s] for _, s, _ in rows],
                         label=[index[c] for _, _, c in rows], classes=CLASSES,
                         paths=[str(f) for f, _, _ in rows],
                         extra={"gt_subject": [s for _, s, _ in rows]})
