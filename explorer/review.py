"""The review store: flags, proposed labels, tags and sub-class names a person adds to a run.

One SQLite database per run, ``<run>/review.sqlite``, in WAL mode. This module is its only
writer; every user action is exactly one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so an
action is either fully kept or not at all, and two browser tabs never interleave half-actions.
Items are keyed by ``items.id`` (stable across re-analysis), sub-classes by their global id.
Every write is also appended to ``log`` so nothing a person did is silently overwritten.

Decisions on an item (the mislabel queue and map actions both write them):

=============  =====================================================================
``keep``       the given label is right; the item leaves the queue
``flag``       send the image back for re-annotation
``relabel``    flag it *and* propose a label (``proposed_label``, a class name)
=============  =====================================================================

The export helpers at the bottom are pure: DataFrames in, bytes out.
"""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator
from xml.sax.saxutils import quoteattr

import pandas as pd

DB_NAME = "review.sqlite"
SCHEMA_VERSION = 1
DECISIONS = ("keep", "flag", "relabel")
FLAGGED = ("flag", "relabel")
MAX_TEXT = 80  # tags, names and proposed labels are short human strings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    item_id TEXT PRIMARY KEY,
    decision TEXT NOT NULL CHECK (decision IN ('keep', 'flag', 'relabel')),
    proposed_label TEXT,
    source TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    item_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (item_id, tag)
);
CREATE TABLE IF NOT EXISTS subclass_names (
    subclass_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    updated REAL NOT NULL,
    anchor TEXT
);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    action TEXT NOT NULL,
    payload TEXT NOT NULL
);
"""


class ReviewError(ValueError):
    """A user action was refused (bad decision, empty tag, ...). One-line message."""


def clean_text(text: object, *, what: str = "text", allow_empty: bool = False) -> str:
    """A user string made safe to store: one line, no control characters, at most MAX_TEXT long."""
    s = "" if text is None else str(text)
    s = unicodedata.normalize("NFC", s)
    s = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in s)
    s = " ".join(s.split())
    if len(s) > MAX_TEXT:
        raise ReviewError(f"{what} is longer than {MAX_TEXT} characters")
    if not s and not allow_empty:
        raise ReviewError(f"{what} is empty")
    return s


def _ids(item_ids: str | Iterable[str]) -> list[str]:
    if isinstance(item_ids, str):
        item_ids = [item_ids]
    out = list(dict.fromkeys(str(i) for i in item_ids))  # unique, order kept
    if not out:
        raise ReviewError("no images selected")
    return out


_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    """One lock per database within this process: the app's sessions are threads of one process,
    and queueing them here is fair, where SQLite's busy handler sleeps and retries and can leave
    one writer waiting past its timeout under load. Other processes still meet SQLite's lock."""
    key = str(Path(path).resolve())
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


