"""The explorer's views headless: real BoundsXY/Lasso stream events, rendered plots, table paging and CSV export.

Sessions are rendered into Bokeh Documents (as a served page is), so stream events run the server's code path.
"""

from __future__ import annotations

import io

import holoviews as hv
import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document
from matplotlib.path import Path as MplPath
from panel.io.state import set_curdoc
from pyviz_comms import Comm
from ui_fixtures import *  # noqa: F403

from t3vis.ui.data import run_data
from t3vis.ui.explorer import Explorer
from t3vis.ui.projection import compact


def render(explorer: Explorer) -> Document:
    doc = Document()
    doc.add_root(explorer.__panel__().get_root(doc))
    return doc


def rendered_layer(plot, layer: str = "front"):
    """The Bokeh source and colour mapper of one of the plot's raster layers, as rendered in the (one) page."""
    (rendered,) = list(plot._rendered[layer])
    return rendered.handles["source"], rendered.handles.get("color_mapper")


def front_count(plot) -> int:
    """Points the page's highlight layer shows (its rendered count image, summed)."""
    return int(np.nansum(rendered_layer(plot)[0].data["image"][0]))


def brush_percentiles(explorer, plot, lo, hi) -> np.ndarray:
    """Box-brush ``plot`` from the (x, y) percentiles ``lo`` to ``hi``, as the browser would; returns the mask that
    box must give, computed directly with numpy."""
    x, y = explorer.state.data.xy(plot.spec)
    x0, x1 = (float(np.percentile(x, q)) for q in (lo[0], hi[0]))
    y0, y1 = (float(np.percentile(y, q)) for q in (lo[1], hi[1]))
    with set_curdoc(explorer.doc):
        plot.box.event(bounds=(x0, y0, x1, y1))
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


@pytest.fixture
def explorer(small_run):
    e = Explorer(small_run)
    e.doc = render(e)
    return e


def test_box_brush_sets_mask_and_highlights_every_plot(explorer):
    state, plots = explorer.state, explorer.projection.plots
    assert set(plots) == {"a", "datamap"}
    a = plots["a"]
    expect = brush_percentiles(explorer, a, (20, 20), (70, 60))
    np.testing.assert_array_equal(state.mask, expect)
    assert state.n_selected == expect.sum() > 0
    assert front_count(a) == expect.sum()  # the highlight is exactly the selection...
    assert front_count(plots["datamap"]) == expect.sum()  # ...in the other plot too
    assert f"**{expect.sum():,}** selected" in explorer.counts.object
    page = explorer.table.table.value
    np.testing.assert_array_equal(page.index.to_numpy(), np.flatnonzero(expect)[:20])


def test_compact_keeps_values_in_the_smallest_dtype():
    for top, dtype in [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65_535, np.uint16), (65_536, np.uint32)]:
        counts = np.array([[0, top], [1, 2]], dtype=np.uint32)
        got = compact(counts)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, counts)
    means = np.array([0.25, np.nan, 3.5])
    assert compact(means).dtype == np.float32
    np.testing.assert_array_equal(compact(means), means)


@pytest.mark.parametrize("color_by", ["label", "loss", ""])
def test_a_brush_draws_what_holoviews_draws(small_run, color_by):
    """A brush writes both raster layers (the highlight, and the dimmed rest it switches on) straight into the
    page's Bokeh sources; HoloViews' own rendering of the same state (forced by a pan to the same view) must give
    the same pixels, position and colour scale."""
    explorer = Explorer(small_run)
    doc = render(explorer)
    explorer.state.color_by = color_by
    plot = explorer.projection.plots["datamap"]
    (x0, x1), (y0, y1) = plot.extent

    def layers():
        out = {}
        for layer in ("front", "back"):
            source, mapper = rendered_layer(plot, layer)
            out[layer] = {k: np.array(v[0], dtype=float) for k, v in source.data.items()}, scale(mapper)
        return out

    with set_curdoc(doc):
        plot.box.event(bounds=(x0, y0, (x0 + x1) / 2, (y0 + y1) / 2))
        pushed = layers()
        plot.range_xy.event(x_range=(x0, x1), y_range=(y0, y1))
    drawn = layers()
    for layer in ("front", "back"):
        (got, got_scale), (want, want_scale) = pushed[layer], drawn[layer]
        assert set(got) == set(want)
        np.testing.assert_array_equal(got["image"], want["image"])
        for key in ("x", "y", "dw", "dh"):
            assert got[key] == pytest.approx(want[key])
        assert got_scale == want_scale
        assert np.isnan(want["image"]).any() == (color_by != "label")
    total = {layer: np.nansum(drawn[layer][0]["image"]) for layer in ("front", "back")}
    if color_by != "loss":  # counts: the highlight is the selection, the dimmed layer every example
        assert total == {"front": explorer.state.n_selected, "back": explorer.state.n_total}
    with set_curdoc(doc):
        explorer.state.clear_selection()  # ends the selection: the dimmed layer is emptied again
    assert np.nansum(rendered_layer(plot, "back")[0].data["image"][0]) == 0
    assert np.nansum(rendered_layer(plot, "front")[0].data["image"][0]) == total["back"] or color_by == "loss"


