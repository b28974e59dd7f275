"""The explorer on a token-classification (NER) run in a real browser: brush words in the projection, click a word
row in the table, see its sentence with gold and predicted tags under the words and saliency over the tokens; click
another word of the sentence and see the instance view explain that word.

Served in-process (so the test can read the session's state) and driven by Debian's chromium through Playwright.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from playwright.sync_api import expect
from test_browser import brush, wait_for
from test_ner_views import direct_word_logits
from ui_fixtures import chromium, serve  # noqa: F401 (fixtures)

from t3vis.models import load_checkpoint
from t3vis.store import Run
from t3vis.ui.explorer import Explorer
from tests.fixtures import make_tiny_ner_run

pytestmark = pytest.mark.browser

WHITE = ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)")


@pytest.fixture(scope="module")
def ner_runs_dir(tmp_path_factory):
    """A runs directory holding one complete tiny NER run, ``ner`` (about a minute to build)."""
    root = tmp_path_factory.mktemp("ner-runs")
    make_tiny_ner_run(root, name="ner")
    return root


def open_ner_page(runs_dir, chromium, serve):
    """The ``ner`` run served at 1600x1000, its table drawn: the page and its session's ``Explorer``."""
    sessions: list[Explorer] = []

    def app():
        sessions.append(Explorer(runs_dir=runs_dir, run_name="ner"))
        return sessions[-1]

    page = chromium.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(serve(app))
    page.wait_for_selector(".bk-events", timeout=90_000)
    expect(page.get_by_text(re.compile(r"rows 1–\d+ of [\d,]+")).first).to_be_visible(timeout=60_000)
    return page, sessions[0]


def test_a_word_row_shows_its_tags_and_saliency_and_a_click_explains_another_word(ner_runs_dir, chromium, serve,
                                                                                  tmp_path):
    page, explorer = open_ner_page(ner_runs_dir, chromium, serve)
    time.sleep(1.0)  # let the plot settle before brushing
    shown_before = explorer.state.n_selected

    brush(page, explorer, (0.3, 0.2), (0.75, 0.8))
    n = explorer.state.n_selected
    assert 0 < n < shown_before
    wait_for(lambda: page.get_by_text(re.compile(rf"rows 1–\d+ of {n:,}")).count() > 0, timeout=30)

    # click the first word row of the brushed table: its sentence appears as a strip of tagged words
    page.locator(".tabulator-row").first.click()
    wait_for(lambda: explorer.state.example is not None, timeout=30)
    row = explorer.state.example
    assert explorer.state.mask[row]  # a row of the selection
    run = Run(str(ner_runs_dir / "ner"))
    sentence = run.column("sentence")
    rows = np.flatnonzero(sentence == sentence[row])
    words = [str(w) for w in run.column("text")[rows]]
    position = int(np.flatnonzero(rows == row)[0])
    names = run.label_names
    model, tokenizer = load_checkpoint(run.checkpoint(explorer.state.checkpoint).weights_path, dtype=torch.float32)
    predicted = [names[t] for t in direct_word_logits(model, tokenizer, words).argmax(1)]
    strip = page.locator(".tagstrip .tagw")
    try:
        expect(strip).to_have_count(len(words), timeout=30_000)
    except AssertionError:
        page.screenshot(path=str(tmp_path / "ner-failed.png"), full_page=True)
        raise
    assert [strip.nth(w).locator(".w").inner_text() for w in range(len(words))] == words
    assert [strip.nth(w).locator(".gold").inner_text() for w in range(len(words))] == \
        [names[t] for t in run.column("label")[rows]]
    assert [strip.nth(w).get_attribute("data-pred") for w in range(len(words))] == predicted
    wrong = [("wrong" in strip.nth(w).get_attribute("class")) for w in range(len(words))]
    assert wrong == [names[t] != p for t, p in zip(run.column("label")[rows], predicted)]
    # the prediction is drawn where it differs from the gold tag (two lines per word, not three)
    assert [strip.nth(w).locator(".pred").is_visible() for w in range(len(words))] == wrong
    assert all(strip.nth(w).locator(".pred").inner_text() == predicted[w] for w in range(len(words)) if wrong[w])
    expect(page.locator(".tagw.focus")).to_have_attribute("data-click", f"word:{position}")
    header = re.compile(rf"«{re.escape(words[position])}» · sentence {sentence[row]}, word {position} ")
    expect(page.get_by_text(header)).to_be_visible(timeout=10_000)

    # saliency over the sentence's tokens, for that word's predicted tag
    tokens = page.locator(f'.tokens[data-showing="saliency"][data-example="{row}"] .tok')
    expect(tokens.first).to_be_visible(timeout=30_000)
    expect(tokens.first).to_be_in_viewport()  # not pushed below the instance panel's fold by the tags above it
    assert [tokens.nth(i).inner_text() for i in range(1, len(words) + 1)] == words  # [CLS] first
    colours = [tokens.nth(i).evaluate("el => getComputedStyle(el).backgroundColor") for i in range(tokens.count())]
    assert any(c not in WHITE for c in colours), colours
    legend = re.compile(rf"for the tag {re.escape(predicted[position])} of {re.escape(words[position])}")
    expect(page.get_by_text(legend)).to_be_visible()

    # click another word of the sentence: the header and the highlighted word follow, its own tag is explained
    other = next(w for w in range(len(words)) if words[w] != words[position])
    strip.nth(other).click()
    wait_for(lambda: explorer.state.example == int(rows[other]), timeout=30)
    expect(page.get_by_text(re.compile(rf"«{re.escape(words[other])}» · sentence {sentence[row]}, word {other} "))
           ).to_be_visible(timeout=30_000)
    expect(page.locator(".tagw.focus")).to_have_attribute("data-click", f"word:{other}")
    expect(page.locator(f'.tokens[data-showing="saliency"][data-example="{rows[other]}"]')).to_have_count(
        1, timeout=30_000)
    expect(page.get_by_text(re.compile(rf"for the tag {re.escape(predicted[other])} of {re.escape(words[other])}"))
           ).to_be_visible()
    page.screenshot(path=str(tmp_path / "ner-instance.png"), full_page=True)

    # prune a head and re-predict the brushed words: their sentences' changed tags and entity F1 are reported
    page.locator('[data-click="prune:0,0"]').click()
    button = page.get_by_role("button", name=f"Re-predict {n} words with 1 pruned head")
    expect(button).to_be_enabled(timeout=30_000)
    button.click()
    sentences = len(np.unique(sentence[explorer.state.rows()]))
    expect(page.get_by_text(re.compile(rf"Selection re-predicted with 1 pruned head: {n} words? in {sentences} "
                                       r"sentences? · tags changed: \d+ .* entity F1 of the sentences"))
           ).to_be_visible(timeout=60_000)
    assert explorer.instance.last_change["n"] == n and explorer.instance.last_change["sentences"] == sentences


