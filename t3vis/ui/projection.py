"""Projection view and data map: datashader-aggregated scatter plots with linked box/lasso brushing.

Each plot is an overlay of three dynamic layers over the shared, read-only columns:

- *back*: the filtered examples, dimmed; drawn only while a brush selection exists (so selected points stand out);
- *front*: the examples in ``state.mask`` (filters AND selection), coloured by ``state.color_by``;
- *sparse*: when few (filtered) points are in view, the points themselves, with hover showing text and label;
- *neighbours*: the nearest neighbours shown (``state.neighbours``; in the comparison plot ``neighbours_b``) as
  marks in their own colour, and the example they are neighbours of as a star.

``BoundsXY``/``Lasso`` streams on the overlay turn a brush into ``state.select_box``/``select_lasso``
(``Selection1D`` does not work on rasterized plots); every plot redraws from the one mask in the state.

The raster layers aggregate with datashader directly in their DynamicMap callbacks (RangeXY + PlotSize streams,
as ``rasterize`` would): measured here, that halves the per-update overhead of HoloViews' ``rasterize``
operation. A brush goes further: it changes only the pixels of the *front* layer (and of the *back* one when a
selection starts or ends), so the new aggregate is written straight into that layer's rendered Bokeh data source
(`ScatterPlot.push`). A HoloViews update of the plot would also recompute ranges and options and make Bokeh
re-walk the whole page's model graph: 3x the aggregation itself, per plot. HoloViews still draws every layer on
pan, zoom, resize and filter changes, reading the current mask.

Long file: the layers, the direct pushes into their rendered glyphs and the view that arranges the plots share one
plot object's state; split, each half would reach into the other's.
"""

from __future__ import annotations

import base64
import weakref

import colorcet
import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from ..analysis.datamaps import AMBIGUOUS_VARIABILITY, EASY_CONFIDENCE, HARD_CONFIDENCE
from ..errors import T3VisError
from ..paths import export_filename
from . import masks
from .data import CATEGORICAL, FLAG_CATEGORIES, PlotSpec
from .state import ExplorerState
from .text import HTML, AlertPane, HTMLPane, Markdown

#: Below this many points in view, the points are drawn as glyphs with hover (text is read for them).
SPARSE_POINTS = 1500
#: Alpha of the filtered-but-unselected points while a selection exists.
BACK_ALPHA = 0.12
PLOT_TOOLS = ["box_select", "lasso_select"]
#: A click picks the nearest shown example within this many screen pixels.
TAP_PX = 10
#: The data map's regions: (name, box bounds in (variability, confidence), fill colour, label anchor).
REGIONS = (
    ("easy-to-learn", dict(right=AMBIGUOUS_VARIABILITY, bottom=EASY_CONFIDENCE), "#2ca02c",
     dict(x=AMBIGUOUS_VARIABILITY, y=EASY_CONFIDENCE, text_align="right", text_baseline="bottom")),
    ("hard-to-learn", dict(right=AMBIGUOUS_VARIABILITY, top=HARD_CONFIDENCE), "#d62728",
     dict(x=AMBIGUOUS_VARIABILITY, y=HARD_CONFIDENCE, text_align="right", text_baseline="top")),
    ("ambiguous", dict(left=AMBIGUOUS_VARIABILITY), "#ff7f0e",
     dict(x=AMBIGUOUS_VARIABILITY, y=(EASY_CONFIDENCE + HARD_CONFIDENCE) / 2, text_align="left",
          text_baseline="middle")),
)
#: The neighbours' marks: a colour no category palette starts with, outlined to stand out on any raster.
NEIGHBOUR_COLOR = "#ff00d4"
#: ``(points per screen pixel below which, cell side in pixels)``, sparsest first (see `cell_px`): a 2,000-point
#: run on a 600x400 plot draws 3x3 blocks, an 80-point selection 4x4, a million points single pixels.
CELL_STEPS = ((0.002, 4), (0.02, 3), (0.1, 2))
CONTINUOUS_CMAP = "viridis"
DENSITY_CMAP = colorcet.kbc[::-1][40:]


def color_key(categories) -> dict[str, str]:
    """Category -> colour; flags are grey (no) and red (yes) so flipped labels stand out."""
    categories = list(categories)
    if tuple(categories) == FLAG_CATEGORIES:
        return {"no": "#b0b0b0", "yes": "#d62728"}
    palette = colorcet.b_glasbey_category10
    return {c: palette[i % len(palette)] for i, c in enumerate(categories)}


