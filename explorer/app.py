"""Subclass Explorer: ``streamlit run explorer/app.py``.

The router: page config, the sidebar (run picker, training form, job status) and st.navigation
over the thin views in ``explorer/views``. On a machine with no complete run it builds the
synthetic demo in the background (train, then analyze) and shows its progress; when that is done
the demo opens. Later launches open the most recent complete run at once.
"""
from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `streamlit run explorer/app.py` puts explorer/ on the path, not the repo
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from explorer import data, jobs, settings, train_form, widgets  # noqa: E402
from explorer.widgets import State, md  # noqa: E402

# a file of ours, served by this server: a ":material/...:" page icon made the browser fetch the
# favicon from Google's font server (fails offline, and a request leaves the machine)
st.set_page_config(page_title="Subclass Explorer", page_icon=str(_ROOT / "assets" / "icon.png"), layout="wide")

PAGES = {
    "overview": st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    "map": st.Page("views/map.py", title="Map", icon=":material/scatter_plot:"),
    "subclasses": st.Page("views/subclasses.py", title="Sub-classes", icon=":material/category:"),
    "confusion": st.Page("views/confusion.py", title="Confusion", icon=":material/grid_on:"),
    "mislabels": st.Page("views/mislabels.py", title="Mislabels", icon=":material/flag:"),
    "tags": st.Page("views/tags.py", title="Tags", icon=":material/label:"),
    "similar": st.Page("views/similar.py", title="Similar", icon=":material/image_search:"),
    "outliers": st.Page("views/outliers.py", title="Outliers & duplicates", icon=":material/report:"),
    "compare": st.Page("views/compare.py", title="Compare runs", icon=":material/compare:"),
    "summary": st.Page("views/summary.py", title="Summary", icon=":material/photo_library:"),
    "train": st.Page("views/train.py", title="Train", icon=":material/model_training:"),
}
WELCOME = st.Page("views/welcome.py", title="Welcome", icon=":material/hourglass_top:", default=True)


def sidebar_runs(infos: list[data.RunInfo], usable: list[data.RunInfo]) -> None:
    by_path = {r.path: r for r in infos}
    news = st.session_state.pop("_job_news", None)
    if news:
        st.toast(md(news), icon=":material/check_circle:")
    want = State.run_path()
    if want not in by_path:
        qp = st.query_params.get("run")
        match = next((r for r in infos if r.name == qp), None) if qp else None
        want = match.path if match else (usable[0].path if usable else None)
        State.set_run_path(want)
    options = [r.path for r in infos]
    if not options:
        return
    if st.session_state.get("run_picker") != want:
        st.session_state["run_picker"] = want

    def picked() -> None:
        State.set_run_path(st.session_state["run_picker"])
        State.clear_focus()

    choice = st.sidebar.selectbox("Run", options, key="run_picker", on_change=picked,
                                  format_func=lambda p: by_path[p].label())
    name = by_path[choice].name
    if st.query_params.get("run") != name:
        st.query_params["run"] = name
    info = by_path[choice]
    if info.usable:
        bits = [info.spec, info.loss, info.backbone]
        if info.n_images:
            bits.append(f"{info.n_images:,} images")
        st.sidebar.caption(md(" · ".join(b for b in bits if b)))


@st.dialog("Train a new model", position="left", width="medium")
def train_dialog(root: Path) -> None:
    widgets.train_form(root, key="sb")


def sidebar_train_form(root: Path) -> None:
    # A side drawer, not an expander: its widgets are only built when asked for, which keeps every
    # page (the 35k-point map above all) as light as it can be.
    if st.sidebar.button("Train a new model", icon=":material/model_training:", key="open_train", width="stretch"):
        train_dialog(root)
    with st.sidebar:
        widgets.retrain_button(root)
        widgets.job_panel(compact=True)


def main() -> None:
    root = settings.runs_root()
    infos = data.runs(root)
    job = jobs.current(root)
    building_demo = job is not None and job.active and job.kind == "demo"
    usable = [r for r in infos if r.usable and not (building_demo and r.path == job.run_dir)]

    if not usable:
        if job is None:  # a fresh machine: build the demo with no manual step
            try:
                train_form.start_default_demo(root)
            except jobs.JobError:
                pass  # another session started it a moment ago
            except OSError as exc:  # the runs folder cannot be written: say so on the welcome page
                st.session_state["_demo_error"] = f"Cannot build the demo in {root}: {exc.strerror or exc}"
        pg = st.navigation([WELCOME], position="hidden")
        pg.run()
        return

    st.session_state.pop("_welcome", None)
    sidebar_runs(infos, usable)
    if building_demo and job.preview and State.run_path() == job.preview:
        st.info("This is a quick preview of the demo (a small set of faces at 32 px after a few dozen training steps: the "
                "groups are rough). The full demo is being built in the background and opens by itself when "
                "it is done; the sidebar shows its progress.", icon=":material/hourglass_top:")
    sidebar_train_form(root)
    pg = st.navigation(list(PAGES.values()))
    # a damaged artifact a view reads outside its own guard still ends as one line, not a traceback
    # (st.stop / st.rerun are BaseExceptions and pass through)
    with widgets.run_guard():
        pg.run()


main()
