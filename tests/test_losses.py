"""SGM against a slow, obvious loop; its invariants as hypothesis properties; the baselines."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from pipeline.losses import batch_class_means, sgm_loss, sgm_posterior, softmax_loss, triplet_loss


def slow_sgm(z, labels, sigma, lam, targets=None):
    """PAPER.md steps 3-6 written as loops over samples and classes."""
    z = z.tolist()
    labels = list(labels)
    present = sorted(set(labels))
    D = len(z[0])
    means = {}
    for c in present:
        members = [z[i] for i in range(len(z)) if labels[i] == c]
        means[c] = [sum(m[d] for m in members) / len(members) for d in range(D)]
    total = 0.0
    for i in range(len(z)):
        logits = [-sum((z[i][d] - means[c][d]) ** 2 for d in range(D)) / (2 * sigma ** 2) for c in present]
        mx = max(logits)
        ex = [math.exp(l - mx) for l in logits]
        post = [e / sum(ex) for e in ex]
        if targets is None:
            tgt = [1.0 if labels[i] == c else 0.0 for c in present]
        else:
            raw = [targets[i][c] for c in present]
            tgt = [r / sum(raw) for r in raw]
        total += sum((p - t) ** 2 for p, t in zip(post, tgt))
    rep = total / len(z)
    norm = sum(math.sqrt(sum(v * v for v in zi)) for zi in z) / len(z)
    return rep + lam * norm, rep, norm


def test_sgm_matches_slow_loop_on_hand_placed_points():
    z = torch.tensor([[0.0, 0.0], [0.2, 0.1], [1.0, 1.0], [1.1, 0.8], [0.4, 0.6], [-1.0, 0.5]])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    out = sgm_loss(z, y, num_classes=4, sigma=0.5, norm_lambda=1e-2)
    want, rep, norm = slow_sgm(z, y.tolist(), 0.5, 1e-2)
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)
    assert out["rep"].item() == pytest.approx(rep, rel=1e-5)
    assert out["norm"].item() == pytest.approx(norm, rel=1e-5)


def test_sgm_soft_targets_match_slow_loop():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(12, 3, generator=g)
    y = torch.tensor([0, 1, 2, 3] * 3)
    votes = torch.rand(12, 5, generator=g) + 0.01
    t = votes / votes.sum(1, keepdim=True)
    out = sgm_loss(z, y, num_classes=5, sigma=0.7, norm_lambda=0.0, targets=t)
    want, _, _ = slow_sgm(z, y.tolist(), 0.7, 0.0, targets=t.tolist())
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)


def test_posterior_is_a_stable_softmax_far_from_the_means():
    z = torch.tensor([[1e3, 0.0]])
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    p = sgm_posterior(z, means, 0.5)
    assert torch.isfinite(p).all() and p.sum().item() == pytest.approx(1.0)
    assert p[0, 1].item() == pytest.approx(1.0)


batches = st.integers(min_value=2, max_value=5).flatmap(
    lambda c: st.tuples(st.just(c), st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=10_000)))


@settings(max_examples=40, deadline=None)
@given(batches)
def test_sgm_is_non_negative_and_permutation_invariant(args):
    c, n, seed = args
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(c * n, 4, generator=g) * 2
    y = torch.arange(c).repeat_interleave(n)
    a = sgm_loss(z, y, num_classes=c, sigma=0.5, norm_lambda=1e-3)
    perm = torch.randperm(c * n, generator=g)
    b = sgm_loss(z[perm], y[perm], num_classes=c, sigma=0.5, norm_lambda=1e-3)
    assert a["loss"].item() >= 0 and a["rep"].item() >= 0
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-5, abs=1e-7)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_absent_classes_get_no_gradient_and_change_nothing(seed):
    """sgm_loss itself: classes 1, 3 and 4 are absent from the batch; whatever soft-target mass
    they carry, and however many classes there are, the loss and its gradient are those of the
    compact 3-class problem (classes 0, 2, 5 renumbered 0, 1, 2, targets restricted to them)."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(9, 3, generator=g)
    y = torch.tensor([0, 0, 0, 2, 2, 2, 5, 5, 5])
    t = torch.rand(9, 6, generator=g) + 0.05
    t = t / t.sum(1, keepdim=True)

    def loss_and_grad(labels, targets, num_classes):
        z = z0.clone().requires_grad_(True)
        out = sgm_loss(z, labels, num_classes=num_classes, sigma=0.5, norm_lambda=1e-3, targets=targets)
        out["loss"].backward()
        return out["loss"].item(), z.grad

    full, g_full = loss_and_grad(y, t, 6)
    assert torch.isfinite(g_full).all()
    # the compact problem: only the present classes exist
    compact = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    small, g_small = loss_and_grad(compact, t[:, [0, 2, 5]], 3)
    # float32: renormalising a row with extra mass rounds differently, hence the tolerances
    assert full == pytest.approx(small, rel=1e-5, abs=1e-7)
    assert torch.allclose(g_full, g_small, rtol=1e-4, atol=1e-6)
    # moving target mass around the absent classes, or adding more absent classes, changes nothing
    t2 = t.clone()
    t2[:, [1, 3, 4]] = torch.rand(9, 3, generator=g) * 5
    t2 = t2 / t2.sum(1, keepdim=True)
    moved, g_moved = loss_and_grad(y, t2, 6)
    more, g_more = loss_and_grad(y, torch.cat([t, torch.rand(9, 4, generator=g)], 1), 10)
    for val, grad in ((moved, g_moved), (more, g_more)):
        assert val == pytest.approx(full, rel=1e-6, abs=1e-9)
        assert torch.allclose(grad, g_full, rtol=1e-5, atol=1e-7)     # float32 sums in another order


