"""The explorer as a researcher sees it, in chromium at 1600x1000: every view on one screen, a small selection that
stands out, a click on a point that opens the example, and filters that clear completely.

A synthetic run of the demo's size (2,225 examples); the server runs in-process so the test reads the session's
state. Pixel counts come from screenshots of the plot, as the user sees it.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from ui_fixtures import *  # noqa: F403

from test_browser import wait_for
from test_browser_xss import choose

from t3vis.store.synth import synth_run
from t3vis.ui.explorer import Explorer

pytestmark = pytest.mark.browser

DEMO_N = 2225
VIEWPORT = {"width": 1600, "height": 1000}

#: Screen position of data point (x, y) in the Bokeh plot titled ``title`` (its own scales, so any layout works);
#: with x = null, the plot's frame.
TO_SCREEN = """([title, x, y]) => {
  let found = null;
  const visit = (view, depth) => {
    if (found || view == null || depth > 40) return;
    if (view.frame !== undefined && view.canvas_view !== undefined && view.model.title?.text === title) {
      found = view;
      return;
    }
    if (typeof view.children === "function") for (const child of view.children()) visit(child, depth + 1);
  };
  for (const view of Object.values(Bokeh.index)) visit(view, 0);
  const box = found.canvas_view.el.getBoundingClientRect();
  if (x === null) {  // the plot's frame (inside the axes), as a screenshot clip
    const f = found.frame.bbox;
    return {x: box.left + f.left, y: box.top + f.top, width: f.width, height: f.height};
  }
  return [box.left + found.frame.x_scale.compute(x), box.top + found.frame.y_scale.compute(y)];
}"""


@pytest.fixture
def demo_page(tmp_path, chromium, serve):
    """``(page, explorer)``: a served explorer of a demo-sized run at 1600x1000, its table shown."""
    synth_run(tmp_path / "runs" / "demo-sized", DEMO_N, checkpoints=2, num_layers=2, num_heads=2, hidden_size=4,
              seed=4)
    sessions = []

    def app():
        sessions.append(Explorer(runs_dir=tmp_path / "runs", run_name="demo-sized"))
        return sessions[-1]

    page = chromium.new_page(viewport=VIEWPORT)
    page.goto(serve(app))
    expect(page.get_by_text(re.compile(rf"rows 1–20 of {DEMO_N:,}"))).to_be_visible(timeout=90_000)
    page.wait_for_timeout(1500)  # the plots' first rasters
    return page, sessions[0]


def box(page, css: str) -> dict:
    found = page.locator(css).first.bounding_box()
    assert found is not None, f"{css} is not on the page"
    return found


def overlaps(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or
                a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def strong_pixels(png: bytes) -> int:
    """Pixels drawn in full colour (not the white background, not the pale, dimmed context)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(np.count_nonzero(rgb.min(axis=2) < 170))


def test_four_views_at_once_without_overlap(demo_page):
    page, explorer = demo_page
    panels = {name: box(page, f".t3-{name}") for name in ("plots", "table", "instance", "heads")}
    for name, found in panels.items():
        assert found["width"] >= 300 and found["height"] >= 300, f"{name} is too small: {found}"
        visible = min(found["y"] + found["height"], VIEWPORT["height"]) - max(found["y"], 0)
        assert visible >= 0.6 * found["height"], f"{name} is mostly outside the 1600x1000 window: {found}"
        assert found["x"] + found["width"] <= VIEWPORT["width"] + 1, f"{name} is clipped on the right: {found}"
    names = list(panels)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not overlaps(panels[a], panels[b]), f"{a} and {b} overlap"
    # each plot (axes and their labels included) lies inside its panel: no tab bar over the x-axis labels
    for canvas in page.locator(".t3-plots .bk-Canvas").all():
        found = canvas.bounding_box()
        assert found["y"] + found["height"] <= panels["plots"]["y"] + panels["plots"]["height"] + 1
    expect(page.locator(".t3-heads").get_by_text("L0")).to_be_visible()


def test_a_small_selection_stands_out_and_a_click_opens_a_point(demo_page):
    page, explorer = demo_page
    state = explorer.state
    plot = explorer.projection.plots["a"]
    x, y = state.data.xy(plot.spec)
    (x0, x1), (y0, y1) = plot.extent
    # ~80 examples: the nearest ones (as the eye measures, in axis fractions) to a point in the thick of the data
    scaled = np.column_stack([(x - x0) / (x1 - x0), (y - y0) / (y1 - y0)])
    centre = np.median(scaled, axis=0)
    nearest = np.argsort(((scaled - centre) ** 2).sum(1))[:80]
    lo, hi = scaled[nearest].min(0), scaled[nearest].max(0)
    corners = [(lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1])]
    title = plot.spec.title
    pixels = [page.evaluate(TO_SCREEN, [title, float(x0 + cx * (x1 - x0)), float(y0 + cy * (y1 - y0))])
              for cx, cy in corners]
    frame = page.evaluate(TO_SCREEN, [title, None, None])
    before = strong_pixels(page.screenshot(clip=frame))

    page.locator(".t3-plots .bk-tool-icon-lasso-select").first.click()  # the lasso, as a user picks it
    page.mouse.move(*pixels[0])
    page.mouse.down()
    for px in pixels[1:] + pixels[:1]:
        page.mouse.move(*px, steps=6)
    page.mouse.up()
    wait_for(lambda: state.has_selection, timeout=30)
    n = state.n_selected
    assert 60 <= n <= 200, n
    page.wait_for_timeout(1500)
    after = strong_pixels(page.screenshot(clip=frame))
    # the selection draws in full colour over a pale context, each example a block of several pixels
    assert 3 * n <= after < before / 3, (n, after, before)

    # a click on an isolated example opens it in the instance view and rings it in every plot
    gaps = np.sort(((scaled[:, None, :] - scaled[None, :400, :]) ** 2).sum(-1), axis=1)[:, 1]
    row = int(np.argmax(gaps))
    state.clear_selection()
    page.mouse.click(*page.evaluate(TO_SCREEN, [title, float(x[row]), float(y[row])]))
    wait_for(lambda: state.example == row, timeout=30)
    expect(page.locator(".t3-instance").get_by_text(re.compile(rf"Example {row}\b"))).to_be_visible(timeout=30_000)
    for marked in explorer.projection.plots.values():
        sources = list(marked._mark_sources.values())
        assert sources and all(list(s["example"].data["row"]) == [row] for s in sources)


