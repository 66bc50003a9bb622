"""Data sources: each preset on tiny fixtures in its real on-disk format, the FER+ loaders on the shared
real data (../shared/data/fer beside the repository), and every kind of bad input."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.config import DataConfig
from pipeline.sources import FERPLUS_CLASSES, DataError, load_source
from pipeline.sources import ferplus as ferplus_mod
from pipeline.sources.folder import hash_split, subject_split

FER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer"
SAMPLE = FER / "sample"
FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
HAVE_SAMPLE = all((SAMPLE / f / "label.csv").is_file() for f in FOLDERS)
HAVE_FULL = (FER / "ferplus_webp.npz").is_file() and all((FER / f / "label.csv").is_file() for f in FOLDERS)
needs_sample = pytest.mark.skipif(not HAVE_SAMPLE, reason=f"shared FER+ sample not found at {SAMPLE} (CI lays ../shared beside the repo)")
needs_full = pytest.mark.skipif(not HAVE_FULL, reason=f"shared FER+ data (label.csv + ferplus_webp.npz) not found at {FER}")
VOTE_COLS = FERPLUS_CLASSES + ["unknown", "NF"]


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


# --------------------------------------------------------------------------- fixtures and helpers
def brute_majority(counts) -> int:
    """FERPlus's rule written out plainly: drop 1s, strict majority of the rest, not unknown/NF."""
    c = [0 if x == 1 else x for x in counts]
    tot = sum(c)
    for k, x in enumerate(c):
        if tot > 0 and 2 * x > tot:
            return k if k < 8 else -1
    return -1


def read_sample_labels(folder: str) -> pd.DataFrame:
    df = pd.read_csv(SAMPLE / folder / "label.csv", header=None)
    df.columns = ["image", "box"] + VOTE_COLS
    return df


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """(40, 48, 48) uint8 face crops: the shared sample PNGs when present, else seeded noise."""
    if HAVE_SAMPLE:
        names = read_sample_labels("FER2013Train")["image"][:40]
        return np.stack([png_pixels(SAMPLE / "FER2013Train" / n) for n in names])
    return np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)


