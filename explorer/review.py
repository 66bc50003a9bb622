"""The review store: flags, proposed labels, tags and sub-class names a person adds to a run.

One SQLite database per run, ``<run>/review.sqlite``, in WAL mode. This module is its only
writer; every user action is exactly one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so an
action is either fully kept or not at all, and two browser tabs never interleave half-actions.
Items are keyed by ``items.id`` (stable across re-analysis), sub-classes by their global id.
Every write is also appended to ``log`` so nothing a person did is silently overwritten. Each log
entry carries the state it replaced (``before``), so :meth:`ReviewStore.undo` can put it back: an
undo is itself an action in the log (``undo`` with ``undoes: seq``); nothing is ever deleted from it.

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
import random
import sqlite3
import threading
import time
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator
from xml.sax.saxutils import quoteattr

import numpy as np
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
        # Another process creating the same database at the same moment makes the WAL switch fail
        # at once with "database is locked" (SQLite does not run the busy handler for it), so the
        # whole schema step is retried, with jitter, for as long as a write would wait.
        deadline = time.monotonic() + 15
        rng = random.Random()
        while True:
            try:
                self._create_schema()
                break
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(rng.uniform(0.005, 0.05))
        self._ready = True

    @contextmanager
    def _immediate(self, *pragmas: str) -> Iterator[sqlite3.Connection]:
        """A connection in one BEGIN IMMEDIATE transaction: committed when the block ends, rolled
        back when it raises (a killed or failing writer leaves nothing half-written)."""
        conn = self._connect()
        try:
            for pragma in pragmas:
                conn.execute(pragma)
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _create_schema(self) -> None:
        conn = self._connect()
        try:
            wal = conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
            if not wal:
                conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        with self._immediate() as conn:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            cols = {r[1] for r in conn.execute("PRAGMA table_info(subclass_names)")}
            if "anchor" not in cols:  # databases written before names were anchored
                conn.execute("ALTER TABLE subclass_names ADD COLUMN anchor TEXT")
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextmanager
    def _action(self, action: str, payload: dict) -> Iterator[sqlite3.Cursor]:
        """One user action = one transaction, logged in the same transaction."""
        with _write_lock(self.path):
            # schema creation too: sixteen sessions' first actions on a new database all switching
            # it to WAL at once got an immediate "database is locked" (no busy wait for that)
            self._ensure()
            with self._immediate("PRAGMA synchronous = FULL") as conn:
                cur = conn.cursor()
                yield cur
                cur.execute("INSERT INTO log(time, action, payload) VALUES (?, ?, ?)",
                            (time.time(), action, json.dumps(payload, ensure_ascii=False, sort_keys=True)))

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
        payload = {"ids": ids, "decision": decision, "proposed_label": label, "source": source}
        with self._action("decide", payload) as cur:
            payload["before"] = _decisions_before(cur, ids)
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
        payload: dict = {"ids": ids}
        with self._action("undecide", payload) as cur:
            before = _decisions_before(cur, ids)
            payload["before"] = before
            cur.executemany("DELETE FROM decisions WHERE item_id = ?", [(i,) for i in ids])
        return sum(1 for v in before.values() if v is not None)

    def tag(self, item_ids: str | Iterable[str], tag: str) -> int:
        ids = _ids(item_ids)
        tag = clean_text(tag, what="tag")
        now = time.time()
        payload: dict = {"ids": ids, "tag": tag}
        with self._action("tag", payload) as cur:
            payload["added"] = _tag_missing(cur, ids, tag)
            cur.executemany("INSERT OR IGNORE INTO tags(item_id, tag, created) VALUES (?, ?, ?)",
                            [(i, tag, now) for i in ids])
        return len(ids)

    def untag(self, item_ids: str | Iterable[str], tag: str) -> int:
        ids = _ids(item_ids)
        tag = clean_text(tag, what="tag")
        payload: dict = {"ids": ids, "tag": tag}
        with self._action("untag", payload) as cur:
            missing = set(_tag_missing(cur, ids, tag))
            payload["removed"] = [i for i in ids if i not in missing]
            cur.executemany("DELETE FROM tags WHERE item_id = ? AND tag = ?", [(i, tag) for i in ids])
        return len(ids)

    def flag_and_tag(self, item_ids: str | Iterable[str], *, flag: bool, tag: str | None, source: str = "") -> int:
        """The map's one-click action on a selection: flag and/or tag, in a single transaction."""
        ids = _ids(item_ids)
        tag = clean_text(tag, what="tag") if tag else None
        if not flag and not tag:
            raise ReviewError("nothing to do: choose flag and/or a tag")
        now = time.time()
        payload: dict = {"ids": ids, "flag": flag, "tag": tag, "source": source}
        with self._action("flag_and_tag", payload) as cur:
            if flag:
                payload["before"] = _decisions_before(cur, ids)
            if tag:
                payload["added"] = _tag_missing(cur, ids, tag)
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
        payload: dict = {"subclass_id": sid, "name": name, "anchor": anchor}
        with self._action("name_subclass", payload) as cur:
            prev = cur.execute("SELECT name, anchor FROM subclass_names WHERE subclass_id = ?", (sid,)).fetchone()
            payload["before"] = list(prev) if prev else None
            if name:
                cur.execute("INSERT INTO subclass_names(subclass_id, name, updated, anchor) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT(subclass_id) DO UPDATE SET name = excluded.name, updated = excluded.updated, "
                            "anchor = excluded.anchor", (sid, name, time.time(), anchor))
            else:
                cur.execute("DELETE FROM subclass_names WHERE subclass_id = ?", (sid,))

    def undo(self) -> dict:
        """Undo the most recent action not undone yet (any session's): put back the state it
        replaced. Logged as an ``undo`` action; repeated undos walk further back. Returns the
        undone entry (``seq``, ``action``, ...); raises ReviewError when nothing can be undone."""
        payload: dict = {}
        with self._action("undo", payload) as cur:
            entry = _last_undoable(cur)
            if entry is None:
                raise ReviewError("nothing to undo")
            if not _restorable(entry):
                raise ReviewError(f"the last action ({entry['action']}) was recorded before undo existed")
            _restore(cur, entry)
            payload.update({"undoes": entry["seq"], "undone_action": entry["action"],
                            "ids": entry.get("ids", [])})
        return entry

    def last_undoable(self) -> dict | None:
        """The entry :meth:`undo` would undo now, or None (for the button's label)."""
        if not self.path.exists():
            return None
        conn = self._connect()
        try:
            try:
                entry = _last_undoable(conn.cursor())
            except sqlite3.OperationalError:
                return None
        finally:
            conn.close()
        return entry if entry is not None and _restorable(entry) else None

    def history(self, item_id: str) -> list[dict]:
        """Every logged action that touched ``item_id``, oldest first, each with a one-line ``what``
        and ``undone`` (True when a later undo reverted it)."""
        item = str(item_id)
        needle = "%" + json.dumps(item, ensure_ascii=False) + "%"
        rows = self._read("SELECT seq, time, action, payload FROM log WHERE payload LIKE ? ORDER BY seq", (needle,))
        entries = [{"seq": s, "time": t, "action": a, **json.loads(p)} for s, t, a, p in rows]
        entries = [e for e in entries if item in e.get("ids", [])]
        undone = {e["undoes"] for e in entries if e["action"] == "undo"}
        for e in entries:
            e["undone"] = e["seq"] in undone
            e["what"] = describe(e)
        return entries

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