def scale(mapper) -> tuple:
    """What a colour mapper maps from: its range, or for stacked categories the range of its alpha mapper."""
    mapper = getattr(mapper, "alpha_mapper", mapper)
    return mapper.low, mapper.high


class RecordingComm(Comm):
    """A notebook comm that keeps what it sends (what Jupyter would carry to the page)."""

    def __init__(self):
        super().__init__()
        self.sent: list = []
        self._comm = True  # "open"

    def init(self):
        pass

    def send(self, data=None, metadata=None, buffers=()):
        self.sent.append(data)

    def close(self):
        pass


def test_in_a_notebook_a_brush_reaches_the_page_through_the_comm(small_run):
    explorer = Explorer(small_run)
    comm, doc = RecordingComm(), Document()
    explorer.__panel__()._render_model(doc, comm)
    doc.hold()  # as Panel's notebook display holds it (panel.io.notebook.render_model)
    plot = explorer.projection.plots["a"]
    source = rendered_layer(plot)[0]
    (x0, x1), (y0, y1) = plot.extent
    plot.box.event(bounds=(x0, y0, (x0 + x1) / 2, (y0 + y1) / 2))
    assert 0 < explorer.state.n_selected < explorer.state.n_total
    assert np.nansum(source.data["image"][0]) == explorer.state.n_selected
    sent = " ".join(m for m in comm.sent if isinstance(m, str))
    assert source.id in sent  # the highlight's new pixels were sent to the notebook page


def test_lasso_brush_on_the_data_map(explorer):
    state = explorer.state
    dm = explorer.projection.plots["datamap"]
    x, y = state.data.xy(dm.spec)
    poly = np.array([[0.02, 0.0], [0.25, 0.05], [0.2, 0.5], [0.05, 0.35]])
    with set_curdoc(explorer.doc):
        dm.lasso.event(geometry=poly)
    expect = MplPath(poly).contains_points(np.c_[x, y])
    np.testing.assert_array_equal(state.mask, expect)
    assert front_count(explorer.projection.plots["a"]) == expect.sum() > 0


def test_filters_combine_with_the_brush_in_plots_and_table(explorer):
    state = explorer.state
    a = explorer.projection.plots["a"]
    x, y = state.data.xy(a.spec)
    state.set_filter("label", ["business", "politics"])
    with set_curdoc(explorer.doc):
        a.box.event(bounds=(float(x.min()), float(np.median(y)), float(x.max()), float(y.max())))
    expect = np.isin(state.data.values("label"), [0, 2]) & (y >= np.median(y))
    np.testing.assert_array_equal(state.mask, expect)
    assert front_count(a) == expect.sum()
    assert explorer.table._total == expect.sum()
    assert set(explorer.table.table.value["label"].astype(str)) <= {"business", "politics"}


def test_comparison_plots_share_one_selection(explorer):
    state = explorer.state
    state.param.update(compare=True, checkpoint_b=state.data.checkpoints[0], method_b="pca")
    plots = explorer.projection.plots
    assert set(plots) == {"a", "b"}  # the two take the data map's place
    assert explorer.projection._plots.objects == [explorer.projection._projection]
    assert "data map is hidden while comparing" in str(explorer.projection._notes.object)
    assert plots["b"].spec.checkpoint == state.data.checkpoints[0] and plots["b"].spec.method == "pca"
    b = plots["b"]
    expect = brush_percentiles(explorer, b, (10, 30), (50, 90))
    np.testing.assert_array_equal(state.mask, expect)
    assert front_count(plots["a"]) == front_count(b) == expect.sum()
    layout = explorer.projection._projection.object
    assert isinstance(layout, hv.Layout) and len(layout) == 2
    state.link_axes = True
    assert explorer.projection._projection.object.opts.get().kwargs.get("shared_axes") is True
    state.compare = False
    assert set(explorer.projection.plots) == {"a", "datamap"}
    assert explorer.projection._datamap in explorer.projection._plots.objects
    assert not explorer.projection._notes.visible


