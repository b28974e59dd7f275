"""What a page costs the server: work done once per page, not twice; no page follows process-wide state; a run is
validated once per state on disk, not once per page (benchmarks/bench_sessions.py measures the figures)."""

from __future__ import annotations

import os

import numpy as np
import panel_material_ui as pmui
import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource
from panel.io.state import set_curdoc, state
from panel.util import edit_readonly
from ui_fixtures import *  # noqa: F403

from t3vis.ui import explorer as explorer_module
from t3vis.ui.explorer import Explorer
from t3vis.ui.projection import ScatterPlot


def render(explorer: Explorer) -> Document:
    doc = Document()
    doc.add_root(explorer.__panel__().get_root(doc))
    return doc


def test_a_page_does_not_follow_the_process_wide_busy_flag(small_run):
    """Panel flips ``pn.state.busy`` around every callback of every session; a page that followed it re-sent its
    whole model graph each time, for every open page."""
    page = Explorer(small_run).__panel__()
    plain = pmui.Page(title="follows the flag")
    try:
        with edit_readonly(state):
            state.busy = True
        assert plain.busy is True  # what a Page does by default
        assert page.busy is False
    finally:
        with edit_readonly(state):
            state.busy = False


def test_a_first_render_draws_each_layer_once(small_run, monkeypatch):
    """HoloViews draws a plot with a RangeXY stream a second time right after the first; served, it re-queued that
    refresh on every tick until the browser connected. One aggregation per layer, and nothing queued."""
    drawn = []
    raster = ScatterPlot._raster
    monkeypatch.setattr(ScatterPlot, "_raster", lambda self, *a, **k: drawn.append((self.spec.kind, a[-1])) or
                        raster(self, *a, **k))
    e = Explorer(small_run)
    render(e)
    assert sorted(drawn) == sorted((kind, layer) for kind in ("projection", "datamap") for layer in ("back", "front"))
    for plot in e.projection.plots.values():
        assert plot.range_xy.x_range == pytest.approx(plot.extent[0])
        hv_plots = [p for fig in plot._mark_sources for p in fig.traverse(lambda p: p)]
        assert hv_plots and not any(getattr(p, "_trigger", None) for p in hv_plots)


def test_with_linked_axes_each_plot_is_drawn_for_the_shared_range(small_run):
    """Comparing with linked axes, a plot's first range is the two plots' union: that refresh is kept."""
    e = Explorer(small_run)
    state = e.state
    state.param.update(compare=True, link_axes=True, checkpoint_b=state.param.checkpoint_b.objects[0])
    render(e)
    a, b = e.projection.plots["a"], e.projection.plots["b"]
    assert a.extent != b.extent
    for plot in (a, b):
        drawn, shown = plot._drawn_view, (plot.range_xy.x_range, plot.range_xy.y_range)
        assert np.allclose(np.ravel(drawn), np.ravel(shown))
        assert shown[0][0] == pytest.approx(min(a.extent[0][0], b.extent[0][0]))


def mark_renderers(hv_plot, made: dict) -> list:
    """The glyphs of a rendered plot that draw its marks (whose sources ``made`` holds)."""
    sources = set(map(id, made.values()))
    return [r for r in hv_plot.state.renderers if id(getattr(r, "data_source", None)) in sources]


def test_marks_are_added_when_there_is_something_to_mark(small_run):
    e = Explorer(small_run)
    doc = render(e)
    (hv_plot, made), = e.projection.plots["a"]._mark_sources.items()
    before = len(hv_plot.state.renderers)
    assert made == {}  # nothing to mark: no glyphs, no sources sent
    with set_curdoc(doc):
        e.state.example = 7
    for marked in e.projection.plots.values():
        (hv_plot, made), = marked._mark_sources.items()
        assert list(made["example"].data["row"]) == [7]
        assert len(mark_renderers(hv_plot, made)) == 4  # neighbours, their query, a two-colour ring
    assert len(next(iter(e.projection.plots["a"]._mark_sources)).state.renderers) == before + 4
    with set_curdoc(doc):
        e.state.color_by = "loss"  # a rebuilt plot marks the example from its first render
    (hv_plot, made), = e.projection.plots["a"]._mark_sources.items()
    assert list(made["example"].data["row"]) == [7] and len(mark_renderers(hv_plot, made)) == 4
    with set_curdoc(doc):
        e.state.example = None
    assert len(made["example"].data["row"]) == 0  # the same glyphs, emptied


def test_a_run_is_validated_once_per_state_on_disk(tmp_path, small_run, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    calls = []
    validate = explorer_module.validate
    monkeypatch.setattr(explorer_module, "validate", lambda path: calls.append(path) or validate(path))
    assert explorer_module.problems_of(run) == [] and explorer_module.problems_of(run) == []
    assert len(calls) == 1
    group = run / "store.zarr" / "checkpoints"
    os.utime(group, ns=(group.stat().st_atime_ns, group.stat().st_mtime_ns + 10**9))  # the run changed on disk
    assert explorer_module.problems_of(run) == []
    assert len(calls) == 2
    (run / "store.zarr" / "zarr.json").write_text("{ not json")
    problems = explorer_module.problems_of(run)
    assert problems and len(calls) == 3 and "cannot be read" in str(problems[0])


def test_sessions_stay_isolated_with_their_marks(small_run):
    """Two pages of one run: one page's example and selection mark nothing in the other."""
    first, second = Explorer(small_run), Explorer(small_run)
    docs = render(first), render(second)
    with set_curdoc(docs[0]):
        first.state.example = 3
        first.state.selection = np.arange(first.state.n_total) < 10
    assert second.state.example is None and second.state.selection is None
    assert all(made == {} for plot in second.projection.plots.values() for made in plot._mark_sources.values())