# ---------------------------------------------------------------------------- undo helpers
UNDOABLE = ("decide", "undecide", "tag", "untag", "flag_and_tag", "name_subclass")


def _decisions_before(cur: sqlite3.Cursor, ids: list[str]) -> dict[str, list | None]:
    """id -> [decision, proposed_label, source, updated] as it is now (None: no decision)."""
    out: dict[str, list | None] = {i: None for i in ids}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        q = "SELECT item_id, decision, proposed_label, source, updated FROM decisions WHERE item_id IN (%s)" % \
            ",".join("?" * len(chunk))
        for r in cur.execute(q, chunk).fetchall():
            out[r[0]] = [r[1], r[2], r[3], r[4]]
    return out


def _tag_missing(cur: sqlite3.Cursor, ids: list[str], tag: str) -> list[str]:
    """The ids among ``ids`` that do not carry ``tag`` now."""
    have: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        q = "SELECT item_id FROM tags WHERE tag = ? AND item_id IN (%s)" % ",".join("?" * len(chunk))
        have.update(r[0] for r in cur.execute(q, [tag, *chunk]).fetchall())
    return [i for i in ids if i not in have]


def _last_undoable(cur: sqlite3.Cursor) -> dict | None:
    undone = {int(r[0]) for r in cur.execute(
        "SELECT json_extract(payload, '$.undoes') FROM log WHERE action = 'undo'").fetchall() if r[0] is not None}
    q = "SELECT seq, time, action, payload FROM log WHERE action IN (%s) ORDER BY seq DESC" % ",".join("?" * len(UNDOABLE))
    for seq, t, action, payload in cur.execute(q, UNDOABLE):
        if seq not in undone:
            return {"seq": seq, "time": t, "action": action, **json.loads(payload)}
    return None


