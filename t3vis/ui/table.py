"""The data table: the rows in the state's mask, one page at a time, sorted server-side.

Tabulator only ever receives one page (``page_size`` rows): handing it millions of rows costs seconds per
update. Paging and sorting happen here over the mask (``order.page_order`` partitions instead of sorting all
rows); text is read only for the page, escaped, with the search's hits marked. Clicking a row sets
``state.example`` for the instance view.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import panel as pn
import param

from ..analysis.sentences import marked_sentences
from ..paths import export_filename
from .data import CATEGORICAL, TEXT_PREVIEW_CHARS
from .order import page_order
from .state import ExplorerState
from .text import HTML_CELLS, Markdown, MarkdownPane, escape_html, marked

#: Columns the table shows, in order: one source per row. With training dynamics every model value comes from them
#: (``datamaps.datamap_columns``, the names ``t3vis export`` writes); without, from the chosen checkpoint.
DYNAMICS_COLUMNS = ("text", "label", "prediction", "confidence", "variability", "correctness", "mislabel_score",
                    "split")
CHECKPOINT_COLUMNS = ("text", "label", "pred", "loss", "split")
#: A token run's rows are words: the word's sentence, with the word marked, follows it.
WORD_COLUMNS = ("context",)
#: A token run in the sentence unit: a row per sentence (at its weakest word, which the sentence marks).
SENTENCE_TEXT, WORD = "sentence_text", "word"
SENTENCE_TABLE = (SENTENCE_TEXT, "sentence_words", "sentence_wrong_tags", "sentence_confidence",
                  "sentence_variability", "sentence_correctness", "sentence_mislabel_score", "text", "label",
                  "prediction", "split")
#: The sentence unit's tooltips for the columns of the word a row stands for.
SENTENCE_TOOLTIPS = {SENTENCE_TEXT: "The whole sentence; «» mark the word this row stands for (its weakest word).",
                     WORD: "The sentence's weakest word (lowest confidence): its point in the sentence data map.",
                     "label": "The given tag of the sentence's weakest word.",
                     "prediction": "The tag the model gives the sentence's weakest word (last epoch)."}
#: Columns of text: shown, not sorted.
UNSORTABLE = ("text", "context", SENTENCE_TEXT, WORD)
#: At most this many rows go into a CSV export (the file says so when it is cut).
EXPORT_MAX_ROWS = 1_000_000
EXPORT_CHUNK_ROWS = 50_000
#: The buttons column whose click shows a row's nearest neighbours.
SIMILAR = "similar"


class DataTable(pn.viewable.Viewer):
    """Paged, sortable table of the selected (and filtered) examples, with CSV export."""

    state = param.ClassSelector(class_=ExplorerState)
    page = param.Integer(default=1, bounds=(1, None), doc="Current page, 1-based.")
    page_size = param.Integer(default=20, bounds=(1, 500))
    sort_by = param.String(default=None, allow_None=True, doc="Column to sort by; None = example order.")
    ascending = param.Boolean(default=True)

    def __init__(self, **params):
        super().__init__(**params)
        self.table = pn.widgets.Tabulator(
            empty_page(), pagination=None, disabled=True, selectable=False, show_index=True,
            sizing_mode="stretch_width", height=340, layout="fit_data_table",
            widths={"text": 420, SENTENCE_TEXT: 420}, sortable={c: False for c in UNSORTABLE},
            formatters={"text": HTML_CELLS},
            configuration={"columnDefaults": {"headerTooltip": True}})
        self.table.on_click(self._on_click)
        self.table.buttons = {SIMILAR: "≈"}  # a column of buttons: its click shows that row's neighbours
        self.table.param.watch(self._on_sorters, "sorters")
        self._prev = pn.widgets.Button(label="◀", width=45, disabled=True)
        self._next = pn.widgets.Button(label="▶", width=45, disabled=True)
        self._prev.on_click(lambda e: self._step(-1))
        self._next.on_click(lambda e: self._step(+1))
        self._info = MarkdownPane("", margin=(5, 10))
        self._similar = pn.widgets.Button(label="Similar to selection", width=160,
                                          description="The nearest neighbours of the centroid of the rows shown")
        self._similar.on_click(lambda e: self.state.find_similar())
        self._clear_neighbours = pn.widgets.Button(label="Back to selection", width=150, visible=False)
        self._clear_neighbours.on_click(lambda e: self.state.clear_neighbours())
        self.download = pn.widgets.FileDownload(callback=self.csv, filename="t3vis-selection.csv",
                                                label="Export CSV", color="primary", width=140)
        self._total = 0
        self.refresh()

    def __panel__(self):
        return pn.Column(pn.Row(self._prev, self._next, self._info, pn.layout.HSpacer(), self._similar,
                                self._clear_neighbours, self.download),
                         self.table, sizing_mode="stretch_width")

    # ------------------------------------------------------------------ data
    def columns(self) -> list[str]:
        data = self.state.data
        if data is None:
            return []
        if self.state.sentence_unit:
            return [c for c in SENTENCE_TABLE if c in ("text", SENTENCE_TEXT) or c in data.attributes]
        shown = DYNAMICS_COLUMNS if data.has_dynamics else CHECKPOINT_COLUMNS
        shown = shown[:1] + WORD_COLUMNS + shown[1:]  # a token run's word in its sentence (absent elsewhere)
        return [c for c in shown if c == "text" or c in data.attributes or c in data.text_columns]

    def page_rows(self) -> np.ndarray:
        """Example indices on the current page, in display order."""
        state = self.state
        if state.data is None:
            return np.zeros(0, dtype=np.int64)
        start = (self.page - 1) * self.page_size
        stop = start + self.page_size
        if state.neighbours is not None:  # best first
            return state.neighbours.rows[start:stop]
        if state.mask is None and self.sort_by is None and not state.sentence_unit:  # no need to list 10M rows
            return np.arange(start, min(stop, state.n_total), dtype=np.int64)
        rows = state.unit_rows()
        values = None
        if self.sort_by is not None:
            values = state.data.values(self.sort_by, state.checkpoint)
        return page_order(values, rows, start, stop, self.ascending)

    def frame_of(self, rows: np.ndarray) -> pd.DataFrame:
        """``rows`` with the table's columns (whole texts): what a page shows and the CSV holds. In the sentence
        unit a row is a sentence: its text, its values, then its weakest word's (``word``, tag, prediction)."""
        state = self.state
        columns = self.columns()
        frame = state.data.rows(rows, [c for c in columns if c != SENTENCE_TEXT], state.checkpoint, text_chars=None)
        if SENTENCE_TEXT in columns:
            frame.insert(0, SENTENCE_TEXT, marked_sentences(state.data.sentences, state.data.text, frame.index))
            frame = frame.rename(columns={"text": WORD})
        return frame

    def page_frame(self) -> pd.DataFrame:
        data = self.state.data
        if data is None:
            return empty_page()
        frame = self.frame_of(self.page_rows())
        if "text" in frame:  # every text cell is HTML made by ``marked`` (escaped), search hits in <mark>
            query = self.state.search_query
            frame["text"] = [marked(t, query.spans(t) if query else (), TEXT_PREVIEW_CHARS) for t in frame["text"]]
        return frame

    @param.depends("state.mask_rev", "state.run", "state.unit", "state.neighbours", "state.neighbours_b",
                   "state.neighbours_message", watch=True)
    def _on_mask(self) -> None:
        if self.page != 1:
            self.page = 1  # triggers refresh
        else:
            self.refresh()

    @param.depends("page", "page_size", "sort_by", "ascending", "state.checkpoint", watch=True)
    def refresh(self) -> None:
        state = self.state
        neighbours = state.neighbours
        self._total = (0 if state.data is None else len(neighbours.rows) if neighbours is not None
                       else len(state.unit_rows()) if state.sentence_unit else state.n_selected)
        self._clear_neighbours.visible = neighbours is not None
        pages = max(1, math.ceil(self._total / self.page_size))
        if self.page > pages:
            self.page = pages
            return
        frame = with_similarity(self.page_frame(), neighbours)
        data = state.data
        if data is not None:
            # headers are the column names, as in the CSV export; tooltips say what each is and its source.
            # Tabulator renders titles and tooltips as HTML
            self.table.titles = {c: escape_html(c) for c in frame.columns}
            tips = {c: data.attributes[c].description for c in frame.columns
                    if c in data.attributes and data.attributes[c].description}
            if state.sentence_unit:
                tips.update({c: tip for c, tip in SENTENCE_TOOLTIPS.items() if c in frame.columns})
            self.table.header_tooltips = {c: escape_html(tip) for c, tip in tips.items()}
        self.table.value = frame
        first = (self.page - 1) * self.page_size + 1
        last = min(self.page * self.page_size, self._total)
        unit = "sentences" if state.sentence_unit and neighbours is None else "rows"
        info = (Markdown("{} {:,}–{:,} of {:,}").format(unit, first, last, self._total) if self._total
                else Markdown("no rows: nothing matches the selection, filters and search"))
        if self.sort_by:
            info += Markdown(" · sorted by {} {}").format(self.sort_by, "↑" if self.ascending else "↓")
        if neighbours is not None:
            info = neighbours.describe() + Markdown(" · ") + info + _shared(neighbours, state.neighbours_b)
        elif state.neighbours_message:
            info += Markdown(" · neighbours: {}").format(state.neighbours_message)
        self._info.object = info
        self._prev.disabled = self.page <= 1
        self._next.disabled = self.page >= pages

    def _step(self, delta: int) -> None:
        self.page = max(1, self.page + delta)

    def _on_sorters(self, event) -> None:
        """A header click sorts all selected rows (not just the page): map Tabulator's sorter to ours."""
        sorters = [s for s in (event.new or []) if s.get("field") not in UNSORTABLE]
        if not sorters:
            self.param.update(sort_by=None, ascending=True, page=1)
            return
        field = sorters[0]["field"]
        field = None if field in ("row", "index") else field
        self.param.update(sort_by=field, ascending=sorters[0].get("dir", "asc") == "asc", page=1)

    def _on_click(self, event) -> None:
        if event.row is None or self.table.value is None or not len(self.table.value):
            return
        self.state.example = int(self.table.value.index[event.row])
        if event.column == SIMILAR:
            self.state.find_similar(self.state.example)

    # ------------------------------------------------------------------ export
    def csv(self) -> io.StringIO:
        """The selected rows (full text), in the table's order, as CSV; at most ``EXPORT_MAX_ROWS`` rows."""
        state = self.state
        out = io.StringIO()
        if state.data is None:
            return out
        what = "sentences" if state.sentence_unit else "selection"
        self.download.filename = export_filename(state.run.name, what) + ".csv"
        rows = state.unit_rows()
        if self.sort_by is not None:
            rows = page_order(state.data.values(self.sort_by, state.checkpoint), rows, 0, len(rows), self.ascending)
        cut = len(rows) > EXPORT_MAX_ROWS
        total = len(rows)
        rows = rows[:EXPORT_MAX_ROWS]
        for i in range(0, max(1, len(rows)), EXPORT_CHUNK_ROWS):
            frame = _decoded(self.frame_of(rows[i:i + EXPORT_CHUNK_ROWS]), state)
            frame.to_csv(out, header=i == 0)
        if cut:
            out.write(f"# cut at {EXPORT_MAX_ROWS:,} of {total:,} selected rows\n")
        out.seek(0)
        return out


