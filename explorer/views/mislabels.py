"""Mislabels: the ranked candidates with keep / flag / propose a label, filters, progress through
the queue, and the export of flagged images (CSV and a Label Studio import file)."""
import numpy as np
import streamlit as st

from explorer import data, queue, review, settings, widgets
from explorer.widgets import State, md, run_guard
from pipeline.runs import MISLABELS_TABLE

path = widgets.current_run()
widgets.require_analysis(path)

with run_guard():
    run = data.run(path)
    classes = run.classes
    mis = data.mislabels(path)
    cols = data.columns(path)
    th = data.thumbs(path)
    store = widgets.store(path)
    decided = store.decision_map()
    if mis is None or len(mis) != int(cols["n"]):
        st.error(f"{MISLABELS_TABLE} does not match items.parquet; re-run `pipeline analyze`.")
        st.stop()

st.title("Mislabel candidates")
with run_guard():
    qo = data.queue_order(path)
    strength = queue.model_strength(data.metrics(path))
if strength.weak:
    st.warning(f"This model is too weak for the ranking to mean much: kNN accuracy on the {strength.split} split is "
               f"{strength.knn_accuracy:.0%}, below {queue.MIN_KNN_ACCURACY:.0%}. The ranking asks whether an image's "
               "neighbours carry its label; when this many images are misread by their own neighbours, most "
               "disagreement is the model's error, not the label's, and the top of the queue holds many correct "
               "labels. Train longer (more epochs) or a stronger backbone before trusting it.",
               icon=":material/warning:")
evidence = str((data.metrics(path).get("mislabels") or {}).get("evidence", ""))
if "crossfit" in evidence:
    st.caption("Evidence: **out-of-sample**: models trained without each image (cross-fitting) judged it, pooled "
               "with the main model's leave-one-out neighbours and class means (that model saw the label).")
else:
    st.caption("Evidence: **the model saw this label**: neighbours and class means leave each image out, but the "
               "embedding was trained with its label, which pulls the image towards its class. Train with "
               "`--crossfit 2` for out-of-sample evidence.")
f1, f2, f3, f4 = st.columns([1.6, 2, 2, 1], vertical_alignment="bottom")
ranking = f1.segmented_control("Ranking", ["ours", "cleanlab"], default="ours", key="ml_rank", required=True,
                               format_func=lambda r: {"ours": "Ours", "cleanlab": "cleanlab"}[r],
                               help="Ours: how many of the image's nearest neighbours disagree with its label, "
                                    "each neighbour weighted by how well its own label fits its own neighbourhood, "
                                    "plus a little of the SGM posterior (Eq. 5) against class means fit without "
                                    "the image, scaled to [0, 1]; equal scores are ordered by "
                                    f"{qo.tie_break}. cleanlab: its self-confidence on the plain neighbour votes.")
ranking = ranking or "ours"
want = f2.multiselect("Given label", range(len(classes)), key="ml_classes", format_func=lambda c: classes[c],
                      placeholder="all classes")
if ranking == "ours":
    score = qo.score
    rank = qo.rank
    thr = f3.slider("Score at least", min_value=0.0, max_value=1.0, value=0.0, step=0.01, key="ml_thr_ours",
                    help="higher = more likely mislabelled")
    keep_mask = score >= thr - 1e-9
    suspicion = score
else:
    score = mis["cleanlab_score"].to_numpy(dtype=np.float64)
    rank = mis["cleanlab_rank"].to_numpy()
    thr = f3.slider("Label quality at most", min_value=0.0, max_value=1.0, value=1.0, step=0.01, key="ml_thr_cl",
                    help="cleanlab's label quality: lower = more likely mislabelled")
    keep_mask = score <= thr + 1e-9
    suspicion = 1.0 - score
hide = f4.toggle("Hide reviewed", value=True, key="ml_hide")
n_likely = int(qo.likely_wrong.sum())
only_likely = st.toggle(f"Only the {n_likely:,} likely wrong", value=True, key="ml_likely",
                        help=f"Images whose own evidence says the label is probably wrong: more than "
                             f"{queue.LIKELY_DISAGREE:.0%} of their (trust-weighted) neighbours carry another label and "
                             f"the posterior of the given label is below {queue.LIKELY_P_GIVEN:.0%}. Off: every image, "
                             "ranked.")

