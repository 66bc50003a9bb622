"""``ferplus:DIR``: Microsoft's FERPlus layout, and a manifest for training on FER2013's original labels.

DIR holds FER2013Train/, FER2013Valid/, FER2013Test/ (-> train / val / test), each with FERPlus's
label.csv (no header: image name, face box, then 10 vote counts: the 8 emotions of
:data:`base.FERPLUS_CLASSES`, unknown, not-a-face). Labels follow FERPlus's majority rule
(:func:`base.ferplus_majority`); images without a majority are dropped. ``votes`` are the 8 emotion
counts with counts of 1 zeroed (FERPlus's outlier rule), so ``votes / votes.sum(1)`` is P(w|x).

Pixels come from DIR/<folder>/<name> PNGs; a folder without PNGs is read from DIR/ferplus_webp.npz
(``webp`` bytes, ``offsets``, ``folder``, ``image``: image k is ``webp[offsets[k]:offsets[k+1]]``).
Image ids are the file stems (fer0000000 ...), which are also FER2013's row numbers.
"""
from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import one_line
from .base import FERPLUS_CLASSES, DataError, Dataset, check_under_roots, decode_image, ferplus_majority
from .folder import build_dataset, decode_many, open_dir

FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
VOTE_COLUMNS = FERPLUS_CLASSES + ["unknown", "NF"]
NPZ_NAME = "ferplus_webp.npz"

# FER2013's seven original classes, by the FER+ class name each maps to.
FER2013_TO_FERPLUS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
                      "neutral": "neutral", "sad": "sadness", "surprise": "surprise"}


def soft_votes(votes10: np.ndarray) -> np.ndarray:
    """(N, 10) FERPlus counts -> (N, 8) float32 emotion counts with every count of 1 zeroed."""
    v = np.asarray(votes10, dtype=np.float32)[:, :8].copy()
    v[v == 1] = 0
    return v


def read_label_csv(path: Path) -> pd.DataFrame:
    """One FERPlus label.csv -> DataFrame with columns image, box and the 10 vote columns (int)."""
    try:
        df = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read label file ({type(exc).__name__}: {one_line(exc, empty='')})") from None
    if df.shape[1] != 12:
        raise DataError(f"{path}: expected 12 columns (image, face box, 10 vote counts), found {df.shape[1]}")
    df.columns = ["image", "box"] + VOTE_COLUMNS
    votes = df[VOTE_COLUMNS].apply(pd.to_numeric, errors="coerce")
    bad = votes.isna().any(axis=1) | (votes < 0).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: line {i + 1} has a missing, negative or non-numeric vote count")
    df[VOTE_COLUMNS] = votes.astype(np.int64)
    df["image"] = df["image"].str.strip()
    if (df["image"] == "").any():
        i = int(np.flatnonzero((df["image"] == "").to_numpy())[0])
        raise DataError(f"{path}: line {i + 1} has no image name")
    return df


def read_ferplus_labels(fer_dir: Path) -> pd.DataFrame:
    """All folders' label.csv rows, with columns folder, split, image, the 10 vote columns and
    ``majority`` (FER+ label index, -1 where there is none). Folders without label.csv are skipped."""
    parts = []
    for folder, split in FOLDERS.items():
        lab = fer_dir / folder / "label.csv"
        if not lab.is_file():
            continue
        df = read_label_csv(lab)
        df.insert(0, "split", split)
        df.insert(0, "folder", folder)
        parts.append(df)
    if not parts:
        raise DataError(f"{fer_dir}: no FERPlus label.csv found (expected {', '.join(f + '/label.csv' for f in FOLDERS)})")
    df = pd.concat(parts, ignore_index=True)
    df["majority"] = ferplus_majority(df[VOTE_COLUMNS].to_numpy())
    return df


def _has_png(d: Path) -> bool:
    try:
        with os.scandir(d) as it:
            return any(e.name.lower().endswith(".png") for e in it)
    except OSError:
        return False


