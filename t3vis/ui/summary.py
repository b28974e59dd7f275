"""Selection summary: what the current selection (filters AND brush AND search) has in common.

Three parts, for the rows in ``state.mask``:

- label x prediction counts (the chosen checkpoint's predictions, else the last epoch's), label names from the run;
- histograms of the mislabel score and the loss, the selection against the whole run (each as a fraction of its
  rows, so shapes compare whatever the sizes);
- the words that most drive the selection's predictions: mean saliency (the registry's default method) over a
  seeded sample of at most 256 selected examples, computed on demand on the model server (`asaliency_many`) with
  progress and a Cancel button that stops the batches not yet started. Clicking a word searches for it.

Counts and histograms follow every change of the mask (a few array passes); the words cost seconds of model time
on a shared server, so they are computed when asked and marked stale when the selection changes. The arithmetic is
in :mod:`t3vis.analysis.summary`; word-pieces are merged into words as the instance view shows them
(`tokens.token_units`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import panel as pn
import param

from ..analysis.datamaps import MISLABEL_COLUMN, default_score, preference_for, run_score_names
from ..analysis.saliency import METHODS, label_of
from ..analysis.summary import (
    MAX_SAMPLE,
    Histogram,
    WordScore,
    bin_values,
    compare,
    confusion_from_codes,
    pair_codes,
    sample_rows,
    top_words,
)
from ..errors import T3VisError
from ..serving import Encoding, acall, session_model
from .state import ExplorerState
from .text import HTML, HTMLPane, Markdown, MarkdownPane
from .tokens import ATTENTION, sequential_colours, token_units, unit_sums
from .widgets import ClickableHTML

#: The saliency method the words come from: the registry's default.
METHOD = METHODS[0]
#: Per-row codes (label x prediction pairs, histogram bins) kept per process: computed once per run, column and
#: checkpoint (~2 s at 10M rows), shared by every session, so a brush costs one count over the mask (~0.1 s).
CODES_KEPT = 8
_CODES: OrderedDict = OrderedDict()
_CODES_LOCK = threading.Lock()


def shared_codes(data, key: tuple, compute):
    """``compute()`` for ``key`` of run ``data`` (a `RunData`), once per process; the entry keeps ``data`` alive,
    so its ``id`` stays its own while cached. Read-only: never mutate what it returns."""
    key = (id(data), *key)
    with _CODES_LOCK:
        if key in _CODES:
            _CODES.move_to_end(key)
            return _CODES[key][1]
    value = compute()
    with _CODES_LOCK:
        _CODES[key] = (data, value)
        while len(_CODES) > CODES_KEPT:
            _CODES.popitem(last=False)
    return value


# ---------------------------------------------------------------------------------------------------- pure parts
def example_words(encoding: Encoding, scores: np.ndarray) -> list[tuple[str, float]]:
    """An example's words (word-pieces merged, as the instance view shows them) with their summed relevance;
    special tokens left out."""
    units = token_units(encoding, merge_words=True)
    return [(u.text, float(v)) for u, v in zip(units, unit_sums(scores, units)) if not u.special]


def confusion_html(counts: np.ndarray, names) -> HTML:
    """A label x prediction table of counts with totals; cells shaded by count, the diagonal in bold."""
    cell = HTML('<td style="background:{};color:{};text-align:right;padding:2px 8px{}" title="label {}, '
                'predicted {}: {:,}">{:,}</td>')
    head = HTML('<th style="padding:2px 8px;text-align:right">{}</th>')
    colours = sequential_colours(counts.ravel().astype(float), ATTENTION)
    parts = [HTML('<table class="confusion" style="border-collapse:collapse;font-size:13px">'),
             HTML('<tr><th style="padding:2px 8px">label \\ prediction</th>')]
    parts += [head.format(name) for name in names] + [head.format("total"), HTML("</tr>")]
    k = len(names)
    for i, name in enumerate(names):
        parts.append(HTML('<tr data-label="{}">').format(i) + head.format(name))
        for j in range(k):
            background, ink = colours[i * k + j]
            bold = HTML(";font-weight:bold") if i == j else HTML("")
            parts.append(cell.format(background, ink, bold, name, names[j], int(counts[i, j]), int(counts[i, j])))
        parts.append(HTML('<td style="text-align:right;padding:2px 8px">{:,}</td></tr>').format(int(counts[i].sum())))
    parts.append(HTML("<tr>") + head.format("total"))
    parts += [HTML('<td style="text-align:right;padding:2px 8px">{:,}</td>').format(int(c)) for c in counts.sum(0)]
    parts.append(HTML('<td style="text-align:right;padding:2px 8px">{:,}</td></tr></table>').format(int(counts.sum())))
    return HTML("").join(parts)


def fractions(counts: np.ndarray) -> np.ndarray:
    """Counts per bin as fractions of their rows."""
    return counts / max(int(counts.sum()), 1)


def histogram_html(hist: Histogram, title: str, height: int = 80) -> HTML:
    """The whole run (grey) and the selection (purple) as fractions of their rows per bin, as bars in HTML: a
    brush redraws it in about a millisecond (a new Bokeh figure per brush and histogram cost ~250 ms at 1M rows)."""
    whole, picked = fractions(hist.whole), fractions(hist.selected)
    top = max(float(whole.max(initial=0)), float(picked.max(initial=0))) or 1.0
    bar = HTML('<div title="{:.4g} to {:.4g}: {:.1%} of the run, {:.1%} of the selection" style="flex:1;'
               'position:relative;height:{}px"><div style="position:absolute;bottom:0;left:0;right:0;height:{:.1f}px;'
               'background:#bbbbbb"></div><div style="position:absolute;bottom:0;left:20%;right:20%;height:{:.1f}px;'
               'background:#753fab;opacity:0.85"></div></div>')
    parts = [HTML('<div class="t3-hist"><div style="font-weight:600">{}</div>'
                  '<div style="display:flex;gap:1px;align-items:flex-end">').format(title)]
    parts += [bar.format(lo, hi, w, p, height, height * w / top, height * p / top)
              for lo, hi, w, p in zip(hist.edges[:-1], hist.edges[1:], whole, picked)]
    parts.append(HTML('</div><div style="display:flex;justify-content:space-between;font-size:11px;color:#555">'
                      '<span>{:.3g}</span><span>{:.3g}</span></div><div style="font-size:11px">'
                      '<span style="color:#bbbbbb">&#9632;</span> whole run &nbsp;<span style="color:#753fab">'
                      '&#9632;</span> selection</div></div>').format(hist.edges[0], hist.edges[-1]))
    return HTML("").join(parts)


def words_html(words: list[WordScore]) -> HTML:
    """One clickable row per word (``data-click="word:<i>"``): the word, a bar for its mean, count of examples."""
    if not words:
        return HTML("")
    scale = max(abs(w.mean) for w in words) or 1.0
    row = HTML('<div class="tok" data-click="word:{}" title="search for {}" style="display:flex;gap:8px;'
               'align-items:center;padding:1px 4px"><span style="min-width:9em">{}</span><span style="width:{:.0f}px;'
               'height:10px;background:#d62728;display:inline-block"></span><span>{:+.3g}</span>'
               '<span style="color:#666">in {:,} examples ({:,}×)</span></div>')
    parts = [HTML('<div class="words">')]
    parts += [row.format(i, w.word, w.word, 120 * max(w.mean, 0) / scale, w.mean, w.examples, w.count)
              for i, w in enumerate(words)]
    parts.append(HTML("</div>"))
    return HTML("").join(parts)


# ---------------------------------------------------------------------------------------------------- the view
class SelectionSummary(pn.viewable.Viewer):
    """Confusion counts, score and loss histograms, and the top words of the current selection."""

    state = param.ClassSelector(class_=ExplorerState)
    bins = param.Integer(default=30, bounds=(2, 200), doc="Histogram bins.")
    words = param.List(default=[], doc="The top words shown (WordScore), best first.")
    shown = param.Boolean(default=True, doc="Whether the summary is on screen (its tab is open). Off screen a "
                          "brush costs it nothing: it catches up when shown.")

    def __init__(self, **params):
        super().__init__(**params)
        self.model = session_model(self.state)
        self._cancel: threading.Event | None = None
        self._words_for = None  # the selection the words were computed for (`_selection_key`)
        self.last_run: dict = {}  # the last word search: examples planned and done, progress reports
        self._header = MarkdownPane("", sizing_mode="stretch_width")
        self._confusion = HTMLPane("", sizing_mode="stretch_width")
        self._plots = pn.Row(sizing_mode="stretch_width")
        self.histograms: dict = {}  # column -> the Histogram drawn (selection against the whole run)
        self._behind = False  # the mask changed while off screen
        self._explain = pn.widgets.Button(label=f"Find top words (up to {MAX_SAMPLE} examples)", color="primary")
        self._explain.on_click(self._on_explain)
        self._stop = pn.widgets.Button(label="Cancel", visible=False)
        self._stop.on_click(lambda event: self.cancel())
        self._progress = pn.indicators.Progress(value=0, max=100, visible=False, sizing_mode="stretch_width")
        self._status = MarkdownPane("", sizing_mode="stretch_width")
        self._words = ClickableHTML(on_click=self._on_click)
        self._layout = pn.Column(
            self._header, self._confusion, self._plots,
            MarkdownPane(Markdown("**What drives the predictions**: mean saliency ({}) of each word for the "
                                  "predicted class; click a word to search for it.").format(label_of(METHOD))),
            pn.Row(self._explain, self._stop), self._progress, self._status, self._words,
            sizing_mode="stretch_width", name="Selection summary")
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.on_session_destroyed(lambda context: self.cancel())
        self.refresh()

    def __panel__(self):
        return self._layout

    # ------------------------------------------------------------------ counts and histograms
    def predictions(self) -> tuple[str | None, str | None, str]:
        """The prediction attribute the counts use, its checkpoint, and where it comes from in words: the chosen
        checkpoint's stored predictions, else the last epoch's; ``(None, None, "")`` when the run has neither."""
        state, data = self.state, self.state.data

        def stored() -> bool:  # a metadata read: once per checkpoint, not on every brush
            return (state.checkpoint is not None and "pred" in data.attributes
                    and state.run.checkpoint(state.checkpoint).has("pred"))

        if shared_codes(data, ("has pred", state.checkpoint), stored):
            return "pred", state.checkpoint, f"checkpoint {state.checkpoint}"
        if "prediction" in data.attributes:
            return "prediction", None, "the last epoch"
        return None, None, ""

    @param.depends("state.mask", "state.run", "state.checkpoint", watch=True)
    def refresh(self) -> None:
        """Counts and histograms for the current mask; a word search under way is for a selection now gone."""
        state, data = self.state, self.state.data
        self.cancel()
        self._mark_stale()
        self._behind = not self.shown
        if self._behind:
            return
        if data is None:
            self._header.object = Markdown("**Selection summary** · open a run.")
            self._confusion.object, self._plots.objects, self.histograms = "", [], {}
            self._explain.disabled = True
            return
        self._explain.disabled = state.n_selected == 0
        self._header.object = Markdown("**Selection summary** · {:,} of {:,} examples").format(
            state.n_selected, state.n_total)
        preds, checkpoint, source = self.predictions()
        k = len(data.label_names)
        if preds is None or "label" not in data.attributes:
            self._confusion.object = HTML("No label x prediction counts: the run has no predictions yet (run "
                                          "<code>t3vis pipeline RUN</code>).")
        else:
            codes = shared_codes(data, ("pairs", preds, checkpoint), lambda: pair_codes(
                data.values("label"), data.values(preds, checkpoint), k))
            counts = confusion_from_codes(codes, k, state.mask)
            self._confusion.object = HTML("<div>Label x prediction ({})</div>").format(source) + confusion_html(
                counts, data.label_names)
        columns = self._histogram_columns()
        if len(self._plots.objects) != len(columns):
            self._plots.objects = [HTMLPane("", sizing_mode="stretch_width") for _ in columns]
        self.histograms = {}
        for pane, (name, title) in zip(self._plots.objects, columns):
            binned = shared_codes(data, ("bins", name, state.checkpoint, self.bins),
                                  lambda: bin_values(data.values(name, state.checkpoint), self.bins))
            self.histograms[name] = compare(binned, state.mask)
            pane.object = histogram_html(self.histograms[name], title)

    @param.depends("shown", watch=True)
    def _catch_up(self) -> None:
        if self.shown and self._behind:
            self.refresh()

    def _histogram_columns(self) -> list[tuple[str, str]]:
        data = self.state.data
        out = []
        if MISLABEL_COLUMN in data.attributes:  # which score it is: a metadata read, once per run
            run = self.state.run
            name = shared_codes(data, ("default score",),
                                lambda: default_score(run_score_names(run), preference_for(run)).name)
            out.append((MISLABEL_COLUMN, f"mislabel score ({name})"))
        if "loss" in data.attributes:
            out.append(("loss", "loss"))
        return out

    # ------------------------------------------------------------------ words
    def cancel(self) -> None:
        """Stop the word search under way (batches not yet started never run)."""
        if self._cancel is not None and not self._cancel.is_set():
            self._cancel.set()
            self._status.object = Markdown("Cancelling: waiting for the batch under way…")

    def _selection_key(self) -> tuple:
        state = self.state
        return id(state.run), state.checkpoint, state.mask_rev

    def _mark_stale(self) -> None:
        if self.words and self._words_for != self._selection_key():
            self._status.object = Markdown("These words are from an earlier selection: find them again for this "
                                           "one.")

    def _on_click(self, key: str) -> None:
        kind, _, value = key.partition(":")
        if kind == "word" and value.isdigit() and int(value) < len(self.words):
            self.state.param.update(search=self.words[int(value)].word, search_regex=False)

    async def _on_explain(self, event=None) -> None:
        await self.explain()

    def _texts_targets(self, rows: np.ndarray):
        """The sample's texts, and the classes to explain: the checkpoint's stored predictions (those the counts
        show), or None to let the server predict them."""
        state = self.state
        texts = [str(t) for t in state.data.text(rows)]
        preds, checkpoint, _ = self.predictions()
        return texts, state.data.values(preds, checkpoint)[rows] if preds == "pred" else None

    async def explain(self) -> list[WordScore] | None:
        """Attribute a seeded sample of the selection and show its top words (None when cancelled or superseded
        before any batch ended, or on a model error, which the page shows)."""
        state = self.state
        if state.run is None or state.n_selected == 0:
            return None
        self.cancel()
        cancel = self._cancel = threading.Event()
        key = self._selection_key()
        rows = sample_rows(state.rows())
        self._explain.disabled, self._stop.visible = True, True
        self._progress.visible, self._progress.value = True, 0
        self._status.object = Markdown("Attributing {:,} examples…").format(len(rows))
        self.last_run = {"planned": len(rows), "done": 0, "progress": []}

        def progress(done, total):
            self.last_run["progress"].append(done)
            if not cancel.is_set():  # once cancelled, the page says so: the batches still running are not news
                self._progress.value = int(100 * done / max(total, 1))
                self._status.object = Markdown("Attributing: {:,} of {:,} examples…").format(done, total)

        try:
            server = await self.model.server()
            texts, targets = await acall(self._texts_targets, rows)
            results = await server.asaliency_many(texts, targets, METHOD, max_length=state.run.max_length,
                                                  progress=progress, cancel=cancel)
        except T3VisError as err:
            self._status.object = Markdown("Cannot attribute the selection: {}").format(err)
            return None
        finally:
            current = self._cancel is cancel  # else a newer search took over: it reports
            if current:
                self._cancel = None
                self._progress.visible, self._stop.visible = False, False
                self._explain.disabled = state.n_selected == 0
        done = [r for r in results if r is not None]
        self.last_run["done"] = len(done)
        if not current:
            return None
        if key != self._selection_key():
            self._status.object = Markdown("Stopped: the selection changed; find the words again for this one.")
            return None
        if not done:
            self._status.object = Markdown("Cancelled before any example was attributed.")
            return None
        self.words = top_words(example_words(encoding, scores) for encoding, scores in done)
        self._words_for = key
        note = Markdown("{:,} examples").format(len(done))
        if len(done) < len(rows):
            note = Markdown("Cancelled: words from the {:,} of {:,} examples done").format(len(done), len(rows))
        elif state.n_selected > len(rows):
            note += Markdown(" (a seeded sample of the {:,} selected)").format(state.n_selected)
        self._status.object = note + Markdown(". Mean saliency per word for the predicted class; words made only of "
                                              "punctuation are left out.")
        self._words.html = words_html(self.words)
        return self.words