def legend_html(title: str, key: dict[str, str]) -> HTML:
    """The categories' colours, titled (names and title are shown as text)."""
    item = HTML('<span style="white-space:nowrap;margin-right:10px"><span style="display:inline-block;width:10px;'
                'height:10px;border-radius:5px;background:{};margin-right:4px"></span>{}</span> ')
    items = HTML("").join(item.format(c, k) for k, c in key.items())
    return HTML('<div class="t3-legend" style="font-size:12px"><b>{}</b>: {}</div>').format(title, items)


def scale_note(attr) -> HTML:
    """What a continuous colour scale shows (its definition and source), as text; empty without a description."""
    if attr is None or not attr.description:
        return HTML("")
    return HTML('<div style="font-size:12px"><b>{}</b>: {}</div>').format(attr.label, attr.description)


def cell_px(points: int, pixels: int) -> int:
    """Screen pixels per side of one aggregate cell for a layer of ``points`` drawn over ``pixels`` screen pixels.

    A sparse layer is aggregated on a coarser grid, so each example shows as a 2x2 to 4x4 block instead of a
    1-px dot that the eye misses; a dense one keeps full resolution. Unlike spreading pixels after aggregating,
    a cell still counts each example once, so a count image sums to the points it draws.
    """
    density = points / max(int(pixels), 1)
    for below, size in CELL_STEPS:
        if density < below:
            return size
    return 1


def drawn_anything(values: np.ndarray) -> bool:
    """Whether an aggregate holds any point (a count above 0, or a finite mean)."""
    return bool(np.isfinite(values).any() if values.dtype.kind == "f" else (values > 0).any())


def show_layer(plot, visible: bool) -> None:
    """Hide a rendered layer that holds no point: Bokeh maps an all-zero image through a colour range of zero
    width and paints the whole plot (a faint wash behind every plot, a solid one over an empty selection)."""
    renderer = plot.handles.get("glyph_renderer")
    if renderer is not None and renderer.visible != visible:
        renderer.visible = visible


#: The "Save as SVG" tool's icon: the letters SVG (a data URI; Bokeh has no such icon of its own).
SVG_ICON = "data:image/svg+xml;base64," + base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="18" height="18"><text x="0" y="12" font-size="7.5" '
    b'font-family="sans-serif" font-weight="bold" fill="#555">SVG</text></svg>').decode()
#: Saves a Bokeh figure as PNG or SVG in the browser (BokehJS renders it again for the format) with the colour
#: legend the page shows beside the plot drawn into its top-right corner. Args: plot, kind ("png"/"svg"),
#: filename, title, items ([name, colour] pairs; none for a continuous colouring, whose colour bar is in the plot).
SAVE_IMAGE = """
const view = Bokeh.index.find_one(plot);
const layer = view.export(kind);
if (items.length) {
  const ctx = layer.ctx, r = layer.pixel_ratio, frame = view.frame.bbox, row = 15;
  ctx.save();
  ctx.scale(r, r);
  ctx.font = "11px sans-serif";
  const width = 26 + Math.max(ctx.measureText(title).width, ...items.map(([name]) => ctx.measureText(name).width));
  const height = row * (items.length + 1) + 6;
  const x = frame.right - width - 6, y = frame.top + 6;
  ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
  ctx.strokeStyle = "#bbbbbb";
  ctx.fillRect(x, y, width, height);
  ctx.strokeRect(x, y, width, height);
  ctx.fillStyle = "#222222";
  ctx.textBaseline = "middle";
  ctx.font = "bold 11px sans-serif";
  ctx.fillText(title, x + 6, y + 3 + row / 2);
  ctx.font = "11px sans-serif";
  items.forEach(([name, color], i) => {
    const cy = y + 3 + row * (i + 1.5);
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(x + 11, cy, 4.5, 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = "#222222";
    ctx.fillText(name, x + 20, cy);
  });
  ctx.restore();
}
layer.to_blob().then((blob) => {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  link.dispatchEvent(new MouseEvent("click"));
});
"""


def add_regions(fig) -> None:
    """Shade and name the data map's regions in a Bokeh figure (thresholds from ``analysis.datamaps``)."""
    from bokeh.models import BoxAnnotation, Label

    for name, bounds, color, anchor in REGIONS:
        fig.add_layout(BoxAnnotation(fill_color=color, fill_alpha=0.07, line_alpha=0, level="underlay", **bounds))
        fig.add_layout(Label(text=name, text_color=color, text_font_size="11px", text_font_style="bold",
                             x_offset=-4 if anchor["text_align"] == "right" else 4, **anchor))


