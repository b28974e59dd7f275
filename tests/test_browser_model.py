"""Browser test of the model-backed views: click a table row, see coloured tokens; select a head, click a token,
see its attention; prune a head from the grid and see the prediction change.

Served in-process (``pn.serve(..., threaded=True)``) and driven by Debian's chromium through Playwright. The page is
a small layout (a table of the run's rows + the head view + the instance view) sharing one ``ExplorerState``,
as the full explorer does.
"""

from __future__ import annotations

import re
import time
import uuid

import numpy as np
import panel as pn
import pytest
from playwright.sync_api import expect, sync_playwright

from t3vis.ui.heads import HeadView
from t3vis.ui.instance import InstanceView
from t3vis.ui.state import ExplorerState
from tests.fixtures import make_tiny_run

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def model_views_app(run_path: str, rows: int = 8):
    """A page like the explorer's model side: clicking a table row picks the example."""

    def app():
        state = ExplorerState(run_path)
        frame = state.data.rows(np.arange(rows), ["text", "label"])
        table = pn.widgets.Tabulator(frame.reset_index(), show_index=False, disabled=True, height=240,
                                     sizing_mode="stretch_width")
        table.on_click(lambda event: setattr(state, "example", int(frame.index[event.row])))
        heads = HeadView(state=state, scale="instance")
        return pn.Column(table, pn.Row(heads, InstanceView(state=state)), sizing_mode="stretch_width")

    return app


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run = make_tiny_run(tmp_path_factory.mktemp("browser"), n=16)
    server_id = uuid.uuid4().hex
    thread = pn.serve(model_views_app(str(run)), port=0, address="127.0.0.1", threaded=True, show=False,
                      server_id=server_id)
    deadline = time.monotonic() + 20
    while server_id not in pn.state._servers:
        assert time.monotonic() < deadline, "the panel server did not start"
        time.sleep(0.05)
    yield f"http://localhost:{pn.state._servers[server_id][0].port}/"
    thread.stop()


@pytest.fixture(scope="module")
def browser_page(served):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(served)
        yield page
        browser.close()


def test_row_click_shows_coloured_tokens_and_head_attention(browser_page):
    page = browser_page
    page.locator(".tabulator-row").nth(2).click()
    tokens = page.locator('.tokens[data-example="2"] .tok')
    expect(tokens.first).to_be_visible(timeout=15_000)
    backgrounds = [tokens.nth(i).evaluate("el => getComputedStyle(el).backgroundColor")
                   for i in range(min(tokens.count(), 6))]
    assert any(b not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)") for b in backgrounds), backgrounds
    expect(page.get_by_text("Example 2", exact=False).first).to_be_visible()

    # select head L1·H2 in the grid, then click a token: its attention over the input replaces the saliency
    page.locator('[data-click="head:1,2"]').click()
    expect(page.locator(".cell.selected")).to_have_count(1, timeout=10_000)
    page.locator('[data-click="tok:2"]').click()
    expect(page.get_by_text(re.compile("Attention of .* in head L1·H2"))).to_be_visible(timeout=10_000)
    expect(page.locator('.tokens[data-showing="attention"]')).to_have_count(1)
    expect(page.locator(".tok.focus")).to_have_count(1)
    titles = [page.locator(".tok").nth(i).get_attribute("title") for i in range(3)]
    assert all("attention" in t for t in titles), titles


def test_prune_button_prunes_and_updates_prediction(browser_page):
    page = browser_page
    page.locator(".tabulator-row").nth(3).click()
    expect(page.get_by_text("Example 3", exact=False).first).to_be_visible(timeout=15_000)
    page.locator('[data-click="prune:0,1"]').click()
    expect(page.locator(".cell.pruned")).to_have_count(1, timeout=10_000)
    expect(page.get_by_text("1 head pruned", exact=False)).to_be_visible(timeout=10_000)
    expect(page.get_by_text("Pruned (1):", exact=False)).to_be_visible()
    page.locator('[data-click="prune:0,1"]').click()  # restore
    expect(page.locator(".cell.pruned")).to_have_count(0, timeout=10_000)
