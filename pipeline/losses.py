"""Losses: the Structured Gaussian Manifold loss (SGM, Algorithm 1) and the paper's baselines.

Each loss returns a dict of named terms plus ``"loss"`` (their weighted sum), so every term can be
tested alone. Shapes: z (B, D) float, labels (B,) int64, targets (B, C) float (soft P(w|x)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_class_means(z: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the classes present in the batch. Returns (means (P, D), present class ids (P,)).
    Gradients flow through the means."""
    present = torch.unique(labels)
    onehot = (labels[:, None] == present[None, :]).to(z.dtype)          # (B, P)
    counts = onehot.sum(0)                                              # (P,)
    means = (onehot.T @ z) / counts[:, None]
    return means, present


def sgm_posterior(z: torch.Tensor, means: torch.Tensor, sigma: float) -> torch.Tensor:
    """P(w_j | z_i) = softmax_j(-||z_i - mu_j||^2 / (2 sigma^2)), as a softmax of logits. (B, P)."""
    d2 = (z[:, None, :] - means[None, :, :]).pow(2).sum(-1)
    return torch.softmax(-d2 / (2.0 * sigma * sigma), dim=1)


def sgm_loss(z: torch.Tensor, labels: torch.Tensor, *, num_classes: int, sigma: float = 0.5,
             norm_lambda: float = 1e-3, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """SGM: L_rep = mean_i sum_j (P(w_j|z_i) - P(w_j|x_i))^2 over the classes present in the batch,
    plus lambda * mean_k ||z_k||_2. ``targets``: (B, C) soft labels (rows sum to 1), else one-hot.

    Classes absent from the batch are left out of the softmax (FERAtt's DGMMLoss); soft targets
    are restricted to the present classes and renormalised.
    """
    z = z.float()
    means, present = batch_class_means(z, labels, num_classes)
    post = sgm_posterior(z, means, sigma)                                  # (B, P)
    if targets is None:
        tgt = (labels[:, None] == present[None, :]).to(z.dtype)
    else:
        tgt = targets.to(z.dtype)[:, present]
        tgt = tgt / tgt.sum(1, keepdim=True).clamp_min(1e-12)
    rep = (post - tgt).pow(2).sum(1).mean()
    norm = z.norm(dim=1).mean()
    return {"loss": rep + norm_lambda * norm, "rep": rep, "norm": norm}


def triplet_loss(z: torch.Tensor, labels: torch.Tensor, *, triplets: int = 128, margin: float = 0.2,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Triplet baseline: ``triplets`` random (anchor, positive, negative) triplets per batch on
    L2-normalised embeddings, hinge on squared distances."""
    z = F.normalize(z.float(), dim=1)
    B = z.shape[0]
    dev = z.device
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(B, dtype=torch.bool, device=dev)
    pos_ok = same & ~eye
    neg_ok = ~same
    anchors_ok = pos_ok.any(1) & neg_ok.any(1)
    cand = torch.nonzero(anchors_ok).squeeze(1)
    if cand.numel() == 0:
        zero = z.sum() * 0.0
        return {"loss": zero, "triplet": zero, "active": zero}
    a = cand[torch.randint(cand.numel(), (triplets,), generator=generator, device="cpu").to(dev)]
    # sample a positive and a negative for each anchor via random scores masked by validity
    rp = torch.rand((triplets, B), generator=generator, device="cpu").to(dev)
    rn = torch.rand((triplets, B), generator=generator, device="cpu").to(dev)
    p = torch.where(pos_ok[a], rp, torch.full_like(rp, -1.0)).argmax(1)
    n = torch.where(neg_ok[a], rn, torch.full_like(rn, -1.0)).argmax(1)
    dap = (z[a] - z[p]).pow(2).sum(1)
    dan = (z[a] - z[n]).pow(2).sum(1)
    hinge = F.relu(dap - dan + margin)
    return {"loss": hinge.mean(), "triplet": hinge.mean(), "active": (hinge > 0).float().mean()}


def instance_loss(p: torch.Tensor, *, temperature: float = 0.2) -> dict[str, torch.Tensor]:
    """The within-class appearance term: NT-Xent (SimCLR's contrastive loss) on two augmented views.

    p: (2B, d) projections, rows i and i + B the two views of image i. Each view must pick its twin
    out of the other 2B - 2 images, its own classmates included, so the backbone keeps what tells
    one face from another beyond its class (glasses, a baby's proportions, the variant of an
    expression) as far as it survives crops, flips, rotation, contrast and erasing. The SGM term
    still decides where the embedding ``z`` puts the classes."""
    p = F.normalize(p.float(), dim=1)
    n = p.shape[0]
    b = n // 2
    sim = p @ p.T / temperature
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=p.device), float("-inf"))
    twin = torch.cat([torch.arange(b, n), torch.arange(0, b)]).to(p.device)
    nt = F.cross_entropy(sim, twin)
    return {"loss": nt, "instance": nt}


def softmax_loss(logits: torch.Tensor, labels: torch.Tensor, *, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Softmax cross-entropy baseline (the embedding is the layer before the classifier)."""
    logits = logits.float()
    if targets is not None:
        ce = -(targets.to(logits.dtype) * F.log_softmax(logits, 1)).sum(1).mean()
    else:
        ce = F.cross_entropy(logits, labels)
    return {"loss": ce, "ce": ce}