def save(img: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image at all")
    return path


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


# --------------------------------------------------------------------------- ferplus: real data
@needs_sample
def test_ferplus_sample_pngs_follow_the_majority_rule():
    ds = load_source(f"ferplus:{SAMPLE}", cfg())
    assert ds.classes == FERPLUS_CLASSES and ds.skipped == []
    t = ds.table
    want_rows = []
    for folder, split in FOLDERS.items():
        for _, r in read_sample_labels(folder).iterrows():
            counts = [int(r[c]) for c in VOTE_COLS]
            lab = brute_majority(counts)
            if lab >= 0:
                want_rows.append((r["image"][:-4], split, lab, [0 if x == 1 else x for x in counts[:8]], folder))
    assert len(t) == len(want_rows) and len(t) < 450       # some sample rows have no majority
    by_id = {w[0]: w for w in want_rows}
    for i, row in t.iterrows():
        w = by_id[row["id"]]
        assert (row["split"], row["label"], row["label_name"]) == (w[1], w[2], FERPLUS_CLASSES[w[2]])
        np.testing.assert_array_equal(ds.votes[i], np.asarray(w[3], np.float32))
    assert ds.votes.dtype == np.float32 and ds.images.shape == (len(t), 48, 48)
    # pixels are the PNGs themselves
    for i in (0, len(t) // 2, len(t) - 1):
        np.testing.assert_array_equal(ds.images[i], png_pixels(Path(t["path"][i])))
    assert set(t["split"]) == {"train", "val", "test"}


@needs_sample
def test_ferplus_image_size_resizes(tmp_path):
    ds = load_source(f"ferplus:{SAMPLE}", cfg(image_size=32))
    assert ds.images.shape[1:] == (32, 32) and ds.images.dtype == np.uint8


@needs_full
def test_ferplus_full_set_from_npz_matches_published_counts():
    t0 = time.perf_counter()
    ds = load_source(f"ferplus:{FER}", cfg())
    took = time.perf_counter() - t0
    counts = ds.table["split"].value_counts().to_dict()
    assert counts == {"train": 25045, "val": 3191, "test": 3137}
    assert ds.images.shape == (31373, 48, 48) and ds.votes.shape == (31373, 8)
    assert not (ds.votes == 1).any() and (ds.table["path"] == "").all()
    assert took < 60, f"decoding the full FER+ set took {took:.1f}s"
    if HAVE_SAMPLE:   # the WebP copy is within a few grey levels of the original PNGs
        pos = {k: i for i, k in enumerate(ds.table["id"])}
        for name in read_sample_labels("FER2013Valid")["image"][:30]:
            if name[:-4] in pos:
                diff = np.abs(ds.images[pos[name[:-4]]].astype(int) - png_pixels(SAMPLE / "FER2013Valid" / name))
                assert diff.mean() < 4


def _mini_ferplus(src: Path, dst: Path, per_folder: int = 20, *, pngs: bool = True,
                  folders=tuple(FOLDERS)) -> Path:
    """Copy the first rows of the shared sample into dst (PNGs, or a ferplus_webp.npz instead)."""
    webp, offsets, fold, names = [], [0], [], []
    for folder in folders:
        lines = (src / folder / "label.csv").read_text().splitlines()[:per_folder]
        (dst / folder).mkdir(parents=True, exist_ok=True)
        (dst / folder / "label.csv").write_text("\n".join(lines) + "\n")
        for line in lines:
            n = line.split(",", 1)[0]
            if pngs:
                (dst / folder / n).write_bytes((src / folder / n).read_bytes())
            else:
                buf = io.BytesIO()
                Image.open(src / folder / n).convert("L").save(buf, format="WEBP", quality=90)
                webp.append(np.frombuffer(buf.getvalue(), np.uint8))
                offsets.append(offsets[-1] + len(webp[-1]))
                fold.append(folder)
                names.append(n)
    if not pngs:
        np.savez(dst / "ferplus_webp.npz", webp=np.concatenate(webp), offsets=np.asarray(offsets, np.int64),
                 folder=np.asarray(fold), image=np.asarray(names))
    return dst


@needs_sample
def test_ferplus_npz_fallback_and_missing_folder(tmp_path):
    d = _mini_ferplus(SAMPLE, tmp_path / "fp", pngs=False, folders=("FER2013Train", "FER2013Test"))
    ds = load_source(f"ferplus:{d}", cfg())
    assert set(ds.table["split"]) == {"train", "test"}          # no FER2013Valid: tolerated
    assert (ds.table["path"] == "").all()
    for i, k in enumerate(ds.table["id"][:5]):
        folder = "FER2013Train" if ds.table["split"][i] == "train" else "FER2013Test"
        diff = np.abs(ds.images[i].astype(int) - png_pixels(SAMPLE / folder / f"{k}.png"))
        assert diff.mean() < 4


@needs_sample
def test_ferplus_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{tmp_path / 'nope'}", cfg())
    assert_one_line(e, "nope", "no such directory")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{tmp_path / 'file'}", cfg())
    assert_one_line(e, "not a directory")
    (tmp_path / "empty" / "FER2013Train").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{tmp_path / 'empty'}", cfg())
    assert_one_line(e, "label.csv")
    # label.csv but neither PNGs nor the npz
    d = _mini_ferplus(SAMPLE, tmp_path / "nopix", pngs=True, folders=("FER2013Train",))
    for p in d.glob("FER2013Train/*.png"):
        p.unlink()
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{d}", cfg())
    assert_one_line(e, "FER2013Train", "ferplus_webp.npz")
    # a label.csv with the wrong shape, and one with a non-numeric vote
    bad = tmp_path / "bad" / "FER2013Train"
    bad.mkdir(parents=True)
    (bad / "label.csv").write_text("fer0000000.png,\"(0, 0, 48, 48)\",4,0,0\n")
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{bad.parent}", cfg())
    assert_one_line(e, "label.csv", "12 columns")
    (bad / "label.csv").write_text("fer0000000.png,\"(0, 0, 48, 48)\",4,x,0,1,3,2,0,0,0,0\n")
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{bad.parent}", cfg())
    assert_one_line(e, "label.csv", "line 1")
    (bad / "label.csv").write_text("")
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{bad.parent}", cfg())
    assert_one_line(e, "label.csv", "empty")


@needs_sample
def test_ferplus_corrupt_png_skip_or_fail(tmp_path):
    d = _mini_ferplus(SAMPLE, tmp_path / "fp", per_folder=30)
    ok = load_source(f"ferplus:{d}", cfg())
    victim = Path(ok.table["path"][3])
    corrupt(victim)
    ds = load_source(f"ferplus:{d}", cfg(on_bad_image="skip"))
    assert len(ds.table) == len(ok.table) - 1 and len(ds.skipped) == 1
    assert ds.skipped[0][0] == str(victim) and victim.stem not in set(ds.table["id"])
    assert ds.votes.shape[0] == len(ds.table)
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{d}", cfg(on_bad_image="fail"))
    assert_one_line(e, str(victim), "not a readable image")
    victim.unlink()                       # a listed PNG that is missing altogether
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{d}", cfg(on_bad_image="fail"))
    assert_one_line(e, str(victim), "not found")


@needs_sample
def test_ferplus_data_roots(tmp_path):
    with pytest.raises(DataError) as e:
        load_source(f"ferplus:{SAMPLE}", cfg(data_roots=(str(tmp_path),)))
    assert_one_line(e, "outside the allowed data roots")
    ds = load_source(f"ferplus:{SAMPLE}", cfg(data_roots=(str(FER),)))
    assert len(ds.table) > 0


# --------------------------------------------------------------------------- original-label manifest
def _expected_manifest(fer_dir: Path, orig: pd.DataFrame) -> pd.DataFrame:
    rows = []
    names = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
    for folder in FOLDERS:
        lab = fer_dir / folder / "label.csv"
        df = pd.read_csv(lab, header=None)
        df.columns = ["image", "box"] + VOTE_COLS
        df["folder"] = folder
        rows.append(df)
    fp = pd.concat(rows)
    fp["maj"] = [brute_majority(list(r)) for r in fp[VOTE_COLS].to_numpy()]
    m = orig.dropna(subset=["fer2013_label"]).merge(fp, on=["folder", "image"])
    m = m[m["maj"] >= 0]
    m["label"] = [names.get(x, x) for x in m["fer2013_label"]]
    m["gt"] = [FERPLUS_CLASSES[k] for k in m["maj"]]
    return m


@needs_sample
def test_manifest_from_sample_pngs_loads_as_csv_source(tmp_path):
    orig = pd.read_csv(FER / "fer2013_original_labels.csv")
    sample_names = {(f, n) for f in FOLDERS for n in read_sample_labels(f)["image"]}
    orig = orig[[(f, n) in sample_names for f, n in zip(orig["folder"], orig["image"])]]
    orig_csv = tmp_path / "orig.csv"
    orig.to_csv(orig_csv, index=False)
    out = ferplus_mod.write_original_labels_manifest(SAMPLE, orig_csv, tmp_path / "m" / "manifest.csv",
                                                     image_root=tmp_path / "m" / "img")
    man = pd.read_csv(out)
    want = _expected_manifest(SAMPLE, orig)
    assert len(man) == len(want) > 0
    assert list(man.columns[:4]) == ["path", "label", "split", "gt_label"]
    assert {"gt_ferplus_label", "gt_mislabeled"} <= set(man.columns)
    assert set(man["label"]) <= {"anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"}
    key = {Path(p).name: (l, g) for p, l, g in zip(man["path"], man["label"], man["gt_label"])}
    for _, r in want.iterrows():
        assert key[r["image"]] == (r["label"], r["gt"])
    assert (man["gt_mislabeled"] == (man["label"] != man["gt_label"])).all()
    ds = load_source(f"csv:{out}", cfg())
    assert len(ds.table) == len(man) and "gt_mislabeled" in ds.table
    assert len(ds.classes) <= 7 and "contempt" not in ds.classes
    i = 0
    p = Path(ds.table["path"][i])
    np.testing.assert_array_equal(ds.images[i], png_pixels(SAMPLE / p.parent.name / p.name))   # lossless copy


@needs_full
def test_manifest_writes_pngs_from_npz(tmp_path):
    orig = pd.read_csv(FER / "fer2013_original_labels.csv")
    orig = pd.concat([orig[orig["folder"] == f].head(120) for f in FOLDERS])
    orig_csv = tmp_path / "orig.csv"
    orig.to_csv(orig_csv, index=False)
    out = ferplus_mod.write_original_labels_manifest(FER, orig_csv, tmp_path / "manifest.csv",
                                                     image_root=tmp_path / "png")
    man = pd.read_csv(out)
    assert len(man) == len(_expected_manifest(FER, orig))
    assert all((tmp_path / p).is_file() for p in man["path"])
    assert set(man["split"]) == {"train", "val", "test"}
    ds = load_source(f"csv:{out}", cfg())
    assert len(ds.table) == len(man) and ds.skipped == []


@needs_full
@pytest.mark.slow
def test_manifest_full_set(tmp_path):
    orig_csv = FER / "fer2013_original_labels.csv"
    out = ferplus_mod.write_original_labels_manifest(FER, orig_csv, tmp_path / "manifest.csv",
                                                     image_root=tmp_path / "png")
    man = pd.read_csv(out)
    assert len(man) == len(_expected_manifest(FER, pd.read_csv(orig_csv)))
    assert 0.2 < man["gt_mislabeled"].mean() < 0.45      # "about a third" disagree
    ds = load_source(f"csv:{out}", cfg())
    assert len(ds.table) == len(man)


@needs_sample
def test_manifest_errors(tmp_path):
    orig_csv = FER / "fer2013_original_labels.csv"
    with pytest.raises(DataError) as e:      # images must lie under the manifest's folder
        ferplus_mod.write_original_labels_manifest(SAMPLE, orig_csv, tmp_path / "m.csv", image_root=tmp_path.parent / "elsewhere")
    assert_one_line(e, "image_root")
    with pytest.raises(DataError) as e:      # without image_root, fer_dir's PNGs are listed: must be under it
        ferplus_mod.write_original_labels_manifest(SAMPLE, orig_csv, tmp_path / "m.csv")
    assert_one_line(e, "image_root=")
    bad = tmp_path / "bad.csv"
    bad.write_text("folder,image\nFER2013Train,fer0000001.png\n")
    with pytest.raises(DataError) as e:
        ferplus_mod.write_original_labels_manifest(SAMPLE, bad, tmp_path / "m.csv", image_root=tmp_path / "i")
    assert_one_line(e, "bad.csv", "fer2013_label", "found folder, image")
    with pytest.raises(DataError) as e:
        ferplus_mod.write_original_labels_manifest(tmp_path / "nope", orig_csv, tmp_path / "m.csv")
    assert_one_line(e, "nope")


# --------------------------------------------------------------------------- fer2013
FER2013_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _px(img: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in img.reshape(-1))


@pytest.fixture
def fer2013_files(tmp_path, faces):
    """A 12-row fer2013.csv (real columns) and the matching fer2013new.csv with hand-placed votes."""
    usage = ["Training"] * 6 + ["PublicTest"] * 3 + ["PrivateTest"] * 3
    emotion = [0, 1, 2, 3, 4, 5, 6, 0, 3, 3, 6, 4]
    pd.DataFrame({"emotion": emotion, "pixels": [_px(faces[i]) for i in range(12)], "Usage": usage}).to_csv(
        tmp_path / "fer2013.csv", index=False)
    votes = [
        [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],   # 4 of 9 after dropping the 1: no majority -> dropped
        [6, 0, 1, 1, 0, 0, 0, 0, 2, 0],   # neutral
        [0, 8, 0, 0, 2, 0, 0, 0, 0, 0],   # happiness
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face -> dropped
        [0, 0, 0, 7, 0, 0, 0, 3, 0, 0],   # sadness
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # no image name (FERPlus leaves it empty) -> dropped
        [0, 0, 9, 0, 0, 0, 1, 0, 0, 0],   # surprise
        [0, 0, 0, 0, 6, 4, 0, 0, 0, 0],   # anger
        [2, 0, 0, 0, 0, 0, 0, 8, 0, 0],   # contempt
        [0, 0, 0, 0, 0, 0, 10, 0, 0, 0],  # fear
        [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],   # tie -> dropped
        [0, 0, 0, 0, 0, 7, 3, 0, 0, 0],   # disgust
    ]
    names = [f"fer{i:07d}.png" if i != 5 else "" for i in range(12)]
    vt = pd.DataFrame(votes, columns=VOTE_COLS)
    vt.insert(0, "Image name", names)
    vt.insert(0, "Usage", usage)
    vt.to_csv(tmp_path / "fer2013new.csv", index=False)
    return tmp_path / "fer2013.csv", tmp_path / "fer2013new.csv"


def test_fer2013_original_labels(fer2013_files, faces):
    csv, _ = fer2013_files
    ds = load_source(f"fer2013:{csv}", cfg())
    assert ds.classes == FER2013_CLASSES and ds.votes is None
    assert list(ds.table["label"]) == [0, 1, 2, 3, 4, 5, 6, 0, 3, 3, 6, 4]
    assert list(ds.table["split"]) == ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    assert ds.table["id"][3] == "fer0000003"
    np.testing.assert_array_equal(ds.images, faces[:12])
    ds32 = load_source(f"fer2013:{csv}", cfg(image_size=32))
    assert ds32.images.shape == (12, 32, 32)


def test_fer2013_with_ferplus_votes(fer2013_files, faces):
    csv, votes = fer2013_files
    ds = load_source(f"fer2013:{csv},{votes}", cfg())
    assert ds.classes == FERPLUS_CLASSES
    kept = [1, 2, 4, 6, 7, 8, 9, 11]
    assert list(ds.table["id"]) == [f"fer{i:07d}" for i in kept]
    assert list(ds.table["label_name"]) == ["neutral", "happiness", "sadness", "surprise", "anger",
                                            "contempt", "fear", "disgust"]
    np.testing.assert_array_equal(ds.votes[0], [6, 0, 0, 0, 0, 0, 0, 0])   # the 1s are outliers
    np.testing.assert_array_equal(ds.images, faces[kept])
    assert list(ds.table["gt_fer2013_label"][:2]) == ["disgust", "fear"]


def test_fer2013_errors(tmp_path, fer2013_files):
    csv, votes = fer2013_files
    df = pd.read_csv(csv)
    with pytest.raises(DataError) as e:
        load_source(f"fer2013:{tmp_path / 'missing.csv'}", cfg())
    assert_one_line(e, "missing.csv", "no such file")
    with pytest.raises(DataError) as e:
        load_source(f"fer2013:{tmp_path}", cfg())
    assert_one_line(e, "is a directory")
    df.drop(columns=["pixels"]).to_csv(tmp_path / "nopix.csv", index=False)
    with pytest.raises(DataError) as e:
        load_source(f"fer2013:{tmp_path / 'nopix.csv'}", cfg())
    assert_one_line(e, "nopix.csv", "pixels", "found emotion, Usage")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError) as e:
        load_source(f"fer2013:{tmp_path / 'empty.csv'}", cfg())
    assert_one_line(e, "empty.csv", "empty")
    bad = df.copy()
    bad.loc[2, "emotion"] = 9
    bad.to_csv(tmp_path / "emo.csv", index=False)
    with pytest.raises(DataError) as e:
        load_source(f"fer2013:{tmp_path / 'emo.csv'}", cfg())
    assert_one_line(e, "emo.csv", "line 4", "'9'")
    bad = df.copy()
    bad.loc[1, "Usage"] = "Holdout"
    bad.to_csv(tmp_path / "usage.csv", index=False)
    with pytest.raises(DataError) as e:
        load_source(f"fer2013:{tmp_path / 'usage.csv'}", cfg())
    assert_one_line(e, "usage.csv", "holdout")
    with pytest.raises(DataError) as e:     # votes table not row-aligned
        pd.read_csv(votes).head(5).to_csv(tmp_path / "short.csv", index=False)
        load_source(f"fer2013:{csv},{tmp_path / 'short.csv'}", cfg())
    assert_one_line(e, "short.csv", "5 rows")


def test_fer2013_bad_pixels_skip_or_fail(tmp_path, fer2013_files):
    csv, _ = fer2013_files
    df = pd.read_csv(csv)
    df.loc[4, "pixels"] = "1 2 3"
    df.loc[7, "pixels"] = "1 2 x " * 576
    df.to_csv(tmp_path / "px.csv", index=False)
    ds = load_source(f"fer2013:{tmp_path / 'px.csv'}", cfg(on_bad_image="skip"))
    assert len(ds.table) == 10 and len(ds.skipped) == 2
    assert "fer0000004" not in set(ds.table["id"]) and "line 6" in ds.skipped[0][0]
    with pytest.raises(DataError) as e:
        load_source(f"fer2013:{tmp_path / 'px.csv'}", cfg(on_bad_image="fail"))
    assert_one_line(e, "px.csv", "line 6", "expected 2304")


def test_fer2013_data_roots(fer2013_files, tmp_path_factory):
    csv, votes = fer2013_files
    other = tmp_path_factory.mktemp("elsewhere")
    with pytest.raises(DataError) as e:
        load_source(f"fer2013:{csv}", cfg(data_roots=(str(other),)))
    assert_one_line(e, "outside the allowed data roots")
    assert len(load_source(f"fer2013:{csv},{votes}", cfg(data_roots=(str(csv.parent),))).table) == 8


# --------------------------------------------------------------------------- folder
def _class_tree(root: Path, faces: np.ndarray, classes=("anger", "happy", "neutral"), per=6,
                ext=".png") -> list[Path]:
    out = []
    for c_i, c in enumerate(classes):
        for j in range(per):
            out.append(save(faces[(c_i * per + j) % len(faces)], root / c / f"S{j:03d}_{c}{ext}"))
    return out


def test_folder_flat_classes_hashed_split(tmp_path, faces):
    root = tmp_path / "ck"
    _class_tree(root, faces, per=10)
    (root / "anger" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    ds = load_source(f"folder:{root}", cfg())
    assert ds.classes == ["anger", "happy", "neutral"] and len(ds.table) == 30
    assert set(ds.table["split"]) <= {"train", "test"}
    assert ds.table["id"][0] == "anger/S000_anger.png"
    before = dict(zip(ds.table["id"], ds.table["split"]))
    save(faces[0], root / "happy" / "new_one.jpg")             # adding a file reshuffles nothing
    ds2 = load_source(f"folder:{root}", cfg())
    after = dict(zip(ds2.table["id"], ds2.table["split"]))
    assert len(after) == 31 and all(after[k] == v for k, v in before.items())
    assert ds.images.shape == (30, 48, 48)


def test_folder_split_folders_and_aliases(tmp_path, faces):
    root = tmp_path / "sets"
    _class_tree(root / "train", faces, per=4)
    _class_tree(root / "valid", faces, per=2, ext=".bmp")
    _class_tree(root / "Test", faces, classes=("anger", "happy"), per=2, ext=".tiff")
    ds = load_source(f"folder:{root}", cfg())
    assert ds.table["split"].value_counts().to_dict() == {"train": 12, "val": 6, "test": 4}
    assert ds.classes == ["anger", "happy", "neutral"]
    (root / "extra_class").mkdir()
    with pytest.raises(DataError) as e:
        load_source(f"folder:{root}", cfg())
    assert_one_line(e, "extra_class")


def test_folder_errors(tmp_path, faces):
    with pytest.raises(DataError) as e:
        load_source("folder:", cfg())
    assert_one_line(e, "give a directory")
    with pytest.raises(DataError) as e:
        load_source(f"folder:{tmp_path / 'nope'}", cfg())
    assert_one_line(e, "nope", "no such directory")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        load_source(f"folder:{tmp_path / 'empty'}", cfg())
    assert_one_line(e, "empty", "no images")
    _class_tree(tmp_path / "one", faces, classes=("only",))
    with pytest.raises(DataError) as e:
        load_source(f"folder:{tmp_path / 'one'}", cfg())
    assert_one_line(e, "at least 2 class", "only")


def test_folder_corrupt_image_skip_or_fail(tmp_path, faces):
    root = tmp_path / "ck"
    _class_tree(root, faces)
    bad = corrupt(root / "happy" / "broken.png")
    ds = load_source(f"folder:{root}", cfg(on_bad_image="skip"))
    assert len(ds.table) == 18 and ds.skipped == [(str(bad), "not a readable image (UnidentifiedImageError)")]
    with pytest.raises(DataError) as e:
        load_source(f"folder:{root}", cfg(on_bad_image="fail"))
    assert_one_line(e, str(bad), "not a readable image")
    for p in root.rglob("*.png"):           # every file unreadable: zero images is an error
        corrupt(p)
    with pytest.raises(DataError) as e:
        load_source(f"folder:{root}", cfg())
    assert_one_line(e, "no readable images")


def test_folder_unreadable_directory(tmp_path, faces, monkeypatch):
    root = tmp_path / "ck"
    _class_tree(root, faces)
    real = os.scandir

    def deny(p="."):
        if Path(p) == root:
            raise PermissionError(13, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(os, "scandir", deny)
    with pytest.raises(DataError) as e:
        load_source(f"folder:{root}", cfg())
    assert_one_line(e, str(root), "Permission denied")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads through chmod 000")
def test_folder_unreadable_directory_chmod(tmp_path, faces):
    root = tmp_path / "ck"
    _class_tree(root, faces)
    root.chmod(0)
    try:
        with pytest.raises(DataError) as e:
            load_source(f"folder:{root}", cfg())
        assert_one_line(e, str(root))
    finally:
        root.chmod(0o755)


def test_folder_data_roots_and_symlink_escape(tmp_path, faces):
    root = tmp_path / "data" / "ck"
    _class_tree(root, faces)
    with pytest.raises(DataError) as e:
        load_source(f"folder:{root}", cfg(data_roots=(str(tmp_path / "other"),)))
    assert_one_line(e, "outside the allowed data roots")
    assert len(load_source(f"folder:{root}", cfg(data_roots=(str(tmp_path / "data"),))).table) == 18
    outside = save(faces[0], tmp_path / "secret" / "x.png")
    (root / "anger" / "link.png").symlink_to(outside)           # a link leaving the roots is refused
    with pytest.raises(DataError) as e:
        load_source(f"folder:{root}", cfg(data_roots=(str(tmp_path / "data"),)))
    assert_one_line(e, "link.png", "outside the allowed data roots")


# --------------------------------------------------------------------------- csv
def _images(root: Path, faces: np.ndarray, n: int = 8) -> list[str]:
    return [save(faces[i], root / "img" / f"f{i}.png").relative_to(root).as_posix() for i in range(n)]


def test_csv_basic_with_split_votes_and_gt(tmp_path, faces):
    rel = _images(tmp_path, faces)
    df = pd.DataFrame({"path": rel, "label": ["cat", "dog"] * 4,
                       "split": ["train", "train", "valid", "test", "Train", "val", "test", "training"],
                       "vote_dog": [0, 3, 1, 2, 0, 5, 0, 1], "vote_cat": [4, 0, 1, 1, 3, 0, 2, 0],
                       "gt_flipped": [False] * 7 + [True], "notes": ["x"] * 8})
    df.to_csv(tmp_path / "list.csv", index=False)
    ds = load_source(f"csv:{tmp_path / 'list.csv'}", cfg())
    assert ds.classes == ["dog", "cat"]                 # vote columns fix the class order
    assert list(ds.table["label"]) == [1, 0] * 4
    assert list(ds.table["split"]) == ["train", "train", "val", "test", "train", "val", "test", "train"]
    np.testing.assert_array_equal(ds.votes[1], [3, 0])
    assert list(ds.table["gt_flipped"]) == [False] * 7 + [True] and "notes" not in ds.table
    np.testing.assert_array_equal(ds.images[5], faces[5])
    assert ds.table["id"][0] == "img/f0.png"


def test_csv_votes_named_as_classes_int_labels_and_hashed_split(tmp_path, faces):
    rel = _images(tmp_path, faces)
    pd.DataFrame({"path": rel, "label": ["b", "a"] * 4, "a": [1] * 8, "b": [2] * 8}).to_csv(tmp_path / "v.csv", index=False)
    ds = load_source(f"csv:{tmp_path / 'v.csv'}", cfg())
    assert ds.classes == ["a", "b"] and ds.votes.shape == (8, 2) and ds.votes[0, 1] == 2
    assert list(ds.table["split"]) == hash_split(rel)
    pd.DataFrame({"path": rel, "label": [10, 2] * 4}).to_csv(tmp_path / "i.csv", index=False)
    ds = load_source(f"csv:{tmp_path / 'i.csv'}", cfg())
    assert ds.classes == ["2", "10"] and list(ds.table["label_name"][:2]) == ["10", "2"] and ds.votes is None
    (tmp_path / "na.csv").write_text("path, label\n" + "\n".join(f"{r}, {'None' if i % 2 else 'NA'}" for i, r in enumerate(rel)))
    ds = load_source(f"csv:{tmp_path / 'na.csv'}", cfg())      # class names pandas would read as missing
    assert ds.classes == ["NA", "None"] and len(ds.table) == 8


def test_csv_errors(tmp_path, faces):
    rel = _images(tmp_path, faces, 4)

    def write(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return f"csv:{tmp_path / name}"

    cases = [
        (write("empty.csv", ""), ["empty.csv", "empty file"]),
        (write("nocol.csv", "file,class\nimg/f0.png,a\n"), ["nocol.csv", "missing column(s) path, label", "found file, class"]),
        (write("dup.csv", "path,label,label\nimg/f0.png,a,b\n"), ["dup.csv", "duplicated column", "'label'"]),
        (write("header.csv", "path,label\n"), ["header.csv", "no rows"]),
        (write("nan.csv", f"path,label\n{rel[0]},a\n{rel[1]},\n"), ["nan.csv", "line 3", "label"]),
        (write("split.csv", f"path,label,split\n{rel[0]},a,train\n{rel[1]},b,holdout\n"), ["split.csv", "line 3", "'holdout'"]),
        (write("abs.csv", f"path,label\n{tmp_path / rel[0]},a\n{rel[1]},b\n"), [str(tmp_path / rel[0]), "absolute"]),
        (write("esc.csv", f"path,label\n../x.png,a\n{rel[1]},b\n"), ["../x.png", "escapes"]),
        (write("unk.csv", f"path,label,vote_a,vote_b\n{rel[0]},a,1,0\n{rel[1]},c,0,1\n"), ["unk.csv", "'c'", "not in the class list"]),
        (write("one.csv", f"path,label\n{rel[0]},a\n{rel[1]},a\n"), ["at least 2 classes"]),
        (write("twice.csv", f"path,label\n{rel[0]},a\n{rel[0]},b\n"), ["twice.csv", "same file"]),
        (write("badvote.csv", f"path,label,vote_a,vote_b\n{rel[0]},a,1,x\n{rel[1]},b,0,1\n"), ["badvote.csv", "vote_b"]),
        (f"csv:{tmp_path / 'missing.csv'}", ["missing.csv", "no such file"]),
        (f"csv:{tmp_path / 'img'}", ["img", "is a directory"]),
    ]
    for spec, needles in cases:
        with pytest.raises(DataError) as e:
            load_source(spec, cfg())
        assert_one_line(e, *needles)


def test_csv_corrupt_image_and_data_roots(tmp_path, faces):
    rel = _images(tmp_path, faces, 6)
    corrupt(tmp_path / rel[2])
    pd.DataFrame({"path": rel + ["img/absent.png"], "label": list("ababab") + ["a"]}).to_csv(tmp_path / "l.csv", index=False)
    ds = load_source(f"csv:{tmp_path / 'l.csv'}", cfg())
    assert len(ds.table) == 5 and [Path(p).name for p, _ in ds.skipped] == ["f2.png", "absent.png"]
    with pytest.raises(DataError) as e:
        load_source(f"csv:{tmp_path / 'l.csv'}", cfg(on_bad_image="fail"))
    assert_one_line(e, "f2.png", "not a readable image")
    with pytest.raises(DataError) as e:
        load_source(f"csv:{tmp_path / 'l.csv'}", cfg(data_roots=(str(tmp_path / "img"),)))
    assert_one_line(e, "l.csv", "outside the allowed data roots")


def test_csv_unreadable_file(tmp_path, faces, monkeypatch):
    import pipeline.sources.folder as folder_mod

    rel = _images(tmp_path, faces, 2)
    p = tmp_path / "l.csv"
    pd.DataFrame({"path": rel, "label": ["a", "b"]}).to_csv(p, index=False)

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied", str(a[0]))

    monkeypatch.setattr(folder_mod, "open", deny, raising=False)   # only the source's own open() fails
    for spec in (f"csv:{p}", f"fer2013:{p}", f"affectnet:{p}"):
        with pytest.raises(DataError) as e:
            load_source(spec, cfg())
        assert_one_line(e, "l.csv", "cannot read file", "Permission denied")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads through chmod 000")
def test_csv_unreadable_file_chmod(tmp_path, faces):
    rel = _images(tmp_path, faces, 2)
    p = tmp_path / "l.csv"
    pd.DataFrame({"path": rel, "label": ["a", "b"]}).to_csv(p, index=False)
    p.chmod(0)
    try:
        with pytest.raises(DataError) as e:
            load_source(f"csv:{p}", cfg())
        assert_one_line(e, "l.csv", "cannot read")
    finally:
        p.chmod(0o644)


# --------------------------------------------------------------------------- jaffe and bu3dfe
JAFFE_SUBJECTS = ["KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"]
CODES = ["AN", "DI", "FE", "HA", "NE", "SA", "SU"]
CODE_NAME = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral",
             "SA": "sadness", "SU": "surprise"}


def _jaffe(root: Path, faces: np.ndarray) -> None:
    k = 0
    for s in JAFFE_SUBJECTS:
        for c in CODES[:3] if s != "KA" else CODES:
            k += 1
            img = np.asarray(Image.fromarray(faces[k % len(faces)]).resize((64, 64)))   # not 48x48 on disk
            save(img, root / f"{s}.{c}{1 + k % 3}.{k}.tiff")


def test_jaffe(tmp_path, faces):
    _jaffe(tmp_path, faces)
    (tmp_path / "README.txt").write_text("JAFFE")
    save(faces[0], tmp_path / "cover.tiff")             # not named like a JAFFE image: ignored
    ds = load_source(f"jaffe:{tmp_path}", cfg())
    assert ds.classes == FERPLUS_CLASSES[:7] and len(ds.table) == 9 * 3 + 7
    t = ds.table
    for _, r in t.iterrows():
        assert r["label_name"] == CODE_NAME[r["id"].split(".")[1][:2]]
        assert r["gt_subject"] == r["id"][:2]
    by_subject = t.groupby("gt_subject")["split"].nunique()
    assert (by_subject == 1).all()                          # subjects never straddle splits
    assert set(t["split"]) == {"train", "test"} and t.groupby("split")["gt_subject"].nunique()["test"] == 2
    assert ds.images.shape == (34, 48, 48)


def test_jaffe_errors(tmp_path, faces):
    _jaffe(tmp_path / "j", faces)
    save(faces[0], tmp_path / "j" / "KA.XX1.99.tiff")
    with pytest.raises(DataError) as e:
        load_source(f"jaffe:{tmp_path / 'j'}", cfg())
    assert_one_line(e, "KA.XX1.99.tiff", "'XX'")
    (tmp_path / "none").mkdir()
    save(faces[0], tmp_path / "none" / "photo.png")
    with pytest.raises(DataError) as e:
        load_source(f"jaffe:{tmp_path / 'none'}", cfg())
    assert_one_line(e, "no JAFFE images")
    save(faces[0], tmp_path / "one" / "KA.AN1.1.tiff")
    save(faces[1], tmp_path / "one" / "KL.AN1.2.tiff")
    with pytest.raises(DataError) as e:
        load_source(f"jaffe:{tmp_path / 'one'}", cfg())
    assert_one_line(e, "at least 2 classes", "anger")
    corrupt(tmp_path / "one" / "KM.HA1.3.tiff")
    save(faces[2], tmp_path / "one" / "KM.HA2.4.tiff")
    ds = load_source(f"jaffe:{tmp_path / 'one'}", cfg())
    assert len(ds.skipped) == 1 and len(ds.table) == 3
    with pytest.raises(DataError) as e:
        load_source(f"jaffe:{tmp_path / 'one'}", cfg(on_bad_image="fail"))
    assert_one_line(e, "KM.HA1.3.tiff")
    with pytest.raises(DataError) as e:
        load_source(f"jaffe:{tmp_path / 'one'}", cfg(data_roots=(str(tmp_path / "j"),)))
    assert_one_line(e, "outside the allowed data roots")


def _bu3dfe(root: Path, faces: np.ndarray, subjects=("F0001", "F0002", "M0001", "M0002", "F0003")) -> int:
    n = 0
    for s_i, s in enumerate(subjects):
        race = ["WH", "AE", "BL", "LA", "IN"][s_i % 5]
        save(faces[n % len(faces)], root / s / f"{s}_NE00{race}_F2D.bmp")
        n += 1
        for c in ("AN", "HA", "SU"):
            for inten in (1, 4):
                save(faces[n % len(faces)], root / s / f"{s}_{c}{inten:02d}{race}_F2D.bmp")
                (root / s / f"{s}_{c}{inten:02d}{race}_F3D.wrl").write_text("VRML")
                n += 1
    return n


def test_bu3dfe(tmp_path, faces):
    n = _bu3dfe(tmp_path, faces)
    save(faces[0], tmp_path / "F0001" / "F0001_AN01WH_F3D.bmp")   # 3D texture map: not a 2D face
    ds = load_source(f"bu3dfe:{tmp_path}", cfg())
    assert len(ds.table) == n == 35 and ds.classes == FERPLUS_CLASSES[:7]
    t = ds.table
    assert set(t["label_name"]) == {"neutral", "anger", "happiness", "surprise"}
    assert (t.groupby("gt_subject")["split"].nunique() == 1).all()
    assert t.groupby("split")["gt_subject"].nunique().to_dict() == {"test": 1, "train": 4}
    r = t[t["id"] == "M0002/M0002_SU04LA_F2D.bmp"].iloc[0]
    assert (r["label_name"], r["gt_intensity"], r["gt_race"], r["gt_subject"]) == ("surprise", 4, "LA", "M0002")


def test_bu3dfe_errors(tmp_path, faces):
    with pytest.raises(DataError) as e:
        load_source(f"bu3dfe:{tmp_path / 'nope'}", cfg())
    assert_one_line(e, "no such directory")
    _bu3dfe(tmp_path / "b", faces, subjects=("F0001", "M0001"))
    save(faces[0], tmp_path / "b" / "F0001_CO01WH_F2D.bmp")
    with pytest.raises(DataError) as e:
        load_source(f"bu3dfe:{tmp_path / 'b'}", cfg())
    assert_one_line(e, "F0001_CO01WH_F2D.bmp", "'CO'")
    (tmp_path / "b" / "F0001_CO01WH_F2D.bmp").unlink()
    bad = corrupt(tmp_path / "b" / "F0001" / "F0001_HA01WH_F2D.bmp")
    ds = load_source(f"bu3dfe:{tmp_path / 'b'}", cfg())
    assert ds.skipped[0][0] == str(bad) and len(ds.table) == 13
    with pytest.raises(DataError) as e:
        load_source(f"bu3dfe:{tmp_path / 'b'}", cfg(on_bad_image="fail"))
    assert_one_line(e, str(bad))
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError) as e:
        load_source(f"bu3dfe:{tmp_path / 'e'}", cfg())
    assert_one_line(e, "no BU-3DFE images")
    save(faces[0], tmp_path / "o" / "F0001_HA01WH_F2D.bmp")
    with pytest.raises(DataError) as e:
        load_source(f"bu3dfe:{tmp_path / 'o'}", cfg())
    assert_one_line(e, "at least 2 classes")
    with pytest.raises(DataError) as e:
        load_source(f"bu3dfe:{tmp_path / 'b'}", cfg(data_roots=(str(tmp_path / "o"),)))
    assert_one_line(e, "outside the allowed data roots")


# --------------------------------------------------------------------------- affectnet
AFF_HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"


def _affectnet(root: Path) -> tuple[Path, list[str]]:
    """AffectNet layout: Manually_Annotated_file_lists/*.csv beside Manually_Annotated_Images/<dir>/<hash>.jpg.
    Each image is dark with a bright face box, so a correct crop is bright all over."""
    lines, rows = [], []
    for i, code in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1]):
        img = np.full((120, 100, 3), 10, np.uint8)
        x, y, w, h = 20 + i, 30, 50, 60
        img[y:y + h, x:x + w] = 240
        rel = f"{100 + i}/{'%040x' % (i * 7919)}.jpg"
        save(img, root / "Manually_Annotated_Images" / rel)
        landmarks = ";".join(["1.0"] * 136)
        lines.append(f"{rel},{x},{y},{w},{h},{landmarks},{code},0.5,-0.2")
        rows.append(rel)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    (lists / "training.csv").write_text(AFF_HEADER + "\n" + "\n".join(lines) + "\n")
    (lists / "validation.csv").write_text("\n".join(lines) + "\n")     # ships without a header
    return lists, rows


