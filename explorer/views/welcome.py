"""First launch: no finished run yet. Shows the demo build (a quick preview, then the full demo:
train, then analyze) with its progress; the job panel reruns the app when the preview is ready
(it opens while the full demo goes on) and again when the build is done, and the demo opens."""
import streamlit as st

from explorer import jobs, settings, train_form, widgets

st.title("Subclass Explorer")
root = settings.runs_root()
if st.session_state.get("_demo_error"):
    st.error(widgets.md(st.session_state.pop("_demo_error")))
job = jobs.current(root)
st.session_state["_welcome"] = True     # the job panel leaves this page as soon as a preview is ready
if job is not None and job.active:
    if job.preview:
        st.write("There is no finished run yet, so a demo is being built. First a quick preview (a small set of "
                 "generated faces at 32 px, trained for a few dozen steps) opens by itself in about a minute; the full "
                 "demo (4,000 faces, a few minutes) goes on in the background and replaces it when it is done.")
    else:
        st.write("There is no finished run yet, so a demo is being built: a model is trained on 4,000 generated "
                 "faces and then analysed (sub-classes, maps, mislabel candidates). It opens by itself when it is done.")
    widgets.job_panel(compact=False)
else:
    st.write("There is no finished run in the runs folder yet.")
    st.caption(widgets.md(f"Runs folder: {root}"))
    widgets.job_panel(compact=False)
    if st.button("Build the demo", type="primary", icon=":material/play_arrow:"):
        try:
            train_form.start_default_demo(root)
        except (jobs.JobError, OSError) as exc:
            st.error(widgets.md(str(exc)))
        else:
            st.rerun()
    with st.expander("…or train on your own data"):
        widgets.train_form(root, key="welcome")
