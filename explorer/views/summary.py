"""Summary: the album summary, a fixed number of representative images (sub-class medoids first)."""
import streamlit as st

from explorer import data, widgets
from explorer.widgets import md, run_guard

path = widgets.current_run()
widgets.require_analysis(path)

with run_guard():
    summ = data.summary(path) or {}
    rows = [int(r) for r in summ.get("rows", [])]
    sub_rows = data.subclass_of_rows(path)
    info = {int(s["id"]): s for s in (data.subclasses(path) or {}).get("subclasses", [])}
    names = widgets.store(path).subclass_names()

st.title("Album summary")
st.caption(md(f"{widgets.n_images(len(rows))} · {summ.get('method', '')}"))
captions = widgets.label_captions(path, rows)  # the given label, or the sub-class it stands for
if sub_rows is not None:
    captions = [data.subclass_label(info.get(int(sub_rows[r]), {"id": int(sub_rows[r])}), names.get(int(sub_rows[r])))
                for r in rows]
widgets.gallery(path, rows, captions=widgets.distinct(captions), width=104)
widgets.similar_button(path, rows, key="sum_sim")