def test_affectnet(tmp_path):
    lists, rows = _affectnet(tmp_path)
    ds = load_source(f"affectnet:{lists / 'training.csv'}", cfg())
    assert ds.classes == FERPLUS_CLASSES and len(ds.table) == 9        # codes 8, 9, 10 dropped
    assert list(ds.table["label_name"]) == ["neutral", "happiness", "sadness", "surprise", "fear", "disgust",
                                            "anger", "contempt", "happiness"]
    assert (ds.table["split"] == "train").all()
    assert ds.images.min() > 200                                # the crop is the bright face box only
    val = load_source(f"affectnet:{lists / 'validation.csv'}", cfg())
    assert (val.table["split"] == "test").all() and len(val.table) == 9
    # images beside the CSV work too; without a face box the whole image is used
    flat = tmp_path / "flat"
    for r in rows[:4]:
        (flat / r).parent.mkdir(parents=True, exist_ok=True)
        (flat / r).write_bytes((tmp_path / "Manually_Annotated_Images" / r).read_bytes())
    (flat / "mine.csv").write_text("subDirectory_filePath,expression\n" + "\n".join(f"{r},{i}" for i, r in enumerate(rows[:4])) + "\n")
    ds = load_source(f"affectnet:{flat / 'mine.csv'}", cfg())
    assert len(ds.table) == 4 and ds.images.min() < 50 and set(ds.table["split"]) <= {"train", "test"}


