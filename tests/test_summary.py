"""Selection summary: the pure parts against brute-force references, the view on a synthetic run, and the top words
of a tiny random-init model against a direct per-example recomputation, with progress and a Cancel that stops work.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest
import torch
from ui_fixtures import PAYLOADS, chromium, payload_run, runs_dir, serve, small_run  # noqa: F401

from t3vis.analysis.datamaps import MISLABEL_COLUMN
from t3vis.analysis.saliency import saliency
from t3vis.analysis.summary import (
    MAX_SAMPLE,
    WordScore,
    compare_histogram,
    confusion_counts,
    is_punctuation,
    sample_rows,
    top_words,
)
from t3vis.models import load_checkpoint
from t3vis.serving import WORKERS, ModelServer, server_for_checkpoint
from t3vis.store import Run, RunWriter
from t3vis.ui.state import ExplorerState
from t3vis.ui.summary import SelectionSummary, confusion_html, example_words, fractions, words_html
from tests.fixtures import make_tiny_run

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------- pure parts
def test_confusion_counts_equal_a_loop_and_skip_missing_labels():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(-1, 5, 3000), rng.integers(0, 6, 3000)  # -1: no label, 5: out of range
    mask = rng.random(3000) < 0.3
    got = confusion_counts(labels, preds, 5, mask)
    brute = np.zeros((5, 5), dtype=np.int64)
    for label, pred, keep in zip(labels, preds, mask):
        if keep and 0 <= label < 5 and 0 <= pred < 5:
            brute[label, pred] += 1
    np.testing.assert_array_equal(got, brute)
    assert confusion_counts(labels, preds, 5, None).sum() == ((labels >= 0) & (preds < 5)).sum()


def test_histograms_of_selection_and_run_equal_a_loop():
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, 5000)
    values[rng.random(5000) < 0.05] = np.nan
    values[7] = np.inf
    mask = rng.random(5000) < 0.2
    bins = 13
    hist = compare_histogram(values, mask, bins)
    finite = values[np.isfinite(values)]
    lo, hi = finite.min(), finite.max()

    def brute(rows):
        counts, missing = np.zeros(bins, dtype=np.int64), 0
        for v in values[rows]:
            if not np.isfinite(v):
                missing += 1
                continue
            counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1  # the last bin is closed
        return counts, missing

    np.testing.assert_allclose(hist.edges, np.linspace(lo, hi, bins + 1))
    for (counts, missing), (want, want_missing) in [((hist.whole, hist.missing_whole), brute(np.arange(5000))),
                                                    ((hist.selected, hist.missing_selected), brute(mask))]:
        # a value on an inner edge may fall either side by float rounding; totals and near-all bins must agree
        assert missing == want_missing and counts.sum() == want.sum()
        assert np.abs(counts - want).sum() <= 2
    constant = compare_histogram(np.full(10, 3.0), None, 4)
    assert constant.whole.sum() == 10 and constant.edges[0] < 3.0 < constant.edges[-1]


def test_the_sample_is_bounded_seeded_and_from_the_selection():
    rows = np.flatnonzero(np.random.default_rng(2).random(10_000) < 0.5)
    picked = sample_rows(rows)
    assert len(picked) == MAX_SAMPLE and np.isin(picked, rows).all() and (np.diff(picked) > 0).all()
    np.testing.assert_array_equal(picked, sample_rows(rows.copy()))
    assert not np.array_equal(picked, sample_rows(rows, seed=1))
    np.testing.assert_array_equal(sample_rows(rows[:10][::-1]), rows[:10])


def test_top_words_equal_a_brute_force_mean_per_word():
    rng = np.random.default_rng(3)
    vocab = ["Market", "market", "team", "goal", "film", "bank", ",", "...", "£", "wins", "a"]
    examples = [[(vocab[int(rng.integers(len(vocab)))], float(rng.normal())) for _ in range(int(rng.integers(0, 12)))]
                for _ in range(60)]
    examples.append([("lonely", 99.0)])  # in one example only: filtered out by min_examples
    got = top_words(examples, k=50)
    occurrences: dict[str, list[float]] = {}
    in_examples: dict[str, set[int]] = {}
    for i, words in enumerate(examples):
        for word, score in words:
            key = word.lower()
            if key in (",", "...", "£"):
                continue
            occurrences.setdefault(key, []).append(score)
            in_examples.setdefault(key, set()).add(i)
    want = sorted(((k, np.mean(v), len(v), len(in_examples[k])) for k, v in occurrences.items()
                   if len(in_examples[k]) >= 2), key=lambda t: (-t[1], t[0]))
    assert [(w.word, w.count, w.examples) for w in got] == [(k, c, e) for k, _, c, e in want]
    np.testing.assert_allclose([w.mean for w in got], [m for _, m, _, _ in want])
    assert "lonely" not in {w.word for w in got} and "market" in {w.word for w in got}
    assert [w.word for w in top_words(examples, k=3)] == [w.word for w in got[:3]]
    assert top_words([[("solo", 1.0), ("solo", 3.0)]]) == [WordScore("solo", 2.0, 2, 1)]  # one example: kept


def test_punctuation_and_symbols_are_not_words():
    assert all(is_punctuation(w) for w in (",", "...", "£", "—", "''", " ", "$%"))
    assert not any(is_punctuation(w) for w in ("a", "u.s", "3", "don't", "café"))


def test_confusion_and_words_render_names_as_text():
    names = list(PAYLOADS[:3])
    markup = confusion_html(np.arange(9).reshape(3, 3), names)
    assert "<img" not in markup and "<svg" not in markup and "&lt;img" in markup
    words = words_html([WordScore(PAYLOADS[0], 0.5, 3, 2)])
    assert "<img" not in words and 'data-click="word:0"' in words


# ---------------------------------------------------------------------------------------------------- the view
def cells(markup: str) -> dict[tuple[str, str], int]:
    return {(a, b): int(n.replace(",", "")) for a, b, n in re.findall(r'title="label (.*?), predicted (.*?): ([\d,]+)"',
                                                                      str(markup))}


def test_the_view_counts_and_bins_the_selection_against_the_run(small_run):  # noqa: F811
    state = ExplorerState(str(small_run))
    view = SelectionSummary(state=state)
    data = state.data
    names = data.label_names
    labels, preds = data.values("label"), data.values("pred", state.checkpoint)
    assert sum(cells(view._confusion.object).values()) == state.n_total
    state.set_filter("label", (names[0], names[3]))
    state.selection = np.random.default_rng(4).random(state.n_total) < 0.5
    got = cells(view._confusion.object)
    rows = state.rows()
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert got[(a, b)] == int(((labels[rows] == i) & (preds[rows] == j)).sum())
    assert "{:,} of {:,}".format(state.n_selected, state.n_total) in view._header.object
    (score, loss) = view._plots.objects
    for pane, column in ((score, MISLABEL_COLUMN), (loss, "loss")):
        hist = view.histograms[column]
        values = data.values(column, state.checkpoint)[rows]
        values = values[np.isfinite(values)]
        edges = hist.edges
        want = np.histogram(values, bins=len(edges) - 1, range=(edges[0], edges[-1]))[0] / len(values)
        np.testing.assert_allclose(fractions(hist.selected), want, atol=1e-12)
        assert fractions(hist.whole).sum() == pytest.approx(1.0)
        # the bars drawn are those fractions, one per bin, as text-safe HTML
        markup = str(pane.object)
        assert markup.count("of the selection") == len(edges) - 1 and "<script" not in markup
        assert "{:.1%} of the selection".format(want.max()) in markup
    state.clear_filters()
    state.clear_selection()
    assert sum(cells(view._confusion.object).values()) == state.n_total


def test_payload_labels_show_as_text_in_the_view(tmp_path):
    state = ExplorerState(str(payload_run(tmp_path / "payload")))
    markup = str(SelectionSummary(state=state)._confusion.object)
    assert cells(markup) and "<img" not in markup and "<svg" not in markup


# ---------------------------------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("summary"), n=30, checkpoints=1)


def test_batched_top_words_equal_a_per_example_recomputation(tiny_run):
    run = Run(str(tiny_run))
    weights = run.checkpoint("epoch-0").weights_path
    server = ModelServer.load(weights, batch_autocast=False)  # float32, as the reference
    texts = [str(t) for t in run.column("text")]
    reports = []
    results = server.saliency_many(texts, batch_size=4, max_length=run.max_length,
                                   progress=lambda done, total: reports.append((done, total)))
    assert reports[-1] == (len(texts), len(texts)) and [d for d, _ in reports] == sorted(d for d, _ in reports)
    model, tokenizer = load_checkpoint(weights)  # an independent copy
    reference = []
    for text, (encoding, scores) in zip(texts, results):
        enc = tokenizer([text], truncation=True, max_length=run.max_length, return_tensors="pt")
        with torch.no_grad():
            target = int(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.argmax())
        direct = saliency(model, enc["input_ids"], enc["attention_mask"], target)[0]
        np.testing.assert_allclose(scores, direct, rtol=1e-4, atol=1e-6)
        reference.append(example_words(encoding, direct))
    got = top_words(example_words(e, s) for e, s in results)
    want = top_words(reference)
    assert len(got) == 20 and [w.word for w in got] == [w.word for w in want]
    np.testing.assert_allclose([w.mean for w in got], [w.mean for w in want], rtol=1e-4)
    # stored targets are explained as given: class 0 everywhere differs from the predicted classes
    zeros = server.saliency_many(texts[:4], np.zeros(4, dtype=int), max_length=run.max_length)
    enc = tokenizer([texts[0]], truncation=True, max_length=run.max_length, return_tensors="pt")
    np.testing.assert_allclose(zeros[0][1], saliency(model, enc["input_ids"], enc["attention_mask"], 0)[0],
                               rtol=1e-4, atol=1e-6)


def test_cancel_stops_the_batches_not_yet_started(tiny_run):
    run = Run(str(tiny_run))
    server = ModelServer.load(run.checkpoint("epoch-0").weights_path)
    texts = [str(t) for t in run.column("text")]
    cancel = threading.Event()
    results = server.saliency_many(texts, batch_size=1, cancel=cancel, progress=lambda done, total: cancel.set())
    done = sum(r is not None for r in results)
    assert 1 <= done <= WORKERS < len(texts)  # only the batches already running when Cancel came finished


def test_the_view_explains_the_stored_predictions_the_counts_show(tmp_path):
    run = make_tiny_run(tmp_path, n=12, checkpoints=1)
    RunWriter(str(run)).write_array("checkpoints/epoch-0/pred", np.arange(12, dtype=np.int16) % 3)
    state = ExplorerState(str(run))
    view = SelectionSummary(state=state)
    assert "checkpoint epoch-0" in str(view._confusion.object)
    words = asyncio.run(view.explain())
    server = server_for_checkpoint(state.run.checkpoint("epoch-0"))  # the one the view used
    texts = [str(t) for t in state.data.text(np.arange(12))]
    direct = server.saliency_many(texts, np.arange(12) % 3, max_length=state.run.max_length)
    assert words == top_words(example_words(e, s) for e, s in direct)
    fresh = server.saliency_many(texts, None, max_length=state.run.max_length)
    assert words != top_words(example_words(e, s) for e, s in fresh)  # so the stored classes made the difference


def test_the_view_finds_words_searches_them_and_cancels(tiny_run):
    state = ExplorerState(str(tiny_run))
    view = SelectionSummary(state=state)
    words = asyncio.run(view.explain())
    assert view.last_run["done"] == view.last_run["planned"] == state.n_total
    assert view.last_run["progress"][-1] == state.n_total
    texts = " ".join(str(t).lower() for t in state.data.text(np.arange(state.n_total)))
    assert len(words) == 20 and all(w.word in texts for w in words)
    assert 'data-click="word:19"' in view._words.html
    view._on_click("word:0")  # what clicking the first word sends
    assert state.search == words[0].word and 0 < state.n_selected < state.n_total
    assert all(words[0].word in str(t).lower() for t in state.data.text(state.rows()))
    assert "earlier selection" in view._status.object  # the words shown were for all rows

    # Cancel while the words are computed: fewer examples than planned are attributed
    state.search = ""
    view._progress.param.watch(lambda event: event.new > 0 and view.cancel(), "value")
    asyncio.run(view.explain())
    assert 0 < view.last_run["done"] < view.last_run["planned"]
    assert "Cancelled" in view._status.object and not view._stop.visible

    # a new selection while the words are computed stops the search too, and says so
    other = SelectionSummary(state=state)
    brush = np.arange(state.n_total) < 10
    other._progress.param.watch(lambda event: event.new > 0 and setattr(state, "selection", brush), "value")
    assert asyncio.run(other.explain()) is None
    assert other.last_run["done"] < other.last_run["planned"] and "selection changed" in other._status.object


def test_in_the_browser_find_words_then_click_one_to_search(tiny_run, serve, chromium):  # noqa: F811
    from playwright.sync_api import expect

    states = []

    def app():
        state = ExplorerState(str(tiny_run))
        states.append(state)
        return SelectionSummary(state=state)

    page = chromium.new_page(viewport={"width": 1200, "height": 1400})
    page.goto(serve(app))
    page.get_by_role("button", name=re.compile("Find top words")).click()
    first = page.locator('[data-click="word:0"]')
    expect(first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("30 examples. Mean saliency", exact=False)).to_be_visible()
    word = first.locator("span").first.inner_text().strip()
    first.click()
    state = states[-1]
    deadline = time.monotonic() + 10
    while (state.search != word or state.n_selected == state.n_total) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.search == word and 0 < state.n_selected < state.n_total
    expect(page.get_by_text(f"{state.n_selected:,} of {state.n_total:,} examples", exact=False)).to_be_visible()
    expect(page.get_by_text("earlier selection", exact=False)).to_be_visible()


def test_off_screen_the_summary_waits_and_catches_up_when_shown(small_run):  # noqa: F811
    """A brush costs the summary nothing while its tab is closed; opening the tab shows the current selection."""
    from t3vis.ui.explorer import Explorer

    e = Explorer(runs_dir=small_run.parent, run_name=small_run.name)
    view, state = e.summary, e.state
    page = e.__panel__()
    assert view.shown is False
    before = str(view._header.object)
    state.selection = np.random.default_rng(5).random(state.n_total) < 0.3
    assert str(view._header.object) == before  # not redrawn off screen
    tabs = e.tabs  # the page's tabs: Examples, Selection summary
    tabs.active = len(tabs) - 1
    assert view.shown is True
    assert "{:,} of {:,}".format(state.n_selected, state.n_total) in str(view._header.object)
    tabs.active = 0
    assert view.shown is False
