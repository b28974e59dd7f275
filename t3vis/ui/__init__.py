"""Panel/HoloViews views of a run: the explorer app and its parts.

``state.ExplorerState`` is the one per-session source of truth; views (``projection.ProjectionView``,
``table.DataTable``, ``filters.FilterPanel``, ``instance.InstanceView``, ``heads.HeadView``,
``summary.SelectionSummary``) are
``pn.viewable.Viewer`` classes built as ``View(state=state)``, reacting through ``@param.depends("state.x",
watch=True)``, and holding nothing of their own that another view needs. ``data`` (the shared
read-only column cache) and ``masks`` (brush and filter masks) import without panel. ``text`` is where values
become page text: views build markup only from its literal ``Markdown``/``HTML`` templates and show it in its panes.
``widgets`` holds what views share (the CSS, ``ClickableHTML``); ``tokens`` renders an example's tokens and classes.
"""

__all__ = ["Explorer", "ExplorerState"]


def __getattr__(name):
    if name == "Explorer":
        from .explorer import Explorer

        return Explorer
    if name == "ExplorerState":
        from .state import ExplorerState

        return ExplorerState
    raise AttributeError(name)