def test_table_pages_sorts_exports_and_picks_an_example(explorer):
    state, table = explorer.state, explorer.table
    a = explorer.projection.plots["a"]
    x, y = state.data.xy(a.spec)
    with set_curdoc(explorer.doc):
        a.box.event(bounds=(float(np.percentile(x, 5)), float(y.min()), float(np.percentile(x, 80)), float(y.max())))
    rows = np.flatnonzero(state.mask)
    table._step(+1)
    np.testing.assert_array_equal(table.table.value.index.to_numpy(), rows[20:40])
    # header click on "mislabel_score" descending: sorts all selected rows, not just the page
    table.table.sorters = [{"field": "mislabel_score", "dir": "desc"}]
    loss = state.data.values("mislabel_score")
    order = rows[np.lexsort((rows, -loss[rows]))]
    np.testing.assert_array_equal(table.table.value.index.to_numpy(), order[:20])
    assert table.page == 1 and len(table.table.value) == 20
    # CSV: every selected row, in table order, full text, label names
    csv = pd.read_csv(io.StringIO(table.csv().getvalue()), index_col="row")
    np.testing.assert_array_equal(csv.index.to_numpy(), order)
    assert table.download.filename == f"t3vis-{state.run.name}-selection.csv"  # named after the run
    texts = state.data.text(order[:5])
    assert list(csv["text"][:5]) == list(texts)
    assert set(csv["label"]) <= set(state.data.label_names)
    np.testing.assert_allclose(csv["mislabel_score"].to_numpy(), loss[order], rtol=1e-5)
    # the CSV's columns are the table's headers
    assert [csv.index.name, *csv.columns] == ["row", *(table.table.titles[c] for c in table.table.value.columns)]
    # clicking a row picks that example for the instance view
    from panel.models.tabulator import CellClickEvent

    table.table._process_event(CellClickEvent(model=None, column="text", row=3))
    assert state.example == int(order[3])


def test_zooming_in_far_shows_hoverable_points_with_text(explorer):
    state = explorer.state
    a = explorer.projection.plots["a"]
    x, y = state.data.xy(a.spec)
    cx, cy = float(np.median(x)), float(np.median(y))
    x_range, y_range = (cx - 0.3, cx + 0.3), (cy - 0.3, cy + 0.3)
    a.range_xy.event(x_range=x_range, y_range=y_range)
    points = a._sparse(x_range, y_range)
    inview = (x >= x_range[0]) & (x <= x_range[1]) & (y >= y_range[0]) & (y <= y_range[1])
    assert 0 < inview.sum() <= 1500
    np.testing.assert_array_equal(np.sort(points.dimension_values("row")), np.flatnonzero(inview))
    row = int(points.dimension_values("row")[0])
    assert points.dimension_values("text")[0] == state.data.text(np.array([row]))[0]
    assert points.dimension_values("label")[0] == state.data.label_names[state.data.values("label")[row]]
    assert len(a._sparse((x.min(), x.max()), (y.min(), y.max()))) == 0  # the full view has too many points
    assert a.view_ranges() == (x_range, y_range)


def test_two_sessions_keep_their_own_selection_and_filters(small_run):
    one, two = Explorer(small_run), Explorer(small_run)
    render(one), render(two)
    assert one.state.data is two.state.data  # columns shared, once per process
    a1 = one.projection.plots["a"]
    x, y = one.state.data.xy(a1.spec)
    a1.box.event(bounds=(float(x.min()), float(y.min()), float(np.median(x)), float(y.max())))
    two.state.set_filter("split", ["validation"])
    assert two.state.selection is None and two.state.n_selected == two.state.n_filtered < SMALL_N  # noqa: F405
    assert one.state.filters == {} and one.state.n_selected == (x <= np.median(x)).sum()
    assert two.table._total == two.state.n_filtered and one.table._total == one.state.n_selected


