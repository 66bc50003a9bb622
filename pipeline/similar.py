"""Similar images: a nearest-neighbour index over a run's embeddings, queried with new pictures.

Conventions: N images in the run, D embedding size, S image size, M query images.
:class:`SimilarIndex` is built once per run (the explorer keeps it as a cached resource); the
embedder is loaded only when a picture (not an embedding) is asked about.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .neighbours import exact_knn
from .runs import IMAGES_ARRAY, Run, open_run

__all__ = ["build_index", "query", "SimilarIndex", "similar", "to_image"]


def build_index(z: np.ndarray) -> np.ndarray:
    """z: (N, D) float -> the index :func:`query` searches: the embeddings as float32 (one picture
    against every image is an exact brute force, milliseconds at 450k; :mod:`pipeline.neighbours`)."""
    return np.ascontiguousarray(z, dtype=np.float32)


def query(index: np.ndarray, q: np.ndarray, *, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """q: (M, D) -> (distances (M, k') float64, rows (M, k') int64), k' = min(k, N), nearest first."""
    q = np.atleast_2d(np.asarray(q, dtype=np.float32))
    idx, dist = exact_knn(index, q, max(1, int(k)))
    return dist, idx


def to_image(image: Any, size: int) -> np.ndarray:
    """A file path, bytes, or an (S, S) uint8 array -> (S, S) uint8 at ``size``.

    Anything that is not a readable image raises :class:`pipeline.sources.DataError` (one line).
    """
    from .sources.base import DataError, decode_image

    if isinstance(image, np.ndarray):
        if image.ndim != 2 or image.dtype != np.uint8:
            raise DataError(f"image array must be (S, S) uint8, got {image.shape} {image.dtype}")
        if image.shape != (size, size):
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.uint8)
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), size)
    return decode_image(str(image), size)


class SimilarIndex:
    """A run's embeddings in a kNN index, plus the run's model for embedding new pictures."""

    def __init__(self, run: Run | str | Path):
        self.run = run if isinstance(run, Run) else open_run(run)
        self.z = np.asarray(self.run.embeddings(), dtype=np.float32)
        self.items = self.run.items()
        self.index = build_index(self.z)
        self._model = None

    @property
    def image_size(self) -> int:
        if self.run.has(IMAGES_ARRAY):
            return int(self.run.array(IMAGES_ARRAY).shape[-1])
        return int(self.run.config.data.image_size)

    def embed(self, images_u8: np.ndarray) -> np.ndarray:
        """(M, S, S) uint8 -> (M, D) float32 with the run's model (loaded on first use)."""
        from . import embed

        if self._model is None:
            self._model = embed.load_embedder(self.run)
        return embed.embed_images(self._model, images_u8, device="cpu")

    def neighbours(self, q: np.ndarray, *, k: int = 16) -> pd.DataFrame:
        """q: (D,) one embedding -> DataFrame(row, id, distance, label_name), nearest first."""
        dist, idx = query(self.index, q, k=k)
        rows = idx[0]
        return pd.DataFrame({
            "row": rows,
            "id": self.items["id"].to_numpy()[rows],
            "distance": dist[0].astype(np.float64),
            "label_name": self.items["label_name"].to_numpy()[rows],
        })

    def similar(self, image: Any, *, k: int = 16) -> pd.DataFrame:
        """A file path, bytes or (S, S) uint8 array -> its k nearest run images."""
        img = to_image(image, self.image_size)
        q = self.embed(img[None])
        return self.neighbours(q[0], k=k)


def similar(run_path: str | Path | Run, image: Any, k: int = 16) -> pd.DataFrame:
    """The ``k`` run images nearest to ``image`` (path, bytes or (S, S) uint8):
    DataFrame(row, id, distance, label_name), nearest first."""
    return SimilarIndex(run_path).similar(image, k=k)