def _restorable(e: dict) -> bool:
    a = e["action"]
    if a in ("decide", "undecide", "name_subclass"):
        return "before" in e
    if a == "tag":
        return "added" in e
    if a == "untag":
        return "removed" in e
    if a == "flag_and_tag":
        return (not e.get("flag") or "before" in e) and (not e.get("tag") or "added" in e)
    return False


def _restore(cur: sqlite3.Cursor, e: dict) -> None:
    a = e["action"]
    if a == "name_subclass":
        sid = int(e["subclass_id"])
        if e["before"] is None:
            cur.execute("DELETE FROM subclass_names WHERE subclass_id = ?", (sid,))
        else:
            name, anchor = e["before"]
            cur.execute("INSERT INTO subclass_names(subclass_id, name, updated, anchor) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(subclass_id) DO UPDATE SET name = excluded.name, updated = excluded.updated, "
                        "anchor = excluded.anchor", (sid, name, time.time(), anchor))
        return
    if "before" in e and (a != "flag_and_tag" or e.get("flag")):
        gone = [(i,) for i, v in e["before"].items() if v is None]
        back = [(i, *v) for i, v in e["before"].items() if v is not None]
        cur.executemany("DELETE FROM decisions WHERE item_id = ?", gone)
        cur.executemany("INSERT INTO decisions(item_id, decision, proposed_label, source, updated) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT(item_id) DO UPDATE SET decision = excluded.decision, "
                        "proposed_label = excluded.proposed_label, source = excluded.source, updated = excluded.updated",
                        back)
    if a in ("tag", "flag_and_tag") and e.get("tag"):
        cur.executemany("DELETE FROM tags WHERE item_id = ? AND tag = ?", [(i, e["tag"]) for i in e.get("added", [])])
    if a == "untag":
        now = time.time()
        cur.executemany("INSERT OR IGNORE INTO tags(item_id, tag, created) VALUES (?, ?, ?)",
                        [(i, e["tag"], now) for i in e.get("removed", [])])


