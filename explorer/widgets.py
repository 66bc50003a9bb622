"""Reusable pieces of the pages: the run guard, galleries, the job panel, typed session state.

User strings (labels, sub-class names, tags, file names) are never given to anything that renders
HTML. Where Streamlit renders Markdown (captions, headers, widget labels) they go through
:func:`md`, which backslash-escapes every Markdown and directive character; tables and
``st.text``/``st.code`` show them verbatim.
"""
from __future__ import annotations

import atexit
import logging
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import streamlit as st

from pipeline import progress
from pipeline.errors import one_line
from pipeline.config import LOSSES, MAX_EPOCHS, MAX_LEVELS, LossConfig, is_synthetic
from pipeline.sources.discover import discover
from pipeline.runs import MANIFEST, RunError

from . import data, jobs, review, settings
from . import train_form as train_form_
from .review import ReviewError, ReviewStore

log = logging.getLogger("explorer")

# This module is imported once per server process (its first page): jobs started before that
# have outlived the server that started them.
SERVER_STARTED = time.time()


def outliving_job_line(job: "jobs.Job") -> str:
    """One line saying a job keeps running without its server, and how to stop it."""
    name = job.title or Path(job.run_dir).name
    return (f"The {job.kind} job '{name}' (process group {job.pid}) keeps running after this server stops; "
            f"its run appears in the app when it is done. To stop it: kill -TERM -{job.pid}")


def _say_outliving_job_at_exit() -> None:
    try:
        job = jobs.current(settings.runs_root())
    except Exception:  # the runs folder went away: nothing to say
        return
    if job is not None and job.active:
        print(f"subclass-explorer: {outliving_job_line(job)}", file=sys.stderr, flush=True)


atexit.register(_say_outliving_job_at_exit)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$=&\"'])")


def md(text: object) -> str:
    """``text`` as literal Markdown: every special character escaped, one line."""
    s = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", s)


# ---------------------------------------------------------------------------- session state
class State:
    """Typed access to the few session-state values pages share."""

    RUN = "run_path"
    FOCUS = "map_focus"          # {"rows": [...], "title": str} shown on the map as the selection
    SIMILAR = "similar_row"      # row to query on the Similar page
    CELL = "confusion_cell"

    @staticmethod
    def run_path() -> str | None:
        return st.session_state.get(State.RUN)

    @staticmethod
    def set_run_path(path: str | None) -> None:
        st.session_state[State.RUN] = path

    @staticmethod
    def focus() -> dict | None:
        f = st.session_state.get(State.FOCUS)
        return f if isinstance(f, dict) and f.get("run") == State.run_path() else None

    @staticmethod
    def set_focus(rows: Sequence[int], title: str, colour_by: str | None = None) -> None:
        st.session_state[State.FOCUS] = {"rows": [int(r) for r in rows], "title": str(title),
                                         "run": State.run_path(), "colour_by": colour_by}

    @staticmethod
    def clear_focus() -> None:
        st.session_state.pop(State.FOCUS, None)

    @staticmethod
    def similar_row() -> int | None:
        v = st.session_state.get(State.SIMILAR)
        return v[1] if isinstance(v, tuple) and v[0] == State.run_path() else None

    @staticmethod
    def set_similar_row(row: int) -> None:
        st.session_state[State.SIMILAR] = (State.run_path(), int(row))


# ---------------------------------------------------------------------------- guards
@contextmanager
def run_guard() -> Iterator[None]:
    """Show a bad run (or a refused action) as one line and stop this page; never a traceback."""
    try:
        yield
    except RunError as exc:
        st.error(md(one_line(exc, empty="this run cannot be read")), icon=":material/error:")
        st.stop()
    except ReviewError as exc:
        st.error(md(one_line(exc)))
        st.stop()
    except Exception as exc:  # a bug: log it in full, show one line
        log.exception("explorer page failed")
        first = one_line(exc, 200, empty="")
        st.error(md(f"Something went wrong ({type(exc).__name__}: {first}). The details are in the server log."))
        st.stop()


UNFINISHED = ("interrupted", "failed", "running")


