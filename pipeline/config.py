"""Frozen configuration dataclasses. The CLI and the explorer's training form both build these;
they are stored in the run manifest and inside every checkpoint (as plain dicts)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    spec: str = "synthetic"           # see pipeline.sources.SOURCES for the forms
    image_size: int = 48               # images are resized to image_size x image_size grayscale
    on_bad_image: str = "skip"        # "skip" (count and go on) or "fail" (stop, naming the file)
    data_roots: tuple[str, ...] = ()   # when non-empty, a source path must lie under one of these
    labels_from: str = ""             # corrections applied to the loaded data (pipeline.corrections)
    parent: str = ""                  # the run these corrections were made on (lineage; "" = unknown)
    dedupe: bool = False               # leave duplicates out of training (pipeline.quality.dedupe_rows)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "light"           # "light" (4 conv blocks, CPU-friendly) or "resnet18"
    embedding_dim: int = 64


@dataclass(frozen=True)
class LossConfig:
    name: str = "sgm"                  # "sgm", "triplet" or "softmax"
    sigma: float = 0.5                 # SGM: fixed shared standard deviation
    norm_lambda: float = 1e-3          # SGM: weight of the embedding-norm penalty
    soft_targets: bool = True          # SGM: use vote distributions as P(w|x) when the source has them
    triplets: int = 128                # triplet: triplets per batch
    margin: float = 0.2                # triplet: margin on squared distances of L2-normalised embeddings


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    per_class: int = 32                # n images per class per batch
    steps_per_epoch: int = 0           # 0: enough steps to see the training split about once
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"              # "auto", "cpu", "cuda", "cuda:1", ...
    augment: bool = True
    compile: bool = False
    bf16: bool = True                  # autocast on CUDA only
    knn_k: int = 11
    crossfit: int = 0                  # K >= 2: also train K fold models for out-of-sample mislabel evidence


@dataclass(frozen=True)
class HierarchyConfig:
    levels: int = 1                    # L in Algorithm 2; 1 = plain Algorithm 1 training
    min_per_subclass: int = 64         # Mc
    max_components: int = 5            # cap for the fast BIC mode
    features: str = "auto"            # what sub-class mixtures fit on: "embedding", "posterior+votes",
                                       # or "auto" (posterior+votes when the data has crowd votes)
    topk: int = 16


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"]["data_roots"] = list(d["data"]["data_roots"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        def build(kind: type, sub: dict | None) -> Any:
            sub = dict(sub or {})
            names = {f.name for f in fields(kind)}
            unknown = set(sub) - names
            if unknown:
                raise ValueError(f"unknown {kind.__name__} field(s): {', '.join(sorted(unknown))}")
            if "data_roots" in sub:
                sub["data_roots"] = tuple(sub["data_roots"])
            return kind(**sub)

        return cls(
            data=build(DataConfig, d.get("data")),
            model=build(ModelConfig, d.get("model")),
            loss=build(LossConfig, d.get("loss")),
            train=build(TrainConfig, d.get("train")),
            hierarchy=build(HierarchyConfig, d.get("hierarchy")),
        )

    def replace(self, **kw: Any) -> "RunConfig":
        return replace(self, **kw)