class ReviewStore:
    """The review database of one run. Cheap to create; connections are opened per call."""

    def __init__(self, run_path: str | Path):
        self.run_path = Path(run_path)
        self.path = self.run_path / DB_NAME

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=15, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 15000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _ensure(self) -> None:
        if getattr(self, "_ready", False) and self.path.exists():
            return
        if not self.run_path.is_dir():
            raise ReviewError(f"{self.run_path}: run folder is missing")
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            cols = {r[1] for r in conn.execute("PRAGMA table_info(subclass_names)")}
            if "anchor" not in cols:  # databases written before names were anchored
                conn.execute("ALTER TABLE subclass_names ADD COLUMN anchor TEXT")
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        self._ready = True

    @contextmanager
    def _action(self, action: str, payload: dict) -> Iterator[sqlite3.Cursor]:
        """One user action = one transaction, logged in the same transaction."""
        with _write_lock(self.path):
            # schema creation too: sixteen sessions' first actions on a new database all switching
            # it to WAL at once got an immediate "database is locked" (no busy wait for that)
            self._ensure()
            yield from self._transaction(action, payload)

    def _transaction(self, action: str, payload: dict) -> Iterator[sqlite3.Cursor]:
        conn = self._connect()
        try:
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.cursor()
            yield cur
            cur.execute("INSERT INTO log(time, action, payload) VALUES (?, ?, ?)",
                        (time.time(), action, json.dumps(payload, ensure_ascii=False, sort_keys=True)))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        if not self.path.exists():
            return []
        conn = self._connect()
        try:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
        finally:
            conn.close()

    # ------------------------------------------------------------------ actions
    def decide(self, item_ids: str | Iterable[str], decision: str, *, proposed_label: str | None = None,
               source: str = "") -> int:
        """Record ``decision`` for every id (one transaction). Returns how many ids were written."""
        if decision not in DECISIONS:
            raise ReviewError(f"unknown decision {decision!r}; choose one of {', '.join(DECISIONS)}")
        ids = _ids(item_ids)
        label = None
        if decision == "relabel":
            label = clean_text(proposed_label, what="proposed label")
        elif proposed_label:
            raise ReviewError("a proposed label goes with the 'relabel' decision only")
        now = time.time()
        with self._action("decide", {"ids": ids, "decision": decision, "proposed_label": label, "source": source}) as cur:
            cur.executemany(
                "INSERT INTO decisions(item_id, decision, proposed_label, source, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(item_id) DO UPDATE SET decision = excluded.decision, "
                "proposed_label = excluded.proposed_label, source = excluded.source, updated = excluded.updated",
                [(i, decision, label, source, now) for i in ids])
        return len(ids)

    def flag(self, item_ids: str | Iterable[str], *, source: str = "") -> int:
        return self.decide(item_ids, "flag", source=source)

    def undecide(self, item_ids: str | Iterable[str]) -> int:
        ids = _ids(item_ids)
        with self._action("undecide", {"ids": ids}) as cur:
            cur.executemany("DELETE FROM decisions WHERE item_id = ?", [(i,) for i in ids])
            return cur.rowcount if cur.rowcount >= 0 else len(ids)

    def tag(self, item_ids: str | Iterable[str], tag: str) -> int:
        ids = _ids(item_ids)
        tag = clean_text(tag, what="tag")
        now = time.time()
        with self._action("tag", {"ids": ids, "tag": tag}) as cur:
            cur.executemany("INSERT OR IGNORE INTO tags(item_id, tag, created) VALUES (?, ?, ?)",
                            [(i, tag, now) for i in ids])
        return len(ids)

    def untag(self, item_ids: str | Iterable[str], tag: str) -> int:
        ids = _ids(item_ids)
        tag = clean_text(tag, what="tag")
        with self._action("untag", {"ids": ids, "tag": tag}) as cur:
            cur.executemany("DELETE FROM tags WHERE item_id = ? AND tag = ?", [(i, tag) for i in ids])
        return len(ids)

    def flag_and_tag(self, item_ids: str | Iterable[str], *, flag: bool, tag: str | None, source: str = "") -> int:
        """The map's one-click action on a selection: flag and/or tag, in a single transaction."""
        ids = _ids(item_ids)
        tag = clean_text(tag, what="tag") if tag else None
        if not flag and not tag:
            raise ReviewError("nothing to do: choose flag and/or a tag")
        now = time.time()
        with self._action("flag_and_tag", {"ids": ids, "flag": flag, "tag": tag, "source": source}) as cur:
            if flag:
                cur.executemany(
                    "INSERT INTO decisions(item_id, decision, proposed_label, source, updated) VALUES (?, 'flag', NULL, ?, ?) "
                    "ON CONFLICT(item_id) DO UPDATE SET decision = CASE WHEN decision = 'relabel' THEN 'relabel' ELSE 'flag' END, "
                    "source = excluded.source, updated = excluded.updated",
                    [(i, source, now) for i in ids])
            if tag:
                cur.executemany("INSERT OR IGNORE INTO tags(item_id, tag, created) VALUES (?, ?, ?)",
                                [(i, tag, now) for i in ids])
        return len(ids)

    def name_subclass(self, subclass_id: int, name: str, *, anchor: str | None = None) -> None:
        """Give a sub-class a human name; an empty name removes it.

        ``anchor``: the ``items.id`` of the sub-class's medoid when it was named. Sub-class ids are
        only stable while the analysis is; after a re-analysis the view can tell a name whose
        medoid moved (see :meth:`subclass_anchors`)."""
        sid = int(subclass_id)
        name = clean_text(name, what="sub-class name", allow_empty=True)
        with self._action("name_subclass", {"subclass_id": sid, "name": name, "anchor": anchor}) as cur:
            if name:
                cur.execute("INSERT INTO subclass_names(subclass_id, name, updated, anchor) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT(subclass_id) DO UPDATE SET name = excluded.name, updated = excluded.updated, "
                            "anchor = excluded.anchor", (sid, name, time.time(), anchor))
            else:
                cur.execute("DELETE FROM subclass_names WHERE subclass_id = ?", (sid,))

    # ------------------------------------------------------------------ reads
    def decisions(self) -> pd.DataFrame:
        rows = self._read("SELECT item_id, decision, proposed_label, source, updated FROM decisions ORDER BY updated")
        return pd.DataFrame(rows, columns=["item_id", "decision", "proposed_label", "source", "updated"]).astype(
            {"item_id": str, "decision": str, "source": str, "updated": float})

    def decision_map(self) -> dict[str, tuple[str, str | None]]:
        return {r[0]: (r[1], r[2]) for r in self._read("SELECT item_id, decision, proposed_label FROM decisions")}

    def tags(self) -> pd.DataFrame:
        rows = self._read("SELECT item_id, tag, created FROM tags ORDER BY created, tag")
        return pd.DataFrame(rows, columns=["item_id", "tag", "created"]).astype({"item_id": str, "tag": str, "created": float})

    def tag_names(self) -> list[str]:
        return [r[0] for r in self._read("SELECT tag FROM tags GROUP BY tag ORDER BY COUNT(*) DESC, tag")]

    def subclass_names(self) -> dict[int, str]:
        return {int(r[0]): r[1] for r in self._read("SELECT subclass_id, name FROM subclass_names")}

    def subclass_anchors(self) -> dict[int, str | None]:
        try:
            return {int(r[0]): r[1] for r in self._read("SELECT subclass_id, anchor FROM subclass_names")}
        except sqlite3.OperationalError:  # an old database not yet migrated (read-only reader)
            return {}

    def counts(self) -> dict[str, int]:
        out = {d: 0 for d in DECISIONS}
        for d, n in self._read("SELECT decision, COUNT(*) FROM decisions GROUP BY decision"):
            out[d] = int(n)
        out["tagged"] = int(self._read("SELECT COUNT(DISTINCT item_id) FROM tags")[0][0]) if self.path.exists() else 0
        return out

    def log(self, limit: int = 50) -> list[dict]:
        rows = self._read("SELECT seq, time, action, payload FROM log ORDER BY seq DESC LIMIT ?", (int(limit),))
        return [{"seq": s, "time": t, "action": a, **json.loads(p)} for s, t, a, p in rows]