def test_switching_to_sentences_lists_sentences_and_a_row_opens_one(ner_runs_dir, chromium, serve, tmp_path):
    page, explorer = open_ner_page(ner_runs_dir, chromium, serve)
    run = Run(str(ner_runs_dir / "ner"))
    sentence = run.column("sentence")
    holding = len(np.unique(sentence[explorer.state.rows()]))  # sentences with an entity word (default filter)

    page.get_by_role("button", name="sentences", exact=True).click()
    wait_for(lambda: explorer.state.unit == "sentences", timeout=30)
    try:
        expect(page.get_by_text(re.compile(rf"sentences 1–\d+ of {holding}")).first).to_be_visible(timeout=30_000)
    except AssertionError:
        page.screenshot(path=str(tmp_path / "sentences-failed.png"), full_page=True)
        raise
    expect(page.get_by_text(re.compile(rf"in {holding} of {len(np.unique(sentence))} sentences"))).to_be_visible()
    wait_for(lambda: explorer.projection.plots["datamap"].spec.kind == "sentence_map", timeout=30)
    expect(page.locator(".tabulator-col-title", has_text="sentence_text")).to_be_visible()

    # a sentence row opens that sentence in the instance view, at its weakest word
    page.locator(".tabulator-row").first.click()
    wait_for(lambda: explorer.state.example is not None, timeout=30)
    row = explorer.state.example
    assert row == int(explorer.state.unit_rows()[0])
    words = [str(w) for w in run.column("text")[sentence == sentence[row]]]
    strip = page.locator(".tagstrip .tagw")
    expect(strip).to_have_count(len(words), timeout=30_000)
    assert [strip.nth(w).locator(".w").inner_text() for w in range(len(words))] == words
    position = int(run.column("position")[row])
    expect(page.locator(".tagw.focus")).to_have_attribute("data-click", f"word:{position}")
    page.screenshot(path=str(tmp_path / "ner-sentences.png"), full_page=True)

    # back to words: the table lists words again
    page.get_by_role("button", name="words", exact=True).click()
    expect(page.get_by_text(re.compile(r"rows 1–\d+ of [\d,]+")).first).to_be_visible(timeout=30_000)
    assert explorer.projection.plots["datamap"].spec.kind == "datamap"
