"""Class-balanced batches: n images from each of the c classes per step (Algorithm 1, step 1).

A class with fewer than n training images is drawn with replacement (reported once by the
caller through :attr:`ClassBalancedSampler.small_classes`). Each epoch draws from a generator
seeded by (seed, epoch), so a run resumed at an epoch boundary sees exactly the same batches.
"""
from __future__ import annotations

import numpy as np


class ClassBalancedSampler:
    """labels: (N,) int over the rows to sample from; yields (c * n,) row-index arrays."""

    def __init__(self, labels: np.ndarray, *, per_class: int, seed: int = 0):
        labels = np.asarray(labels)
        if per_class < 1:
            raise ValueError("per_class must be at least 1")
        self.per_class = int(per_class)
        self.seed = int(seed)
        self.classes = np.unique(labels)
        self.pools = [np.flatnonzero(labels == c) for c in self.classes]
        self.small_classes = {int(c): len(p) for c, p in zip(self.classes, self.pools) if len(p) < per_class}

    @property
    def batch_size(self) -> int:
        return self.per_class * len(self.classes)

    def epoch(self, epoch: int, steps: int) -> list[np.ndarray]:
        """The ``steps`` batches of epoch ``epoch`` (deterministic in seed and epoch)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        n = self.per_class
        per_class_draws = []
        for pool in self.pools:
            if len(pool) < n:
                draws = rng.choice(pool, size=(steps, n), replace=True)
            else:
                # walk through shuffled copies of the pool so every image is seen before repeats
                need = steps * n
                reps = -(-need // len(pool))
                seq = np.concatenate([rng.permutation(pool) for _ in range(reps)])[:need]
                draws = seq.reshape(steps, n)
            per_class_draws.append(draws)
        stacked = np.stack(per_class_draws, axis=1)          # (steps, c, n)
        return [stacked[s].reshape(-1) for s in range(steps)]
