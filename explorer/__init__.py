"""Subclass Explorer's Streamlit app (``streamlit run explorer/app.py``).

``app`` routes, ``views/`` are thin pages, ``data`` is the only reader of runs (cached on the run
and its manifest's mtime), ``figures`` builds Plotly figures without Streamlit, ``widgets`` holds
shared page pieces, ``review`` is the only writer of a run's review database, ``jobs`` runs the
pipeline in background processes, ``settings`` says where runs and data live.
"""
