"""Plots shared by commands (matplotlib, imported lazily inside the functions).

Modules: :mod:`knntools.plotting.reliability` (reliability diagrams, DkNN Figure 1). Other
commands may add their own modules here. Functions return ``matplotlib.figure.Figure`` objects
built without pyplot (no global state, any backend); commands save them atomically with
:func:`knntools.io.h5.atomic_path`.
"""
