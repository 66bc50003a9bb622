"""The one place for the training recipe: the choices (losses, backbones, sub-class features), the
frozen configuration dataclasses with their defaults, :func:`recipe` (the defaults that depend on the
data and the machine) and :meth:`RunConfig.validate`.

The CLI's flags, the explorer's training form and ``analyze`` all start from here; a run stores its
``RunConfig`` in the manifest and in every checkpoint (as a plain dict) and :attr:`pipeline.runs.Run.config`
reads it back as a ``RunConfig``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import one_line

LOSSES = ("sgm", "triplet", "softmax")
METRIC_LOSSES = ("sgm", "triplet")           # the losses Algorithm 2 (levels > 1) can re-train with
BACKBONES = ("light", "resnet18")
FEATURES = ("embedding", "posterior+votes")  # what sub-class mixtures fit on
SUBCLASS_FEATURES = ("auto",) + FEATURES     # auto: the embedding (sub-classes come from the images)
BAD_IMAGE = ("skip", "fail")
MAX_EPOCHS = 1000
MAX_LEVELS = 8


class ConfigError(ValueError):
    """A configuration that cannot be trained. One-line message."""


@dataclass(frozen=True)
class DataConfig:
    spec: str = "synthetic"           # see pipeline.sources.SOURCES for the forms
    image_size: int = 48               # images are resized to image_size x image_size grayscale
    on_bad_image: str = "skip"        # one of BAD_IMAGE: "skip" (count and go on) or "fail" (stop, naming the file)
    data_roots: tuple[str, ...] = ()   # when non-empty, a source path must lie under one of these
    labels_from: str = ""             # corrections applied to the loaded data (pipeline.corrections)
    parent: str = ""                  # the run these corrections were made on (lineage; "" = unknown)
    dedupe: bool = False               # leave duplicates out of training (pipeline.quality.dedupe_rows)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "light"           # one of BACKBONES; recipe(): resnet18 on a GPU, light on a CPU
    embedding_dim: int = 64


@dataclass(frozen=True)
class LossConfig:
    name: str = "sgm"                  # one of LOSSES
    sigma: float = 0.5                 # SGM: fixed shared standard deviation
    norm_lambda: float = 1e-3          # SGM: weight of the embedding-norm penalty
    soft_targets: bool = True          # SGM: use vote distributions as P(w|x) when the source has them
    triplets: int = 128                # triplet: triplets per batch
    margin: float = 0.2                # triplet: margin on squared distances of L2-normalised embeddings
    instance_weight: float = 0.0       # weight of the within-class appearance term (two views; 0: off)
    instance_temperature: float = 0.2  # its contrastive temperature


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30                   # recipe(): 20 on synthetic data
    per_class: int = 32                # n images per class per batch; recipe(): 16 with the light network
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
    features: str = "auto"            # one of SUBCLASS_FEATURES: what sub-class mixtures fit on
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

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        """Write as JSON (``train --config FILE`` reads it back), atomically."""
        from .runs import write_json

        write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: Path | str) -> "RunConfig":
        """A config file written by :meth:`save`, or a run's manifest.json (its ``config``)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{p}: not a readable JSON config ({one_line(exc)})") from None
        if isinstance(d, dict) and isinstance(d.get("config"), dict) and "schema_version" in d:
            d = d["config"]
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: a config file holds a JSON object")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{p}: {one_line(exc)}") from None

    # -- checks --------------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Raise :class:`ConfigError` (one line) for a choice training cannot run; return self."""
        d, m, lo, t, h = self.data, self.model, self.loss, self.train, self.hierarchy
        if not str(d.spec).strip() or any(c in str(d.spec) for c in "\n\r\0"):
            raise ConfigError("data source is empty or not one line")
        if d.on_bad_image not in BAD_IMAGE:
            raise ConfigError(f"on_bad_image must be {' or '.join(BAD_IMAGE)}, not {d.on_bad_image!r}")
        if not 8 <= int(d.image_size) <= 512:
            raise ConfigError(f"image size must be between 8 and 512, not {d.image_size}")
        if m.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {m.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if int(m.embedding_dim) < 2:
            raise ConfigError(f"embedding dim must be at least 2, not {m.embedding_dim}")
        if lo.name not in LOSSES:
            raise ConfigError(f"unknown loss {lo.name!r}; choose one of {', '.join(LOSSES)}")
        if not 1 <= int(t.epochs) <= MAX_EPOCHS:
            raise ConfigError(f"epochs must be between 1 and {MAX_EPOCHS}, not {t.epochs}")
        if int(t.per_class) < 1:
            raise ConfigError(f"per-class must be at least 1, not {t.per_class}")
        if not 1 <= int(h.levels) <= MAX_LEVELS:
            raise ConfigError(f"levels must be between 1 and {MAX_LEVELS}, not {h.levels}")
        if h.levels > 1 and lo.name not in METRIC_LOSSES:
            raise ConfigError(f"--levels > 1 (Algorithm 2) needs a metric loss: {' or '.join(METRIC_LOSSES)}")
        if h.features not in SUBCLASS_FEATURES:
            raise ConfigError(f"sub-class features must be auto, {' or '.join(FEATURES)}, not {h.features!r}")
        if not (isinstance(lo.sigma, (int, float)) and math.isfinite(lo.sigma) and lo.sigma > 0):
            raise ConfigError(f"sigma must be a positive number, not {lo.sigma}")
        if not (isinstance(t.lr, (int, float)) and math.isfinite(t.lr) and t.lr > 0):
            raise ConfigError(f"learning rate must be a positive number, not {t.lr}")
        for name, v, lo_ok in (("instance weight", lo.instance_weight, 0.0), ("instance temperature",
                                                                             lo.instance_temperature, None)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and (v >= 0 if lo_ok is not None else v > 0)):
                raise ConfigError(f"{name} must be a {'non-negative' if lo_ok is not None else 'positive'} number, not {v}")
        if t.crossfit == 1 or t.crossfit < 0:
            raise ConfigError(f"crossfit takes K >= 2 folds (0: none), not {t.crossfit}")
        return self


def is_synthetic(spec: str) -> bool:
    return str(spec).strip().lower().startswith("synthetic")


def auto_backbone(device: str = "auto") -> str:
    """resnet18 when training will run on a GPU, the light network on a CPU."""
    device = str(device or "auto")
    if device.startswith("cuda"):
        return "resnet18"
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return "resnet18"
    return "light"


def default_crossfit(device: str) -> int:
    """Cross-fit folds when none are asked for: 2 when training on a GPU (out-of-sample mislabel
    evidence; two more models, each on half the training split), 0 on a CPU, where those two
    models would add to the demo's few minutes; ``--crossfit 2`` turns it on there. Off under
    torchrun (WORLD_SIZE > 1): the fold models are trained by rank 0 alone."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 0
    if device == "auto":
        import torch

        return 2 if torch.cuda.is_available() else 0
    return 2 if str(device).startswith("cuda") else 0


def recipe(spec: str = DataConfig.spec, backbone: str | None = None, device: str = TrainConfig.device,
           **overrides: Any) -> RunConfig:
    """The default :class:`RunConfig` for training on ``spec``: the dataclass defaults plus the
    choices that depend on the data and the machine. ``backbone`` None or "auto": resnet18 on a GPU,
    light on a CPU. ``overrides``: ``"section.field"`` keywords, e.g. ``recipe(spec, **{"train.epochs": 5})``
    (None values are skipped; see :func:`with_values`).

    - epochs: 20 on synthetic data, else 30;
    - per_class: 16 with the light network (on a CPU it runs about twice the images per second at 16
      per class than at 32, and takes twice the steps per epoch, measured in docs/RESULTS.md), else 32;
    - crossfit: :func:`default_crossfit` (2 folds on a GPU, none on a CPU).
    """
    bb = auto_backbone(device) if backbone in (None, "", "auto") else backbone
    cfg = RunConfig(data=DataConfig(spec=spec), model=ModelConfig(backbone=bb),
                    train=TrainConfig(device=device, epochs=20 if is_synthetic(spec) else TrainConfig.epochs,
                                      per_class=16 if bb == "light" else TrainConfig.per_class,
                                      crossfit=default_crossfit(device)))
    return with_values(cfg, overrides) if overrides else cfg


def with_values(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """``cfg`` with ``{"section.field": value}`` replaced (None values are skipped)."""
    sections: dict[str, dict[str, Any]] = {}
    for key, v in values.items():
        if v is None:
            continue
        sec, _, name = key.partition(".")
        sub = getattr(cfg, sec, None)
        if sub is None or name not in {f.name for f in fields(sub)}:
            raise ConfigError(f"unknown config field {key!r}")
        sections.setdefault(sec, {})[name] = tuple(v) if name == "data_roots" else v
    return cfg.replace(**{sec: replace(getattr(cfg, sec), **kw) for sec, kw in sections.items()})
