"""2-D maps: shapes and seeds, and a stored map read back instead of recomputed."""
import os

import numpy as np
import pandas as pd
import pytest

from pipeline import maps
from pipeline.runs import create_run, open_run


FAST = {"n_iter": 30, "early_exaggeration_iter": 30}   # t-SNE costs ~16 ms an iteration at any N


@pytest.fixture()
def z():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(c, 1.0, (60, 8)) for c in (0, 6, 12)]).astype(np.float32)


@pytest.fixture()
def run(tmp_path, z):
    r = create_run(tmp_path / "run", config={"train": {"seed": 0}}, classes=["a", "b", "c"])
    r.put_table("items.parquet", pd.DataFrame({"id": [f"i{i}" for i in range(len(z))],
                                               "label": np.repeat([0, 1, 2], 60)}))
    r.put_array("embeddings.npy", z)
    r.save_manifest(status="complete")
    return open_run(r.path)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_shape_dtype_and_seed(z, method):
    a = maps.compute_map(z, method=method, seed=1, **(FAST if method == "tsne" else {}))
    b = maps.compute_map(z, method=method, seed=1, **(FAST if method == "tsne" else {}))
    assert a.shape == (len(z), 2) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)


def test_tsne_keeps_clusters_apart(z):
    y = maps.compute_map(z, method="tsne", seed=0, **FAST)
    cents = np.stack([y[i * 60:(i + 1) * 60].mean(0) for i in range(3)])
    spread = max(np.linalg.norm(y[i * 60:(i + 1) * 60] - cents[i], axis=1).mean() for i in range(3))
    gaps = [np.linalg.norm(cents[i] - cents[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_bad_method_and_parameter():
    with pytest.raises(ValueError, match="unknown map method"):
        maps.compute_map(np.zeros((5, 2)), method="mds")
    with pytest.raises(ValueError, match="unknown tsne parameter"):
        maps.compute_map(np.zeros((5, 2)), method="tsne", perplexty=3)


def test_key_depends_on_parameters_and_fills_defaults():
    assert maps.map_key("tsne") == maps.map_key("tsne", perplexity=30.0)
    assert maps.map_key("tsne") != maps.map_key("tsne", perplexity=10.0)
    assert maps.map_key("tsne", seed=0) != maps.map_key("tsne", seed=1)
    assert maps.map_key("pca") != maps.map_key("tsne")


def test_stored_map_is_read_back_not_recomputed(run, monkeypatch):
    calls = []
    real = maps.compute_map

    def counting(z, **kw):
        calls.append(kw["method"])
        return real(z, **kw)

    monkeypatch.setattr(maps, "compute_map", counting)
    a = maps.get_or_compute(run, "tsne", **FAST)
    assert calls == ["tsne"]
    entry = maps.list_maps(run)[0]
    path = run.path / entry["file"]
    mtime = path.stat().st_mtime_ns
    # a fresh open of the run (another process, say) reads the same file back
    again = open_run(run.path)
    b = maps.get_or_compute(again, "tsne", **FAST)
    assert calls == ["tsne"] and path.stat().st_mtime_ns == mtime
    assert np.array_equal(a, b) and b.dtype == np.float32
    # other parameters: a second file, both listed
    maps.get_or_compute(again, "tsne", n_iter=40, early_exaggeration_iter=30)
    maps.get_or_compute(again, "pca")
    assert calls == ["tsne", "tsne", "pca"]
    idx = maps.list_maps(open_run(run.path))
    assert sorted(e["method"] for e in idx) == ["pca", "tsne", "tsne"]
    assert all(e["file"].startswith("analysis/maps/") and e["file"].endswith(".npy") for e in idx)
    assert {e["params"]["n_iter"] for e in idx if e["method"] == "tsne"} == {30, 40}
    r3 = open_run(run.path)
    for e in idx:                                   # round-trip through the manifest
        assert r3.array(e["file"]).shape == (r3.embeddings().shape[0], 2)


def test_changed_embeddings_are_recomputed(run, monkeypatch):
    a = maps.get_or_compute(run, "pca")
    run.put_array("embeddings.npy", np.asarray(run.embeddings()) * np.float32(-1) + 1)
    run.save_manifest()
    calls = []
    real = maps.compute_map
    monkeypatch.setattr(maps, "compute_map", lambda z, **kw: calls.append(1) or real(z, **kw))
    maps.get_or_compute(open_run(run.path), "pca")
    assert calls == [1] and len(maps.list_maps(open_run(run.path))) == 1


@pytest.mark.slow
def test_umap_shape_and_seed(z):
    a = maps.compute_map(z, method="umap", seed=0, n_epochs=50)
    b = maps.compute_map(z, method="umap", seed=0, n_epochs=50)
    assert a.shape == (len(z), 2) and a.dtype == np.float32 and np.array_equal(a, b)


def test_large_tsne_fits_a_sample_and_places_the_rest(z, monkeypatch):
    """Above max_fit, t-SNE fits on a seeded sample; every other point is placed by transform,
    near its own cluster. The fitted model sees only max_fit points."""
    from openTSNE import TSNE

    seen = []
    real_fit = TSNE.fit
    monkeypatch.setattr(TSNE, "fit", lambda self, X, *a, **k: seen.append(len(X)) or real_fit(self, X, *a, **k))
    y = maps.compute_map(z, method="tsne", seed=0, max_fit=90, transform_iter=20, **FAST)
    assert seen == [90]
    assert y.shape == (len(z), 2) and np.isfinite(y).all()
    # placed points land in their own cluster: nearest fitted centroid is their cluster's
    cents = np.stack([y[i * 60:(i + 1) * 60].mean(0) for i in range(3)])
    near = np.argmin(((y[:, None] - cents[None]) ** 2).sum(-1), axis=1)
    assert (near == np.repeat([0, 1, 2], 60)).mean() > 0.95
    again = maps.compute_map(z, method="tsne", seed=0, max_fit=90, transform_iter=20, **FAST)
    assert np.array_equal(y, again)


def test_max_fit_is_part_of_the_key_and_checked(z):
    assert maps.map_key("tsne") != maps.map_key("tsne", max_fit=1000)
    assert maps.map_key("umap") != maps.map_key("umap", max_fit=1000)
    with pytest.raises(ValueError, match="max_fit"):
        maps.compute_map(z, method="tsne", max_fit=2)


@pytest.mark.slow
def test_large_umap_fits_a_sample_and_places_the_rest(z):
    y = maps.compute_map(z, method="umap", seed=0, n_epochs=50, max_fit=90)
    assert y.shape == (len(z), 2) and np.isfinite(y).all()
    cents = np.stack([y[i * 60:(i + 1) * 60].mean(0) for i in range(3)])
    near = np.argmin(((y[:, None] - cents[None]) ** 2).sum(-1), axis=1)
    assert (near == np.repeat([0, 1, 2], 60)).mean() > 0.95
