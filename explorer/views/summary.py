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
st.caption(md(f"{len(rows)} images · {summ.get('method', '')}"))
extra = []
for r in rows:
    sid = int(sub_rows[r]) if sub_rows is not None else None
    extra.append(data.subclass_label(info.get(sid, {"id": sid}), names.get(sid)) if sid is not None else "")
widgets.gallery(path, rows, captions=widgets.label_captions(path, rows, extra=extra), width=104)
widgets.similar_button(path, rows, key="sum_sim")
