"""Confusion: kNN predictions against the given labels; choose a cell to see its images."""
import numpy as np
import pandas as pd
import streamlit as st

from explorer import data, figures, widgets
from explorer.widgets import State, md, run_guard
from pipeline.runs import CONFUSION_JSON

path = widgets.current_run()
widgets.require_analysis(path)

with run_guard():
    conf = data.confusion(path) or {}
    classes = list(conf.get("classes") or data.run(path).classes)
    matrix = np.asarray(conf.get("matrix") or np.zeros((len(classes), len(classes))), dtype=np.int64)
    cells = conf.get("cells") or {}
    C = len(classes)
    if matrix.shape != (C, C):
        st.error(f"{CONFUSION_JSON}: matrix is {list(matrix.shape)}, expected [{C}, {C}]")
        st.stop()

st.title("Confusion")
normalise = st.toggle("Colour by share of the row", value=True, key="cm_norm")
cur = (st.session_state.get("cm_given", 0), st.session_state.get("cm_pred", 0))
event = st.plotly_chart(figures.confusion_figure(matrix, classes, normalise=normalise, highlight=cur),
                        key="cm_chart", on_select="rerun", selection_mode="points", config={"displaylogo": False})
picked = figures.confusion_cell(event.selection if event else None, C)
if picked is not None and picked != st.session_state.get("_cm_last_pick"):
    st.session_state["_cm_last_pick"] = picked
    st.session_state["cm_given"], st.session_state["cm_pred"] = picked
    st.rerun()

c1, c2 = st.columns(2)
i = c1.selectbox("Given label", range(C), key="cm_given", format_func=lambda k: classes[k])
j = c2.selectbox("Predicted", range(C), key="cm_pred", format_func=lambda k: classes[k])
rows = [int(r) for r in cells.get(f"{i},{j}", [])]
st.subheader(md(f"Given {classes[i]}, predicted {classes[j]}: {widgets.n_images(len(rows))}"))
if rows:
    widgets.group_gallery(path, rows, key="cm_gal")
    b1, b2 = st.columns([1, 3], vertical_alignment="bottom")
    if b1.button("Open on map", key="cm_map", icon=":material/scatter_plot:"):
        State.set_focus(rows, f"Given {classes[i]}, predicted {classes[j]}", colour_by="pred")
        st.switch_page("views/map.py")
    with b2:
        widgets.similar_button(path, rows[:64], key="cm_sim")
    widgets.group_export(path, rows, f"given-{classes[i]}-predicted-{classes[j]}", key="cm_export")

off = [(int(matrix[a, b]), a, b) for a in range(C) for b in range(C) if a != b and matrix[a, b] > 0]
off.sort(reverse=True)
if off:
    with st.expander("Most confused pairs"):
        st.dataframe(pd.DataFrame([{"given": classes[a], "predicted": classes[b], "images": n,
                                    "share of given": round(n / max(1, matrix[a].sum()), 3)} for n, a, b in off[:15]]),
                     hide_index=True)
