"""Similar images: the index against brute force, image inputs decoded, a bad file refused."""
import io

import numpy as np
import pandas as pd
import pytest

from pipeline import similar as S
from pipeline.sources.base import DataError


def test_index_matches_brute_force():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 16)).astype(np.float32)
    q = rng.normal(size=(3, 16)).astype(np.float32)
    dist, rows = S.query(S.build_index(z), q, k=5)
    for m in range(3):
        d = np.sqrt(((z - q[m]) ** 2).sum(1))
        assert list(rows[m]) == list(np.argsort(d)[:5])
        assert np.allclose(dist[m], np.sort(d)[:5], atol=1e-4)
    assert S.query(S.build_index(z[:3]), q[0], k=10)[1].shape == (1, 3)


def test_to_image_accepts_arrays_bytes_and_paths(tmp_path):
    from PIL import Image

    a = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    assert S.to_image(a, 48).shape == (48, 48)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    assert S.to_image(buf.getvalue(), 48).dtype == np.uint8
    p = tmp_path / "x.png"
    p.write_bytes(buf.getvalue())
    assert np.array_equal(S.to_image(p, 48), S.to_image(buf.getvalue(), 48))
    with pytest.raises(DataError):
        S.to_image(b"not an image", 48)
    with pytest.raises(DataError):
        S.to_image(np.zeros((4, 4, 3), np.uint8), 48)


def test_similar_with_a_stub_embedder(tmp_path, monkeypatch):
    from pipeline.runs import create_run

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (30, 48, 48), dtype=np.uint8)
    z = imgs.reshape(30, -1)[:, :8].astype(np.float32)      # the stub embedder: first 8 pixels
    run = create_run(tmp_path / "run", config={"data": {"image_size": 48}}, classes=["a", "b"])
    run.put_table("items.parquet", pd.DataFrame({"id": [f"i{i}" for i in range(30)],
                                                 "label_name": ["a", "b"] * 15}))
    run.put_array("embeddings.npy", z)
    run.put_array("images.npy", imgs)
    run.save_manifest(status="complete")
    idx = S.SimilarIndex(run.path)
    monkeypatch.setattr(idx, "embed", lambda u8: u8.reshape(len(u8), -1)[:, :8].astype(np.float32))
    out = idx.similar(imgs[7], k=4)
    assert list(out.columns) == ["row", "id", "distance", "label_name"] and len(out) == 4
    assert out["row"].iloc[0] == 7 and out["distance"].iloc[0] == pytest.approx(0)
    assert out["id"].iloc[0] == "i7" and out["label_name"].iloc[0] == "b"
    assert out["distance"].is_monotonic_increasing
