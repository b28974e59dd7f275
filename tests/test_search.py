"""Text search: ``Run.search`` equals a brute-force Python reference, combines with filters and brushes in the
explorer's one mask, marks hits in the table as text, and says what is wrong with a bad query (also in a browser)."""

from __future__ import annotations

import asyncio
import re
import time
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from ui_fixtures import *  # noqa: F403
from ui_fixtures import PAYLOADS

from t3vis.errors import QueryError
from t3vis.store import Run, RowReader, RunWriter
from t3vis.store.search import TextSearch, parse
from t3vis.ui.explorer import Explorer, counts_text
from t3vis.ui.state import ExplorerState

#: Words the random texts are made of: case variants, unicode, punctuation inside and at the ends, prefixes of
#: each other (whole-word matching), digits.
VOCAB = ["market", "Market", "MARKET", "markets", "supermarket", "bank", "banking", "Bank", "café", "CAFÉ", "naïve",
         "über", "Über", "σοφία", "ΣΟΦΊΑ", "東京", "u.s.", "U.S.", "e-mail", "#ai", "don't", "new", "york", "New",
         "York", "_x", "42", "4.2", "x42", "(a+b)*", "[z]", "ǅemal"]
SEPARATORS = [" ", " ", " ", "  ", ", ", ". ", "!", "\n", "\t", "—", "(", ")", '"', "", "-", "/"]
QUERIES = ["market", "MARKET", "bank market", "café", "über", "σοφία", "東京", "u.s.", "U.S.", "e-mail", "#ai",
           "don't", "42", "4.2", "_x", "(a+b)*", "[z]", "ǅemal", "york new", "x", "mark", "ai",
           '"new york"', '"NEW york" market', '"u.s. bank"', '"don\'t"', 'new "york']
REGEXES = ["mark(et)?s?", "caf[eé]", "ba.k", "[0-9]+\\.[0-9]", "^new", "東京|σοφία", "(?:e-mail|#ai)", "über",
           "Market", "k\\s+[a-z]", "a{2,}", "x4?2"]
N = 700
CHUNK = 7  # stored text chunk rows: many chunk and block boundaries


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        k = int(rng.integers(0, 10))
        parts = []
        for _ in range(k):
            parts += [VOCAB[rng.integers(len(VOCAB))], SEPARATORS[rng.integers(len(SEPARATORS))]]
        texts.append("".join(parts))
    return texts


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


def occurs(text: str, words: list[str], case: bool) -> bool:
    """Brute force: ``words`` in sequence (white space between), whole words, at some position of ``text``."""
    fold = (lambda s: s) if case else str.lower  # the vocabulary has no letter whose lower() differs from folding
    t = fold(text)
    for i in range(len(t)):
        at = i
        for j, w in enumerate(fold(w) for w in words):
            if j:  # white space between the words of a phrase
                if at >= len(t) or t[at] not in " \t\n\r\f":
                    break
                while at < len(t) and t[at] in " \t\n\r\f":
                    at += 1
            if not t.startswith(w, at):
                break
            at += len(w)
        else:
            first, last = fold(words[0]), fold(words[-1])
            if _word(first[0]) and i > 0 and _word(t[i - 1]):
                continue
            if _word(last[-1]) and at < len(t) and _word(t[at]):
                continue
            return True
    return False


def reference(texts: list[str], query: str, *, regex=False, case=False, phrase=False) -> np.ndarray:
    """The rows a researcher expects, by a Python loop over every text."""
    if regex:
        pattern = re.compile(query, 0 if case else re.IGNORECASE)
        hit = [pattern.search(t) is not None for t in texts]
    else:
        parts = query.split('"')
        terms = [[query.split()]] if phrase else [[p.split()] if i % 2 else [[w] for w in p.split()]
                                                   for i, p in enumerate(parts)]
        terms = [t for group in terms for t in group if t]
        hit = [all(occurs(t, words, case) for words in terms) for t in texts]
    return np.flatnonzero(hit).astype(np.int64)


def write_run(path, texts: list[str], chunk_rows: int = CHUNK) -> Run:
    n = len(texts)
    frame = pd.DataFrame({"text": texts, "label": np.arange(n) % 2, "split": "train"})
    RunWriter.create(path, examples=frame, label_names=["a", "b"], chunk_rows=chunk_rows, name="search",
                     model={"name_or_path": "x", "model_type": "bert", "num_layers": 1, "num_heads": 1,
                            "hidden_size": 4}, dataset={"name": "search"})
    return Run(str(path))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    texts = random_texts(N)
    return texts, write_run(tmp_path_factory.mktemp("search") / "run", texts)


def searchers(run: Run) -> list[TextSearch]:
    """Block/cache/thread variants of the run's own (RE2 compiles per block: few blocks keep the test quick):
    streamed (no cache, blocks of 3 chunks), partly cached in 3 threads, one thread."""
    reader = RowReader(run._column_array("text"))
    return [TextSearch(reader, cache_bytes=0, block_rows=20), TextSearch(reader, cache_bytes=3000, block_rows=99,
                                                                        threads=3),
            TextSearch(reader, block_rows=CHUNK * 25, threads=1)]