def test_replaced_plots_stop_following_the_state(explorer):
    old = explorer.projection.plots["a"]
    explorer.state.color_by = "loss"
    continuous = explorer.projection.plots["a"]
    assert continuous is not old and not old._watching  # the replaced plot no longer watches the state
    assert continuous.clim == run_data(explorer.state.run).value_range("loss", explorer.state.checkpoint)
    assert isinstance(continuous._front_layer[()], hv.Image)  # mean of loss per pixel, with a colorbar
    explorer.state.color_by = "split"
    new = explorer.projection.plots["a"]
    assert new.categorical and list(new.key) == ["train", "validation"]
    assert "split" in explorer.projection._legend.object
    n_before = explorer.state.mask_rev
    explorer.state.selection = np.ones(explorer.state.n_total, dtype=bool)
    assert explorer.state.mask_rev == n_before + 1
    assert front_count(new) == explorer.state.n_total


def test_page_explains_bad_runs_and_keeps_serving(broken_runs_dir):
    e = Explorer(runs_dir=broken_runs_dir, run_name="empty")
    assert e.error.visible and "empty" in e.error.object and e.state.run is None
    assert not e.open_run("corrupt") and "corrupt" in e.error.object
    assert not e.open_run("future") and "schema_version" in e.error.object
    assert not e.open_run("../outside") and "outside the runs directory" in e.error.object
    assert e.open_run("good") and not e.error.visible and e.state.n_total == SMALL_N  # noqa: F405
    assert not e.open_run("corrupt") and e.state.run.name == e.state.data.run.name  # still on the good run
    assert e.picker.options == ["corrupt", "empty", "future", "good"]


def test_a_page_opening_runs_in_place_draws_the_same_selects_afresh_even_when_opening_fails(runs_dir, monkeypatch):
    """A notebook's built page (no URL) opens a run in place: the selects of the run's choices leave the page while
    the run changes their options and values, then come back drawn afresh (``_show_selects``). The same widgets come
    back, showing the new run's choices, and nothing more stays linked to the state per switch; a run that cannot
    be opened still gives them back."""
    def watchers() -> int:
        return sum(len(listed) for what in e.state.param.watchers.values() for listed in what.values())

    def shown() -> list:
        return [[id(widget) for widget in holder.objects] for holder in e._selects]

    def drawn() -> set:
        return {model.id for selects in e._selects.values() for widget in selects
                for model, _ in widget._models.values()}

    e = Explorer(runs_dir=runs_dir, run_name="small")
    e.__panel__().server_doc(Document())
    before, linked = shown(), {"small": watchers()}
    assert all(before) and len(sum(before, [])) == 7
    for name in ("bare", "small", "bare", "small"):
        models = drawn()
        assert e.open_run(name) and e._opened == name
        assert len(drawn()) == 7 and not drawn() & models  # each drawn afresh, with its new options and value at once
        assert shown() == before and watchers() == linked.setdefault(name, watchers())  # as many as the last time
        checkpoint, method, layer = next(iter(e._selects.values()))
        assert (checkpoint.value, method.value, layer.value) == (e.state.checkpoint, e.state.method, e.state.layer)

    def fails(run):
        raise RuntimeError("unreadable")

    monkeypatch.setattr(e.state, "open", fails)
    assert not e.open_run("small") and e.error.visible and "unreadable" in e.error.object
    assert shown() == before


def test_a_served_page_goes_to_the_picked_run_and_explains_a_bad_one_in_place(runs_dir, broken_runs_dir):
    from panel.io.location import Location

    e = Explorer(runs_dir=broken_runs_dir, run_name="good")
    e._location = Location()  # as a served page has (a notebook has none and opens runs in place)
    e.picker.value = "corrupt"  # explained here, on the run still open; the page stays
    assert e.error.visible and "corrupt" in e.error.object and e.state.n_total == SMALL_N  # noqa: F405
    e.picker.value = "future"
    assert "schema_version" in e.error.object
    e.picker.value = "good"  # back on the open run: nothing to build, no message left
    assert not e.error.visible and e._location.search == "" and not e._location.reload
    e = Explorer(runs_dir=runs_dir, run_name="small")
    e._location = Location()
    e.picker.value = "bare"  # a good run: the page is built afresh for it, as a new page of it is
    assert e._location.search == "?run=bare" and e._location.reload and e.state.n_total == SMALL_N  # noqa: F405


