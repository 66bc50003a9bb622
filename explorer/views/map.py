"""Map: the run's embeddings in 2-D (t-SNE / UMAP / PCA), coloured by any column; a box or lasso
selection (or a sub-class opened from its card) shows its images below, ready to flag or tag."""
import numpy as np
import pandas as pd
import streamlit as st

from explorer import data, figures, widgets
from explorer.widgets import State, md, run_guard

METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}

path = widgets.current_run()
widgets.require_analysis(path)

with run_guard():
    run = data.run(path)
    classes = run.classes
    maps = data.maps_index(path)
    cols = data.columns(path)
    n = int(cols["n"])
    opts = data.colour_options(path)
    if not maps:
        st.warning("This run has no stored maps.")
        st.stop()

    st.title("Map")
    focus = State.focus()
    store = widgets.store(path)
    tags = store.tags()
    tag_counts = tags["tag"].value_counts() if len(tags) else None
    c1, c2, c3, c4 = st.columns([1, 1.4, 1.4, 1.4])
    labels = []
    for m in maps:
        name = METHOD_NAMES.get(m.get("method"), str(m.get("method")))
        if sum(1 for x in maps if x.get("method") == m.get("method")) > 1:
            name += " " + ", ".join(f"{k}={v}" for k, v in sorted((m.get("params") or {}).items()))
        labels.append(name)
    mi = c1.selectbox("Map", range(len(maps)), format_func=lambda i: labels[i], key="map_method")
    if focus and focus.get("colour_by") in opts and not st.session_state.get("_map_focus_applied") == focus:
        st.session_state["map_colour"] = focus["colour_by"]
        st.session_state["_map_focus_applied"] = focus
    by = c2.selectbox("Colour by", list(opts), format_func=lambda k: opts[k], key="map_colour")
    hl = c3.selectbox("Highlight class", [-1] + list(range(len(classes))), key="map_class",
                      format_func=lambda c: "(none)" if c < 0 else classes[c])

    tag_opts = [""] + (list(tag_counts.index) if tag_counts is not None else [])
    if st.session_state.get("map_tag_filter") not in tag_opts:  # a tag that was just removed
        st.session_state["map_tag_filter"] = ""
    tag_on = c4.selectbox("Show tag", tag_opts, key="map_tag_filter",
                          format_func=lambda t: "(none)" if not t else f"{t} ({int(tag_counts[t]):,})",
                          help="Highlight the images carrying a tag and show them below", disabled=len(tag_opts) < 2)
    col = data.colouring(path, by,
                         subclass_names=store.subclass_names() if by == "subclass" or by.startswith("facet_") else None,
                         decisions=store.decision_map() if by == "review" else None,
                         tags=tags if by == "tag" else None)
    xy = data.map_xy(path, maps[mi]["file"])
    tagged = data.tag_rows(cols["id"], tags, tag_on) if tag_on else None
    highlight = None
    if hl >= 0:
        highlight = np.flatnonzero(cols["label"] == hl)
    elif tagged is not None:
        highlight = tagged
    elif focus:
        highlight = np.asarray(focus["rows"], dtype=np.int64)
    mf = figures.map_figure(xy, col, highlight=highlight)

event = st.plotly_chart(mf.fig, key="map_chart", on_select="rerun", selection_mode=("points", "box", "lasso"),
                        config={"displaylogo": False, "scrollZoom": True,
                                "modeBarButtonsToRemove": ["toImage", "autoScale2d"]})

# The chart is a new widget whenever its figure changes (colouring, class), which empties its
# selection: keep the last selection until the user clears or replaces it on the same chart.
sig = (path, mi, by, hl)
sel = figures.selected_rows(event.selection if event else None, mf.trace_rows)
if sel.size:
    st.session_state["map_sel"] = (path, sel)
elif st.session_state.get("map_sig") == sig:
    st.session_state.pop("map_sel", None)
st.session_state["map_sig"] = sig
kept = st.session_state.get("map_sel")
rows = kept[1] if kept and kept[0] == path else np.zeros(0, np.int64)
title = "Selection"
if not rows.size and tagged is not None:
    rows, title = tagged, f"Tag “{tag_on}”"
elif not rows.size and focus:
    rows, title = np.asarray(focus["rows"], dtype=np.int64), focus["title"]

if not rows.size:
    st.caption("Draw a box or a lasso on the map (toolbar, top right) to see those images here; "
               "double-click the map to clear.")
    st.stop()

head, clear = st.columns([5, 1], vertical_alignment="bottom")
head.subheader(md(f"{title}: {widgets.n_images(len(rows))}"))
if clear.button("Clear", key="map_clear", icon=":material/close:"):
    st.session_state.pop("map_sel", None)
    State.clear_focus()
    st.rerun()

ids = cols["id"][rows]
decided = store.decision_map()
shown = rows[:64]
extra = []
for r in shown:
    d = decided.get(cols["id"][r])
    extra.append(f"pred {cols['pred_name'][r]}" + (f" · {d[0]}" if d else "") if "pred_name" in cols else (d[0] if d else ""))
widgets.gallery(path, shown, captions=widgets.label_captions(path, shown, extra=extra))
if len(rows) > len(shown):
    st.caption(f"Showing the first {len(shown)} of {len(rows):,}.")

DECISION_CHOICES = {"": "leave as they are", "flag": "flag for re-annotation", "keep": "keep (label is right)",
                    "clear": "clear any decision"}
with st.form("map_actions", border=True):
    st.markdown(f"**Act on all {len(rows):,} selected images** (one step, kept in this run's review database)")
    a1, a2, a3 = st.columns([1.4, 2, 1], vertical_alignment="bottom")
    # nothing is flagged unless asked: tagging a selection must not flag it too
    what = a1.selectbox("Decision", list(DECISION_CHOICES), format_func=DECISION_CHOICES.get, key="map_decision")
    known = store.tag_names()
    tag = a2.text_input("Tag (optional)", key="map_tag", max_chars=80,
                        placeholder="e.g. glasses" if not known else "used so far: " + ", ".join(known[:5]))
    go = a3.form_submit_button(f"Apply to {len(rows):,}", type="primary", icon=":material/done_all:")
if go:
    tag = (tag or "").strip() or None
    sel_ids = [str(i) for i in ids]
    if what in ("keep", "clear"):
        done = widgets.act(store.decide, sel_ids, "keep", source="map") if what == "keep" else \
            widgets.act(store.undecide, sel_ids)
        if done is not None and tag:
            done = widgets.act(store.tag, sel_ids, tag)
    elif not what and not tag:
        done = None
        st.toast("Nothing to do: choose a decision and/or type a tag.", icon=":material/info:")
    else:
        done = widgets.act(store.flag_and_tag, sel_ids, flag=what == "flag", tag=tag, source="map")
    if done is not None:
        bits = {"flag": "flagged", "keep": "kept", "clear": "decisions cleared"}.get(what, "")
        said = " and ".join(x for x in (bits, f"tagged “{tag}”" if tag else "") if x)
        st.toast(md(f"{widgets.n_images(len(sel_ids))}: {said}"), icon=":material/check:")
        st.rerun()
widgets.undo_bar(path, key="map")

st.markdown("**Export these images** (with their tags, decisions and sub-class names)")
widgets.group_export(path, rows, title, key="map_export")

left, right = st.columns(2)
with left:
    comp = pd.DataFrame({"given label": cols["label_name"][rows]}).value_counts().rename("images").reset_index()
    st.dataframe(comp, hide_index=True)
with right:
    widgets.similar_button(path, shown, key="map_sim")
