"""Tags: every tag of this run with its image count; pick one to see its images, open them on the
map (coloured by tag), remove the tag, or export the group (CSV, Label Studio)."""
import pandas as pd
import streamlit as st

from explorer import data, widgets
from explorer.widgets import State, md, run_guard

path = widgets.current_run()

with run_guard():
    store = widgets.store(path)
    tags = store.tags()
    cols = data.columns(path)

st.title("Tags")
if tags.empty:
    st.info("No tags yet. Select images on the Map (box or lasso) and give them a tag there.")
    widgets.undo_bar(path, key="tags")
    st.stop()

counts = tags["tag"].value_counts()
table = pd.DataFrame({"tag": counts.index, "images": counts.to_numpy()})
st.caption(f"{len(counts):,} tag{'s' if len(counts) != 1 else ''} on {widgets.n_images(tags['item_id'].nunique())}. "
           "Choose a row (or a tag below) to see its images.")
ev = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row", key="tags_table")
picked_rows = (ev.selection.rows if ev and getattr(ev, "selection", None) else []) or []
if picked_rows and table.iloc[picked_rows[0]]["tag"] != st.session_state.get("_tags_last_pick"):
    st.session_state["_tags_last_pick"] = st.session_state["tags_pick"] = table.iloc[picked_rows[0]]["tag"]
if st.session_state.get("tags_pick") not in set(counts.index):
    st.session_state["tags_pick"] = counts.index[0]
tag = st.selectbox("Tag", list(counts.index), key="tags_pick",
                   format_func=lambda t: f"{t} ({int(counts[t]):,})")

rows = data.tag_rows(cols["id"], tags, tag)
st.subheader(md(f"Tag “{tag}”: {widgets.n_images(len(rows))}"))
if len(rows) < int(counts[tag]):
    st.caption(f"{int(counts[tag]) - len(rows):,} tagged ids are not in this run's items (a re-built run?).")
widgets.group_gallery(path, rows, key="tags_gal")

b1, b2, b3 = st.columns([1, 1.4, 3], vertical_alignment="bottom")
if b1.button("Open on map", key="tags_map", icon=":material/scatter_plot:"):
    State.set_focus(rows, f"Tag “{tag}”", colour_by="tag")
    st.switch_page("views/map.py")


def remove() -> None:
    n = widgets.act(store.untag, [str(i) for i in cols["id"][rows]], tag)
    if n:
        st.toast(md(f"Tag “{tag}” removed from {widgets.n_images(n)} (undo brings it back)"), icon=":material/check:")


b2.button(f"Remove this tag from {widgets.n_images(len(rows))}", key="tags_remove", on_click=remove,
          icon=":material/label_off:", disabled=not len(rows))
widgets.undo_bar(path, key="tags")
st.markdown("**Export this tag's images** (with their tags, decisions and sub-class names)")
widgets.group_export(path, rows, f"tag-{tag}", key="tags_export")