def current_run() -> str:
    """The run this session is looking at, checked to be readable; stops the page otherwise. An
    unfinished run (interrupted, failed, or 'running' with no job on it) gets its own panel."""
    path = State.run_path()
    if not path:
        st.info("No run is selected. Pick one in the sidebar, or train one.")
        st.stop()
    try:
        data.run(path)
    except RunError:
        info = next((r for r in data.runs(settings.runs_root()) if r.path == path), None)
        if info is not None and info.status in UNFINISHED and not info.problem:
            unfinished_run_panel(info)
            st.stop()
        with run_guard():
            data.run(path)
    return path


def unfinished_run_panel(info: data.RunInfo) -> None:
    """An unfinished run: what happened, and Delete (to the trash, confirmed; nothing is lost)."""
    root = settings.runs_root()
    job = jobs.current(root)
    if job is not None and job.active and Path(job.run_dir) == Path(info.path):
        st.info(md(f"Run {info.name} is being built by the current job."))
        job_panel(compact=False)
        return
    st.title(md(f"Run {info.name}"))
    said = {"interrupted": "was stopped before it finished (cancelled, or the machine went down)",
            "failed": "failed before it finished", "running": "is marked running, but no job is working on it "
                                                             "(its process ended without a word)"}[info.status]
    st.warning(md(f"This run {said}. Its checkpoint is kept: Resume finishes it with the same options "
                  "from its last finished epoch (then analyses it), or move it to the trash."),
               icon=":material/pause_circle:")
    c1, c2 = st.columns(2)
    with c1:
        resume_button(info, key="run_resume", job=job)
    if c2.button("Delete…", key="run_delete", icon=":material/delete:"):
        st.session_state["_confirm_delete"] = info.path
    if st.session_state.get("_confirm_delete") == info.path:  # kept open across reruns until answered
        confirm_delete(info.path)


def resume_button(info: data.RunInfo, *, key: str, job: "jobs.Job | None" = None) -> None:
    """"Resume" for an unfinished run: ``pipeline train --config <run>/manifest.json --out <run>
    --resume`` then ``analyze`` as a background job (:func:`explorer.train_form.start_resume`)."""
    root = settings.runs_root()
    job = jobs.current(root) if job is None else job
    busy = job is not None and job.active
    if st.button("Resume", key=key, icon=":material/play_arrow:", type="primary", disabled=busy,
                 help="Another job is running; one job at a time." if busy else
                      "Continue training from the last finished epoch with this run's own saved options, "
                      "in this run's folder, then analyse it."):
        try:
            started = train_form_.start_resume(root, Path(info.path))
        except (jobs.JobError, OSError) as exc:
            st.error(md(one_line(exc)))
        else:
            st.toast(md(f"Started: {started.title}"), icon=":material/play_arrow:")
            st.rerun(scope="app")


def _dismiss_delete() -> None:
    st.session_state.pop("_confirm_delete", None)


@st.dialog("Move this run to the trash?", on_dismiss=_dismiss_delete)
def confirm_delete(path: str) -> None:
    from pipeline.runs import TRASH, trash_run

    name = Path(path).name
    st.markdown(md(f"{name} goes to {Path(path).parent / TRASH}. Nothing is deleted: move the folder back "
                   "to restore it."))
    c1, c2 = st.columns(2)
    if c1.button("Move to trash", key="run_delete_yes", type="primary", icon=":material/delete:"):
        try:
            dest = trash_run(Path(path))
        except (RunError, OSError) as exc:
            st.error(md(one_line(exc)))
            return
        _dismiss_delete()
        State.set_run_path(None)
        State.clear_focus()
        st.session_state["_job_news"] = f"Moved {name} to {dest}"
        st.rerun()
    if c2.button("Cancel", key="run_delete_no"):
        _dismiss_delete()
        st.rerun()


def require_analysis(path: str) -> None:
    with run_guard():
        ok = data.analysed(path)
    if not ok:
        st.warning("This run has not been analysed yet (sub-classes, maps, mislabels). "
                   "Start the analysis below; the page fills in when it is done.")
        analyze_button(path)
        st.stop()


def store(path: str) -> ReviewStore:
    return ReviewStore(path)