mask = keep_mask.copy()
if only_likely:
    mask &= qo.likely_wrong
if want:
    mask &= np.isin(cols["label"], np.asarray(want))
cand = np.flatnonzero(mask)
cand = cand[np.argsort(rank[cand], kind="stable")]
ids = cols["id"]
reviewed = np.fromiter((ids[r] in decided for r in cand), dtype=bool, count=len(cand)) if decided else np.zeros(len(cand), bool)
n_done = int(reviewed.sum())
st.progress(n_done / len(cand) if len(cand) else 1.0,
            text=f"Reviewed {n_done:,} of {len(cand):,} candidates"
                 + (f" · {sum(1 for d in decided.values() if d[0] in review.FLAGGED):,} flagged in this run" if decided else ""))

# how far along the review is: the share confirmed wrong, its interval, what is left, when to stop
dec_df = store.decisions().set_index("item_id") if decided else None
wrong = np.fromiter((decided.get(ids[r], ("",))[0] in review.FLAGGED for r in cand), dtype=bool, count=len(cand)) \
    if decided else np.zeros(len(cand), bool)
when = np.fromiter((float(dec_df.at[ids[r], "updated"]) if reviewed[i] else 0.0 for i, r in enumerate(cand)),
                   dtype=np.float64, count=len(cand)) if decided else np.zeros(len(cand))
p1, p2, p3 = st.columns([2, 2, 1.3], vertical_alignment="bottom")
level = p3.number_input("Stop below (% confirmed wrong)", min_value=1, max_value=99, value=50, step=5, key="ml_level",
                        help=f"The hint says to stop when fewer than this share of your last {queue.RECENT} "
                             "reviews were confirmed wrong (flag or a proposed label).")
prog = queue.progress(suspicion[cand], reviewed, wrong, when, level=level / 100)
if prog.reviewed:
    lo, hi = prog.interval
    p1.metric("Confirmed wrong so far", f"{prog.share:.0%}",
              help=f"{prog.wrong:,} of {prog.reviewed:,} reviewed candidates were flagged or given a new label; "
                   f"95 % Wilson interval {lo:.0%} to {hi:.0%}.")
    p1.caption(f"{prog.wrong:,} of {prog.reviewed:,} reviewed · 95 % interval {lo:.0%}–{hi:.0%}")
    if prog.est_left is not None:
        p2.metric("Wrong labels left (estimate)", f"≈ {prog.est_left:,.0f}",
                  help="The share confirmed wrong is fit against the score (never rising as the score falls) and "
                       "summed over the unreviewed candidates; below the lowest score you reviewed, the share seen "
                       "there is carried on, so that part is an upper estimate.")
        p2.caption(f"among {prog.unreviewed:,} unreviewed candidates")
    if prog.stop:
        st.warning(f"Recent precision {prog.recent:.0%} (your last {prog.recent_n} reviews) is below {level} %: "
                   "the rest of this ranking is mostly right labels. You can stop here.", icon=":material/flag:")
    elif prog.until_rank is not None and prog.until_rank < len(cand):
        st.info(f"Review until about candidate {prog.until_rank:,} of {len(cand):,}: below that score, the share "
                f"confirmed wrong so far falls under {level} %.", icon=":material/info:")
else:
    p1.caption("Decide a few candidates to see the share confirmed wrong and an estimate of what is left.")
queue_rows = cand[~reviewed] if hide else cand
widgets.undo_bar(path, key="ml")

