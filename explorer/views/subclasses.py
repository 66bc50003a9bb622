"""Sub-classes: one card per sub-class of a class (medoid, size, share, the images nearest the
medoid), a name a person gives it (kept in the review database), and a way to open it on the map."""
import numpy as np
import streamlit as st

from explorer import data, figures, widgets
from explorer.widgets import State, md, run_guard

path = widgets.current_run()
widgets.require_analysis(path)

with run_guard():
    run = data.run(path)
    classes = run.classes
    info = data.subclasses(path) or {}
    subs = info.get("subclasses", [])
    sub_rows = data.subclass_of_rows(path)
    store = widgets.store(path)
    names = store.subclass_names()
    anchors = store.subclass_anchors()
    th = data.thumbs(path)
    cols = data.columns(path)

per_class = {c: [s for s in subs if int(s.get("class", -1)) == c] for c in range(len(classes))}
st.title("Sub-classes")
_fit_on = {"posterior+votes": "fit on the model's class posterior and the crowd's votes: groups that are "
                              "read the same way", "embedding": "fit on the embedding"}.get(str(info.get("features", "")), "")
st.caption(md(f"{widgets.plural(len(subs), 'sub-class', 'sub-classes')} found ({info.get('mode', '?')} mode"
              f"{', ' + _fit_on if _fit_on and info.get('mode') == 'bic' else ''}). Name the ones you recognise; "
              "names are kept with this run."))
c = st.selectbox("Class", range(len(classes)), key="sub_class",
                 format_func=lambda i: f"{classes[i]} ({widgets.plural(len(per_class[i]), 'sub-class', 'sub-classes')})")


def save_name(sid: int, key: str, anchor: str) -> None:
    if widgets.act(store.name_subclass, sid, st.session_state.get(key, ""), anchor=anchor) is not None:
        st.toast("Name saved", icon=":material/check:")


cards = sorted(per_class[c], key=lambda s: -int(s.get("size", 0)))
if not cards:
    st.info("No sub-classes for this class.")
for s in cards:
    sid = int(s["id"])
    label = data.subclass_label(s, names.get(sid))
    with st.container(border=True):
        left, right = st.columns([1, 5])
        with left:
            medoid = int(s.get("medoid", 0))
            st.image(th.png(medoid), width=112, caption="medoid", output_format="PNG")
        with right:
            st.subheader(md(label))
            st.caption(f"{int(s.get('size', 0)):,} images · {100 * float(s.get('share', 0)):.1f} % of "
                       f"{md(classes[c])} · sub-class id {sid}")
            k1, k2, k3 = st.columns([3, 1, 1], vertical_alignment="bottom")
            key = f"subname_{sid}"
            if key not in st.session_state:
                st.session_state[key] = names.get(sid, "")
            medoid_id = str(cols["id"][medoid])
            k1.text_input("Name", key=key, max_chars=80, placeholder="e.g. babies, glasses, big smile",
                          on_change=save_name, args=(sid, key, medoid_id))
            if sid in names and anchors.get(sid) not in (None, medoid_id):
                st.caption("This name was given before the run was re-analysed; its medoid has changed since. "
                           "Check that it still fits.")
            if k2.button("Open on map", key=f"submap_{sid}", icon=":material/scatter_plot:"):
                rows = np.flatnonzero(sub_rows == sid) if sub_rows is not None else np.asarray(s.get("topk", []))
                State.set_focus(rows, f"Sub-class {label}", colour_by="subclass")
                st.switch_page("views/map.py")
            if k3.button("Similar", key=f"subsim_{sid}", icon=":material/image_search:"):
                State.set_similar_row(medoid)
                st.switch_page("views/similar.py")
            members = np.flatnonzero(sub_rows == sid) if sub_rows is not None else np.asarray(s.get("topk", []))
            widgets.group_gallery(path, members, key=f"subgal_{sid}")

bic = figures.bic_figure(info.get("bic") or {})
if bic is not None:
    with st.expander("Model selection (BIC per class)"):
        st.plotly_chart(bic, key="sub_bic", config={"displaylogo": False})
