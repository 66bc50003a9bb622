"""explorer.groups: a group's range (centre / spread order) and near-identical frames collapsed."""
from __future__ import annotations

import numpy as np

from explorer import groups


def test_spread_covers_the_range_and_centre_starts_at_the_medoid():
    rng = np.random.default_rng(0)
    # one big tight cluster and three small far ones: nearest-the-centre shows only the big one
    z = np.concatenate([rng.normal(0, 0.1, (90, 2)), rng.normal((5, 0), 0.1, (4, 2)),
                        rng.normal((0, 5), 0.1, (3, 2)), rng.normal((-5, -5), 0.1, (3, 2))]).astype(np.float32)
    centre = groups.centre_order(z)[:8]
    assert (centre < 90).all()
    spread = groups.spread_order(z, 4)
    assert spread[0] < 90 and {int(p >= 90) + int(p >= 94) + int(p >= 97) for p in spread[1:]} == {1, 2, 3}
    assert sorted(groups.spread_order(z)) == list(range(100))  # every member, once


def test_near_identical_frames_collapse_into_one():
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 255, (48, 48)) for _ in range(2))
    noisy = [np.clip(a + rng.normal(0, 2, a.shape), 0, 255) for _ in range(5)]
    imgs = np.stack(noisy + [b]).astype(np.uint8)
    h = groups.dhash(imgs)
    kept, count = groups.collapse(np.arange(6), h)
    assert list(kept) == [0, 5] and list(count) == [5, 1]
    kept, count = groups.collapse(np.arange(6), h, bits=-1)  # nothing is within -1 bits: all kept
    assert len(kept) == 6
