"""The explorer in a real browser: serve it, drag a box on the projection, see the count and the table change.

Debian's chromium through Playwright (``executable_path="/usr/bin/chromium"``); the server runs in-process so
the test can also read each session's state. Screenshots go to the test's tmp_path.
"""

from __future__ import annotations

import re
import time

import pytest
from ui_fixtures import *  # noqa: F403

from t3vis.ui.explorer import Explorer
from t3vis.ui.warmup import warm_up

pytestmark = pytest.mark.browser


def wait_for(predicate, timeout=60.0, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def drag(page, canvas, start, stop):
    """Drag from ``start`` to ``stop`` (fractions of the canvas) with the active box-select tool."""
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * start[0], box["y"] + box["height"] * start[1])
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * stop[0], box["y"] + box["height"] * stop[1], steps=8)
    page.mouse.up()


def brush(page, explorer, start, stop, attempts=4):
    """Drag a box on the projection until the session's state has a selection (a page still wiring its
    callbacks on a busy machine can miss the first drag)."""
    for _ in range(attempts):
        drag(page, page.locator(".bk-events").first, start, stop)
        try:
            return wait_for(lambda: explorer.state.has_selection, timeout=15)
        except AssertionError:
            time.sleep(1.0)
    raise AssertionError("the brush never reached the server")


#: Sum of each image in the page's Bokeh documents (the rasterized layers as the browser holds them).
IMAGE_SUMS = """() => {
  const sums = [];
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      const image = model.data instanceof Map ? model.data.get("image") : model.data?.image;
      if (!image || !image.length) continue;
      let total = 0;
      for (const value of image[0]) if (!Number.isNaN(value)) total += value;
      sums.push(total);
    }
  }
  return sums;
}"""


def shows_count(page, n: int) -> bool:
    pager = page.get_by_text(re.compile(r"rows \d[\d,]*–\d[\d,]* of \d[\d,]*"))
    counts = page.get_by_text(re.compile(r"selected ·"))
    if not pager.count() or not counts.count():
        return False
    return (pager.first.inner_text().endswith(f"of {n:,}")
            and counts.first.inner_text().startswith(f"{n:,} selected"))


def test_brush_in_the_browser_fills_table_and_sessions_stay_apart(runs_dir, chromium, serve, tmp_path):
    warm_up()  # what apps/main.py does at server start
    sessions: list[Explorer] = []

    def app():
        explorer = Explorer(runs_dir=runs_dir, run_name="small")
        sessions.append(explorer)
        return explorer

    url = serve(app)
    first = chromium.new_page(viewport={"width": 1400, "height": 1000})
    first.goto(url)
    first.wait_for_selector(".bk-events", timeout=90_000)
    first.get_by_text(re.compile(r"rows 1–20 of 4,000")).wait_for(timeout=30_000)
    time.sleep(1.0)  # let the plot settle (ranges, plot size) before brushing
    one = sessions[0]
    assert one.state.n_selected == SMALL_N  # noqa: F405

    brush(first, one, (0.25, 0.25), (0.6, 0.7))
    try:  # the page shows the session's count, in the table's pager and the sidebar
        wait_for(lambda: shows_count(first, one.state.n_selected), timeout=30)
    except AssertionError:
        first.screenshot(path=str(tmp_path / "explorer-failed.png"), full_page=True)
        raise
    n = one.state.n_selected
    assert 0 < n < SMALL_N  # noqa: F405
    # the highlight layers of the projection and the data map, as the browser holds them, count the selection
    wait_for(lambda: first.evaluate(IMAGE_SUMS).count(n) == 2, timeout=30)
    # the table now lists selected examples only
    first_row = int(one.table.table.value.index[0])
    assert one.state.mask[first_row]
    first.screenshot(path=str(tmp_path / "explorer-brushed.png"), full_page=True)
    assert (tmp_path / "explorer-brushed.png").stat().st_size > 10_000

    # a second session starts from nothing selected and brushes on its own
    second = chromium.new_page(viewport={"width": 1400, "height": 1000})
    second.goto(url)
    second.wait_for_selector(".bk-events", timeout=90_000)
    second.get_by_text(re.compile(r"rows 1–20 of 4,000")).wait_for(timeout=30_000)
    two = sessions[1]
    assert two.state.selection is None and one.state.n_selected == n
    time.sleep(1.0)
    brush(second, two, (0.35, 0.15), (0.55, 0.85))  # (inside the frame: the y axis takes the left ~25%)
    assert two.state.n_selected < SMALL_N  # noqa: F405
    assert one.state.n_selected == n  # the first session's selection is untouched
    assert (one.state.mask != two.state.mask).any()
    second.screenshot(path=str(tmp_path / "explorer-second-session.png"))
