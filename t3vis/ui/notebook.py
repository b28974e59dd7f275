"""Load what the explorer needs to render: in a notebook, every JS/CSS resource inline, so it works offline.

``panel serve`` already serves the resources and a plain script renders nothing, so there only HoloViews' bokeh
backend is selected, exactly as before. In a Jupyter kernel Panel's CDN resources would leave the output blank
with no network, and Tabulator (the data table) must be loaded by name before anything is displayed.
"""

from __future__ import annotations

import sys

import holoviews as hv
import panel as pn

#: The Panel extensions the explorer's views need loaded in a notebook (``pn.extension`` names; the
#: panel_material_ui components and ``ClickableHTML`` ship their code with each model).
EXTENSIONS = ("tabulator",)

_loaded_in_kernel = False


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (not in a ``panel serve`` session, a script or a terminal)."""
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        return False
    ipython = sys.modules.get("IPython")  # never imported by a server or a script that does not use it
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def load_extensions() -> None:
    """Select HoloViews' bokeh backend; in a notebook also load Panel with ``EXTENSIONS``, inline, once per kernel."""
    global _loaded_in_kernel
    if not in_notebook():
        if hv.Store.current_backend != "bokeh" or "bokeh" not in hv.Store.renderers:  # once, not per page (~20 ms)
            hv.extension("bokeh", logo=False)
        return
    if _loaded_in_kernel:
        return
    # HoloViews publishes bokeh and Panel inline; Panel, called in the same cell, then adds only the extensions.
    hv.extension("bokeh", logo=False, inline=True)
    pn.extension(*EXTENSIONS, inline=True)
    _loaded_in_kernel = True
