"""The one state object of an explorer session: every view reads it and writes it, none keeps its own copy.

Views are thin: a plot turns a brush into ``select_box``/``select_lasso``, a widget sets ``color_by`` or a filter,
and every view redraws from ``mask`` (filters AND selection) when it changes. Masks are per session (one byte
per example); the columns they index are the process-wide read-only ``RunData``.

Long file: it is the session's one source of truth, its parameters documented where they are declared; split
in two, every view would have to know which half holds what.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import param

from ..analysis.saliency import METHODS, label_of
from ..errors import QueryError, StoreError
from ..store import Run
from ..store.search import Query, parse
from ..tasks import task_of
from . import masks
from .data import CATEGORICAL, CHECKPOINT, PlotSpec, RunData, run_data
from .text import Markdown

#: Saliency methods the instance view offers: the registry's keys (listing them imports no torch).
SALIENCY_METHODS = list(METHODS)
#: Default colouring, first one the run has.
DEFAULT_COLOR_BY = ("label", "pred", "confidence")
#: What a row of the table (and a point of the data map) is: a token run can show its sentences instead of words.
UNITS = ("words", "sentences")
#: The sidebar's choices whose options change with the run (``ExplorerState.open`` sets their defaults).
CHOICES = ("checkpoint", "method", "layer", "checkpoint_b", "method_b", "layer_b", "color_by")


class ExplorerState(param.Parameterized):
    """Per-session state of the explorer: what is shown, filtered, selected.

    Inputs (set by widgets, plots, or code):

    - ``run``: the open ``Run`` (``None`` until one is opened; use ``open``).
    - ``checkpoint``, ``method``, ``layer``: the projection of the main plot (and the checkpoint that
      per-checkpoint attributes such as loss and prediction are read from in the table and filters).
    - ``compare``: show a second projection beside the first, from ``checkpoint_b``/``method_b``/``layer_b``;
      ``link_axes`` shares their axes.
    - ``color_by``: attribute to colour by (``""`` = point density).
    - ``filters``: ``{attribute: (lo, hi)}`` for continuous ones, ``{attribute: (category, ...)}`` for categorical.
    - ``selection``: boolean mask over all examples from the last brush (box or lasso), ``None`` = no brush.
    - ``example``: the example (row index) chosen in the table, for the instance view.
    - ``search``: a text query (words, ``"a phrase"``; a regular expression with ``search_regex``; case-sensitive
      with ``search_case``), ``""`` = none. Its matches narrow ``filtered`` like a filter; a query that cannot
      run keeps the last good one's matches and says why in ``search_message``.
    - ``unit``: in a token run, ``"sentences"`` makes the table and data map show sentences (every sentence holding
      a word of ``mask``, each at its weakest word: ``unit_rows``); selection and filters stay per word.
    - ``neighbours_of``: a row (or an array of rows: their centroid) whose ``neighbour_k`` most similar examples
      the table lists and the plots mark (``find_similar``/``clear_neighbours``). Neighbours are not part of
      ``mask``: they are a list to read, not a narrowing, and compare mode shows a second list (``neighbours_b``).

    The attention-head and instance views read and write:

    - ``head``: the ``(layer, head)`` picked in the head grid, or ``None``.
    - ``pruned_heads``: tuple of ``(layer, head)`` pairs gated off when the model runs.
    - ``saliency_method``: one of ``SALIENCY_METHODS``; ``target_class``: class index saliency explains
      (``None`` = the predicted class).

    Outputs (read-only, recomputed when inputs change):

    - ``filtered``: mask of rows passing the filters (``None`` = all rows); ``mask``: ``filtered`` AND
      ``selection`` (``None`` = all rows), the rows every view shows; ``n_total``/``n_filtered``/``n_selected``.
    - ``message``: why something cannot be shown (bad run, missing projections/dynamics), empty when fine.
    """

    run = param.ClassSelector(class_=Run, default=None, allow_None=True, doc="The open run.")
    checkpoint = param.Selector(default=None, objects=[], allow_None=True, doc="Checkpoint of the main plot.")
    method = param.Selector(default=None, objects=[], allow_None=True, doc="Projection method (umap/tsne/pca).")
    layer = param.Selector(default=None, objects=[], allow_None=True, doc="Layer whose projection is shown.")
    compare = param.Boolean(default=False, doc="Show a second projection side by side.")
    checkpoint_b = param.Selector(default=None, objects=[], allow_None=True, label="Checkpoint (right)")
    method_b = param.Selector(default=None, objects=[], allow_None=True, label="Method (right)")
    layer_b = param.Selector(default=None, objects=[], allow_None=True, label="Layer (right)")
    link_axes = param.Boolean(default=False, doc="Pan/zoom both projections together.")
    color_by = param.Selector(default="", objects=[""], doc="Attribute the points are coloured by.")
    filters = param.Dict(default={}, doc="{attribute: (lo, hi) or (category, ...)}")
    selection = param.Parameter(default=None, doc="Boolean mask of the brushed examples, or None.")
    example = param.Integer(default=None, allow_None=True, doc="Example chosen for the instance view.")
    search = param.String(default="", doc='Text search: words, "a phrase" or (search_regex) a pattern; "" = none.')
    search_regex = param.Boolean(default=False, label="Regex", doc="The search query is a regular expression.")
    search_case = param.Boolean(default=False, label="Match case", doc="The search is case-sensitive.")
    unit = param.Selector(default="words", objects=list(UNITS), label="Show",
                          doc="A token run's unit in the table and data map: its words, or its sentences (those "
                              "holding a word of the mask, each shown at its weakest word).")

    head = param.Tuple(default=None, length=2, allow_None=True, doc="(layer, head) chosen in the head view.")
    pruned_heads = param.Parameter(default=(), doc="Tuple of (layer, head) pairs switched off (any length).")
    saliency_method = param.Selector(default=SALIENCY_METHODS[0], check_on_set=False,
                                     objects={label_of(m): m for m in SALIENCY_METHODS})  # widgets show the labels
    target_class = param.Integer(default=None, allow_None=True, doc="Class saliency explains; None = predicted.")
    neighbours_of = param.Parameter(default=None, doc="Row whose nearest neighbours are shown, an array of rows "
                                    "(their centroid's), or None.")
    neighbour_k = param.Integer(default=20, bounds=(1, 200), label="Neighbours", doc="How many neighbours.")
    neighbours = param.Parameter(default=None, constant=True, doc="``Neighbours`` in checkpoint/layer, or None.")
    neighbours_b = param.Parameter(default=None, constant=True, doc="The same query's in checkpoint_b/layer_b "
                                   "(compare mode), or None.")
    neighbours_message = param.String(default="", doc="Why neighbours cannot be shown (text); empty when fine.")

    filtered = param.Parameter(default=None, constant=True, doc="Rows passing the filters (None = all).")
    mask = param.Parameter(default=None, constant=True, doc="filtered AND selection (None = all rows).")
    has_selection = param.Boolean(default=False, constant=True)
    mask_rev = param.Integer(default=0, constant=True, doc="Bumped whenever ``mask`` changes (cheap to watch).")
    filtered_rev = param.Integer(default=0, constant=True, doc="Bumped whenever ``filtered`` changes.")
    n_total = param.Integer(default=0, constant=True)
    n_filtered = param.Integer(default=0, constant=True)
    n_selected = param.Integer(default=0, constant=True)
    message = param.String(default="", doc="Why something cannot be shown (``Markdown``); empty when all is well.")
    search_message = param.String(default="", doc="Why the search query cannot run (text); empty when it ran.")
    searching = param.Boolean(default=False, doc="A search query is running (its matches are not in the mask yet).")

    def __init__(self, run: "Run | str | None" = None, **params):
        self._data: RunData | None = None
        self._rows: tuple[int, np.ndarray] | None = None
        self._unit_rows: tuple[tuple, np.ndarray] | None = None
        self._searched: np.ndarray | None = None  # rows matching the search (None: no search)
        self._query: Query | None = None
        self._search_generation = 0  # bumped per query: a query that finishes after a newer one is dropped
        super().__init__(**params)
        if run is not None:
            self.open(run)

    # ------------------------------------------------------------------ run
    @property
    def data(self) -> RunData | None:
        """The shared, read-only columns of the open run."""
        return self._data if self.run is not None else None

    def open(self, run: "Run | str") -> None:
        """Open a run (object or path) and reset the view to its defaults; bad runs raise ``StoreError``."""
        run = run if isinstance(run, Run) else Run(str(run))
        data = run_data(run)
        self._data = data
        self._searched, self._query = None, None
        self._search_generation += 1  # a query still running on the previous run is dropped
        choices = data.projection_choices()
        with param.parameterized.batch_call_watchers(self):
            self.selection = None
            self.filters = task_of(run).default_filters(list(run.label_names))
            self.example = None
            self.search = ""
            self.search_message = ""
            self.head = None
            self.pruned_heads = ()
            self.target_class = None
            self.neighbours_of = None
            self.unit = "words"
            self.run = run
            ckpts = [c for c in data.checkpoints if choices[c]] or list(data.checkpoints)
            for suffix in ("", "_b"):
                self.param[f"checkpoint{suffix}"].objects = list(data.checkpoints)
            self.checkpoint = ckpts[-1] if ckpts else None
            self.checkpoint_b = ckpts[0] if ckpts else None
            for choice in ("method", "layer", "method_b", "layer_b"):  # the new run's defaults, not the old choice
                setattr(self, choice, None)
            self._sync_choices("")
            self._sync_choices("_b")
            self.param.color_by.objects = {"density": "", **{a.label: a.name for a in data.attributes.values()}}
            self.color_by = next((c for c in DEFAULT_COLOR_BY if c in data.attributes), "")
            self.message = _missing_message(data)
            self._update_masks()
            chosen = {name: getattr(self, name) for name in CHOICES}
        # a select linked to one of these, given its new options before its new value, writes its first option
        # back (panel#1963: a run opened in place, as in a notebook); now that both have arrived, set them again
        self.param.update({name: value for name, value in chosen.items() if getattr(self, name) != value})

    @param.depends("checkpoint", "method", watch=True)
    def _on_choice(self) -> None:
        self._sync_choices("")

    @param.depends("checkpoint_b", "method_b", watch=True)
    def _on_choice_b(self) -> None:
        self._sync_choices("_b")

    def _sync_choices(self, suffix: str) -> None:
        """Keep method/layer options to what the chosen checkpoint has, preferring the current choice."""
        data = self.data
        if data is None:
            return
        ckpt = getattr(self, f"checkpoint{suffix}")
        pairs = data.projection_choices().get(ckpt, [])
        methods = sorted({m for m, _ in pairs})
        mp, lp = self.param[f"method{suffix}"], self.param[f"layer{suffix}"]
        mp.objects = methods
        method = getattr(self, f"method{suffix}")
        if method not in methods:
            method = "umap" if "umap" in methods else (methods[0] if methods else None)
        layers = sorted({l for m, l in pairs if m == method})
        lp.objects = layers
        layer = getattr(self, f"layer{suffix}")
        if layer not in layers:
            layer = layers[-1] if layers else None
        self.param.update({f"method{suffix}": method, f"layer{suffix}": layer})

    # ------------------------------------------------------------------ plots
    def spec(self, which: str = "a") -> PlotSpec | None:
        """What plot ``a`` (main), ``b`` (comparison) or ``datamap`` shows; ``None`` if there is nothing to show."""
        if which == "datamap":
            return PlotSpec.datamap(self.unit if self.sentence_unit else "words") \
                if self.data is not None and self.data.has_dynamics else None
        suffix = "_b" if which == "b" else ""
        ckpt, method, layer = (getattr(self, f"{p}{suffix}") for p in ("checkpoint", "method", "layer"))
        if ckpt is None or method is None or layer is None:
            return None
        return PlotSpec("projection", ckpt, method, int(layer))

    def color_checkpoint(self, spec: PlotSpec | None) -> str | None:
        """Checkpoint that per-checkpoint colours (loss, prediction) come from in plot ``spec``."""
        return spec.checkpoint if spec is not None and spec.checkpoint else self.checkpoint

    # ------------------------------------------------------------------ selection
    def select_box(self, spec: PlotSpec, bounds) -> None:
        """Select the examples inside ``bounds = (left, bottom, right, top)`` of plot ``spec``."""
        x, y = self.data.xy(spec)
        self.selection = masks.box_mask(x, y, bounds)

    def select_lasso(self, spec: PlotSpec, polygon) -> None:
        """Select the examples inside the lasso ``polygon`` (``[k, 2]`` vertices) of plot ``spec``."""
        x, y = self.data.xy(spec)
        self.selection = masks.lasso_mask(x, y, np.asarray(polygon))

    def clear_selection(self) -> None:
        self.selection = None

    # ------------------------------------------------------------------ filters
    def set_filter(self, name: str, value) -> None:
        """Keep only examples whose ``name`` is in ``value`` ((lo, hi) or categories); ``None`` removes it."""
        filters = dict(self.filters)
        if value is None:
            filters.pop(name, None)
        else:
            attr = self.data.attribute(name)
            if attr.kind == CATEGORICAL:
                unknown = set(value) - set(attr.categories)
                if unknown:
                    raise StoreError(f"filter '{name}': unknown categories {sorted(unknown)} "
                                     f"(expected some of {list(attr.categories)})")
                value = tuple(str(v) for v in value)
            else:
                lo, hi = value
                value = (float(lo), float(hi))
            filters[name] = value
        self.filters = filters

    def clear_filters(self) -> None:
        self.filters = {}

    def resolved_filters(self) -> tuple[dict, dict]:
        """The filters as (columns, specs) ``masks.filter_mask`` takes (category names -> codes)."""
        columns, specs = {}, {}
        for name, value in self.filters.items():
            attr = self.data.attribute(name)
            columns[name] = self.data.values(name, self.checkpoint)
            if attr.kind == CATEGORICAL:
                specs[name] = frozenset(attr.categories.index(v) for v in value)
            else:
                specs[name] = tuple(value)
        return columns, specs

    # ------------------------------------------------------------------ search
    @property
    def search_query(self) -> Query | None:
        """The search whose matches are in the mask (the last query that ran), for highlighting hits."""
        return self._query

    @param.depends("search", "search_regex", "search_case", watch=True)
    async def _on_search(self) -> None:
        """Run the query in a thread (~1 s at 10M rows; the event loop serves every session meanwhile), keeping its
        matches only if no newer query came in. Without an event loop (scripts) param runs it before returning."""
        data, text = self.data, self.search
        if data is None:
            return
        self._search_generation += 1
        generation = self._search_generation
        if not text.strip():
            self._searched, self._query, self.search_message = None, None, ""
        else:
            try:
                query = parse(text, regex=self.search_regex, case=self.search_case)
                self.searching = True
                # the process-wide run: its text stays cached for all sessions
                found = await asyncio.get_running_loop().run_in_executor(None, data.run.search, query)
            except QueryError as exc:
                if generation == self._search_generation:
                    self.search_message = str(exc)
                return
            finally:
                if generation == self._search_generation:
                    self.searching = False
            if generation != self._search_generation or data is not self.data:
                return  # a newer query (or another run) took over while this one ran
            self._searched, self._query, self.search_message = masks.rows_mask(found, data.n), query, ""
        self._update_masks()

    # ------------------------------------------------------------------ derived
    @param.depends("filters", watch=True)
    def _on_filters(self) -> None:
        self._update_masks()

    @param.depends("checkpoint", watch=True)
    def _on_checkpoint(self) -> None:
        if self.data is not None and any(self.data.attribute(f).source == CHECKPOINT for f in self.filters):
            self._update_masks()

    @param.depends("selection", watch=True)
    def _on_selection(self) -> None:
        self._update_masks(filters_changed=False)

    def _update_masks(self, filters_changed: bool = True) -> None:
        data = self.data
        n = 0 if data is None else data.n
        selection = self.selection
        if selection is not None and (selection.dtype != np.bool_ or selection.shape != (n,)):
            raise ValueError(f"selection: expected a boolean mask of shape ({n},), got {selection.dtype} "
                             f"{selection.shape}")
        filtered = self.filtered
        if filters_changed:
            filtered = masks.filter_mask(*self.resolved_filters()) if data is not None and self.filters else None
            filtered = masks.combine(filtered, self._searched)
        mask = masks.combine(filtered, selection)
        with param.parameterized.edit_constant(self), param.parameterized.batch_call_watchers(self):
            self.param.update(
                n_total=n,
                n_filtered=masks.count(filtered, n),
                n_selected=masks.count(mask, n),
                has_selection=selection is not None,
            )
            if filters_changed:
                self.param.update(filtered=filtered, filtered_rev=self.filtered_rev + 1)
            self.param.update(mask=mask, mask_rev=self.mask_rev + 1)

    def rows(self) -> np.ndarray:
        """Indices of the rows in ``mask`` (all rows when nothing is filtered or selected); computed once per mask.

        Every plot and the table take their rows from here, so a brush scans the 10M-row mask once.
        """
        cached = self._rows
        if cached is not None and cached[0] == self.mask_rev:
            return cached[1]
        rows = np.arange(self.n_total, dtype=np.int64) if self.mask is None else np.flatnonzero(self.mask)
        rows.flags.writeable = False
        self._rows = (self.mask_rev, rows)
        return rows

    @property
    def sentence_unit(self) -> bool:
        """Whether the table and data map show sentences (a token run, unit "sentences")."""
        return self.unit == "sentences" and self.data is not None and self.data.has_sentences

    def unit_rows(self) -> np.ndarray:
        """The table's rows: ``rows()``, or in the sentence unit the weakest word of each sentence holding one of
        them (sorted); computed once per mask and unit."""
        if not self.sentence_unit:
            return self.rows()
        key = (self.mask_rev, self.unit)
        cached = self._unit_rows
        if cached is not None and cached[0] == key:
            return cached[1]
        rows = self.data.sentences.points(None if self.mask is None else self.rows())
        self._unit_rows = (key, rows)
        return rows

    # ------------------------------------------------------------------ neighbours
    def find_similar(self, row: int | None = None) -> None:
        """Show the nearest neighbours of ``row``, or (``None``) of the centroid of the rows in the mask."""
        self.neighbours_of = int(row) if row is not None else self.rows().copy()

    def clear_neighbours(self) -> None:
        self.neighbours_of = None

    @param.depends("neighbours_of", "neighbour_k", "checkpoint", "layer", "compare", "checkpoint_b", "layer_b",
                   watch=True)
    def _on_neighbours(self) -> None:
        found, message = {"neighbours": None, "neighbours_b": None}, ""
        if self.data is not None and self.neighbours_of is not None:
            try:
                found["neighbours"] = self._neighbours_in(self.checkpoint, self.layer)
                if self.compare:
                    found["neighbours_b"] = self._neighbours_in(self.checkpoint_b, self.layer_b)
            except StoreError as exc:
                message = str(exc)
        with param.parameterized.edit_constant(self):
            self.param.update(neighbours_message=message, **found)

    def _neighbours_in(self, checkpoint: str | None, layer: int | None) -> "Neighbours | None":
        if checkpoint is None:
            return None
        ckpt = self.run.checkpoint(checkpoint)
        layer = self.run.num_layers if layer is None else int(layer)
        of = self.neighbours_of
        query = int(of) if np.ndim(of) == 0 else ckpt.centroid(of, layer)
        rows, sims = ckpt.neighbours(query, self.neighbour_k, layer)
        return Neighbours(int(of) if np.ndim(of) == 0 else None, int(np.size(of)), checkpoint, layer, rows, sims)


@dataclass(frozen=True)
class Neighbours:
    """The nearest neighbours shown: of ``row`` (or, ``row`` None, of the centroid of ``size`` rows), in a checkpoint
    and layer's hidden space; ``rows`` best first with their cosine ``sims``."""

    row: int | None
    size: int
    checkpoint: str
    layer: int
    rows: np.ndarray
    sims: np.ndarray

    def describe(self) -> Markdown:
        what = (Markdown("row {}").format(self.row) if self.row is not None
                else Markdown("the centroid of {:,} rows").format(self.size))
        return Markdown("{} nearest neighbours of {} in {}, layer {} (cosine)").format(
            len(self.rows), what, self.checkpoint, self.layer)


def _missing_message(data: RunData) -> Markdown:
    """Say what the run lacks and which command produces it (the app shows whatever exists)."""
    notes = []
    if not any(data.projection_choices().values()):
        notes.append(Markdown("No projections yet: run `t3vis project RUN` (after `t3vis pipeline RUN`) to add them."))
    if not data.has_dynamics:
        notes.append(Markdown("No training dynamics, so no data map: train with the t3vis recorder "
                              "(`t3vis train` / `t3vis demo`)."))
    if not data.checkpoints:
        notes.append(Markdown("No checkpoints yet: train or run `t3vis pipeline RUN`."))
    return Markdown(" ").join(notes)
