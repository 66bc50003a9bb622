"""Subclass Explorer's pipeline: data sources, SGM training, sub-classes, maps, metrics, runs.

Conventions used throughout: N images, C classes, D embedding size, S image size.
No Streamlit import anywhere in this package. The verbs live in their modules, imported where
used (``pipeline.train.train``, ``pipeline.evaluate.evaluate``, ``pipeline.analysis.analyze``,
``pipeline.similar.similar``); they are not re-exported here, because names like ``train`` and
``similar`` would shadow the submodules of the same name.
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
