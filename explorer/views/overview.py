"""Overview: what the run is, its classes and counts, the paper's metrics, the training curve."""
import pandas as pd
import streamlit as st

from explorer import data, figures, widgets
from explorer.widgets import md, run_guard

path = widgets.current_run()
with run_guard():
    run = data.run(path)
    items = data.items(path)
    metrics = data.metrics(path)
    events = data.progress(path)
    manifest = run.manifest

st.title(md(f"Run {run.path.name}"))
cfg = run.config
dinfo = manifest.get("data") or {}
c = st.columns(5)
c[0].metric("Images", f"{len(items):,}")
c[1].metric("Classes", len(run.classes))
c[2].metric("Loss", cfg.loss.name.upper())
c[3].metric("Backbone", cfg.model.backbone)
wall = manifest.get("wall_s")
c[4].metric("Training time", f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else "?")
st.caption(md(f"Data: {dinfo.get('spec', cfg.data.spec)} · device {manifest.get('device', '?')}"
              + (f" · {dinfo.get('skipped')} images skipped" if dinfo.get("skipped") else "")))

left, right = st.columns(2)
with left:
    st.subheader("Classes")
    if "split" in items:
        counts = pd.crosstab(items["label_name"], items["split"]).reindex(run.classes).fillna(0).astype(int)
        order = [s for s in ("train", "val", "test") if s in counts.columns] + \
                [s for s in counts.columns if s not in ("train", "val", "test")]
        st.plotly_chart(figures.class_counts_figure(counts[order]), key="ov_counts", config={"displaylogo": False})
    else:
        st.dataframe(items["label_name"].value_counts())
with right:
    st.subheader("Training curve")
    fig = figures.training_curve(events)
    if fig is None:
        st.caption("No training events recorded.")
    else:
        st.plotly_chart(fig, key="ov_curve", config={"displaylogo": False})

st.subheader("Metrics (the paper's protocol)")
table = figures.metrics_table(metrics)
if table.empty:
    st.caption("No metrics recorded for this run.")
else:
    st.dataframe(table, hide_index=True)
    st.caption("kNN (K=11) over training embeddings; K-means with K = number of classes; Recall@K retrieval "
               "within the split; Eq. 5 = nearest class mean posterior. Percent.")

sub, mis = metrics.get("subclass"), metrics.get("mislabels")
if isinstance(sub, dict) or isinstance(mis, dict):
    c1, c2 = st.columns(2)
    if isinstance(sub, dict):
        with c1:
            st.subheader("Sub-classes")
            fac = sub.get("facets") or {}
            if fac:
                st.write(", ".join(f"{v.get('n_subclasses', '?')} by {md(k)}" for k, v in fac.items())
                         + f" (shown first: {md(sub.get('primary', '?'))}).")
            else:
                st.write(f"{sub.get('n_subclasses', '?')} sub-classes found ({md(sub.get('mode', '?'))} mode).")
            rec = sub.get("recovery") or {}
            if rec:
                names = {"gt_subclass": "expression variants", "gt_glasses": "people with glasses",
                         "gt_baby": "babies"}
                st.dataframe(pd.DataFrame([{"hidden groups": names.get(k, k), "found": int(v["found"]),
                                            "of": int(v["groups"]), "mean best F1": round(float(v["mean_f1"]), 2)}
                                           for k, v in rec.items()]), hide_index=True)
                st.caption(md(f"Synthetic ground truth: {sub.get('recovery_rule', '')}."))
            if sub.get("nmi") is not None:
                st.write(f"Agreement with the hidden sub-classes: NMI {100 * float(sub['nmi']):.1f} %"
                         + (f", {100 * float(sub['nmi_within']):.1f} % within classes."
                            if sub.get("nmi_within") is not None else "."))
    if isinstance(mis, dict):
        with c2:
            st.subheader("Mislabels")
            ours, cl = mis.get("ours") or {}, mis.get("cleanlab") or {}
            if ours:
                st.write(f"Known flipped labels: {mis.get('n_true', '?')} of {mis.get('n', '?')}. "
                         f"Precision at k: ours {100 * float(ours.get('precision_at_k', 0)):.1f} %, "
                         f"cleanlab {100 * float(cl.get('precision_at_k', 0)):.1f} %.")
            else:
                st.write("No ground truth for mislabels in this data set.")

with st.expander("Configuration"):
    st.json(cfg, expanded=False)
if not data.analysed(path):
    widgets.require_analysis(path)