def empty_page() -> pd.DataFrame:
    """No rows, its index named as a page's is (Tabulator would title an unnamed one "index")."""
    return pd.DataFrame(index=pd.Index([], name="row"))


def with_similarity(frame: pd.DataFrame, neighbours) -> pd.DataFrame:
    """The page with each row's cosine similarity to the neighbours' query, second (rows not among them: none)."""
    if neighbours is None or frame.empty:
        return frame
    sims = pd.Series(neighbours.sims, index=neighbours.rows)
    frame.insert(0, "similarity", sims.reindex(frame.index).round(4).to_numpy())
    return frame


def _shared(neighbours, other) -> Markdown:
    """How many of the neighbours the comparison checkpoint also finds (compare mode): how the model's view moved."""
    if other is None:
        return Markdown("")
    shared = len(np.intersect1d(neighbours.rows, other.rows))
    return Markdown(" · {} of {} also neighbours in {}, layer {}").format(shared, len(neighbours.rows),
                                                                          other.checkpoint, other.layer)


def _decoded(frame: pd.DataFrame, state: ExplorerState) -> pd.DataFrame:
    """Categorical columns as their names (CSV readers should not need the codes)."""
    for col in frame.columns:
        if col in state.data.attributes and state.data.attributes[col].kind == CATEGORICAL:
            frame[col] = frame[col].astype(str)
    return frame
