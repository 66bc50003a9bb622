"""How a group of images (a sub-class, a tag, a confusion cell) is laid out in its gallery, pure.

A gallery of the images nearest the medoid shows a group's most typical members only: on a folder
of video frames that is a few people in consecutive frames. These orders show its range:

- ``centre``: nearest the group's mean embedding first (the medoid leads);
- ``spread``: farthest-point order in the embedding, starting at the medoid: each next image is
  the member farthest from all shown so far, so the first page covers the group's extent;
- near-identical frames (the same picture up to a little noise: a small difference-hash
  distance) are collapsed into the first of them, which carries the count.
"""
from __future__ import annotations

import numpy as np

NEAR_IDENTICAL_BITS = 4   # of 64 difference-hash bits: consecutive frames of one shot, not two people


def centre_order(z: np.ndarray) -> np.ndarray:
    """Positions 0..n-1 of ``z`` (n, D), nearest the mean first."""
    z = np.asarray(z, dtype=np.float32)
    if len(z) == 0:
        return np.zeros(0, np.int64)
    d = ((z - z.mean(0)) ** 2).sum(1)
    return np.argsort(d, kind="stable").astype(np.int64)


def spread_order(z: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Farthest-point order of ``z`` (n, D) from the medoid (the member nearest the mean); the
    first ``limit`` positions (all by default). O(n * limit)."""
    z = np.asarray(z, dtype=np.float32)
    n = len(z)
    if n == 0:
        return np.zeros(0, np.int64)
    m = n if limit is None else min(int(limit), n)
    first = int(centre_order(z)[0])
    out = [first]
    dmin = ((z - z[first]) ** 2).sum(1)
    dmin[first] = -1.0
    for _ in range(m - 1):
        j = int(np.argmax(dmin))
        if dmin[j] < 0:
            break
        out.append(j)
        dmin = np.minimum(dmin, ((z - z[j]) ** 2).sum(1))
        dmin[out] = -1.0
    return np.asarray(out, dtype=np.int64)


def dhash(images: np.ndarray) -> np.ndarray:
    """64-bit difference hashes of (n, H, W) uint8 images: 9x8 area means, left-right differences."""
    imgs = np.asarray(images, dtype=np.float32)
    n, h, w = imgs.shape
    ys = np.linspace(0, h, 9).astype(int)
    xs = np.linspace(0, w, 10).astype(int)
    small = np.empty((n, 8, 9), np.float32)
    for i in range(8):
        for j in range(9):
            small[:, i, j] = imgs[:, ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:max(xs[j + 1], xs[j] + 1)].mean((1, 2))
    bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(n, 64)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def collapse(order: np.ndarray, hashes: np.ndarray, *, bits: int = NEAR_IDENTICAL_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Walk ``order`` (positions into ``hashes``); keep a position unless its hash is within
    ``bits`` of one already kept. Returns (kept positions in order, how many each one stands for)."""
    order = np.asarray(order, dtype=np.int64)
    hh = np.asarray(hashes, dtype=np.uint64)
    kept_h = np.zeros(len(order), dtype=np.uint64)
    kept = np.zeros(len(order), dtype=np.int64)
    count = np.zeros(len(order), dtype=np.int64)
    m = 0
    for p in order:
        if m:
            d = _POP8[np.bitwise_xor(kept_h[:m], hh[p]).view(np.uint8)].reshape(m, 8).sum(1, dtype=np.int64)
            j = int(np.argmin(d))
            if d[j] <= bits:
                count[j] += 1
                continue
        kept_h[m], kept[m], count[m] = hh[p], p, 1
        m += 1
    return kept[:m].copy(), count[:m].copy()