def add_marks(fig, data: dict) -> dict:
    """Draw the marks ``data`` holds (``ScatterPlot.mark_data``) in a Bokeh figure: the neighbours (with a hover
    that says their similarity), the example they are neighbours of, the example the instance view shows (a
    ring); their sources by mark."""
    from bokeh.models import ColumnDataSource, HoverTool

    made = {name: ColumnDataSource(values) for name, values in data.items()}
    near = fig.scatter("x", "y", source=made["near"], color=NEIGHBOUR_COLOR, size=9, line_color="black", line_width=1)
    fig.scatter("x", "y", source=made["query"], marker="star", color=NEIGHBOUR_COLOR, size=18, line_color="black",
                line_width=1.5)
    for color, size in (("white", 22), ("black", 17)):  # a ring that reads on light and dark pixels
        fig.scatter("x", "y", source=made["example"], marker="circle", fill_alpha=0, size=size, line_color=color,
                    line_width=3)
    fig.add_tools(HoverTool(renderers=[near], tooltips=[("row", "@row"), ("similarity", "@similarity{0.000}")]))
    return made


#: What the data map's axes are, by plot kind (a sentence's follow its weakest word: ``analysis.sentences``).
DATAMAP_AXES = {
    "datamap": HTML("<b>Data map</b>: confidence = mean probability of the gold label over the epochs, variability = "
                    "its standard deviation."),
    "sentence_map": HTML("<b>Data map of sentences</b>: a point per sentence, at its weakest word; confidence = the "
                         "mean over the epochs of the lowest gold-tag probability among its words, variability = its "
                         "standard deviation; coloured by that word's values."),
}


def region_note(kind: str = "datamap") -> HTML:
    """The data map's axes, regions and thresholds, as the legend under the plots says them."""
    return HTML('<div style="font-size:12px">{} Easy-to-learn: confidence &ge; {}, variability &lt; {}; '
                'hard-to-learn: confidence &le; {}, variability &lt; {}; ambiguous: the rest (Swayamdipta et al. '
                '2020).</div>').format(DATAMAP_AXES[kind], EASY_CONFIDENCE, AMBIGUOUS_VARIABILITY,
                                       HARD_CONFIDENCE, AMBIGUOUS_VARIABILITY)


def update_rendered(plot, update) -> None:
    """Apply ``update`` (a change to the Bokeh models of a rendered HoloViews ``plot``) the way Panel's HoloViews
    pane applies plot updates: at once with the document unlocked when this thread may touch it (then pushed
    through the comm in a notebook), else on the document's next tick."""
    doc = plot.document
    if plot.comm or doc is None or doc.session_context is None or pn.state._unblocked(doc):
        with pn.io.unlocked():
            update()
        if plot.comm:
            plot.push()
    else:
        doc.add_next_tick_callback(update)


def _grid(agg) -> tuple:
    return agg.coords["x"].values, agg.coords["y"].values, compact(agg.data)


def compact(values: np.ndarray) -> np.ndarray:
    """An aggregate in the smallest dtype that holds it (counts in uint8/16/32, means in float32).

    A plot keeps several copies of each layer's pixels (HoloViews' frame, the Bokeh source) and sends them to the
    browser: with ten categories a 600x400 uint32 stack is 9.6 MB, and most pixels count far fewer than 65,536.
    """
    if values.dtype.kind == "f":
        return values.astype(np.float32, copy=False)
    top = int(values.max()) if values.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return values.astype(dtype, copy=False)
    return values


