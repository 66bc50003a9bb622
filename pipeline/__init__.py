"""Subclass Explorer's pipeline: data sources, SGM training, sub-classes, maps, metrics, runs.

Conventions used throughout: N images, C classes, D embedding size, S image size.
No Streamlit import anywhere in this package.
"""
from .config import DataConfig, HierarchyConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from .runs import Run, RunError, create_run, list_runs, open_run
from .sources import DataError, Dataset, load_source

__all__ = [
    "DataConfig", "HierarchyConfig", "LossConfig", "ModelConfig", "RunConfig", "TrainConfig",
    "Run", "RunError", "create_run", "list_runs", "open_run",
    "DataError", "Dataset", "load_source",
]
__version__ = "0.1.0"
