"""Compare: two runs on the same test images (a run and the one retrained with its corrections):
per-class and per-sub-class accuracy, how alike their sub-classes are, the images whose prediction
changed, and each sub-class of one run matched to the other's by shared members."""
import numpy as np
import pandas as pd
import streamlit as st

from explorer import data, settings, widgets
from explorer.review import ReviewStore
from explorer.widgets import md, run_guard

path = widgets.current_run()
root = settings.runs_root()
infos = [r for r in data.runs(root) if r.usable]
st.title("Compare two runs")
if len(infos) < 2:
    st.info("Comparing needs two complete runs. Retrain with your corrections (sidebar) to get a second one.")
    st.stop()
paths = [r.path for r in infos]
names = {r.path: r.name for r in infos}
with run_guard():
    parent = data.run(path).manifest.get("parent")
default_a = parent if parent in paths else next((p for p in paths if p != path), paths[0])
c1, c2 = st.columns(2)
a = c1.selectbox("Run A (before)", paths, index=paths.index(default_a), key="cmp_a", format_func=names.get)
b = c2.selectbox("Run B (after)", paths, index=paths.index(path) if path in paths else 0, key="cmp_b",
                 format_func=names.get)
if a == b:
    st.info("Pick two different runs.")
    st.stop()
with run_guard():
    res = data.compare(a, b)
    names_a, names_b = ReviewStore(a).subclass_names(), ReviewStore(b).subclass_names()

o = res["overall"]
st.caption(md(f"{res['n_test']:,} test images in both runs, scored against run A's test labels "
              "(corrections never change a test label)."))
m1, m2, m3, m4 = st.columns(4)
m1.metric("kNN accuracy, B", f"{100 * o['accuracy_b']:.1f} %", f"{100 * (o['accuracy_b'] - o['accuracy_a']):+.1f} pts vs A")
if o.get("nmi_a") is not None and o.get("nmi_b") is not None:
    m2.metric("NMI (k-means, test), B", f"{100 * o['nmi_b']:.1f}", f"{100 * (o['nmi_b'] - o['nmi_a']):+.1f} vs A")
m3.metric("Predictions fixed", f"{o['fixed']:,}")
m4.metric("Predictions broken", f"{o['broken']:,}")

st.subheader("Per class")
st.dataframe(res["per_class"].style.format({"accuracy_a": "{:.1%}", "accuracy_b": "{:.1%}", "delta": "{:+.1%}",
                                             "subclass_nmi": "{:.2f}"}), hide_index=True, key="cmp_per_class")
st.caption("subclass_nmi: how alike the two runs' sub-classes of the class are on its test images (1 = the same groups).")

st.subheader("Sub-classes matched by shared members")
matches = res["matches"]
if matches is None:
    st.info("Analyse both runs to match their sub-classes.")
else:
    sa, sb = res["per_subclass_a"].set_index("subclass"), res["per_subclass_b"].set_index("subclass")
    t = matches.copy()
    t.insert(1, "name_a", [names_a.get(int(s), "") for s in t["a"]])
    t.insert(3, "name_b", [names_b.get(int(s), "") for s in t["b"]])
    t["accuracy_a"] = [sa["accuracy"].get(int(s), np.nan) for s in t["a"]]
    t["accuracy_b"] = [sb["accuracy"].get(int(s), np.nan) for s in t["b"]]
    t["class"] = [sa["class"].get(int(s), "") for s in t["a"]]
    st.dataframe(t.sort_values(["class", "a"]), hide_index=True, key="cmp_matches",
                 column_config={"jaccard": st.column_config.ProgressColumn("jaccard", min_value=0.0, max_value=1.0,
                                                                            format="%.2f")})

st.subheader("Images whose prediction changed")
ch = res["changed"]
kind = st.segmented_control("Show", ["fixed", "broken", "other"], default="fixed", key="cmp_kind", required=True)
sel = ch[ch["kind"] == kind]
st.caption(f"{len(sel):,} image(s): true label · A's prediction → B's prediction")
widgets.gallery(b, sel["row_b"].to_numpy(),
                captions=[f"{r.label} · {r.pred_a} → {r.pred_b}" for r in sel.itertuples(index=False)])
