"""Glitches a researcher met in chromium, each reproduced first, then pinned down: switching runs in the picker
(served, and in place as a notebook opens it), the re-predict result out of sight, and an open multi-select
swallowing the next click in the sidebar.

The served switching test serves ``apps/main.py`` itself (it reads ``?run=``), the others an in-process explorer whose
session state the test reads.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect
from ui_fixtures import *  # noqa: F403

from test_browser import wait_for
from test_browser_layout import VIEWPORT, page_picture
from test_browser_xss import choose, combobox

from t3vis.paths import RUNS_DIR_ENV
from t3vis.store.synth import synth_run

pytestmark = pytest.mark.browser

APP = Path(__file__).resolve().parents[1] / "apps" / "main.py"
#: Two runs that differ in every choice the sidebar offers: checkpoints, projection methods and layers.
PCA_ONLY, SIX_LAYERS = "pca-two-layers", "umap-six-layers"
N = {PCA_ONLY: 1000, SIX_LAYERS: 1500}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two-runs")
    synth_run(root / PCA_ONLY, N[PCA_ONLY], checkpoints=2, num_layers=2, num_heads=2, hidden_size=4, seed=1)
    for projection in (root / PCA_ONLY / "store.zarr" / "checkpoints").glob("*/projection/umap"):
        shutil.rmtree(projection)  # this run has PCA only
    synth_run(root / SIX_LAYERS, N[SIX_LAYERS], checkpoints=3, num_layers=6, num_heads=3, hidden_size=4, seed=2)
    return root


def shown(page, run: str) -> None:
    """Wait until ``page`` shows run ``run``: its table's first page and its name in the picker."""
    expect(page.get_by_text(re.compile(rf"rows 1–20 of {N[run]:,}"))).to_be_visible(timeout=90_000)
    expect(combobox(page, "Run")).to_have_text(run)
    page.wait_for_timeout(1500)  # the plots' first rasters and titles


def sidebar_picture(page) -> dict:
    """``page_picture`` (plot titles, layer, panel boxes) and what the projection's selects show."""
    return {**page_picture(page), **{label: combobox(page, label).inner_text() for label in ("Checkpoint", "Method")}}


def test_switching_runs_shows_what_a_fresh_page_of_that_run_shows(two_runs, chromium, serve, monkeypatch):
    monkeypatch.setenv(RUNS_DIR_ENV, str(two_runs))
    url = serve(APP, path="apps")
    page = chromium.new_page(viewport=VIEWPORT)
    page.goto(f"{url}?run={PCA_ONLY}")
    shown(page, PCA_ONLY)
    assert sidebar_picture(page)["Method"] == "pca"
    other = chromium.new_page(viewport=VIEWPORT)  # another user's page on the same run
    other.goto(f"{url}?run={PCA_ONLY}")
    shown(other, PCA_ONLY)
    before = sidebar_picture(other)

    choose(page, "Run", SIX_LAYERS)
    shown(page, SIX_LAYERS)
    switched = sidebar_picture(page)
    # the selects and the plot agree: UMAP of the last layer of the last checkpoint, as a fresh page shows it
    assert (switched["Checkpoint"], switched["Method"], switched["layer"]) == ("epoch-2", "umap", "6"), switched
    assert "UMAP of layer 6 · epoch-2" in switched["titles"], switched
    assert page.url.endswith(f"?run={SIX_LAYERS}")  # built fresh, as a bookmark of the run would be
    fresh = chromium.new_page(viewport=VIEWPORT)
    fresh.goto(f"{url}?run={SIX_LAYERS}")
    shown(fresh, SIX_LAYERS)
    assert sidebar_picture(fresh) == switched
    # the other user's page did not move
    assert sidebar_picture(other) == before and combobox(other, "Run").inner_text() == PCA_ONLY


def inside(inner: dict, outer: dict) -> bool:
    return (outer["x"] - 1 <= inner["x"] and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1 and
            outer["y"] - 1 <= inner["y"] and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1)


def test_the_repredicted_selection_shows_where_the_user_clicked(tmp_path, chromium, serve):
    from tests.fixtures import make_tiny_run

    from t3vis.ui.explorer import Explorer

    make_tiny_run(tmp_path / "runs", n=48)
    page = chromium.new_page(viewport=VIEWPORT)
    page.goto(serve(lambda: Explorer(runs_dir=tmp_path / "runs", run_name="tiny-run")))
    expect(page.get_by_text(re.compile(r"rows 1–20 of 48"))).to_be_visible(timeout=90_000)
    page.locator(".tabulator-row").nth(1).click()  # an example fills the instance view with its tokens
    expect(page.locator(".tokens .tok").first).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="instance", exact=True).click()  # the run stores no head importance
    page.locator('[data-click="prune:0,1"]').click()
    button = page.get_by_role("button", name="Re-predict 48 examples with 1 pruned head")
    expect(button).to_be_enabled(timeout=30_000)
    button.click()
    result = page.locator(".t3-instance").get_by_text(re.compile(r"Selection re-predicted .* predictions changed"))
    expect(result).to_be_visible(timeout=60_000)
    found, panel = result.bounding_box(), page.locator(".t3-instance").bounding_box()
    window = {"x": 0, "y": 0, **VIEWPORT}
    # in the window and in the panel's visible part (it scrolls inside), right under the button
    assert inside(found, window) and inside(found, panel), (found, panel)
    assert 0 <= found["y"] - (button.bounding_box()["y"] + button.bounding_box()["height"]) < 40