def test_affectnet_errors(tmp_path):
    lists, rows = _affectnet(tmp_path)
    text = (lists / "training.csv").read_text().splitlines()
    p = lists / "bad_code.csv"
    p.write_text("\n".join(text[:3] + [text[3].rsplit(",", 3)[0] + ",12,0.1,0.1"]) + "\n")
    with pytest.raises(DataError) as e:
        load_source(f"affectnet:{p}", cfg())
    assert_one_line(e, "bad_code.csv", "'12'", "line 4")
    p = lists / "nocols.csv"
    p.write_text("file,emotion\na.jpg,1\n")
    with pytest.raises(DataError) as e:
        load_source(f"affectnet:{p}", cfg())
    assert_one_line(e, "nocols.csv", "expected subDirectory_filePath")
    p = lists / "named.csv"
    p.write_text("subDirectory_filePath,emotion\na.jpg,1\n")
    with pytest.raises(DataError) as e:
        load_source(f"affectnet:{p}", cfg())
    assert_one_line(e, "named.csv", "missing column(s) expression", "found subDirectory_filePath, emotion")
    p = lists / "escape.csv"
    p.write_text(f"{AFF_HEADER}\n../../etc/passwd,0,0,1,1,,1,0,0\n")
    with pytest.raises(DataError) as e:
        load_source(f"affectnet:{p}", cfg())
    assert_one_line(e, "../../etc/passwd", "escapes")
    (tmp_path / "Manually_Annotated_Images" / rows[1]).unlink()                     # missing image
    corrupt(tmp_path / "Manually_Annotated_Images" / rows[2])                        # corrupt image
    ds = load_source(f"affectnet:{lists / 'training.csv'}", cfg())
    assert len(ds.table) == 7 and len(ds.skipped) == 2
    with pytest.raises(DataError) as e:
        load_source(f"affectnet:{lists / 'training.csv'}", cfg(on_bad_image="fail"))
    assert_one_line(e, rows[1])
    with pytest.raises(DataError) as e:
        load_source(f"affectnet:{lists / 'training.csv'}", cfg(data_roots=(str(lists / "nowhere"),)))
    assert_one_line(e, "outside the allowed data roots")
    (lists / "empty.csv").write_text("")
    with pytest.raises(DataError) as e:
        load_source(f"affectnet:{lists / 'empty.csv'}", cfg())
    assert_one_line(e, "empty.csv", "empty")


