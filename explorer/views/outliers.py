"""Outliers: images unlike every other image (not a face, broken, blank, text), most unusual first,
with the same keep / flag actions as the mislabel queue; and the duplicate pairs, side by side."""
import numpy as np
import streamlit as st

from explorer import data, settings, widgets
from explorer.widgets import md, run_guard
from pipeline.runs import DUPLICATES_TABLE, OUTLIERS_TABLE

path = widgets.current_run()
widgets.require_analysis(path)

with run_guard():
    cols = data.columns(path)
    th = data.thumbs(path)
    store = widgets.store(path)
    decided = store.decision_map()
    out = data.analysis_table(path, OUTLIERS_TABLE)
    dup = data.analysis_table(path, DUPLICATES_TABLE)
if out is None:
    st.info("This run was analysed before outliers and duplicates were; analyse it again to see them.")
    widgets.analyze_button(path)
    st.stop()
if len(out) != int(cols["n"]):
    st.error(f"{OUTLIERS_TABLE} does not match items.parquet; re-run `pipeline analyze`.")
    st.stop()
ids = cols["id"]

st.title("Outliers and duplicates")
tab_out, tab_dup = st.tabs(["Outliers", "Duplicates"])


def decide(item_id: str, decision: str) -> None:
    if widgets.act(store.decide, item_id, decision, source="outliers"):
        st.toast(md(f"{item_id}: {decision}"), icon=":material/check:")


with tab_out:
    st.caption("Most unusual first: the higher of two ranks, how far an image's pixels are from its nearest "
               "neighbours' (cleanlab's out-of-distribution score on small thumbnails) and how unsure the model is "
               "of its class. Flag what does not belong; keep the rest.")
    hide = st.toggle("Hide reviewed", value=True, key="ol_hide")
    order = np.argsort(out["outlier_rank"].to_numpy(), kind="stable")
    if hide and decided:
        order = order[[str(ids[r]) not in decided for r in order]]
    n_show = st.number_input("Show the top", min_value=4, max_value=200, value=settings.QUEUE_PAGE, step=4,
                             key="ol_n")
    show = order[: int(n_show)]
    score = out["outlier_score"].to_numpy()
    for start in range(0, len(show), 4):
        for col, r in zip(st.columns(4), show[start:start + 4]):
            r = int(r)
            item = str(ids[r])
            with col.container(border=True):
                st.image(th.png(r), width=112, output_format="PNG")
                st.caption(md(f"{cols['label_name'][r]} · {cols['split'][r]} · score {score[r]:.3f} · {item}"))
                d = decided.get(item)
                if d:
                    st.caption(md(f"decision: {d[0]}"))
                b1, b2 = st.columns(2)
                b1.button("Keep", key=f"olkeep_{item}", on_click=decide, args=(item, "keep"), width="stretch")
                b2.button("Flag", key=f"olflag_{item}", on_click=decide, args=(item, "flag"), type="primary",
                          width="stretch")
    if not len(show):
        st.success("Nothing left to review.")

with tab_dup:
    q = data.metrics(path).get("quality", {}).get("duplicates", {})
    if q:
        st.caption(md(f"{q.get('exact_pairs', 0):,} exact and {q.get('near_pairs', 0):,} near pair(s) in "
                      f"{q.get('groups', 0):,} group(s); {q.get('cross_groups', 0):,} group(s) cross train and test "
                      f"({q.get('test_leaked', 0):,} test image(s) with a copy in train). Near: pixel correlation "
                      f"at least {q.get('min_corr', 0.95)} between embedding or thumbnail neighbours. "
                      "`pipeline train --dedupe` leaves the train copies out."))
    if dup is None:
        st.info("Duplicates are judged on the pixels, and this run stores none (images.npy).")
    elif not len(dup):
        st.success("No duplicates found.")
    else:
        f1, f2 = st.columns(2)
        kind = f1.segmented_control("Kind", ["all", "exact", "near"], default="all", key="dup_kind", required=True)
        cross_only = f2.toggle("Across train and test only", value=False, key="dup_cross")
        d = dup
        if kind in ("exact", "near"):
            d = d[d["kind"] == kind]
        if cross_only:
            d = d[d["cross"]]
        st.caption(f"{len(d):,} pair(s)")
        for rec in d.head(settings.GALLERY_MAX // 2).itertuples(index=False):
            a, b = int(rec.a), int(rec.b)
            c1, c2, c3 = st.columns([1, 1, 3], vertical_alignment="center")
            c1.image(th.png(a), width=84, output_format="PNG")
            c2.image(th.png(b), width=84, output_format="PNG")
            same = "same label" if cols["label"][a] == cols["label"][b] else "labels differ"
            c3.caption(md(f"{rec.kind} · corr {rec.corr:.3f} · {ids[a]} ({cols['split'][a]}, {cols['label_name'][a]}) "
                          f"and {ids[b]} ({cols['split'][b]}, {cols['label_name'][b]}) · {same}"))