def glyph_data(agg, x_range, y_range, *, nodata_zero: bool = False) -> dict:
    """The Bokeh ``image``/``image_stack`` source columns for a datashader aggregate spanning the given ranges:
    what HoloViews' raster plots send for the same element (``tests/test_ui_views.py`` checks that they agree).

    Rows run bottom to top as datashader writes them; ``nodata_zero`` turns empty pixels into NaN (transparent).
    """
    image = compact(agg.data)
    if nodata_zero:
        image = image.astype(np.float32)
        image[image == 0] = np.nan
    (x0, x1), (y0, y1) = x_range, y_range
    return {"image": [image], "x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0]}


def _column(frame: pd.DataFrame, name: str):
    col = frame[name]
    return col.array if isinstance(col.dtype, pd.CategoricalDtype) else col.to_numpy()


class ScatterPlot:
    """One plot (a projection or the data map), its layers and its brush streams.

    Built for a fixed ``spec`` and colouring; the view rebuilds it when those change. ``box`` and ``lasso`` are
    the real streams a browser drives (tests call ``box.event(bounds=...)``).
    """

    def __init__(self, state: ExplorerState, spec: PlotSpec, ranges: tuple | None = None, which: str = "a"):
        self.state = state
        self.spec = spec
        self.which = which  # "b": the comparison plot, which marks ``state.neighbours_b``
        data = state.data
        self.color = state.color_by or None
        self.color_checkpoint = state.color_checkpoint(spec)
        self.frame = data.frame(spec, self.color, self.color_checkpoint)  # shared columns, no copy
        self.x, self.y = data.xy(spec)
        self.extent = data.xy_extent(spec)
        attr = data.attribute(self.color) if self.color else None
        self.categorical = attr is not None and attr.kind == CATEGORICAL
        self.key = color_key(attr.categories) if self.categorical else None
        self.clim = data.value_range(self.color, self.color_checkpoint) if attr and not self.categorical else None
        self.legend = legend_html(attr.label, self.key) if self.categorical else scale_note(attr)
        self.notes = region_note(spec.kind) if spec.is_datamap else HTML("")
        # the first view: the previous plot's (a rebuild keeps the zoom) or the data's extent. Set on the stream, not as
        # xlim/ylim: HoloViews redraws every layer once more after the first render of a plot with limits
        x_range, y_range = ranges or self.extent
        self.range_xy = hv.streams.RangeXY(x_range=tuple(x_range), y_range=tuple(y_range))
        self.size = hv.streams.PlotSize()
        # each layer as rendered: one per page (or notebook output), held weakly (HoloViews owns them)
        self._rendered = {"front": weakref.WeakSet(), "back": weakref.WeakSet()}
        self._drawn: dict[str, bool] = {}  # layer -> whether its last aggregate held any point
        self._drawn_view: tuple | None = None  # the (x_range, y_range) the layers were last drawn for
        self._mark_sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # plot -> {mark: its source}
        self.element = self._overlay()
        # a stream whose source is an overlay attaches to nothing: use one layer (the plot's tools are shared)
        self.box = hv.streams.BoundsXY(source=self._front_layer)
        self.lasso = hv.streams.Lasso(source=self._front_layer)
        self.tap = hv.streams.Tap(source=self._front_layer)
        self.box.add_subscriber(self._on_box)
        self.lasso.add_subscriber(self._on_lasso)
        self.tap.add_subscriber(self._on_tap)
        self._mask_watcher = state.param.watch(self._on_mask, ["mask_rev", "has_selection", "filtered_rev"])
        self._marks_watcher = state.param.watch(self._push_marks, ["neighbours", "neighbours_b", "example"])

    # ------------------------------------------------------------------ brushing
    def _on_box(self, bounds):
        if bounds is not None:
            self.state.select_box(self.spec, bounds)

    def _on_lasso(self, geometry):
        if geometry is not None and len(geometry) >= 3:
            self.state.select_lasso(self.spec, geometry)

    def _on_tap(self, x, y) -> None:
        """A click picks the shown example nearest to it (within a few pixels) for the instance view."""
        if x is None or y is None:
            return
        (x0, x1), (y0, y1) = self.range_xy.x_range or self.extent[0], self.range_xy.y_range or self.extent[1]
        width, height = self.size.width or 600, self.size.height or 400
        radius = (TAP_PX * (x1 - x0) / width, TAP_PX * (y1 - y0) / height)
        among = self.state.filtered
        if self.spec.kind == "sentence_map":  # the sentences' points only
            among = masks.rows_mask(self._points(self._filtered_rows()), self.state.n_total)
        row = masks.nearest_row(self.x, self.y, (x, y), radius, among)
        if row is not None:
            self.state.example = row

    def _on_mask(self, *events) -> None:
        changed = {event.name for event in events}
        if "has_selection" in changed and "filtered_rev" not in changed:  # (a filter change redraws it anyway)
            self.push("back")
        if "mask_rev" in changed:
            self.push("front")

    def push(self, layer: str) -> None:
        """Redraw ``layer`` ("front" or "back") for the current state straight into its rendered Bokeh glyphs."""
        plots = [plot for plot in list(self._rendered[layer]) if plot.handles.get("source") is not None]
        if not plots:
            return
        rows = self._front_rows() if layer == "front" else self._back_rows()
        (x0, x1), (y0, y1), agg = self._aggregate(rows, self.range_xy.x_range, self.range_xy.y_range,
                                                  self.size.width, self.size.height)
        density = not self.color
        data = glyph_data(agg, (x0, x1), (y0, y1), nodata_zero=density)
        drawn = self._drawn[layer] = drawn_anything(agg.data)
        counts = agg.data[agg.data > 0] if density else None
        for plot in plots:
            def update(plot=plot):
                plot.handles["source"].data = data
                show_layer(plot, drawn)
                mapper = plot.handles.get("color_mapper")
                if counts is not None and mapper is not None:  # as HoloViews sets it: the range of every frame so far
                    low, high = (int(counts.min()), int(counts.max())) if counts.size else (0, 1)
                    mapper.update(low=min(low, mapper.low if mapper.low is not None else low),
                                  high=max(high, mapper.high if mapper.high is not None else high))

            update_rendered(plot, update)

    # ------------------------------------------------------------------ layers
    def _subset(self, rows: np.ndarray | None) -> pd.DataFrame:
        """The shared frame's ``rows`` (a copy of just those rows), or the frame itself for ``None``."""
        if rows is None:
            return self.frame
        return pd.DataFrame({c: _column(self.frame, c).take(rows) for c in self.frame.columns}, copy=False)

    def _points(self, rows: np.ndarray | None) -> np.ndarray | None:
        """The rows this plot draws for the rows ``rows`` (None = all): themselves, or in the sentence data map the
        weakest word of each sentence that holds one of them (its point stands for the sentence)."""
        if self.spec.kind != "sentence_map":
            return rows
        return self.state.data.sentences.points(rows)

    def _filtered_rows(self) -> np.ndarray | None:
        filtered = self.state.filtered
        return None if filtered is None else np.flatnonzero(filtered)

    def _front_rows(self) -> pd.DataFrame:
        state = self.state
        if self.spec.kind == "sentence_map":  # the table's rows: the mask's sentences (cached per mask)
            return self._subset(state.unit_rows())
        return self.frame if state.mask is None else self._subset(state.rows())

    def _back_rows(self) -> pd.DataFrame:
        if not self.state.has_selection:
            return self.frame.iloc[:0]
        return self._subset(self._points(self._filtered_rows()))

    def _aggregate(self, frame: pd.DataFrame, x_range, y_range, width, height) -> tuple:
        """``(x_range, y_range, agg)``: ``frame`` aggregated with datashader for the given view."""
        (x0, x1), (y0, y1) = x_range or self.extent[0], y_range or self.extent[1]
        if not x1 > x0:
            x0, x1 = x0 - 0.5, x0 + 0.5
        if not y1 > y0:
            y0, y1 = y0 - 0.5, y0 + 0.5
        width, height = max(2, int(width or 600)), max(2, int(height or 400))
        cell = cell_px(len(frame), width * height)
        canvas = ds.Canvas(plot_width=max(2, -(-width // cell)), plot_height=max(2, -(-height // cell)),
                           x_range=(x0, x1), y_range=(y0, y1))
        if self.categorical:
            reduction = ds.count_cat(self.color)
        else:
            reduction = ds.mean(self.color) if self.color else ds.count()
        return (x0, x1), (y0, y1), canvas.points(frame, "x", "y", reduction)

    def _raster(self, frame: pd.DataFrame, x_range, y_range, width, height, layer: str) -> hv.Element:
        """Aggregate ``frame`` with datashader for the current view (what ``rasterize`` does, minus its overhead).

        The element reuses ``template``'s id, so it carries the layer's options without per-update option work.
        """
        view_x, view_y, agg = self._aggregate(frame, x_range, y_range, width, height)
        self._drawn_view = (view_x, view_y)  # read by `_skip_same_refresh`
        template = self._templates[layer]
        self._drawn[layer] = drawn_anything(agg.data)  # read by the layer's hook when HoloViews renders it
        # (xs, ys, array) tuples: the grid interface computes ranges several times faster than xarray's
        if self.categorical:
            return hv.ImageStack(_grid(agg), kdims=["x", "y"], vdims=list(self.key), id=template.id)
        if self.color:
            return hv.Image(_grid(agg), kdims=["x", "y"], vdims=[self.color], id=template.id)
        return hv.Image(_grid(agg), kdims=["x", "y"], vdims=[hv.Dimension("count", nodata=0)], id=template.id)

    def _template(self, alpha: float, colorbar: bool, hooks=()) -> hv.Element:
        """An element holding one layer's options (datashaded layers share them by id)."""
        if self.categorical:
            return hv.ImageStack(np.zeros((2, 2, len(self.key))), kdims=["x", "y"], vdims=list(self.key)).opts(
                cmap=self.key, alpha=alpha, tools=PLOT_TOOLS, hooks=list(hooks))
        if self.color:
            return hv.Image(np.zeros((2, 2)), kdims=["x", "y"], vdims=[self.color]).opts(
                cmap=CONTINUOUS_CMAP, clim=self.clim, colorbar=colorbar, alpha=alpha, tools=PLOT_TOOLS,
                clabel=self.color, clipping_colors={"NaN": "transparent"}, hooks=list(hooks))
        return hv.Image(np.zeros((2, 2)), kdims=["x", "y"], vdims=[hv.Dimension("count", nodata=0)]).opts(
            cmap=DENSITY_CMAP, cnorm="eq_hist", alpha=alpha, tools=PLOT_TOOLS, hooks=list(hooks))

    def _capture_hook(self, layer: str):
        """A HoloViews hook that records each rendering of ``layer`` (weakly: options outlive this object)."""
        plots, drawn = self._rendered[layer], self._drawn

        def capture(plot, element):
            plots.add(plot)
            show_layer(plot, drawn.get(layer, True))

        return capture

    def _sparse(self, x_range=None, y_range=None, filtered_rev=None):
        """The points themselves, with hover, once a zoom leaves few of them in view."""
        cols = ["row", "label", "text"]
        empty = hv.Points(pd.DataFrame({"x": [], "y": [], **{c: [] for c in cols}}), ["x", "y"], cols,
                          id=self._templates["sparse"].id)
        if x_range is None or y_range is None:
            return empty
        bounds = (x_range[0], y_range[0], x_range[1], y_range[1])
        if self.spec.kind == "sentence_map":
            points = self._points(self._filtered_rows())
            rows = points[masks.box_mask(self.x[points], self.y[points], bounds)]
        else:
            inview = masks.box_mask(self.x, self.y, bounds)
            if self.state.filtered is not None:
                inview &= self.state.filtered
            few = np.count_nonzero(inview) <= SPARSE_POINTS  # (listing a million rows in view would cost)
            rows = np.flatnonzero(inview) if few else np.zeros(0, np.int64)
        if not 0 < len(rows) <= SPARSE_POINTS:
            return empty
        data = self.state.data
        shown = [c for c in ("label", "pred", "loss") if c in data.attributes]
        page = data.rows(rows, ["text", *shown], self.color_checkpoint, text_chars=200)
        page.insert(0, "x", self.x[rows])
        page.insert(1, "y", self.y[rows])
        page = page.reset_index()
        return hv.Points(page, ["x", "y"], ["row", *shown, "text"], id=self._templates["sparse"].id)

    def _overlay(self):
        state = self.state
        hover = [("row", "@row"), ("label", "@label"), ("text", "@text")]
        if "pred" in state.data.attributes:
            hover.insert(2, ("prediction", "@pred"))
        self._templates = {
            "back": self._template(BACK_ALPHA, colorbar=False, hooks=[self._capture_hook("back")]),
            "front": self._template(1.0, colorbar=True, hooks=[self._capture_hook("front")]),
            # hover targets over the rasters: invisible until hovered (drawn rings hid the points' colours)
            "sparse": hv.Points([], ["x", "y"]).opts(
                size=8, fill_alpha=0, line_alpha=0, hover_line_color="#222222", hover_line_alpha=1,
                hover_fill_alpha=0, tools=["hover", *PLOT_TOOLS], hover_tooltips=hover),
        }
        # one stream per kind of change, shared by the layers that follow it: one event, one refresh. The mask and
        # whether a selection exists are read without refreshing on them: `push` redraws what they change
        # (watch=False keeps the values live, so a pan or zoom still draws the current state)
        on_mask = hv.streams.Params(state, ["mask_rev"], watch=False)
        on_selection = hv.streams.Params(state, ["has_selection"], watch=False)
        on_filter = hv.streams.Params(state, ["filtered_rev"])
        self._watching = [on_filter]
        view = [self.range_xy, self.size]

        def front(mask_rev, x_range, y_range, width, height, scale=1.0):
            return self._raster(self._front_rows(), x_range, y_range, width, height, "front")

        def back(filtered_rev, has_selection, x_range, y_range, width, height, scale=1.0):
            return self._raster(self._back_rows(), x_range, y_range, width, height, "back")

        self._front_layer = hv.DynamicMap(front, streams=[on_mask, *view], cache_size=1)
        back_layer = hv.DynamicMap(back, streams=[on_filter, on_selection, *view], cache_size=1)
        # hover points follow zoom and filters, not brushes
        sparse = hv.DynamicMap(self._sparse, streams=[self.range_xy, on_filter], cache_size=1)
        xlabel, ylabel = self.spec.axis_labels
        opts = dict(title=self.spec.title, xlabel=xlabel, ylabel=ylabel, responsive=True, min_height=360,
                    active_tools=["box_select", "wheel_zoom"], toolbar="above")
        hooks = [self._skip_same_refresh(), self._marks_hook()]
        return (back_layer * self._front_layer * sparse).opts(hooks=hooks, **opts)

    def neighbours(self):
        """The ``Neighbours`` this plot marks: the comparison checkpoint's in plot "b", else the main one's."""
        return self.state.neighbours_b if self.which == "b" else self.state.neighbours

    def neighbour_data(self, query: bool) -> dict[str, np.ndarray]:
        """The neighbours' marks (``query``: the example they are neighbours of) at this plot's coordinates."""
        found = self.neighbours()
        rows = np.zeros(0, dtype=np.int64) if found is None else np.asarray(found.rows, np.int64)
        sims = np.zeros(0, dtype=np.float32) if found is None else np.asarray(found.sims, np.float32)
        if query:
            rows = np.array([] if found is None or found.row is None else [found.row], dtype=np.int64)
            sims = np.ones(len(rows), dtype=np.float32)
        return {"x": self.x[rows], "y": self.y[rows], "row": rows, "similarity": sims}

    def mark_data(self) -> dict[str, dict[str, np.ndarray]]:
        """Every mark this plot draws over its rasters, by name: ``near`` (the neighbours), ``query`` (the example
        they are neighbours of) and ``example`` (the one the instance view shows)."""
        example = self.state.example
        rows = np.array([] if example is None else [example], dtype=np.int64)
        return {"near": self.neighbour_data(False), "query": self.neighbour_data(True),
                "example": {"x": self.x[rows], "y": self.y[rows], "row": rows}}

    def _skip_same_refresh(self):
        """A hook that drops the refresh HoloViews queues after a plot's first render when it would draw the same.

        HoloViews draws a plot with a RangeXY stream a second time right after the first, to pass the ranges it
        computed through the stream; ours start at those ranges, so that drew every layer again (with linked axes
        the shared range can differ: then it stays). Served, it cost more: Panel cannot refresh a page before the
        browser reports it rendered, so HoloViews re-queued that refresh on every tick of the event loop until then
        (thousands of callbacks a page). Holds the plot weakly."""
        owner = weakref.ref(self)

        def skip(plot, element):
            me = owner()
            view = me and me._drawn_view
            stream = me and (me.range_xy.x_range, me.range_xy.y_range)
            if view and None not in stream and np.allclose(np.ravel(view), np.ravel(stream), rtol=1e-9, atol=0):
                for part in plot.traverse(lambda p: p):
                    if getattr(part, "_trigger", None):
                        part._trigger = []

        return skip

    def _marks_hook(self):
        """A hook that dresses each rendered figure once: the data map's regions, the save tools, and this plot's
        marks as Bokeh glyphs of their own, which change only when the marked rows do (``_push_marks``), so pans,
        zooms and brushes never redraw them (as HoloViews layers they added ~60 ms to every pan and zoom at 1M
        points). A page opens with nothing to mark: its marks are added when there first is (~80 Bokeh models a
        page, a tenth of building and sending it). Holds the plot weakly."""
        sources, owner = self._mark_sources, weakref.ref(self)

        def add(plot, element):
            me = owner()
            if me is None or plot in sources:  # hooks run again on every update of the plot
                return
            if me.spec.is_datamap:
                add_regions(plot.state)
            me._dress_for_export(plot.state)
            sources[plot] = {}
            me._draw_marks(plot, sources[plot], me.mark_data())

        return add

    @staticmethod
    def _draw_marks(plot, made: dict, data: dict) -> None:
        """Show ``data`` (``mark_data``) in the rendered ``plot``: into its marks' sources, which ``made`` holds, or,
        the first time there is a row to mark, as new glyphs."""
        if made:
            for name, source in made.items():
                source.data = data[name]
        elif any(len(values["row"]) for values in data.values()):
            made.update(add_marks(plot.state, data))

    def export_name(self) -> str:
        """The file name (no extension) a saved image of this plot gets: run, plot and colouring."""
        return export_filename(self.state.data.run.name, self.spec.title, self.color or "density")

    def _dress_for_export(self, fig) -> None:
        """What a saved image needs that the page shows around the plot: a white background, the colour legend and
        a named file (no prompt). Bokeh's own save tool knows none of that, so two tools replace it: PNG and SVG."""
        from bokeh.models import CustomAction, CustomJS, SaveTool

        fig.background_fill_color = fig.border_fill_color = "white"
        name = self.export_name()
        title = self.state.data.attribute(self.color).label if self.categorical else ""
        items = [[str(category), color] for category, color in self.key.items()] if self.categorical else []
        tools = [tool for tool in fig.toolbar.tools if not isinstance(tool, SaveTool)]
        for kind, icon in (("png", "save"), ("svg", SVG_ICON)):
            tools.append(CustomAction(description=f"Save as {kind.upper()}", icon=icon, callback=CustomJS(
                args={"plot": fig, "kind": kind, "filename": f"{name}.{kind}", "title": title, "items": items},
                code=SAVE_IMAGE)))
        fig.toolbar.tools = tools

    def _push_marks(self, *events) -> None:
        """Redraw the marks in every rendered figure of this plot."""
        data = self.mark_data()
        for plot, made in list(self._mark_sources.items()):
            update_rendered(plot, lambda plot=plot, made=made: self._draw_marks(plot, made, data))

    def dispose(self) -> None:
        """Stop following the state (a replaced plot must not keep recomputing or hold its frames)."""
        for stream in self._watching:
            stream.unwatch()
        self._watching = []
        if self._mask_watcher is not None:
            self.state.param.unwatch(self._mask_watcher)
            self.state.param.unwatch(self._marks_watcher)
            self._mask_watcher = None
        for plots in self._rendered.values():
            plots.clear()

    def view_ranges(self) -> tuple | None:
        if self.range_xy.x_range is None:
            return None
        return self.range_xy.x_range, self.range_xy.y_range


class ProjectionView(pn.viewable.Viewer):
    """The projection plot (or two side by side in comparison mode) and the data map, sharing one selection."""

    state = param.ClassSelector(class_=ExplorerState)

    def __init__(self, **params):
        super().__init__(**params)
        self.plots: dict[str, ScatterPlot] = {}
        self._projection = pn.pane.HoloViews(sizing_mode="stretch_both", min_height=380, linked_axes=False)
        self._datamap = pn.pane.HoloViews(sizing_mode="stretch_both", min_height=380, linked_axes=False)
        self._legend = HTMLPane("", sizing_mode="stretch_width", margin=(0, 10))
        self._notes = AlertPane("", alert_type="info", visible=False, sizing_mode="stretch_width")
        self._plots = pn.Row(self._projection, self._datamap, sizing_mode="stretch_both")
        self._layout = pn.Column(self._notes, self._legend, self._plots, sizing_mode="stretch_both")
        self._rebuild()

    def __panel__(self):
        return self._layout

    @param.depends("state.run", "state.unit", "state.checkpoint", "state.method", "state.layer", "state.compare",
                   "state.checkpoint_b", "state.method_b", "state.layer_b", "state.link_axes", "state.color_by",
                   watch=True)
    def _rebuild(self) -> None:
        state = self.state
        old = self.plots
        self.plots = {}
        notes = []
        if state.data is None:
            self._projection.object = self._datamap.object = None
            self._notes.visible = False
            return
        # comparing, the two projections take the data map's place (three plots would each be too narrow to read)
        which = ["a", "b"] if state.compare else ["a"]
        for plot in old.values():
            plot.dispose()
        for w in which + ([] if state.compare else ["datamap"]):
            spec = state.spec(w)
            if spec is None:
                continue
            prev = old.get(w)
            ranges = prev.view_ranges() if prev is not None and prev.spec == spec else None
            try:
                self.plots[w] = ScatterPlot(state, spec, ranges, which=w)
            except T3VisError as exc:
                notes.append(str(exc))
        panels = [self.plots[w].element for w in which if w in self.plots]
        if panels:
            layout = panels[0] if len(panels) == 1 else hv.Layout(panels).cols(2).opts(shared_axes=state.link_axes)
            self._projection.object = layout
        else:
            self._projection.object = None
        self._datamap.object = self.plots["datamap"].element if "datamap" in self.plots else None
        # the row holds the panes that have a plot (toggling a HoloViews pane's ``visible`` trips Panel 1.9)
        self._plots.objects = [pane for pane, shown in ((self._projection, bool(panels)),
                                                        (self._datamap, "datamap" in self.plots)) if shown]
        legends = {text for p in self.plots.values() for text in (p.legend, p.notes) if text}
        self._legend.object = HTML("").join(sorted(legends))
        if state.message:
            notes.insert(0, state.message)
        if state.compare and state.spec("datamap") is not None:
            notes.append(Markdown("The data map is hidden while comparing checkpoints: turn off *Compare* to see it."))
        self._notes.object = Markdown("\n\n").join(notes)
        self._notes.visible = bool(notes)
