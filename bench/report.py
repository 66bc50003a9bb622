"""One row per comparison, the printed table and the JSON file.

A row compares A with B. ``ratio`` is always A's *speed* relative to B's: throughputs divide
A / B, times divide B / A, so 0.69 means "A runs at 69% of B's speed" and 2.8 means "A is 2.8x
faster". A value that was cut by its time budget is a bound: ``a_bound`` / ``b_bound`` is ">="
(the time is at least that), and the ratio then carries its own bound. Rows that only report a
measurement (analyze's wall time and peak memory) have ``ratio`` None.
"""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import runs

SCHEMA = 1
STATUSES = ("ok", "bound", "skipped", "failed")


@dataclass
class Row:
    section: str                      # "a".."e", as in issue 5 part 1
    name: str                         # what is compared
    a_label: str = ""
    a_value: float | None = None
    b_label: str = ""
    b_value: float | None = None
    unit: str = ""                    # "img/s" (higher is faster) or "s" (lower is faster)
    a_bound: str | None = None        # ">=" when a is a lower bound (a time cut by its budget)
    b_bound: str | None = None
    ratio: float | None = None
    ratio_bound: str | None = None    # ">=" / "<=" when one side is a bound
    status: str = "ok"
    note: str = ""
    extra: dict = field(default_factory=dict)

    def finish(self) -> "Row":
        """Fill ``ratio`` (and its bound and the status) from the two values."""
        a, b = self.a_value, self.b_value
        if self.status in ("skipped", "failed") or a is None or b is None or a <= 0 or b <= 0:
            return self
        if self.unit == "s":
            self.ratio = b / a
            lo_a, lo_b = self.a_bound == ">=", self.b_bound == ">="
            if lo_a and lo_b:
                self.ratio_bound = "?"
            elif lo_b:
                self.ratio_bound = ">="
            elif lo_a:
                self.ratio_bound = "<="
        else:
            self.ratio = a / b
        if self.a_bound or self.b_bound:
            self.status = "bound"
        return self


def _num(v: float | None, unit: str, bound: str | None) -> str:
    if v is None:
        return "-"
    if unit == "s":
        s = f"{v:.1f} s" if v < 100 else f"{v:.0f} s"
    elif unit == "MB":
        s = f"{v:,.0f} MB"
    else:
        s = f"{v:,.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}"
    return (bound + " " if bound and bound != "?" else "") + s


def _ratio(r: Row) -> str:
    if r.ratio is None:
        return "-"
    if r.ratio_bound == "?":
        return "?"
    return (r.ratio_bound + " " if r.ratio_bound else "") + f"{r.ratio:.2f}"


def table(rows: list[Row]) -> str:
    """A Markdown table: printed to the terminal and pasted into docs/RESULTS.md unchanged."""
    head = ["", "measurement", "A", "B", "A/B speed", "note"]
    body = []
    for r in rows:
        a = f"{r.a_label} {_num(r.a_value, r.unit, r.a_bound)}".strip() if r.a_label or r.a_value is not None else "-"
        b = f"{r.b_label} {_num(r.b_value, r.unit, r.b_bound)}".strip() if r.b_label or r.b_value is not None else "-"
        note = r.note if r.status != "skipped" else ("skipped: " + r.note)
        body.append([r.section, r.name, a, b, _ratio(r), note.replace("|", "/")])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c for c in row) + " |" for row in body]
    return "\n".join(lines)


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def to_json(rows: list[Row], *, mode: str, quick: bool, wall_s: float, settings: dict, info: dict) -> dict:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return {"schema": SCHEMA, "mode": mode, "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "wall_s": round(wall_s, 1), "machine": info, "settings": settings,
            "rows": [{k: clean(v) for k, v in asdict(r).items()} for r in rows]}


def write_json(path: Path, obj: dict) -> None:
    runs.write_json(Path(path), obj, sort_keys=False)
