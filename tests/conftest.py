"""Shared test fixtures: where the shared FER+ data lives, and one tiny trained run per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
FER = SHARED_DATA / "fer"

os.environ.setdefault("OMP_NUM_THREADS", "2")


def tiny_config(**train_kw):
    from pipeline.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    kw = dict(epochs=2, per_class=8, steps_per_epoch=4, seed=0, device="cpu")
    kw.update(train_kw)
    return RunConfig(data=DataConfig(spec="synthetic:320"), model=ModelConfig(backbone="light", embedding_dim=16),
                     train=TrainConfig(**kw))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run trained for two short epochs on 320 synthetic faces (a few seconds)."""
    from pipeline.train import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    return train(tiny_config(), out, quiet=True)


@pytest.fixture
def fer_sample():
    p = FER / "sample"
    if not p.is_dir():
        pytest.skip(f"shared FER+ sample not found at {p}")
    return p
