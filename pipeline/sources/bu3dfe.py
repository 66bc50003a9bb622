"""``bu3dfe:DIR``: BU-3DFE's 2D frontal renderings, labelled from their file names.

Names look like ``F0001_AN01WH_F2D.bmp``: subject (F/M + 4 digits), expression code + intensity
(00 for neutral, 01..04), race code, ``F2D``. Codes: AN anger, DI disgust, FE fear, HA happiness,
NE neutral, SA sadness, SU surprise (the 7 FER+ names, in FER+ order). Only ``_F2D`` images count (the
3D texture maps and other files are ignored); a well-formed name with an unknown code is an error.
Splits are 80/20 by subject (disjoint, see :func:`folder.subject_split`); subject, intensity and race
are kept as ``gt_subject``, ``gt_intensity``, ``gt_race``.
"""
from __future__ import annotations

import re

from .base import Dataset
from .folder import build_dataset, open_dir, subject_split
from .jaffe import CLASSES, coded_images  # the same seven expressions, coded the same way

NAME = re.compile(r"^([FM]\d{4})_([A-Z]{2})(\d{2})([A-Z]{2})_F2D\.[A-Za-z]+$", re.IGNORECASE)


def load(arg: str, cfg) -> Dataset:
    root = open_dir(arg, cfg, source="bu3dfe")
    rows = [(f, m.group(1).upper(), c, int(m.group(3)), m.group(4).upper())
            for f, m, c in coded_images(root, NAME, what="BU-3DFE", example="F0001_AN01WH_F2D.bmp")]
    split_of = subject_split(r[1] for r in rows)
    index = {c: i for i, c in enumerate(CLASSES)}
    return build_dataset(source="bu3dfe", name=f"bu3dfe:{root}", cfg=cfg,
                         ids=[r[0].relative_to(root).as_posix() for r in rows],
                         split=[split_of[r[1]] for r in rows],
                         label=[index[r[2]] for r in rows], classes=CLASSES,
                         paths=[str(r[0]) for r in rows],
                         extra={"gt_subject": [r[1] for r in rows], "gt_intensity": [r[3] for r in rows],
                                "gt_race": [r[4] for r in rows]})