def act(fn, *args, **kwargs):
    """Run a review action from a callback; a refused action becomes a toast, never an exception."""
    try:
        n = fn(*args, **kwargs)
    except ReviewError as exc:
        st.toast(f"Not saved: {exc}", icon=":material/error:")
        return None
    except Exception as exc:  # the database is locked or the disk is full: say so, keep the page
        log.exception("review action failed")
        st.toast(f"Not saved ({type(exc).__name__}). Try again.", icon=":material/error:")
        return None
    return n


def undo_bar(path: str, *, key: str) -> None:
    """"Undo: <the last action>" for this run's review database (an undo is logged, never a delete)."""
    st_ = store(path)
    last = st_.last_undoable()

    def _undo() -> None:
        entry = act(st_.undo)
        if entry:
            st.toast(md(f"Undone: {review.describe(entry)}"), icon=":material/undo:")

    label = f"Undo: {review.describe(last)}" if last else "Nothing to undo"
    st.button(md(label), key=f"{key}_undo", on_click=_undo, disabled=last is None, icon=":material/undo:",
              type="tertiary")


def history_lines(path: str, item_id: str) -> list[str]:
    """This image's decisions and tags, oldest first, one line each (undone ones marked)."""
    out = []
    for e in store(path).history(item_id):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["time"]))
        out.append(f"{when} · {review.describe(e)}" + (" (undone)" if e["undone"] else ""))
    return out


def history_popover(path: str, item_id: str) -> None:
    with st.popover("History", icon=":material/history:"):
        lines = history_lines(path, item_id)
        if lines:
            st.text("\n".join(lines))
        else:
            st.caption("No decisions or tags yet.")


def subclass_display_names(path: str) -> dict[int, str]:
    """sub-class id -> what the app calls it (the person's name, else ``class #k``)."""
    info = data.subclasses(path) or {}
    named = store(path).subclass_names()
    return {int(s["id"]): data.subclass_label(s, named.get(int(s["id"]))) for s in info.get("subclasses", [])}


def group_export(path: str, rows: Sequence[int], name: str, *, key: str) -> None:
    """CSV and Label Studio downloads of any group of images (tag, selection, sub-class, cell),
    with their tags, decisions and sub-class names as columns."""
    rows = [int(r) for r in rows]
    if not rows:
        return
    with run_guard():
        st_ = store(path)
        mis = data.mislabels(path)
        if mis is not None:  # the score on [0, 1], as the queue shows it
            mis = mis.assign(score=data.queue_order(path).score)
        frame = review.group_frame(data.items(path), rows, st_.decisions(), st_.tags(), mis,
                                   subclass=data.subclass_of_rows(path), subclass_names=subclass_display_names(path))
    th = data.thumbs(path)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:40] or "group"
    base = f"{Path(path).name}-{slug}"
    e1, e2 = st.columns(2)
    e1.download_button(f"CSV ({n_images(len(rows))})", review.to_csv(frame), file_name=f"{base}.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore", key=f"{key}_csv")
    # built when clicked (a callable): embedding every image as a data URI is the costly part, and
    # it would otherwise run on every rerun of the page while its gallery loads
    e2.download_button("Label Studio tasks (JSON)",
                       lambda: review.to_label_studio(frame, image_ref=lambda r, p: p if p else th.data_uri(r)),
                       file_name=f"{base}-label-studio.json", mime="application/json", icon=":material/download:",
                       on_click="ignore", key=f"{key}_ls")


# ---------------------------------------------------------------------------- galleries
def gallery(path: str, rows: Sequence[int], *, captions: Sequence[str] | None = None,
            width: int = settings.THUMB_PX, limit: int = settings.GALLERY_MAX) -> None:
    """Up to ``limit`` thumbnails in one element (one image request each, PNGs cached per run)."""
    rows = [int(r) for r in list(rows)[:limit]]
    if not rows:
        st.caption("No images.")
        return
    try:
        pngs = data.thumbs(path).many(rows)
    except RunError as exc:  # a damaged images.npy: say which file, keep the rest of the page
        st.error(md(one_line(exc, empty="images cannot be read")), icon=":material/error:")
        return
    caps = [md(c) for c in captions[:len(rows)]] if captions is not None else None
    # output_format="PNG": the bytes are PNG already, so Streamlit serves them as they are
    # (with "auto" it would re-encode every thumbnail to JPEG on every rerun)
    st.image(pngs, caption=caps, width=width, output_format="PNG")


