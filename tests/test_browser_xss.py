"""Payloads in every string a run, a URL or the file system hands the explorer: in a real browser, none may run.

The served app is ``apps/main.py`` itself (``?run=`` and all), over a runs directory holding a tiny model run whose
directory name, label names, example texts, checkpoint name, metadata column name and values are payloads
(``ui_fixtures.PAYLOADS``), and a payload-named directory that is no run. The test works every view (table, legend,
filter summary, hover, instance and head views, pruning, error messages), listens for dialogs, and at the end
scans the DOM, shadow roots included, for handlers, ``javascript:`` URLs and scripts from the payloads, and for the
payloads shown as text.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

import panel as pn
import pytest
import requests
from playwright.sync_api import expect
from ui_fixtures import *  # noqa: F403
from ui_fixtures import PAYLOAD_CHECKPOINT, PAYLOAD_COLUMN, PAYLOADS, free_port, payload_run

from t3vis.paths import RUNS_DIR_ENV
from t3vis.store import Run

pytestmark = pytest.mark.browser

APP = Path(__file__).resolve().parents[1] / "apps" / "main.py"
RUN = PAYLOADS[2]  # the run's directory name: a backtick breakout
NOT_A_RUN = PAYLOADS[4]  # a directory that holds no run

#: What the page holds, shadow roots included: elements with inline handlers, ``javascript:`` URLs and scripts that
#: could run a payload (the documents' JSON holds the payloads as data: not scripts).
SCAN = """() => {
  const found = {handlers: [], urls: [], scripts: []};
  const roots = [document];
  while (roots.length) {
    const root = roots.pop();
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) roots.push(el.shadowRoot);
      for (const attr of el.attributes) {
        if (attr.name.toLowerCase().startsWith("on")) found.handlers.push(el.outerHTML.slice(0, 200));
        if (/^\\s*javascript:/i.test(attr.value)) found.urls.push(el.outerHTML.slice(0, 200));
      }
      if (el.tagName === "SCRIPT" && !/json/i.test(el.type) && el.textContent.includes("__xss"))
        found.scripts.push(el.outerHTML.slice(0, 200));
    }
  }
  return found;
}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """``apps/main.py`` served on 127.0.0.1 over a runs directory of payloads."""
    root = tmp_path_factory.mktemp("xss-runs")
    payload_run(root / RUN)
    (root / NOT_A_RUN).mkdir()
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv(RUNS_DIR_ENV, str(root))
        server = pn.serve({"apps": APP}, port=port, address="127.0.0.1", websocket_origin=[f"127.0.0.1:{port}"],
                          threaded=True, show=False, liveness=True)
        try:
            deadline = time.monotonic() + 30
            while not _live(port):
                assert time.monotonic() < deadline, "the panel server did not start"
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}/apps", root / RUN
        finally:
            server.stop()


