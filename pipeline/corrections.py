"""Label corrections in, a corrected dataset out: what ``pipeline train --labels-from FILE`` reads.

Three inputs, told apart by their content (not their name):

* a review database (``<run>/review.sqlite``, SQLite): every ``relabel`` decision sets its proposed
  label, every ``flag`` drops the image from training, ``keep`` leaves it;
* a CSV with an ``id`` column and a ``label`` column (or ``proposed_label``, as our flag export
  writes it), and an optional ``decision`` column: ``relabel`` sets the label, ``flag`` without a
  label drops the image, ``flag`` with a label sets it, ``keep`` leaves the image as it is; with no
  decision, a label sets it;
* a Label Studio JSON export of the tasks :func:`explorer.review.to_label_studio` wrote (each task's
  ``data.item_id`` and the choice of its last answered annotation; the JSON-MIN export's flat
  ``item_id`` / ``label`` records too). Tasks nobody answered change nothing.

Corrections never touch the test split: it stays the fixed yardstick two runs are compared on;
a correction of a test image is counted (``test_untouched``) and not applied. Every problem (an id
not in the data, a class name the data does not have, two rows that disagree about one image, an
unreadable file) is one line naming the row, raised before anything is trained.

This module reads the review database with :mod:`sqlite3` directly (read-only) so that the
pipeline does not depend on the explorer.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .runs import MANIFEST
from .sources import Dataset, DataError

KINDS = ("relabel", "drop", "keep")
CORRECTIONS_TABLE = "corrections.parquet"   # the run artifact listing what was changed


@dataclass(frozen=True)
class Correction:
    item_id: str
    kind: str            # "relabel" | "drop" | "keep"
    label: str | None    # the class name for "relabel"
    where: str           # "line 4", "task 7 (id 12)", "item 'x'": how the error messages name the row


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detect_format(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"SQLite format 3\x00"):
        return "review.sqlite"
    s = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if s[:1] in (b"[", b"{"):
        return "label-studio"
    return "csv"


# ---------------------------------------------------------------------------- readers
def read_review_db(path: Path) -> list[Correction]:
    return _review_rows(path)[1]


def _review_rows(path: Path) -> tuple[list[tuple], list[Correction]]:
    try:
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=15)
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot open the review database ({exc})") from None
    try:
        rows = conn.execute("SELECT item_id, decision, proposed_label FROM decisions ORDER BY item_id").fetchall()
    except sqlite3.Error as exc:
        raise DataError(f"{path}: not a review database ({exc})") from None
    finally:
        conn.close()
    out = []
    for item_id, decision, label in rows:
        where = f"item {str(item_id)!r}"
        if decision == "relabel":
            if not label:
                raise DataError(f"{path}: {where}: 'relabel' without a proposed label")
            out.append(Correction(str(item_id), "relabel", str(label), where))
        elif decision == "flag":
            out.append(Correction(str(item_id), "drop", None, where))
        elif decision == "keep":
            out.append(Correction(str(item_id), "keep", None, where))
        else:
            raise DataError(f"{path}: {where}: unknown decision {decision!r}")
    return rows, out


def _strip_csv_guard(s: str) -> str:
    # our CSV export prefixes a formula-looking string with "'" (CSV injection guard); undo it
    return s[1:] if len(s) > 1 and s[0] == "'" and s[1] in "=+-@\t\r" else s


def read_csv(path: Path) -> list[Correction]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file")
    header = [h.strip().lower() for h in rows[0]]
    if "id" not in header:
        raise DataError(f"{path}: line 1: no 'id' column (expected id,label[,decision])")
    lab_col = "label" if "label" in header else ("proposed_label" if "proposed_label" in header else None)
    dec_col = "decision" if "decision" in header else None
    if lab_col is None and dec_col is None:
        raise DataError(f"{path}: line 1: no 'label' (or 'proposed_label') and no 'decision' column")
    ci = {h: i for i, h in enumerate(header)}
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"line {n}"
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        item_id = _strip_csv_guard(row[ci["id"]].strip())
        if not item_id:
            raise DataError(f"{path}: {where}: empty id")
        label = _strip_csv_guard(row[ci[lab_col]].strip()) if lab_col else ""
        dec = row[ci[dec_col]].strip().lower() if dec_col else ""
        if dec in ("", "relabel"):
            if not label:
                raise DataError(f"{path}: {where}: id {item_id!r} has no label"
                                + (" for its 'relabel' decision" if dec else " and no decision"))
            out.append(Correction(item_id, "relabel", label, where))
        elif dec == "flag":
            out.append(Correction(item_id, "relabel", label, where) if label else Correction(item_id, "drop", None, where))
        elif dec == "keep":
            out.append(Correction(item_id, "keep", None, where))
        else:
            raise DataError(f"{path}: {where}: unknown decision {dec!r} (use relabel, flag or keep)")
    return out


def _choice(result: list) -> str | None:
    for r in result or []:
        if isinstance(r, dict) and r.get("type", "choices") == "choices":
            ch = (r.get("value") or {}).get("choices")
            if isinstance(ch, list) and ch:
                return str(ch[0])
    return None


def read_label_studio(path: Path) -> list[Correction]:
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({type(exc).__name__}: {str(exc)[:80]})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(f"{path}: a Label Studio export is a JSON list of tasks")
    out = []
    for n, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            raise DataError(f"{path}: task {n}: not a JSON object")
        where = f"task {n}" + (f" (id {task['id']})" if "id" in task else "")
        if isinstance(task.get("data"), dict):               # the full JSON export
            item_id = task["data"].get("item_id")
            label = None
            anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
            # the last answer counts: Label Studio lists annotations oldest first
            anns.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
            for a in reversed(anns):
                label = _choice(a.get("result"))
                if label:
                    break
        else:                                                  # JSON-MIN: flat records
            item_id = task.get("item_id")
            lab = task.get("label")
            label = _choice([{"value": lab}]) if isinstance(lab, dict) else (str(lab) if lab else None)
        if item_id is None or str(item_id).strip() == "":
            raise DataError(f"{path}: {where}: no data.item_id (not a task our export wrote)")
        if label:
            out.append(Correction(str(item_id), "relabel", label.strip(), where))
    return out


def read_corrections(path: str | Path) -> tuple[str, list[Correction]]:
    """(format, corrections) of a file; DataError (one line) for anything unreadable."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: corrections file not found")
    fmt = detect_format(p)
    reader = {"review.sqlite": read_review_db, "csv": read_csv, "label-studio": read_label_studio}[fmt]
    return fmt, reader(p)


