"""``pipeline train``'s entry: :func:`train` runs a :class:`~pipeline.trainer.Trainer` into a run directory.

Where the parts live: the trainer (Algorithm 1, the DGMS level loop of Algorithm 2, validation,
the finishing pass) :mod:`pipeline.trainer`; cross-fit fold models :mod:`pipeline.crossfit`; the
run files a trained model writes (embeddings, predictions, metrics) :mod:`pipeline.outputs`;
augmentation :mod:`pipeline.augment`; one step and the LR schedule :mod:`pipeline.step`; torchrun
:mod:`pipeline.distributed`; ``pipeline evaluate`` :mod:`pipeline.evaluate`.
"""
from __future__ import annotations

from pathlib import Path

from .config import RunConfig
from .runs import Run
from .sources import Dataset
from .trainer import Trainer


def train(cfg: RunConfig, out: Path | str, *, resume: bool = False, quiet: bool = False,
          progress_bar: bool = True, dataset: Dataset | None = None) -> Run:
    """Train per ``cfg`` into the run directory ``out``; returns the complete :class:`Run`."""
    return Trainer(cfg, Path(out), resume=resume, quiet=quiet, progress_bar=progress_bar, dataset=dataset).run()