pages = max(1, -(-len(queue_rows) // settings.QUEUE_PAGE))
if not 1 <= int(st.session_state.get("ml_page", 1)) <= pages:
    st.session_state["ml_page"] = pages if st.session_state.get("ml_page", 1) > pages else 1
st.session_state.setdefault("ml_page", 1)
page = 1
if pages > 1:
    pc, _ = st.columns([1, 4])
    page = pc.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="ml_page")
show = queue_rows[(page - 1) * settings.QUEUE_PAGE: page * settings.QUEUE_PAGE]
if not len(show):
    st.success("Nothing left to review with these filters.")


def decide(item_id: str, decision: str) -> None:
    if widgets.act(store.decide, item_id, decision, source=f"queue:{ranking}"):
        st.toast(md(f"{item_id}: {decision}"), icon=":material/check:")


def clear(item_id: str) -> None:
    if widgets.act(store.undecide, item_id):
        st.toast(md(f"{item_id}: decision cleared"), icon=":material/backspace:")


def propose(item_id: str, key: str) -> None:
    c = st.session_state.get(key)
    if c is None:
        return
    if widgets.act(store.decide, item_id, "relabel", proposed_label=classes[int(c)], source=f"queue:{ranking}"):
        st.toast(md(f"{item_id}: proposed {classes[int(c)]}"), icon=":material/check:")


suggested = mis["suggested"].to_numpy() if "suggested" in mis else None
for start in range(0, len(show), 4):
    row_cols = st.columns(4)
    for col, r in zip(row_cols, show[start:start + 4]):
        r = int(r)
        item = str(ids[r])
        with col.container(border=True):
            st.image(th.png(r), width=112, output_format="PNG")
            given = str(cols["label_name"][r])
            sug = classes[int(suggested[r])] if suggested is not None else "?"
            st.markdown(f"**{md(given)}** → {md(sug)}")
            st.caption(f"rank {int(rank[r]):,} · {'score' if ranking == 'ours' else 'quality'} {score[r]:.3f} · {md(item)}")
            d = decided.get(item)
            if d:
                st.caption(md(f"decision: {d[0]}" + (f" ({d[1]})" if d[1] else "")))
            b1, b2 = st.columns(2)
            b1.button("Keep", key=f"keep_{item}", on_click=decide, args=(item, "keep"), width="stretch")
            b2.button("Flag", key=f"flag_{item}", on_click=decide, args=(item, "flag"), type="primary", width="stretch")
            if d:  # clearing takes the image back into the queue; it is logged like any action
                st.button("Clear decision", key=f"clear_{item}", on_click=clear, args=(item,), type="tertiary",
                          icon=":material/backspace:")
            pk = f"prop_{item}"
            st.selectbox("Propose label", range(len(classes)), index=None, key=pk, format_func=lambda c: classes[c],
                         placeholder="propose a label…", on_change=propose, args=(item, pk), label_visibility="collapsed")
            h1, h2 = st.columns(2)
            with h1:
                widgets.history_popover(path, item)
            if h2.button("Similar", key=f"mlsim_{item}", icon=":material/image_search:", type="tertiary"):
                State.set_similar_row(r)
                st.switch_page("views/similar.py")

st.divider()
st.subheader("Export flagged images")
with run_guard():
    # the score on [0, 1], as the queue shows it (Label Studio reads a prediction score as a share)
    flagged = review.flagged_frame(data.items(path), store.decisions(), store.tags(), mis.assign(score=qo.score),
                                   subclass=data.subclass_of_rows(path),
                                   subclass_names=widgets.subclass_display_names(path))
counts = store.counts()
st.caption(f"{len(flagged):,} flagged ({counts['relabel']:,} with a proposed label) · {counts['keep']:,} kept")
if len(flagged):
    def image_ref(row: int, p: str) -> str:
        return p if p else th.data_uri(row)

    e1, e2, e3 = st.columns(3)
    e1.download_button("CSV", review.to_csv(flagged), file_name=f"{run.path.name}-flagged.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore", key="ml_csv")
    e2.download_button("Label Studio tasks (JSON)", review.to_label_studio(flagged, image_ref=image_ref),
                       file_name=f"{run.path.name}-label-studio.json", mime="application/json",
                       icon=":material/download:", on_click="ignore", key="ml_ls")
    e3.download_button("Label Studio labeling config", review.label_studio_config(classes).encode(),
                       file_name="labeling-config.xml", mime="application/xml", icon=":material/download:",
                       on_click="ignore", key="ml_ls_cfg")
    st.dataframe(flagged.drop(columns=["row"]).head(200), hide_index=True)