def _live(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/liveness", timeout=1).ok
    except requests.RequestException:
        return False


def open_page(chromium, url: str):
    """A page at ``url`` and the list of dialogs it opens (each dismissed, so a payload cannot block the test)."""
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    return page, dialogs


def combobox(page, label: str):
    """The Material UI select labelled ``label`` (its accessible name may go on with a description)."""
    return page.get_by_role("combobox", name=re.compile("^" + re.escape(label)))


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Material UI select or multi-choice labelled ``label``, and wait for its list to close.

    A select closes its list itself; a multi-choice keeps it open until a click outside it (focus has left the list
    once the choice re-renders it, so Escape does nothing). Until the list has gone its backdrop takes every click,
    and a click on a closing select reopens it, so nothing else happens before then.
    """
    combobox(page, label).click()
    listbox = page.locator("[role=listbox]").filter(visible=True)
    multiple = listbox.first.get_attribute("aria-multiselectable") == "true"
    page.locator("[role=menuitem], [role=option]").filter(has_text=re.compile(f"^{re.escape(option)}$")).first.click()
    if multiple:
        page.mouse.click(700, 30)  # on the page header, outside the list
    expect(listbox).to_have_count(0, timeout=10_000)


def hover_a_point(page) -> list[str]:
    """Hover the projection's points (their screen positions from Bokeh's views) until a tooltip shows."""
    points = page.evaluate("""() => {
      const out = [];
      const visit = (view, depth) => {
        if (view == null || depth > 40) return;
        if (view.glyph?.sx != null && view.model.glyph?.type === "Scatter") {
          const rect = view.parent.canvas_view.el.getBoundingClientRect();
          view.glyph.sx.forEach((x, i) => out.push([rect.x + x, rect.y + view.glyph.sy[i]]));
        }
        if (typeof view.children === "function") for (const child of view.children()) visit(child, depth + 1);
      };
      for (const view of Object.values(Bokeh.index)) visit(view, 0);
      return out;
    }""")
    assert points, "no hover points drawn"
    for x, y in points[:10]:
        page.mouse.move(x, y)
        tips = page.locator(".bk-tooltip-content")
        try:
            expect(tips.first).to_contain_text("text:", timeout=2_000)
            return [t.text_content() for t in tips.all()]
        except AssertionError:
            continue
    raise AssertionError("no tooltip showed")


def assert_nothing_ran(page, dialogs) -> None:
    assert dialogs == []
    assert page.evaluate("window.__xss") is None
    found = page.evaluate(SCAN)
    assert found == {"handlers": [], "urls": [], "scripts": []}, found


def text_of(locator) -> str:
    return " ".join(locator.text_content().split())


def test_payloads_in_a_run_are_text_in_every_view(chromium, app_url):
    url, run_path = app_url
    run = Run(str(run_path))
    names, text = run.label_names, run.examples(slice(0, 1))["text"][0]
    gold = names[int(run.column("label")[0])]
    page, dialogs = open_page(chromium, f"{url}?run={quote(RUN, safe='')}")
    page.wait_for_selector(".tabulator-row", timeout=90_000)
    expect(page.get_by_text(re.compile(r"rows 1–20 of 24"))).to_be_visible(timeout=30_000)

    choose(page, "Colour by", PAYLOAD_COLUMN)  # legend: the column's name and its values
    choose(page, "Filter on", PAYLOAD_COLUMN)
    choose(page, f"{PAYLOAD_COLUMN} is one of", PAYLOADS[0])  # the filter summary
    expect(page.get_by_text(re.compile(r"rows 1–12 of 12"))).to_be_visible(timeout=30_000)
    table = text_of(page.locator(".tabulator-tableholder"))
    assert all(p in table for p in [*PAYLOADS, *names])  # the examples' texts and labels
    tooltips = hover_a_point(page)
    assert any(p in t for t in tooltips for p in PAYLOADS), tooltips

    page.locator(".tabulator-row").first.click()  # the instance view (always on screen) shows the example
    expect(page.locator('.tokens[data-example="0"] .tok').first).to_be_visible(timeout=30_000)
    # the aggregate head scale has nothing for this checkpoint: the message names it
    expect(page.get_by_text(f"checkpoint '{PAYLOAD_CHECKPOINT}' has no head importance", exact=False)).to_be_visible()
    page.get_by_role("button", name="instance", exact=True).click()
    page.locator('[data-click="prune:0,1"]').click()
    expect(page.get_by_text("1 head pruned", exact=False)).to_be_visible(timeout=30_000)
    # the selection summary: label names in the label x prediction table, the words that drive predictions
    page.get_by_role("tab", name=re.compile("selection summary", re.I)).click()
    page.get_by_role("button", name=re.compile("Find top words")).click()
    expect(page.get_by_text("Mean saliency per word", exact=False)).to_be_visible(timeout=60_000)
    confusion = text_of(page.locator("table").filter(has_text="label \\ prediction"))
    assert all(name in confusion for name in names), confusion

    assert_nothing_ran(page, dialogs)
    # ...and every payload reached the page, as text
    assert text_of(combobox(page, "Run")) == RUN
    assert text_of(combobox(page, "Checkpoint")) == PAYLOAD_CHECKPOINT
    assert text_of(page.locator(".t3-legend")) == f"{PAYLOAD_COLUMN}: {PAYLOADS[0]} {PAYLOADS[1]}"
    assert text_of(page.locator("li").filter(has_text=PAYLOAD_COLUMN)) == f"{PAYLOAD_COLUMN}: {PAYLOADS[0]}"
    assert text_of(page.locator("p").filter(has_text="Example 0")).startswith(f"Example 0 · gold {gold} · predicted ")
    assert [text_of(box).startswith(name) for box, name in zip(page.locator(".cls").all(), names)] == [True] * 3
    assert text_of(page.locator('.tokens[data-example="0"]')) == f"[CLS] {text} [SEP]"
    pruning = text_of(page.locator("p").filter(has_text="1 head pruned"))
    assert any(pruning.startswith(f"1 head pruned · prediction {name}") for name in names), pruning
    page.close()


@pytest.mark.parametrize("name", ["/" + PAYLOADS[0], NOT_A_RUN, PAYLOADS[3]])
def test_run_names_from_the_url_and_the_runs_directory_are_text_in_errors(chromium, app_url, name):
    url, _ = app_url
    page, dialogs = open_page(chromium, f"{url}?run={quote(name, safe='')}")
    # the name, as the message quotes it (refused paths in Python's repr, run names in a code span)
    expect(page.locator(".alert-danger")).to_contain_text(repr(name) if name.startswith("/") else name,
                                                          timeout=90_000)
    assert_nothing_ran(page, dialogs)
    page.close()