@pytest.mark.parametrize("case", [False, True])
def test_words_and_phrases_equal_the_reference(text_run, case):
    texts, run = text_run
    assert run._column_array("text").chunks == (CHUNK,)
    variants = searchers(run)
    for i, query in enumerate(QUERIES):
        expect = reference(texts, query, case=case)
        got = run.search(query, case=case)
        assert got.dtype == np.int64 and np.array_equal(got, expect), (query, case)
        for searcher in variants[i % 3:][:1]:
            for _ in range(2):  # cold, then from the cache
                assert np.array_equal(searcher.search(query, case=case), expect), (query, case)
    # the searches are not trivial: some queries hit some rows and miss others, case matters
    sizes = {q: len(reference(texts, q, case=case)) for q in QUERIES}
    assert sum(0 < s < N for s in sizes.values()) >= len(QUERIES) // 2
    if case:
        assert not np.array_equal(run.search("MARKET", case=True), run.search("MARKET"))


@pytest.mark.parametrize("case", [False, True])
def test_a_whole_query_as_one_phrase(text_run, case):
    texts, run = text_run
    for query in ["new york", "York new", "u.s. bank", "market market", "don't café"]:
        assert np.array_equal(run.search(query, phrase=True, case=case),
                              reference(texts, query, phrase=True, case=case)), query


@pytest.mark.parametrize("case", [False, True])
def test_regexes_equal_pythons_re(text_run, case):
    texts, run = text_run
    for pattern in REGEXES:
        expect = reference(texts, pattern, regex=True, case=case)
        assert np.array_equal(run.search(pattern, regex=True, case=case), expect), pattern
        assert np.array_equal(searchers(run)[1].search(pattern, regex=True, case=case), expect), pattern


def test_whole_words_and_hits_to_highlight():
    q = parse("bank u.s.")
    text = "Banking? no: BANK, U.S.A. and the bank"
    assert q.spans(text) == [(13, 17), (19, 23), (34, 38)]
    assert [text[a:b] for a, b in parse('"and the"').spans(text)] == ["and the"]
    assert parse(r"\pL+", regex=True).spans("abc") == []  # valid in RE2, not in Python's re: nothing marked
    assert parse("BANK", case=True).spans(text) == [(13, 17)]


@pytest.mark.parametrize("query, regex, says", [
    ("", False, "the query is empty"), ("   ", False, "the query is empty"), ('""', False, "the query is empty"),
    ("(unclosed", True, "missing )"), ("(?<=a)b", True, "lookarounds"), ("[z-a]", True, "invalid character class"),
])
def test_bad_queries_say_what_is_wrong(text_run, query, regex, says):
    _, run = text_run
    with pytest.raises(QueryError, match=re.escape(says)) as info:
        run.search(query, regex=regex)
    assert "\n" not in str(info.value) and str(info.value).startswith("search: ")


# ---------------------------------------------------------------------------------------------------- explorer
def test_search_combines_with_filters_and_brush_in_the_one_mask(small_run):
    state = ExplorerState(str(small_run))
    run, n = state.data.run, state.n_total
    texts = list(run.text(slice(None)))
    state.search = "market"
    found = np.zeros(n, bool)
    found[reference(texts, "market")] = True
    assert 0 < found.sum() < n and np.array_equal(state.mask, found)
    assert state.n_selected == state.n_filtered == found.sum()
    assert counts_text(state).startswith(f"Nothing brushed · **{found.sum():,}** after filters and search")

    state.set_filter("label", ["business", "sport"])
    labels = np.asarray(run.label_names)[run.column("label")]
    expect = found & np.isin(labels, ["business", "sport"])
    assert np.array_equal(state.mask, expect) and state.n_filtered == expect.sum()

    x, y = state.data.xy(state.spec("a"))
    bounds = (np.quantile(x, 0.2), np.quantile(y, 0.2), np.quantile(x, 0.8), np.quantile(y, 0.8))
    state.select_box(state.spec("a"), bounds)
    brushed = (x >= bounds[0]) & (x <= bounds[2]) & (y >= bounds[1]) & (y <= bounds[3])
    assert np.array_equal(state.mask, expect & brushed) and 0 < state.n_selected < expect.sum()
    assert state.n_filtered == expect.sum()

    state.search_case = True  # "market" in lower case only: the synthetic texts are lower case, nothing changes
    assert np.array_equal(state.mask, expect & brushed)
    state.search = "MARKET"
    assert state.n_selected == 0
    state.search = ""
    assert np.array_equal(state.mask, np.isin(labels, ["business", "sport"]) & brushed)
    assert counts_text(state).endswith(f"after filters · {n:,} examples")