# ---------------------------------------------------------------------------- exports (pure)
EXPORT_COLUMNS = ["id", "path", "source", "split", "given_label", "decision", "proposed_label",
                  "suggested_label", "score", "tags"]


def flagged_frame(items: pd.DataFrame, decisions: pd.DataFrame, tags: pd.DataFrame,
                  mislabels: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per flagged (or relabelled) item, in item order, with what a re-annotator needs.

    ``items``: the run's items table (``id``, ``label_name``, ...); ``mislabels``: the analysis table
    in the same row order (optional; adds our score and suggested label).
    """
    flagged = decisions[decisions["decision"].isin(FLAGGED)]
    rows = items.reset_index(drop=True)
    pos = pd.Series(range(len(rows)), index=rows["id"].astype(str))
    pos = pos[~pos.index.duplicated()]
    hit = pos.reindex(flagged["item_id"].astype(str)).dropna().astype(int)
    fl = flagged.set_index("item_id").loc[hit.index]
    order = hit.sort_values()
    tag_join = tags.groupby("item_id")["tag"].agg(lambda s: ";".join(sorted(s))) if len(tags) else pd.Series(dtype=str)
    out = pd.DataFrame({
        "id": order.index.astype(str),
        "path": _col(rows, "path", order.values),
        "source": _col(rows, "source", order.values),
        "split": _col(rows, "split", order.values),
        "given_label": _col(rows, "label_name", order.values),
        "decision": fl.loc[order.index, "decision"].to_numpy(),
        "proposed_label": fl.loc[order.index, "proposed_label"].fillna("").to_numpy(),
        "suggested_label": (_col(mislabels, "suggested_name", order.values) if mislabels is not None else [""] * len(order)),
        "score": (mislabels["score"].to_numpy()[order.values].round(4) if mislabels is not None and "score" in mislabels
                  else [float("nan")] * len(order)),
        "tags": [tag_join.get(i, "") for i in order.index],
    })
    out["row"] = order.values
    return out.reset_index(drop=True)


def _col(df: pd.DataFrame | None, name: str, rows) -> list:
    if df is None or name not in df:
        return [""] * len(rows)
    return df[name].astype(str).to_numpy()[rows].tolist()


def _csv_safe(v: object) -> object:
    """Neutralise spreadsheet formulas in user strings (CSV injection)."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def to_csv(flagged: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = [c for c in EXPORT_COLUMNS if c in flagged]
    w.writerow(cols)
    for rec in flagged[cols].itertuples(index=False):
        w.writerow([_csv_safe(v) for v in rec])
    return buf.getvalue().encode("utf-8")


def to_label_studio(flagged: pd.DataFrame, *, image_ref: Callable[[int, str], str] | None = None,
                    model_version: str = "subclass-explorer") -> bytes:
    """Label Studio import tasks (JSON list). ``image_ref(row, path)`` gives each task's image URL.

    Each task carries the given label, our proposal (a person's ``relabel`` first, else our suggested
    label) as a prediction for a ``Choices`` control named ``label`` on an ``Image`` named ``image``
    (see :func:`label_studio_config`).
    """
    tasks = []
    for rec in flagged.to_dict("records"):
        ref = image_ref(int(rec["row"]), str(rec.get("path", ""))) if image_ref else str(rec.get("path", ""))
        data = {"image": ref, "item_id": rec["id"], "given_label": rec.get("given_label", ""),
                "decision": rec.get("decision", ""), "tags": rec.get("tags", "")}
        task: dict = {"data": data}
        choice = rec.get("proposed_label") or rec.get("suggested_label") or ""
        if choice:
            pred: dict = {"model_version": model_version, "result": [{
                "from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}
            score = rec.get("score")
            if isinstance(score, (int, float)) and score == score:
                pred["score"] = float(score)
            task["predictions"] = [pred]
        tasks.append(task)
    return json.dumps(tasks, ensure_ascii=False, indent=1).encode("utf-8")


def label_studio_config(classes: list[str]) -> str:
    """The labeling config matching :func:`to_label_studio` (class names XML-escaped)."""
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    return ("<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
            "  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInLine=\"true\">\n"
            f"{choices}\n  </Choices>\n</View>\n")