@pytest.mark.parametrize("name", ["plain", "a b+c&run=d#e?f%20", "ü/..", "<img src=x onerror=alert(1)>"])
def test_run_query_carries_any_run_name(name):
    from urllib.parse import parse_qs, urlsplit

    from t3vis.ui.runs import run_query

    assert parse_qs(urlsplit(run_query(name)).query) == {"run": [name]}


def test_empty_runs_dir_offers_the_demo(tmp_path):
    e = Explorer(runs_dir=tmp_path)
    render(e)
    assert e.demo.layout.visible and "Build the demo run" == e.demo.button.label
    assert e.state.run is None and not e.projection.plots


def test_bare_run_shows_what_exists(runs_dir):
    e = Explorer(runs_dir=runs_dir, run_name="bare")
    render(e)
    assert not e.error.visible and e.state.n_total == 500
    assert not e.projection.plots and e.projection._notes.visible
    assert "t3vis project" in e.projection._notes.object
    assert len(e.table.table.value) == 20 and "loss" in e.table.table.value.columns


def test_clear_filters_empties_the_open_editor_too(small_run):
    explorer = Explorer(small_run)
    panel, state = explorer.filters, explorer.state
    panel.attribute.value = "label"
    chips = panel.editor.objects[0]
    chips.value = list(state.data.attribute("label").categories[:2])  # as a user picks two chips
    assert set(state.filters["label"]) == set(chips.value) and state.n_filtered < state.n_total
    panel.clear.clicks += 1  # the button, as a click sends it
    assert state.filters == {} and state.n_filtered == state.n_total
    assert panel.editor.objects[0].value == [] and panel.clear.disabled  # no chip left behind
    panel.attribute.value = "loss"
    slider = panel.editor.objects[0]
    full = (slider.start, slider.end)
    state.set_filter("loss", (full[0], (full[0] + full[1]) / 2))  # a filter set elsewhere (code, another view)
    assert tuple(slider.value) == state.filters["loss"]
    state.clear_filters()
    assert tuple(slider.value) == full


def test_saved_images_have_a_background_a_legend_and_a_name(explorer):
    from bokeh.models import CustomAction, SaveTool

    state = explorer.state
    plot = explorer.projection.plots["a"]
    (figure, _), = explorer.projection._projection._plots.values()
    fig = figure.state
    assert fig.background_fill_color == fig.border_fill_color == "white"
    assert not any(isinstance(t, SaveTool) for t in fig.toolbar.tools)  # it would save no legend, after a prompt
    png, svg = [t for t in fig.toolbar.tools if isinstance(t, CustomAction)]
    name = f"t3vis-{state.run.name}-UMAP-of-layer-{state.layer}-{state.checkpoint}-label"
    assert plot.export_name() == name
    for tool, kind in ((png, "png"), (svg, "svg")):
        args = tool.callback.args
        assert tool.description == f"Save as {kind.upper()}" and args["kind"] == kind
        assert args["filename"] == f"{name}.{kind}" and args["title"] == state.data.attribute("label").label
        assert [n for n, _ in args["items"]] == list(state.data.attribute("label").categories)
        assert dict(args["items"]) == plot.key


@pytest.mark.parametrize("text, expect", [("epoch-3", "epoch-3"), ("a/b <img src=x>", "a-b-img-src-x"),
                                          ("UMAP of layer 6 · epoch-3", "UMAP-of-layer-6-epoch-3"), ("..", "")])
def test_file_names_keep_only_safe_characters(text, expect):
    from t3vis.paths import safe_filename

    assert safe_filename(text) == expect


@pytest.mark.parametrize("elapsed, fraction, expect", [(60, 0.5, "about 60 s left"), (60, 0.25, "about 3 min left"),
                                                       (5, 0.01, ""), (300, 1.0, ""), (10, 0.2, "about 40 s left")])
def test_time_left_from_the_rate_so_far(elapsed, fraction, expect):
    from t3vis.ui.explorer import time_left

    assert time_left(elapsed, fraction) == expect


def test_the_demo_build_shows_its_stage_share_and_time_left(tmp_path):
    import time

    from t3vis.ui.explorer import DemoOffer

    offer = DemoOffer(runs_dir=tmp_path)
    offer._started = time.monotonic() - 120  # two minutes in
    offer._report("pipeline project: 3/8 tasks", 0.8)
    assert offer.progress.value == 80
    shown = str(offer.status_pane.object).replace("\\", "")  # (Markdown escapes the stage's punctuation)
    assert shown == "pipeline project: 3/8 tasks (80%, about 30 s left)"