# ---------------------------------------------------------------------------- applying
def apply_corrections(ds: Dataset, path: str | Path) -> tuple[Dataset, dict, pd.DataFrame]:
    """The dataset with the corrections in ``path`` applied, what was applied (the manifest's
    ``corrections`` record) and one row per change (``corrections.parquet``).

    Refuses (DataError naming the row) ids not in ``ds``, class names ``ds`` does not have, and two
    rows that disagree about one image; then nothing is applied."""
    p = Path(path)
    fmt, corr = read_corrections(p)
    classes = list(ds.classes)
    by_name = {c: i for i, c in enumerate(classes)}
    by_lower = {c.lower(): i for i, c in enumerate(classes)}
    pos = pd.Series(np.arange(len(ds.table)), index=ds.table["id"].astype(str))
    seen: dict[str, Correction] = {}
    for c in corr:
        if c.item_id not in pos.index:
            raise DataError(f"{p}: {c.where}: id {c.item_id!r} is not in the data ({ds.name or 'data source'})")
        if c.kind == "relabel" and c.label not in by_name and c.label.lower() not in by_lower:
            raise DataError(f"{p}: {c.where}: unknown class {c.label!r} (the data's classes: {', '.join(classes)})")
        prev = seen.get(c.item_id)
        if prev is not None and (prev.kind, _norm(prev.label)) != (c.kind, _norm(c.label)):
            raise DataError(f"{p}: {c.where}: conflicts with {prev.where} about id {c.item_id!r} "
                            f"({_say(prev)} vs {_say(c)})")
        seen[c.item_id] = c
    labels = ds.table["label"].to_numpy().astype(np.int64).copy()
    split = ds.table["split"].to_numpy()
    counts = {"relabel": 0, "drop": 0, "keep": 0, "unchanged": 0, "test_untouched": 0}
    drop = np.zeros(len(labels), bool)
    changes = []
    for c in seen.values():
        r = int(pos[c.item_id])
        if c.kind == "keep":
            counts["keep"] += 1
            continue
        if split[r] == "test":
            counts["test_untouched"] += 1
            continue
        old = classes[labels[r]]
        if c.kind == "drop":
            drop[r] = True
            counts["drop"] += 1
            changes.append((c.item_id, "drop", old, ""))
            continue
        new = by_name.get(c.label, by_lower.get(c.label.lower()))
        if new == labels[r]:
            counts["unchanged"] += 1
            continue
        labels[r] = new
        counts["relabel"] += 1
        changes.append((c.item_id, "relabel", old, classes[new]))
    table = ds.table.copy()
    table["label"] = labels
    table["label_name"] = np.asarray(classes, dtype=object)[labels]
    out = Dataset(table=table, images=ds.images, classes=classes, votes=ds.votes, skipped=list(ds.skipped), name=ds.name)
    if drop.any():
        out = out.subset(np.flatnonzero(~drop))
    # a review database in WAL mode keeps recent writes beside the file: hash what it says, not its bytes
    digest = (hashlib.sha256(json.dumps(_review_rows(p)[0]).encode()).hexdigest() if fmt == "review.sqlite"
              else file_sha256(p))
    info = {"file": str(p.resolve()), "format": fmt, "sha256": digest, "rows": len(corr),
            "applied": counts}
    log = pd.DataFrame(changes, columns=["id", "kind", "old_label", "new_label"])
    return out, info, log


def _norm(label: str | None) -> str | None:
    return label.lower() if label else label


def _say(c: Correction) -> str:
    return f"relabel to {c.label!r}" if c.kind == "relabel" else c.kind


def parent_of(path: str | Path) -> str | None:
    """The run a review database belongs to (its folder, when that holds a run), else None."""
    p = Path(path).resolve()
    if detect_format(p) == "review.sqlite" and (p.parent / MANIFEST).is_file():
        return str(p.parent)
    return None
