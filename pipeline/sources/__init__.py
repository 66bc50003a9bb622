"""Data sources. ``load_source(spec, cfg)`` turns a ``--data`` spec into a :class:`Dataset`.

Spec forms (the part after the first ``:`` is the source's argument):

=====================  ==================================================================
``synthetic[:N]``      embedded seeded generator of 48x48 faces in the 8 FER+ classes
``ferplus:DIR``        Microsoft FERPlus layout (FER2013Train/Valid/Test with label.csv),
                       pixels from fer*.png or from ``ferplus_webp.npz`` in DIR
``fer2013:CSV[,VOTES]`` Kaggle fer2013.csv, optionally joined with FERPlus fer2013new.csv
``folder:DIR``         one sub-folder per class, optional train/ val/ test/ above them
``csv:FILE``           path,label[,split][,vote columns]; paths relative to FILE
``jaffe:DIR``          JAFFE file names (KA.AN1.39.tiff)
``bu3dfe:DIR``         BU-3DFE file names (F0001_AN01WH_F2D.bmp)
``affectnet:CSV``      AffectNet's training/validation CSV (subDirectory_filePath, expression)
=====================  ==================================================================
"""
from __future__ import annotations

import importlib

from .base import FERPLUS_CLASSES, DataError, Dataset, decode_image, ferplus_majority, load_images

SOURCES = {
    "synthetic": "synthetic",
    "ferplus": "ferplus",
    "fer2013": "fer2013",
    "folder": "folder",
    "csv": "csvfile",
    "jaffe": "jaffe",
    "bu3dfe": "bu3dfe",
    "affectnet": "affectnet",
}


def parse_spec(spec: str) -> tuple[str, str]:
    spec = (spec or "").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SOURCES:
        raise DataError(f"unknown data source {kind!r} in --data {spec!r}; choose one of {', '.join(SOURCES)}")
    return kind, arg.strip()


def load_source(spec: str, cfg=None) -> Dataset:
    """Load the data source named by ``spec`` with a :class:`pipeline.config.DataConfig`."""
    from ..config import DataConfig

    cfg = cfg or DataConfig(spec=spec)
    kind, arg = parse_spec(spec)
    mod = importlib.import_module(f".{SOURCES[kind]}", __name__)
    ds = mod.load(arg, cfg)
    ds.name = ds.name or spec
    return ds


__all__ = ["Dataset", "DataError", "FERPLUS_CLASSES", "SOURCES", "load_source", "parse_spec",
           "decode_image", "load_images", "ferplus_majority"]
