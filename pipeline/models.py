"""Backbones and the embedding head. All built with ``weights=None``: nothing is downloaded.

Input: (B, 1, S, S) float in [0, 1] (grayscale). Output: (B, D) float32 embeddings.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import BACKBONES


class LightNet(nn.Module):
    """Four conv blocks (32-64-128-256), global average pool, linear head. Trains at a few hundred
    images/s on a 2-core CPU, which is what the demo and the test suite need."""

    def __init__(self, embedding_dim: int = 64):
        super().__init__()
        chans = [1, 32, 64, 128, 256]
        blocks = []
        for i in range(4):
            blocks += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                blocks.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(chans[-1], embedding_dim)
        self.out_features = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


_LIGHT_MID = 11   # LightNet.features[:11]: (conv, bn, relu, pool) x 2, then the third conv-bn-relu


def mid_feature_maps(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) maps halfway up, where a pupil's position, a tear or a hand on a cheek still has
    cells of its own: LightNet's third block before its pool (128 channels at S/4); a torchvision
    ResNet's layer2 (128 channels)."""
    if hasattr(backbone, "features"):
        return backbone.features[:_LIGHT_MID](x)
    b = backbone
    return b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x))))))


def maps_after_mid(backbone: nn.Module, mid: torch.Tensor) -> torch.Tensor:
    """The maps before the global pool (LightNet's ``features``; a ResNet's layer4), from the
    mid-level ones: one forward pass gives both."""
    if hasattr(backbone, "features"):
        return backbone.features[_LIGHT_MID:](mid)
    return backbone.layer4(backbone.layer3(mid))


def resnet18_small(embedding_dim: int = 64) -> nn.Module:
    """torchvision ResNet18 for small grayscale faces: 3x3 stride-1 stem, no max-pool."""
    from torchvision.models import resnet18

    m = resnet18(weights=None, num_classes=embedding_dim)
    m.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    m.maxpool = nn.Identity()
    m.out_features = embedding_dim
    return m


class Embedder(nn.Module):
    """Backbone -> embedding; an optional linear classifier on top for the softmax baseline.

    ``normalize``: the embedding is L2-normalised (the triplet baseline: its loss works on the unit
    sphere, so kNN, K-means, retrieval and checkpoint choice must see the same normalised vectors).
    ``instance_dim`` > 0: a projection head on the pooled backbone features for the within-class
    appearance term (:func:`pipeline.losses.instance_loss`); ``forward(x, with_instance=True)`` then
    returns ``(z, projection)``. Training only: nothing downstream reads the projection."""

    def __init__(self, backbone: str = "light", embedding_dim: int = 64, num_classes: int = 0,
                 normalize: bool = False, instance_dim: int = 0):
        super().__init__()
        self.normalize = normalize
        if backbone == "light":
            self.backbone = LightNet(embedding_dim)
            width = 256
        elif backbone == "resnet18":
            self.backbone = resnet18_small(embedding_dim)
            width = 512
        else:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        self.classifier = nn.Linear(embedding_dim, num_classes) if num_classes else None
        self.instance_head = (nn.Sequential(nn.Linear(width, 128), nn.ReLU(inplace=True), nn.Linear(128, instance_dim))
                              if instance_dim else None)

    def forward(self, x: torch.Tensor, with_instance: bool = False):
        b = self.backbone
        proj = None
        if with_instance and self.instance_head is not None:
            pool = b.pool if isinstance(b, LightNet) else b.avgpool
            h = torch.flatten(pool(maps_after_mid(b, mid_feature_maps(b, x))), 1)
            z = b.head(h) if isinstance(b, LightNet) else b.fc(h)
            proj = self.instance_head(h)
        else:
            z = b(x)
        z = nn.functional.normalize(z.float(), dim=1) if self.normalize else z
        return z if proj is None else (z, proj)


INSTANCE_DIM = 64


def build_model(model_cfg, num_classes: int, loss_name: str, *, instance: bool = False) -> Embedder:
    """``instance``: with the projection head of the within-class appearance term (the run's
    ``loss.instance_weight`` > 0; checkpoints of such runs carry its weights)."""
    return Embedder(model_cfg.backbone, model_cfg.embedding_dim,
                    num_classes=num_classes if loss_name == "softmax" else 0,
                    normalize=loss_name == "triplet", instance_dim=INSTANCE_DIM if instance else 0)