def test_sgm_gradient_pulls_points_towards_their_class():
    z = torch.tensor([[0.0, 0.0], [0.9, 0.0], [1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    sgm_loss(z, y, num_classes=2, sigma=0.5, norm_lambda=0.0)["loss"].backward()
    # point 1 (class 0) sits next to class 1: descending the gradient moves it left
    assert z.grad[1, 0].item() > 0


def test_triplet_loss_is_zero_when_classes_are_far_apart_and_positive_when_mixed():
    y = torch.tensor([0] * 4 + [1] * 4)
    far = torch.cat([torch.tensor([[1.0, 0.0]]).repeat(4, 1), torch.tensor([[-1.0, 0.0]]).repeat(4, 1)])
    g = torch.Generator().manual_seed(0)
    assert triplet_loss(far, y, triplets=64, margin=0.2, generator=g)["loss"].item() == 0.0
    mixed = torch.randn(8, 2, generator=g)
    assert triplet_loss(mixed, torch.tensor([0, 1] * 4), triplets=64, margin=0.5, generator=g)["loss"].item() > 0


def test_softmax_loss_matches_cross_entropy():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    y = torch.tensor([0, 2])
    want = torch.nn.functional.cross_entropy(logits, y).item()
    assert softmax_loss(logits, y)["loss"].item() == pytest.approx(want)
    onehot = torch.nn.functional.one_hot(y, 3).float()
    assert softmax_loss(logits, y, targets=onehot)["loss"].item() == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- within-class appearance term
def slow_nt_xent(p, t):
    """SimCLR's NT-Xent written as a loop: row i's positive is its other view (i +/- B)."""
    p = [v / np.linalg.norm(v) for v in p.tolist()]
    n = len(p)
    b = n // 2
    total = 0.0
    for i in range(n):
        j = i + b if i < b else i - b
        sims = [float(np.dot(p[i], p[k])) / t for k in range(n) if k != i]
        pos = float(np.dot(p[i], p[j])) / t
        total += -(pos - math.log(sum(math.exp(s) for s in sims)))
    return total / n


def test_instance_loss_matches_slow_loop_and_prefers_twins():
    from pipeline.losses import instance_loss

    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 8, generator=g)
    views = torch.cat([a, a + 0.05 * torch.randn(5, 8, generator=g)])
    got = float(instance_loss(views, temperature=0.2)["instance"])
    assert got == pytest.approx(slow_nt_xent(views, 0.2), rel=1e-5)
    # twins that are not each other's nearest rows cost more than twins that are
    shuffled = torch.cat([a, a[torch.tensor([1, 2, 3, 4, 0])]])
    assert float(instance_loss(shuffled, temperature=0.2)["instance"]) > got + 1.0


def test_training_step_with_the_instance_term_updates_backbone_and_head():
    from pipeline.augment import step_generator
    from pipeline.config import LossConfig, RunConfig, TrainConfig
    from pipeline.models import build_model
    from pipeline.sources.synthetic import generate
    from pipeline.step import make_step

    ds = generate(96, seed=1, votes=False)
    cfg = RunConfig(loss=LossConfig(instance_weight=0.5), train=TrainConfig(device="cpu"))
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=ds.num_classes, loss_name="sgm", instance=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = make_step(model, opt, cfg, ds.num_classes, torch.device("cpu"))
    head0 = model.instance_head[0].weight.detach().clone()
    x = torch.from_numpy(np.ascontiguousarray(ds.images[:32]))
    y = torch.from_numpy(ds.table["label"].to_numpy()[:32].astype(np.int64))
    terms = step(x, y, None, step_generator(0, 0, 0))
    assert set(terms) >= {"loss", "rep", "instance"} and all(math.isfinite(v) for v in terms.values())
    assert terms["loss"] == pytest.approx(terms["rep"] + 1e-3 * terms["norm"] + 0.5 * terms["instance"], rel=1e-4)
    assert not torch.equal(head0, model.instance_head[0].weight)
    # the embedding is still what the model returns by default (analysis never sees the projection)
    with torch.no_grad():
        assert model(x[:4].float()[:, None] / 255).shape == (4, cfg.model.embedding_dim)


@pytest.mark.parametrize("backbone", ["light", "resnet18"])
def test_the_instance_projection_reads_the_same_pooled_features_as_the_embedding(backbone):
    """with_instance=True returns the embedding the plain forward returns (same pooled maps through
    the same head) and a projection of them, for both backbones."""
    from pipeline.config import ModelConfig
    from pipeline.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, embedding_dim=16), num_classes=8, loss_name="sgm",
                        instance=True).eval()
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        z, proj = model(x, with_instance=True)
        assert torch.allclose(z, model(x), atol=1e-5)
    assert z.shape == (3, 16) and proj.shape[0] == 3 and torch.isfinite(proj).all()