def test_clear_filters_leaves_no_chip(demo_page):
    page, explorer = demo_page
    state = explorer.state
    first = str(state.data.attribute("label").categories[0])
    choose(page, "label is one of", first)
    wait_for(lambda: state.filters.get("label") == (first,) or list(state.filters.get("label", [])) == [first], 30)
    assert state.n_filtered < state.n_total
    expect(page.locator(".MuiChip-root").filter(has_text=first)).to_have_count(1, timeout=15_000)
    page.get_by_role("button", name="Clear filters").click()
    wait_for(lambda: state.filters == {}, timeout=30)
    expect(page.locator(".MuiChip-root").filter(has_text=first)).to_have_count(0, timeout=15_000)


def test_plots_save_as_png_with_a_white_background_and_as_svg_with_the_legend(demo_page, tmp_path):
    page, explorer = demo_page
    plot = explorer.projection.plots["a"]
    toolbar = page.locator(".t3-plots .bk-Toolbar").first
    if toolbar.locator('[title="Save as PNG"]').count() == 0:  # a narrow plot folds its tools into a menu
        toolbar.locator(".bk-tool-overflow").first.click()
    with page.expect_download() as png:
        page.locator('.t3-plots [title="Save as PNG"]').first.click()
    assert png.value.suggested_filename == plot.export_name() + ".png"
    image = Image.open(png.value.path())
    assert image.size[0] >= 300
    rgba = np.asarray(image.convert("RGBA"))
    assert (rgba[2, 2] == [255, 255, 255, 255]).all()  # opaque white, not transparent
    with page.expect_download() as svg:
        page.locator('.t3-plots [title="Save as SVG"]').first.click()
    assert svg.value.suggested_filename == plot.export_name() + ".svg"
    text = open(svg.value.path(), encoding="utf-8").read()
    assert text.lstrip().startswith("<svg") and "<image" in text  # the rasters, embedded
    assert all(str(c) in text for c in explorer.state.data.attribute("label").categories)  # the legend's labels


PAGE_STATE = """() => {
  const titles = [];
  const visit = (view, depth) => {
    if (view == null || depth > 40) return;
    if (view.frame !== undefined && view.model.title?.text) titles.push(view.model.title.text);
    if (typeof view.children === "function") for (const child of view.children()) visit(child, depth + 1);
  };
  for (const view of Object.values(Bokeh.index)) visit(view, 0);
  return titles.sort();
}"""


def page_picture(page) -> dict:
    """What should not depend on how the page got its run: plot titles, the layer picked, the panels' places."""
    layer = page.get_by_role("combobox", name="Layer").inner_text()
    return {"titles": page.evaluate(PAGE_STATE), "layer": layer,
            "panels": {n: box(page, f".t3-{n}") for n in ("plots", "table", "instance", "heads")}}


def test_a_page_that_built_the_demo_run_shows_what_a_reload_shows(tmp_path, chromium, serve):
    runs = tmp_path / "runs"
    runs.mkdir()
    sessions = []

    def tiny_demo(path, progress):  # the page's build, with a synthetic run of the demo's size for speed
        progress("training", 0.5)
        synth_run(path, DEMO_N, checkpoints=2, num_layers=6, num_heads=2, hidden_size=4, seed=2)

    def app():
        sessions.append(Explorer(runs_dir=runs))
        sessions[-1].demo.build = tiny_demo
        return sessions[-1]

    url = serve(app)
    page = chromium.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.get_by_role("button", name="Build the demo run").click()
    expect(page.get_by_text(re.compile(rf"rows 1–20 of {DEMO_N:,}"))).to_be_visible(timeout=90_000)
    page.wait_for_timeout(2000)
    built = page_picture(page)
    assert any(f"layer {built['layer']} " in title for title in built["titles"]), built
    page.reload()
    expect(page.get_by_text(re.compile(rf"rows 1–20 of {DEMO_N:,}"))).to_be_visible(timeout=90_000)
    page.wait_for_timeout(2000)
    assert page_picture(page) == built
