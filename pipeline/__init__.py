"""Subclass Explorer's pipeline: data sources, SGM training, sub-classes, maps, metrics, runs.

Conventions used throughout: N images, C classes, D embedding size, S image size.
No Streamlit import anywhere in this package.
"""
from .config import DataConfig, HierarchyConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from .runs import Run, RunError, create_run, list_runs, open_run
from .sources import DataError, Dataset, load_source
from .train import evaluate, train


def analyze(run_path, **kw):
    """Sub-classes, maps, mislabel candidates, confusion and summary for a run (see pipeline.analysis)."""
    from .analysis import analyze as _analyze

    return _analyze(run_path, **kw)


def similar(run_path, image, k: int = 16):
    """The k images of a run nearest to a new image (a path, bytes or an (S, S) uint8 array)."""
    from .similar import similar as _similar

    return _similar(run_path, image, k=k)

__all__ = [
    "DataConfig", "HierarchyConfig", "LossConfig", "ModelConfig", "RunConfig", "TrainConfig",
    "Run", "RunError", "create_run", "list_runs", "open_run",
    "DataError", "Dataset", "load_source",
    "train", "evaluate", "analyze", "similar",
]
__version__ = "0.1.0"