def click_at(page, locator) -> None:
    """Move the mouse onto ``locator`` and click there, as a hand does (not Playwright's checked click, which
    refuses while another element would take the click)."""
    found = locator.bounding_box()
    page.mouse.move(found["x"] + found["width"] / 2, found["y"] + found["height"] / 2, steps=4)
    page.mouse.down()
    page.mouse.up()


def test_an_open_multi_select_lets_the_first_click_elsewhere_through(small_page):
    page, explorer = small_page
    state = explorer.state
    first, second = (str(c) for c in state.data.attribute("label").categories[:2])
    combobox(page, "label is one of").click()
    page.locator("[role=menuitem], [role=option]").filter(has_text=re.compile(f"^{first}$")).first.click()
    wait_for(lambda: state.filters.get("label") == (first,), timeout=30)
    menu = page.locator("[role=listbox]").filter(visible=True)
    expect(menu).to_have_count(1)  # a multi-select stays open after a choice

    click_at(page, page.get_by_role("switch", name="Regex"))  # one click on another sidebar widget...
    wait_for(lambda: state.search_regex, timeout=15)  # ...reaches it
    expect(menu).to_have_count(0)  # and the menu has closed

    combobox(page, "label is one of").click()  # open again, then type into the search box right away
    page.locator("[role=menuitem], [role=option]").filter(has_text=re.compile(f"^{second}$")).first.click()
    wait_for(lambda: set(state.filters.get("label", ())) == {first, second}, timeout=30)
    click_at(page, page.get_by_role("textbox", name="Search text"))
    page.keyboard.type("market")  # the box has the focus: the menu did not keep it
    page.keyboard.press("Enter")
    wait_for(lambda: state.search == "market", timeout=15)
    expect(menu).to_have_count(0)


#: WCAG AA for body text.
MIN_CONTRAST = 4.5


def contrast(page, locator) -> float:
    """The WCAG contrast ratio of an element's text colour against its own background, as chromium computes them."""
    return page.evaluate("""el => {
        const s = getComputedStyle(el);
        const rgb = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
        const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 :
                                                         Math.pow((v + 0.055) / 1.055, 2.4); })
                                            .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
        const [a, b] = [lum(rgb(s.color)), lum(rgb(s.backgroundColor))];
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    }""", locator.element_handle())


@pytest.mark.parametrize("run, kind", [("bare", "info"), ("no-such-run", "danger")])
def test_alerts_are_legible(runs_dir, chromium, serve, run, kind):
    """A run without projections says so in an info alert, an unknown run in a danger alert: both were white text
    on a pale background under the Material design."""
    from t3vis.ui.explorer import Explorer

    page = chromium.new_page(viewport=VIEWPORT)
    page.goto(serve(lambda: Explorer(runs_dir=runs_dir, run_name=run)))
    alert = page.locator(f".alert-{kind}").first
    expect(alert).to_be_visible(timeout=90_000)
    ratio = contrast(page, alert)
    assert ratio >= MIN_CONTRAST, f"{kind} alert: contrast {ratio:.2f}"
    page.close()


def test_a_run_opened_in_place_shows_what_a_fresh_page_of_that_run_shows(two_runs, chromium, serve):
    """A notebook has no URL to go to, so a picked run opens in place. Each select then got its new options before
    its new value and wrote its first option back (panel#1963), in Python and, under load, from the browser: the
    plot showed layer 3 where the select said 6, and PCA stayed on because the old run had chosen it. The page must
    equal a fresh page of that run (here a served explorer told to open in place, as in a notebook). Run beside two
    busy processes this failed 2 of 2 times until the explorer made new selects per run opened in place."""
    from t3vis.ui.explorer import Explorer

    def in_place():
        explorer = Explorer(runs_dir=two_runs, run_name=PCA_ONLY)
        page = explorer.__panel__()
        explorer._location = None  # no URL to go to, as in a notebook
        return page

    page = chromium.new_page(viewport=VIEWPORT)
    page.goto(serve(in_place))
    shown(page, PCA_ONLY)
    choose(page, "Run", SIX_LAYERS)
    shown(page, SIX_LAYERS)
    switched = sidebar_picture(page)
    assert (switched["Checkpoint"], switched["Method"], switched["layer"]) == ("epoch-2", "umap", "6"), switched
    assert "UMAP of layer 6 · epoch-2" in switched["titles"], switched
    fresh = chromium.new_page(viewport=VIEWPORT)
    fresh.goto(serve(lambda: Explorer(runs_dir=two_runs, run_name=SIX_LAYERS)))
    shown(fresh, SIX_LAYERS)
    assert sidebar_picture(fresh) == switched