def describe(e: dict) -> str:
    """One line saying what a log entry did, e.g. ``flagged 3 images and tagged “glasses”``."""
    a = e["action"]
    n = len(e.get("ids", []))
    imgs = f"{n:,} image" + ("" if n == 1 else "s")
    if a == "decide":
        d = e.get("decision")
        if d == "relabel":
            return f"proposed “{e.get('proposed_label')}” for {imgs}"
        return {"keep": f"kept {imgs}", "flag": f"flagged {imgs}"}.get(d, f"{d} {imgs}")
    if a == "undecide":
        return f"cleared the decision on {imgs}"
    if a == "tag":
        return f"tagged {imgs} “{e.get('tag')}”"
    if a == "untag":
        return f"removed the tag “{e.get('tag')}” from {imgs}"
    if a == "flag_and_tag":
        bits = (["flagged"] if e.get("flag") else []) + ([f"tagged “{e.get('tag')}”"] if e.get("tag") else [])
        return f"{' and '.join(bits)} {imgs}"
    if a == "name_subclass":
        return f"named sub-class {e.get('subclass_id')} “{e.get('name')}”" if e.get("name") else \
            f"cleared the name of sub-class {e.get('subclass_id')}"
    if a == "undo":
        return f"undid action #{e.get('undoes')} ({e.get('undone_action')})"
    return a


# ---------------------------------------------------------------------------- exports (pure)
EXPORT_COLUMNS = ["id", "path", "source", "split", "given_label", "subclass", "subclass_name", "decision",
                  "proposed_label", "suggested_label", "score", "tags"]


def group_frame(items: pd.DataFrame, rows, decisions: pd.DataFrame, tags: pd.DataFrame,
                mislabels: pd.DataFrame | None = None, *, subclass: np.ndarray | None = None,
                subclass_names: dict[int, str] | None = None) -> pd.DataFrame:
    """One row per image of a group (a tag, a selection, a sub-class, a confusion cell), in the
    group's order, with the same columns as :func:`flagged_frame` plus the sub-class (id and the
    name a person gave it, else ``class #k``) and every tag. ``subclass``: (N,) sub-class per row."""
    rows = np.asarray([int(r) for r in rows], dtype=np.int64)
    it = items.reset_index(drop=True)
    ids = it["id"].astype(str).to_numpy()[rows]
    dec = decisions.set_index("item_id") if len(decisions) else None
    tag_join = tags.groupby("item_id")["tag"].agg(lambda s: ";".join(sorted(s))) if len(tags) else pd.Series(dtype=str)

    def dget(i: str, col: str) -> str:
        if dec is None or i not in dec.index:
            return ""
        v = dec.at[i, col]
        return "" if v is None or v != v else str(v)

    names = subclass_names or {}
    out = pd.DataFrame({
        "id": ids,
        "path": _col(it, "path", rows),
        "source": _col(it, "source", rows),
        "split": _col(it, "split", rows),
        "given_label": _col(it, "label_name", rows),
        "subclass": ([int(subclass[r]) for r in rows] if subclass is not None else [""] * len(rows)),
        "subclass_name": ([names.get(int(subclass[r]), "") for r in rows] if subclass is not None else [""] * len(rows)),
        "decision": [dget(i, "decision") for i in ids],
        "proposed_label": [dget(i, "proposed_label") for i in ids],
        "suggested_label": (_col(mislabels, "suggested_name", rows) if mislabels is not None else [""] * len(rows)),
        "score": (mislabels["score"].to_numpy()[rows].round(4) if mislabels is not None and "score" in mislabels
                  else [float("nan")] * len(rows)),
        "tags": [tag_join.get(i, "") for i in ids],
    })
    out["row"] = rows
    return out


def flagged_frame(items: pd.DataFrame, decisions: pd.DataFrame, tags: pd.DataFrame,
                  mislabels: pd.DataFrame | None = None, *, subclass: np.ndarray | None = None,
                  subclass_names: dict[int, str] | None = None) -> pd.DataFrame:
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
        "subclass": ([int(subclass[r]) for r in order.values] if subclass is not None else [""] * len(order)),
        "subclass_name": ([(subclass_names or {}).get(int(subclass[r]), "") for r in order.values]
                          if subclass is not None else [""] * len(order)),
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
        if "subclass_name" in rec:
            data["subclass"] = rec.get("subclass", "")
            data["subclass_name"] = rec.get("subclass_name", "")
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