class _WebpStore:
    """Random access to ferplus_webp.npz by (folder, image name)."""

    def __init__(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as z:
                self.webp, self.offsets = z["webp"], z["offsets"]
                folders, images = z["folder"], z["image"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not a usable FER+ image archive ({type(exc).__name__}: needs webp, offsets, folder, image)") from None
        if len(self.offsets) != len(images) + 1 or len(folders) != len(images):
            raise DataError(f"{path}: offsets, folder and image arrays do not line up")
        self.path = path
        self.index = {(str(f), str(n)): k for k, (f, n) in enumerate(zip(folders.tolist(), images.tolist()))}

    def raw(self, folder: str, image: str) -> bytes:
        k = self.index.get((folder, image))
        if k is None:
            raise DataError(f"{self.path}: {folder}/{image} is not in the archive")
        return self.webp[self.offsets[k]:self.offsets[k + 1]].tobytes()

    def decode(self, folder: str, image: str, size: int) -> np.ndarray:
        from PIL import Image

        data = self.raw(folder, image)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("L")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
        except Exception as exc:
            raise DataError(f"{self.path}: {folder}/{image} is not a readable image ({type(exc).__name__})") from None


def load(arg: str, cfg) -> Dataset:
    root = open_dir(arg, cfg, source="ferplus")
    name = f"ferplus:{root}"
    df = read_ferplus_labels(root)
    df = df[df["majority"] >= 0].reset_index(drop=True)
    if len(df) == 0:
        raise DataError(f"{root}: no image has a FER+ majority label")
    votes = soft_votes(df[VOTE_COLUMNS].to_numpy())
    ids = df["image"].str.rsplit(".", n=1).str[0].tolist()
    if len(set(ids)) != len(ids):   # not FERPlus's global names: keep ids unique anyway
        ids = (df["folder"] + "/" + df["image"]).tolist()

    png_folders = {f for f in df["folder"].unique() if _has_png(root / f)}
    npz = root / NPZ_NAME
    need_npz = sorted(set(df["folder"].unique()) - png_folders)
    if need_npz and not npz.is_file():
        raise DataError(f"{root / need_npz[0]}: no PNG images and no {NPZ_NAME} in {root}")
    store = _WebpStore(npz) if need_npz else None
    folders, images_ = df["folder"].tolist(), df["image"].tolist()
    paths = [str(root / f / n) if f in png_folders else "" for f, n in zip(folders, images_)]
    if cfg.data_roots:
        for p in paths:
            if p:
                check_under_roots(Path(p), tuple(cfg.data_roots))
    size = cfg.image_size

    def one(i: int) -> np.ndarray:
        if paths[i]:
            return decode_image(paths[i], size)
        return store.decode(folders[i], images_[i], size)

    names = [p or f"{npz}:{f}/{n}" for p, f, n in zip(paths, folders, images_)]
    imgs, kept, skipped = decode_many(len(df), one, size, on_bad_image=cfg.on_bad_image, names=names)
    return build_dataset(source="ferplus", name=name, cfg=cfg, ids=ids, split=df["split"].tolist(),
                         label=df["majority"].to_numpy(), classes=FERPLUS_CLASSES, paths=paths,
                         votes=votes, images=imgs, kept=kept, skipped=skipped)


# --------------------------------------------------------------------------- original-label manifest
def write_original_labels_manifest(fer_dir, original_csv, out_csv, *, image_root=None) -> Path:
    """Write a ``csv:`` manifest for training on FER2013's ORIGINAL labels, with FER+ as ground truth.

    Columns: ``path`` (relative to the manifest's folder), ``label`` (the original FER2013 label, named
    as its FER+ class: anger, disgust, fear, happiness, neutral, sadness, surprise), ``split``,
    ``gt_label`` and ``gt_ferplus_label`` (the FER+ majority label; may be contempt), ``gt_mislabeled``
    (original != FER+ majority). Rows with an empty original label (FER2013 holds conflicting duplicate
    copies) or without a FER+ majority are left out.

    ``original_csv`` has columns folder, image, fer2013_label (see shared/data/README.md).
    With ``image_root`` (which must lie under the manifest's folder) the listed images are written there
    as ``<folder>/<image>`` PNGs: copied from fer_dir's PNGs where present, otherwise decoded from
    fer_dir/ferplus_webp.npz; existing files are kept. Without it, fer_dir's own PNGs are listed, so
    fer_dir must hold them and lie under the manifest's folder.
    """
    fer_dir = Path(fer_dir).expanduser()
    original_csv = Path(original_csv).expanduser()
    out_csv = Path(out_csv).expanduser()
    if not fer_dir.is_dir():
        raise DataError(f"{fer_dir}: no such directory")
    if not original_csv.is_file():
        raise DataError(f"{original_csv}: no such file")
    fp = read_ferplus_labels(fer_dir)
    try:
        orig = pd.read_csv(original_csv, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{original_csv}: empty file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{original_csv}: cannot read ({type(exc).__name__})") from None
    need = {"folder", "image", "fer2013_label"}
    if need - set(orig.columns):
        raise DataError(f"{original_csv}: missing column(s) {', '.join(sorted(need - set(orig.columns)))}; "
                        f"found {', '.join(map(str, orig.columns))}")
    orig = orig[["folder", "image", "fer2013_label"]].copy()
    orig["fer2013_label"] = orig["fer2013_label"].str.strip().str.lower()
    orig = orig[orig["fer2013_label"] != ""]
    unknown = sorted(set(orig["fer2013_label"]) - set(FER2013_TO_FERPLUS))
    if unknown:
        raise DataError(f"{original_csv}: unknown fer2013_label value(s) {unknown}; expected {sorted(FER2013_TO_FERPLUS)}")
    m = orig.merge(fp[["folder", "image", "split", "majority"]], on=["folder", "image"], how="inner")
    m = m[m["majority"] >= 0].reset_index(drop=True)
    if len(m) == 0:
        raise DataError(f"{original_csv}: no listed image has both an original label and a FER+ majority in {fer_dir}")

    base = out_csv.parent.resolve()
    if image_root is None:
        src_root = fer_dir.resolve()
        if src_root != base and base not in src_root.parents:
            raise DataError(f"{fer_dir}: not under the manifest's folder {base}; pass image_root= to write the images there")
        missing = [f"{f}/{n}" for f, n in zip(m["folder"], m["image"]) if not (src_root / f / n).is_file()]
        if missing:
            raise DataError(f"{fer_dir}: {len(missing)} listed image(s) have no PNG (first {missing[0]}); "
                            f"pass image_root= to write them from {NPZ_NAME}")
        img_root = src_root
    else:
        img_root = Path(image_root).expanduser().resolve()
        if img_root != base and base not in img_root.parents:
            raise DataError(f"{image_root}: image_root must lie under the manifest's folder {base}")
        _write_pngs(fer_dir, img_root, list(zip(m["folder"], m["image"])))

    rel = img_root.relative_to(base)
    label = m["fer2013_label"].map(FER2013_TO_FERPLUS)
    gt = np.asarray(FERPLUS_CLASSES, dtype=object)[m["majority"].to_numpy()]
    out = pd.DataFrame({
        "path": [(rel / f / n).as_posix() for f, n in zip(m["folder"], m["image"])],
        "label": label.to_numpy(),
        "split": m["split"].to_numpy(),
        "gt_label": gt,
        "gt_ferplus_label": gt,
        "gt_mislabeled": label.to_numpy() != gt,
    })
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(f".{out_csv.name}.{os.getpid()}.tmp")
    out.to_csv(tmp, index=False)
    os.replace(tmp, out_csv)
    return out_csv


def _write_pngs(fer_dir: Path, img_root: Path, items: list[tuple[str, str]]) -> None:
    """Write fer_dir's images for ``items`` ((folder, name) pairs) under img_root as PNGs."""
    from PIL import Image

    store: list[_WebpStore] = []
    todo = [(f, n) for f, n in items if not (img_root / f / n).is_file()]
    for f in sorted({f for f, _ in todo}):
        (img_root / f).mkdir(parents=True, exist_ok=True)
    if any(not (fer_dir / f / n).is_file() for f, n in todo):
        npz = fer_dir / NPZ_NAME
        if not npz.is_file():
            raise DataError(f"{fer_dir}: some listed images have no PNG and there is no {NPZ_NAME}")
        store.append(_WebpStore(npz))

    def one(item: tuple[str, str]) -> None:
        f, n = item
        dst = img_root / f / n
        tmp = dst.with_name(f".{n}.tmp")
        src = fer_dir / f / n
        if src.is_file():
            shutil.copyfile(src, tmp)
        else:
            with Image.open(io.BytesIO(store[0].raw(f, n))) as im:
                im.convert("L").save(tmp, format="PNG")
        os.replace(tmp, dst)

    def block(lo: int) -> None:
        for it in todo[lo:lo + 256]:
            one(it)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as ex:
        list(ex.map(block, range(0, len(todo), 256)))
