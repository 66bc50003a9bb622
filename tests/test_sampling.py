import numpy as np

from pipeline.sampling import ClassBalancedSampler


def test_batches_are_class_balanced_and_deterministic():
    y = np.array([0] * 50 + [1] * 30 + [2] * 5)
    s = ClassBalancedSampler(y, per_class=8, seed=1)
    b = s.epoch(0, 4)
    assert len(b) == 4 and all(len(x) == 24 for x in b)
    for x in b:
        assert np.bincount(y[x], minlength=3).tolist() == [8, 8, 8]
    assert all(np.array_equal(p, q) for p, q in zip(b, ClassBalancedSampler(y, per_class=8, seed=1).epoch(0, 4)))
    assert not all(np.array_equal(p, q) for p, q in zip(b, s.epoch(1, 4)))
    assert s.small_classes == {2: 5}


def test_large_classes_see_every_image_before_repeats():
    y = np.array([0] * 16 + [1] * 16)
    seen = np.concatenate(ClassBalancedSampler(y, per_class=4, seed=0).epoch(0, 4))
    assert sorted(seen.tolist()) == list(range(32))