def test_on_a_running_event_loop_the_search_runs_off_it_and_the_newest_query_wins(small_run):
    state = ExplorerState(str(small_run))
    texts = list(state.data.run.text(slice(None)))

    async def settle():
        for _ in range(500):
            await asyncio.sleep(0.01)
            if not state.searching:
                break
        await asyncio.sleep(0.05)  # time for a superseded query to finish too: had it been kept, it lands now

    async def scenario():
        state.search = "bank"
        assert state.n_filtered == state.n_total  # the assignment returned before the search ran
        await asyncio.sleep(0)
        assert state.searching and state.n_filtered == state.n_total  # running in a thread: the loop is ours
        state.search = ""  # cleared while "bank" runs: the clear applies at once, "bank" must not land after it
        await settle()
        cleared = (state.search_query, state.n_filtered)
        state.search = "market"
        await settle()
        return cleared

    cleared = asyncio.run(scenario())
    assert cleared == (None, state.n_total)
    assert state.search_query.terms[0].needle == "market" and not state.searching
    assert np.array_equal(np.flatnonzero(state.mask), reference(texts, "market"))


def test_a_bad_query_keeps_the_rows_and_says_why(small_run):
    explorer = Explorer(str(small_run))
    state, table = explorer.state, explorer.table
    state.search = "bank"
    rows, bank = table.table.value.index.to_numpy(), state.data.run.search("bank")
    state.param.update(search_regex=True, search="bank(")
    assert "not a valid regular expression" in state.search_message and "missing )" in state.search_message
    assert explorer.search_message.object == state.search_message  # shown as text (a plain str)
    assert state.n_selected == len(bank) and np.array_equal(np.flatnonzero(state.mask), bank)  # the last good one
    assert np.array_equal(table.table.value.index.to_numpy(), rows)
    state.search = "bank|market"
    assert state.search_message == "" and state.n_selected > len(bank)


class Parsed(HTMLParser):
    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text, self.marked = [], [], [], []
        self._in_mark = False
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        self._in_mark = tag == "mark"

    def handle_endtag(self, tag):
        self._in_mark = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_mark:
            self.marked.append(data)


def test_the_table_marks_hits_as_text(tmp_path):
    texts = [f"{p} bank <mark>x</mark> {p}" for p in PAYLOADS] + ["no hit here " * 30 + "bank"] * 3
    explorer = Explorer(str(write_run(tmp_path / "xss", texts, chunk_rows=4).loc.root))
    state, table = explorer.state, explorer.table
    state.search = "bank"
    cells = list(table.table.value["text"])
    assert len(cells) == len(texts)
    for cell, text in zip(cells[: len(PAYLOADS)], texts):
        got = Parsed(cell)
        assert got.tags == ["mark"] and got.attrs == []  # the only tag is ours; the payloads are text
        shown = text if len(text) <= 160 else text[:159] + "…"
        assert "".join(got.text) == shown and got.marked == ["bank"]
    long = Parsed(cells[-1])  # cut for the table: the hit past the cut is not marked, the text ends with "…"
    assert long.tags == [] and "".join(long.text).endswith("…") and len("".join(long.text)) == 160
    state.search = "hit"
    assert Parsed(table.table.value["text"].iloc[-1]).marked == ["hit"] * 13


# ---------------------------------------------------------------------------------------------------- browser
@pytest.mark.browser
def test_typing_a_query_in_the_browser_changes_count_and_table(small_page, tmp_path):
    from playwright.sync_api import expect

    page, explorer = small_page
    state = explorer.state
    expect_n = len(state.data.run.search("market profit"))
    assert 0 < expect_n < SMALL_N  # noqa: F405
    box = page.get_by_label("Search text")
    box.fill("market profit")
    box.press("Enter")
    try:
        expect(page.get_by_text(re.compile(rf"rows 1–20 of {expect_n:,}$"))).to_be_visible(timeout=30_000)
        expect(page.get_by_text(re.compile(rf"^Nothing brushed · {expect_n:,} after filters and search"))
               ).to_be_visible(timeout=30_000)
    except AssertionError:
        page.screenshot(path=str(tmp_path / "search-failed.png"), full_page=True)
        raise
    marks = page.locator(".tabulator-cell mark")
    expect(marks.first).to_be_visible()
    assert {m.inner_text().lower() for m in marks.all()} == {"market", "profit"}
    first = page.locator(".tabulator-row").first.inner_text()
    assert "market" in first.lower() and "profit" in first.lower()

    page.get_by_text("Regex").click()  # a bad regex: a message, the table stays
    expect(page.get_by_text(re.compile(r"rows 1–20 of \d"))).to_be_visible()
    box.fill("market(")
    box.press("Enter")
    expect(page.get_by_text("is not a valid regular expression", exact=False)).to_be_visible(timeout=30_000)
    assert state.n_selected == len(state.data.run.search("market profit", regex=True))
    expect(page.get_by_text(re.compile(r"rows 1–20 of \d"))).to_be_visible()
    time.sleep(0.5)
    assert page.locator(".tabulator-row").count() == 20
