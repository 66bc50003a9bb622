"""Similar: the nearest neighbours (with distances) of an image from the run or of an upload."""
import io

import numpy as np
import pandas as pd
import streamlit as st

from explorer import data, settings, widgets
from explorer.widgets import State, md, run_guard

path = widgets.current_run()

with run_guard():
    cols = data.columns(path)
    n = int(cols["n"])
    th = data.thumbs(path)

st.title("Similar images")
preset = State.similar_row()
if preset is not None and st.session_state.get("_sim_preset") != preset:
    # arrived from a gallery's "Find similar": query that image
    st.session_state["_sim_preset"] = preset
    st.session_state["sim_row"] = int(preset)
    st.session_state["sim_src"] = "run"
st.session_state.setdefault("sim_row", 0)
src = st.segmented_control("Query", ["run", "upload"], default="run", key="sim_src", required=True,
                           format_func=lambda s: {"run": "An image of this run", "upload": "Upload a picture"}[s])
k = st.slider("Neighbours", 4, 64, 16, step=4, key="sim_k")


def check_upload(blob: bytes) -> None:
    """Refuse anything that is not a modest, decodable image (before the pipeline sees it)."""
    from PIL import Image, UnidentifiedImageError

    if len(blob) > settings.MAX_UPLOAD_BYTES:
        raise ValueError(f"the file is larger than {settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    try:
        with Image.open(io.BytesIO(blob)) as im:
            if im.width * im.height > settings.MAX_UPLOAD_PIXELS:
                raise ValueError(f"the image is {im.width}x{im.height} pixels; that is too large")
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None


result = None
query_caption = ""
if src == "run":
    if not 0 <= int(st.session_state["sim_row"]) < n:
        st.session_state["sim_row"] = 0
    row = st.number_input("Row of the image (or pick one from any gallery with “Find similar”)", min_value=0,
                          max_value=max(0, n - 1), step=1, key="sim_row")
    row = int(row)
    q1, q2 = st.columns([1, 5])
    q1.image(th.png(row), width=112, output_format="PNG")
    q2.caption(md(f"{cols['id'][row]} · given {cols['label_name'][row]}"))
    with run_guard():
        idx = data.similar_index(path)
        res = idx.neighbours(idx.z[row], k=k + 1)
        result = res[res["row"] != row].head(k)
else:
    up = st.file_uploader("A face picture (PNG, JPEG, WebP, BMP; up to 5 MB)", key="sim_upload",
                          type=["png", "jpg", "jpeg", "webp", "bmp"], max_upload_size=settings.MAX_UPLOAD_BYTES // (1024 * 1024))
    if up is not None:
        blob = up.getvalue()
        try:
            check_upload(blob)
        except ValueError as exc:
            st.error(md(f"{up.name}: {exc}"))
            st.stop()
        with run_guard():
            idx = data.similar_index(path)
            try:
                result = idx.similar(blob, k=k)
            except Exception as exc:  # DataError from decoding, or the model refused
                st.error(md(f"{up.name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"))
                st.stop()
        from pipeline.similar import to_image

        q1, q2 = st.columns([1, 5])
        q1.image(to_image(blob, idx.image_size), width=112, output_format="PNG")
        q2.caption(md(f"uploaded: {up.name}"))
        ref = data.nn_reference(path)
        if len(result) and float(result["distance"].iloc[0]) > ref:
            q2.warning(f"No close match: the nearest image is at distance {float(result['distance'].iloc[0]):.3f}, "
                       f"farther than 95 % of this run's images are from their own nearest neighbour ({ref:.3f}). "
                       "The picture may not be a face like these, or shows something the run has not seen.",
                       icon=":material/travel_explore:")

if result is not None and len(result):
    rows = result["row"].to_numpy(dtype=np.int64)
    st.subheader(f"{len(rows)} nearest images")
    widgets.gallery(path, rows, captions=[f"{lbl} · d={d:.3f}" for lbl, d in zip(result["label_name"], result["distance"])])
    st.dataframe(pd.DataFrame({"row": rows, "id": result["id"].astype(str), "label": result["label_name"].astype(str),
                               "distance": result["distance"].round(4)}), hide_index=True)
    if st.button("Show these on the map", key="sim_map", icon=":material/scatter_plot:"):
        State.set_focus(rows, "Neighbours")
        st.switch_page("views/map.py")
