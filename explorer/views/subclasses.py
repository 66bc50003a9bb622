"""Sub-classes: one card per sub-class of a class (medoid, its mean image beside the class's and their
difference, size, share, the class the model leans to, the images nearest the medoid, more like it
outside it), a name a person gives it (kept in the review database), a way to open it on the map,
and a switch between the facets analyze stored (expression, look, the crowd's reading, levels)."""
import numpy as np
import streamlit as st

from explorer import data, figures, settings, widgets
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

st.title("Sub-classes")
facets = data.facets(path)
primary = facets[0]["name"]
facet = facets[0]
if len(facets) > 1:
    by_name = {f["name"]: f for f in facets}
    picked = st.segmented_control("Split by", list(by_name), default=primary, key="sub_facet",
                                  format_func=lambda n: str(by_name[n].get("title", n)))
    facet = by_name.get(picked or primary, facets[0])
fsubs = [s for s in subs if data.in_facet(s, facet, primary)]
facet_rows = data.subclass_of_rows(path, str(facet.get("column", "subclass"))) if facet["name"] != primary else sub_rows
per_class = {c: [s for s in fsubs if int(s.get("class", -1)) == c] for c in range(len(classes))}
n_subs = len(fsubs)
st.caption(md(f"{n_subs} sub-{'class' if n_subs == 1 else 'classes'}"
              + (f": {facet['about']}" if facet.get("about") else f" ({info.get('mode', '?')} mode)")
              + ". Name the ones you recognise; names are kept with this run."))
c = st.selectbox("Class", range(len(classes)), key="sub_class",
                 format_func=lambda i: f"{classes[i]} ({len(per_class[i])} sub-{'class' if len(per_class[i]) == 1 else 'classes'})")


def save_name(sid: int, key: str, anchor: str) -> None:
    if widgets.act(store.name_subclass, sid, st.session_state.get(key, ""), anchor=anchor) is not None:
        st.toast("Name saved", icon=":material/check:")


def what_sets_it_apart(s: dict) -> str:
    """One line: size, share, and the class the model's posterior leans to for its members."""
    parts = [f"{int(s.get('size', 0)):,} images · {100 * float(s.get('share', 0)):.1f} % of {classes[c]}"]
    lean = s.get("lean") or {}
    if lean.get("class_name") is not None and s.get("p_own") is not None:
        parts.append(f"the model reads it as {classes[c]} {100 * float(s['p_own']):.0f} %, "
                     f"leaning to {lean['class_name']} ({100 * float(lean.get('p', 0)):.0f} %)")
    parts.append(f"id {int(s['id'])}")
    return " · ".join(parts)


cards = sorted(per_class[c], key=lambda s: -int(s.get("size", 0)))
if not cards:
    st.info("No sub-classes for this class.")
for s in cards:
    sid = int(s["id"])
    label = data.subclass_label(s, names.get(sid))
    with st.container(border=True):
        left, right = st.columns([2, 5])
        with left:
            medoid = int(s.get("medoid", 0))
            means = data.mean_image_pngs(path, sid, c)
            if means is None:
                st.image(th.png(medoid), width=112, caption="medoid", output_format="PNG")
            else:
                st.image([th.png(medoid), means[0], means[1], means[2]], width=72, output_format="PNG",
                         caption=["medoid", "its mean", "class mean", "difference"])
        with right:
            st.subheader(md(label))
            st.caption(md(what_sets_it_apart(s)))
            k1, k2, k3, k4 = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
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
                rows = np.flatnonzero(facet_rows == sid) if facet_rows is not None else np.asarray(s.get("topk", []))
                State.set_focus(rows, f"Sub-class {label}",
                                colour_by="subclass" if facet["name"] == primary else str(facet.get("column")))
                st.switch_page("views/map.py")
            if k3.button("Similar", key=f"subsim_{sid}", icon=":material/image_search:"):
                State.set_similar_row(medoid)
                st.switch_page("views/similar.py")
            more_key = f"submore_{sid}"
            if s.get("outside"):
                k4.toggle("More like it", key=more_key, help="The images nearest this group's mean that are not in "
                          "it (in any class): candidates the group missed, or the same look elsewhere.")
            members = np.flatnonzero(facet_rows == sid) if facet_rows is not None else np.asarray(s.get("topk", []))
            widgets.group_gallery(path, members, key=f"subgal_{facet['name']}_{sid}")
            if st.session_state.get(more_key) and s.get("outside"):
                rows = [int(r) for r in s["outside"]][:settings.GALLERY_MAX]
                st.caption("Nearest outside the group:")
                widgets.gallery(path, rows, width=56, captions=widgets.label_captions(path, rows))

bic = figures.bic_figure(facet.get("bic") or info.get("bic") or {})
if bic is not None:
    with st.expander("Model selection (BIC per class)"):
        st.plotly_chart(bic, key="sub_bic", config={"displaylogo": False})