# --------------------------------------------------------------------------- split helpers
@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True),
       st.lists(st.text(min_size=1, max_size=12), max_size=10))
def test_hash_split_is_stable_when_keys_are_added(keys, more):
    a = dict(zip(keys, hash_split(keys)))
    both = keys + [k for k in more if k not in a]
    b = dict(zip(both, hash_split(both)))
    assert all(b[k] == v for k, v in a.items()) and set(b.values()) <= {"train", "test"}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), min_size=2, max_size=30, unique=True))
def test_subject_split_is_disjoint_and_never_empty(subjects):
    s = subject_split(subjects)
    assert set(s) == set(subjects)
    n_test = sum(v == "test" for v in s.values())
    assert 1 <= n_test <= len(subjects) - 1
    assert subject_split(list(reversed(subjects))) == s       # order of discovery does not matter


def test_hash_split_fraction_is_about_80_20():
    sp = hash_split([f"img_{i}.png" for i in range(5000)])
    assert 0.18 < sp.count("test") / 5000 < 0.22


def test_class_names_match_by_fer_synonyms_and_the_rest_is_reported():
    from pipeline.sources.base import canonical_class, match_classes

    other = ["happy", "SAD", "Angry", "surprised", "disgusted", "fearful", "neutral", "contemptuous", "calm"]
    m = match_classes(FERPLUS_CLASSES, other)
    assert m.matched(FERPLUS_CLASSES) == {
        "happy": "happiness", "SAD": "sadness", "Angry": "anger", "surprised": "surprise", "disgusted": "disgust",
        "fearful": "fear", "neutral": "neutral", "contemptuous": "contempt"}
    assert m.left_out == ["calm"]
    # the other way round: a run trained on a folder set's spellings evaluated on FER+ names
    assert match_classes(["angry", "happy"], FERPLUS_CLASSES).matched(["angry", "happy"]) == {
        "happiness": "happy", "anger": "angry"}
    # an exact name wins over a synonym; unknown names are kept as they are
    assert match_classes(["happy", "happiness"], ["happy"]).index == {"happy": 0}
    assert canonical_class(" Fear-ful ") == "fear" and canonical_class("Calm") == "calm"