GROUP_MODES = {"centre": "Nearest the centre", "spread": "Spread across the group"}


def group_gallery(path: str, rows: Sequence[int], *, key: str, width: int = settings.GROUP_THUMB_PX,
                  page_size: int = settings.GROUP_PAGE) -> None:
    """A group's images as a judge needs them: nearest the centre or spread across the group,
    near-identical frames collapsed into one (its caption says how many), every member reachable
    by paging; thumbnails large enough to see, each one opens full size (the image's own
    fullscreen button) and "Look closer" shows one with its actions."""
    rows = [int(r) for r in rows]
    if not rows:
        st.caption("No images.")
        return
    c1, c2, c3 = st.columns([2, 1.2, 1], vertical_alignment="bottom")
    mode = c1.segmented_control("Show", list(GROUP_MODES), default="centre", key=f"{key}_mode", required=True,
                                format_func=GROUP_MODES.get,
                                help="Nearest the centre: the most typical members first. Spread: each next image "
                                     "is the member least like all shown before it, so the first page covers the "
                                     "group's range.") or "centre"
    collapse = c2.toggle("Collapse near-identical", value=True, key=f"{key}_collapse",
                         help="Images that are the same picture up to a little noise (consecutive video frames) "
                              "are shown once, with the count.")
    with run_guard():
        shown, count = data.group_layout(path, rows, mode, collapse)
    pages = max(1, -(-len(shown) // page_size))
    page = 1
    if pages > 1:
        page = c3.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key=f"{key}_page")
    lo = (page - 1) * page_size
    part, part_n = shown[lo: lo + page_size], count[lo: lo + page_size]
    names = data.columns(path)["label_name"]
    mixed = len({str(names[r]) for r in rows[:5000]}) > 1  # one label throughout: saying it under each is noise
    caps = [(f"{names[r]}" if mixed else "") + (f" ×{n}" if n > 1 else "") for r, n in zip(part, part_n)]
    gallery(path, part, captions=caps, width=width, limit=page_size)
    folded = len(rows) - len(shown)
    st.caption(f"{len(shown):,} distinct of {n_images(len(rows))}"
               + (f" ({folded:,} near-identical folded in)" if folded > 0 else "")
               + (f" · page {page} of {pages}" if pages > 1 else "")
               + " · hover an image for its full-size button")
    look_closer(path, [int(r) for r in part], key=key)


def look_closer(path: str, rows: Sequence[int], *, key: str) -> None:
    """Pick one image of a gallery: see it large with its id, labels and history, and act on it."""
    rows = [int(r) for r in rows]
    if not rows:
        return
    ids = data.columns(path)["id"]
    r = st.selectbox("Look closer at", rows, index=None, key=f"{key}_look", placeholder="choose an image…",
                     format_func=lambda x: f"{rows.index(x) + 1}. {ids[x]}")
    if r is not None:
        image_panel(path, int(r), key=f"{key}_img")


def image_panel(path: str, row: int, *, key: str) -> None:
    """One image, large, with keep / flag / clear / tag / similar and its history."""
    cols = data.columns(path)
    item = str(cols["id"][row])
    st_ = store(path)
    left, right = st.columns([1, 2])
    left.image(data.thumbs(path).png(row), width=settings.LARGE_PX, output_format="PNG")
    with right:
        d = st_.decision_map().get(item)
        bits = [f"id {item}", f"given {cols['label_name'][row]}"]
        if "pred_name" in cols:
            bits.append(f"kNN predicts {cols['pred_name'][row]}")
        bits.append(f"decision: {d[0]}" + (f" ({d[1]})" if d[1] else "") if d else "no decision")
        st.caption(md(" · ".join(bits)))

        def _do(kind: str) -> None:
            fn = (lambda: st_.undecide(item)) if kind == "clear" else (lambda: st_.decide(item, kind, source="gallery"))
            if act(fn) is not None:
                st.toast(md(f"{item}: {kind}"), icon=":material/check:")

        b1, b2, b3 = st.columns(3)
        b1.button("Keep", key=f"{key}_keep_{item}", on_click=_do, args=("keep",), width="stretch")
        b2.button("Flag", key=f"{key}_flag_{item}", on_click=_do, args=("flag",), type="primary", width="stretch")
        b3.button("Clear", key=f"{key}_clear_{item}", on_click=_do, args=("clear",), width="stretch", disabled=d is None)
        tkey = f"{key}_tag_{item}"

        def _tag() -> None:
            t = (st.session_state.get(tkey) or "").strip()
            if t and act(st_.tag, item, t) is not None:
                st.toast(md(f"{item}: tagged “{t}”"), icon=":material/label:")

        st.text_input("Tag this image", key=tkey, max_chars=80, on_change=_tag, placeholder="type a tag, press Enter")
        if st.button("Find similar", key=f"{key}_sim_{item}", icon=":material/image_search:", type="tertiary"):
            State.set_similar_row(row)
            st.switch_page("views/similar.py")
        lines = history_lines(path, item)
        if lines:
            st.text("\n".join(lines))


def label_captions(path: str, rows: Sequence[int], *, extra: Sequence[str] | None = None) -> list[str]:
    cols = data.columns(path)
    names = cols["label_name"]
    out = [str(names[int(r)]) for r in rows]
    if extra is not None:
        out = [f"{a} · {b}" for a, b in zip(out, extra)]
    return out


def row_picker(path: str, rows: Sequence[int], *, key: str, label: str = "Image") -> int | None:
    """Pick one image of a gallery by its position (for "find similar")."""
    rows = [int(r) for r in rows]
    if not rows:
        return None
    ids = data.columns(path)["id"]
    return st.selectbox(label, rows, index=None, key=key, placeholder="choose an image…",
                        format_func=lambda r: f"{rows.index(r) + 1}. {ids[r]}")


def similar_button(path: str, rows: Sequence[int], *, key: str) -> None:
    """A picker + button that opens the Similar page on one of ``rows``."""
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    with c1:
        row = row_picker(path, rows, key=f"{key}_pick", label="Find images similar to")
    with c2:
        if st.button("Find similar", key=f"{key}_go", disabled=row is None, icon=":material/image_search:"):
            State.set_similar_row(int(row))
            st.switch_page("views/similar.py")


# ---------------------------------------------------------------------------- jobs
def analyze_button(path: str) -> None:
    root = settings.runs_root()
    job = jobs.current(root)
    busy = job is not None and job.active
    if st.button("Analyze this run", disabled=busy, key="analyze_run", icon=":material/analytics:"):
        try:
            jobs.start_analyze(root, Path(path))
        except (jobs.JobError, OSError) as exc:
            st.error(str(exc))
        else:
            st.rerun()
    if busy:
        job_panel(compact=False)


def retrain_button(root: Path) -> None:
    """"Retrain with my corrections": the current run's recipe on its flags and relabels, as a
    background job (``pipeline train --labels-from <run>/review.sqlite``)."""
    path = State.run_path()
    if not path:
        return
    counts = store(path).counts()
    n = counts.get("flag", 0) + counts.get("relabel", 0)
    job = jobs.current(root)
    busy = job is not None and job.active
    help_ = (f"Train again with this run's settings: {counts.get('relabel', 0)} relabelled image(s) take their new "
             f"label, {counts.get('flag', 0)} flagged image(s) leave training; test images are never changed.")
    if st.button("Retrain with my corrections", icon=":material/published_with_changes:", key="retrain",
                 disabled=busy or n == 0, help=help_ if n else "Flag or relabel images first.", width="stretch"):
        try:
            job = train_form_.start_retrain(root, Path(path))
        except (jobs.JobError, OSError) as exc:
            st.error(md(str(exc)))
        else:
            st.toast(md(f"Started: {job.title}"), icon=":material/play_arrow:")
            st.rerun()


def _job_body(compact: bool) -> None:
    root = settings.runs_root()
    job = jobs.current(root)
    if job is None:
        if not compact:
            st.caption("No training job has run yet.")
        return
    was_active = st.session_state.get("_job_seen_active") == job.id
    if job.active:
        st.session_state["_job_seen_active"] = job.id
        # one bar and one ETA over the whole job: training's epochs, then analysis's stages
        trains, analyses = job.parts
        step = jobs.running_step(root, job) if job.preview else 0
        if job.preview and step == 0:   # the demo's quick preview first: its own run's progress
            jp = progress.job_progress(data.progress(job.preview), train=True, analyse=True, since=job.started,
                                       maps=train_form_.PREVIEW_MAPS)
            head = "Step 1 of 2, a quick preview: "
        else:
            jp = progress.job_progress(data.progress(job.run_dir), train=trains, analyse=analyses, since=job.started)
            jp = progress.with_crossfit(jp, job.run_dir, since=job.started)
            head = "Step 2 of 2, the full demo: " if job.preview else ""
        if (job.preview and (step >= 1 or jp.phase == "done") and st.session_state.get("_welcome")
                and st.session_state.get("_preview_opened") != job.id):
            st.session_state["_preview_opened"] = job.id     # once: a failed preview must not loop
            st.rerun(scope="app")       # the preview is analysed: leave the welcome page for it
        if job.state == "cancelling":
            st.progress(jp.fraction or 0.0, text="Stopping… (saving a resumable checkpoint)")
        else:
            st.progress(jp.fraction or 0.0, text=head + jp.line())
        st.caption(md(f"{job.kind}: {job.title or Path(job.run_dir).name}"))
        if job.started and job.started < SERVER_STARTED:
            st.caption(md("This job was started before this app server was, and kept running on its own: "
                          f"Cancel stops it (or, in a terminal: kill -TERM -{job.pid})."))
        if not compact:  # the command and the log are there for whoever wants them, not in the way
            with st.expander("Details: the command and its output"):
                st.code(jobs.command_line(job), language="bash", wrap_lines=True)
                st.code("\n".join(jobs.log_tail(root, job, 15)) or "(no output yet)", language=None)
        c1, c2 = st.columns(2)
        if c1.button("Cancel", key=f"cancel_{'c' if compact else 'f'}", icon=":material/stop_circle:"):
            try:
                jobs.cancel(root)
            except jobs.JobError as exc:
                st.error(str(exc))
            st.rerun(scope="app")
        if job.state == "cancelling" and time.time() - job.started > 5:
            if c2.button("Force stop", key=f"kill_{'c' if compact else 'f'}"):
                jobs.cancel(root, force=True)
                st.rerun(scope="app")
    else:
        if was_active:
            st.session_state.pop("_job_seen_active", None)
            if job.state == "done":  # the app says so once; the run is in the picker now
                st.session_state["_job_news"] = f"Finished: {job.title or Path(job.run_dir).name}"
                if job.preview and State.run_path() in (None, job.preview):
                    State.set_run_path(str(job.run_dir))     # the full demo replaces its preview
                    State.clear_focus()
            st.rerun(scope="app")
        if job.state == "done":
            if not compact:
                st.success(md(f"Last job finished: {job.title or Path(job.run_dir).name}"))
            if State.run_path() != str(job.run_dir) and Path(job.run_dir, MANIFEST).exists():
                if st.button(md(f"Open run {Path(job.run_dir).name}"), key=f"open_job_run_{'c' if compact else 'f'}",
                             icon=":material/open_in_new:"):
                    State.set_run_path(str(job.run_dir))
                    State.clear_focus()
                    st.rerun(scope="app")
        elif job.state == "failed":
            st.error(md(f"Last job failed: {job.message or 'see the log'}"))
            if not compact:
                st.code("\n".join(jobs.log_tail(root, job, 20)) or "(no output)", language=None)
        elif job.state == "cancelled":
            st.info(md(f"Last job was cancelled: {job.title or Path(job.run_dir).name}"))


@st.fragment(run_every=settings.POLL_S)
def _job_live(compact: bool) -> None:
    _job_body(compact)


@st.fragment
def _job_still(compact: bool) -> None:
    _job_body(compact)


def job_panel(*, compact: bool) -> None:
    """The current job's progress, ETA, log tail and cancel, polled only while a job runs."""
    job = jobs.current(settings.runs_root())
    if job is not None and job.active:
        _job_live(compact)
    else:
        _job_still(compact)


def plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def n_images(n: int) -> str:
    return plural(n, "image", "images")


def distinct(captions: Sequence[str]) -> list[str]:
    """Captions that repeat get "(1 of 3)", "(2 of 3)", ... so no two images read the same."""
    from collections import Counter

    total = Counter(captions)
    seen: Counter = Counter()
    out = []
    for c in captions:
        seen[c] += 1
        out.append(c if total[c] == 1 else f"{c} ({seen[c]} of {total[c]})")
    return out


# ---------------------------------------------------------------------------- the training form
@st.cache_data(ttl=60, show_spinner=False)
def _sources(roots: tuple[str, ...]) -> list[str]:
    return discover([Path(r) for r in roots])


SYNTHETIC_CHOICES = {"synthetic": "synthetic: 4,000 generated faces (a few minutes on a CPU)",
                     "synthetic:600": "synthetic: 600 faces (a quick test)"}


def train_form(root: Path, *, key: str) -> None:
    """Data source, loss, backbone, epochs, levels -> a background ``pipeline train`` job."""
    roots = settings.data_roots()
    found = _sources(tuple(str(r) for r in roots))
    choices = list(SYNTHETIC_CHOICES) + found
    with st.form(f"train_form_{key}", border=False):
        spec = st.selectbox("Data", choices, key=f"{key}_spec",
                            format_func=lambda s: SYNTHETIC_CHOICES.get(s, s))
        other = st.text_input("…or a folder, a CSV file or a data spec", key=f"{key}_other",
                              placeholder="/path/under/a/data/root or folder:/… csv:/… ferplus:/…",
                              help="Paths must lie under a data root: "
                                   + (", ".join(str(r) for r in roots) or f"none set ({settings.DATA_ROOTS_ENV})"))
        loss = st.segmented_control("Loss", list(LOSSES), default=LossConfig.name, key=f"{key}_loss",
                                    format_func=lambda s: {"sgm": "SGM", "triplet": "Triplet", "softmax": "Softmax"}[s])
        backbone = st.selectbox("Backbone", list(train_form_.FORM_BACKBONES), key=f"{key}_backbone",
                                format_func=lambda b: {"auto": "auto (ResNet-18 on a GPU, light on a CPU)",
                                                       "light": "light (4 conv blocks)", "resnet18": "ResNet-18"}[b])
        c1, c2 = st.columns(2)
        epochs = c1.number_input("Epochs", min_value=1, max_value=MAX_EPOCHS, value=None, step=1, key=f"{key}_epochs",
                                 placeholder="the recipe's", help="empty: pipeline.config.recipe's for this data")
        levels = c2.number_input("Levels", min_value=1, max_value=MAX_LEVELS, value=1, step=1, key=f"{key}_levels",
                                 help="Algorithm 2: levels > 1 re-trains on sub-class labels")
        name = st.text_input("Run name", key=f"{key}_name", max_chars=train_form_.RUN_NAME_MAX,
                             placeholder="blank: a name from the time, data, loss and backbone",
                             help=md(f"The run's folder in {root}; it must not exist yet."))
        analyze = st.checkbox("Analyze when training is done", value=True, key=f"{key}_analyze")
        go = st.form_submit_button("Start training", icon=":material/play_arrow:", type="primary")
    if go:
        try:
            chosen = train_form_.check_spec(other or spec, roots)
            req = train_form_.TrainRequest(spec=chosen, loss=loss or LossConfig.name, backbone=backbone,
                                           epochs=int(epochs or 0), levels=int(levels),
                                           data_roots=() if is_synthetic(chosen) else tuple(str(r) for r in roots))
            job = train_form_.start_train(root, req, analyze=analyze, name=name or "")
        except (jobs.JobError, OSError) as exc:
            st.error(md(str(exc)))
        else:
            st.toast(md(f"Training started: {job.title}"), icon=":material/play_arrow:")
            st.rerun()
