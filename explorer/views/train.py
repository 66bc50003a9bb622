"""Train: start ``pipeline train`` (+ analyze) in a background process; its progress, ETA, log
tail and cancel; the runs in the runs folder."""
import pandas as pd
import streamlit as st

from explorer import data, jobs, settings, widgets
from explorer.widgets import md

root = settings.runs_root()
st.title("Train")
left, right = st.columns([1, 1.4])
with left:
    st.subheader("New training job")
    widgets.train_form(root, key="page")
with right:
    st.subheader("Current job")
    widgets.job_panel(compact=False)
    job = jobs.current(root)
    if job is not None:
        with st.expander("Command"):
            st.code(jobs.command_line(job), language="bash")

st.subheader("Runs")
infos = data.runs(root)
if infos:
    st.dataframe(pd.DataFrame([{"run": r.name, "status": r.status, "images": r.n_images, "data": r.spec,
                                "loss": r.loss, "backbone": r.backbone, "analysed": r.analysed,
                                "problem": r.problem} for r in infos]), hide_index=True)
    # runs that stopped before they finished: Resume each with its own saved options
    busy_dir = job.run_dir if job is not None and job.active else None
    unfinished = [r for r in infos if r.status in widgets.UNFINISHED and not r.problem and r.path != busy_dir]
    if unfinished:
        st.subheader("Unfinished runs")
        for r in unfinished:
            c1, c2 = st.columns([3, 1], vertical_alignment="center")
            c1.markdown(md(f"{r.name} ({r.status}) · {r.spec} · {r.loss} / {r.backbone}"))
            with c2:
                widgets.resume_button(r, key=f"resume_run_{r.name}", job=job)
else:
    st.caption(md(f"No runs in {root} yet."))
st.caption(md(f"Runs folder: {root} · data roots: {', '.join(map(str, settings.data_roots())) or 'none'}"))
