"""The explorer app: sidebar controls, projection plots and data map, the data table, the instance and head views.

``Explorer(run_or_path)`` in a notebook displays itself; ``.servable()`` serves it; ``apps/main.py`` builds one
per browser session over a runs directory (``Explorer(runs_dir=...)``), where runs are chosen by name only.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import traceback
from pathlib import Path

import panel as pn
import panel_material_ui as pmui
import param
from panel.util import edit_readonly

from ..errors import T3VisError
from ..paths import DEMO_RUN_NAME
from ..store import Run, validate
from .filters import FilterPanel
from .heads import HeadView
from .instance import InstanceView
from .notebook import load_extensions
from .projection import ProjectionView
from .runs import default_run, is_run, list_runs, resolve_run, run_query
from .state import ExplorerState
from .summary import SelectionSummary
from .table import DataTable
from .text import AlertPane, Markdown, MarkdownPane, code

log = logging.getLogger(__name__)

#: How to select, shown in the sidebar.
HELP = Markdown("Drag a box (or lasso) on any plot to select; the selection shows in every plot and the table. "
                "Click a point to open that example in the instance view (it is ringed in every plot). Wheel to "
                "zoom; zoom far in to hover single examples. The toolbar saves a plot as PNG or SVG, with its legend.")
#: Most of a run's validation problems listed in the page.
MAX_PROBLEMS = 10


def invalid_run(name: str, problems: list[str]) -> Markdown:
    """Why run ``name`` cannot be opened: its validation problems as a list (the first ``MAX_PROBLEMS``)."""
    lines = [Markdown("run {} cannot be opened:").format(code(name))]
    lines += [Markdown("- {}").format(code(p)) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        lines.append(Markdown("- ... and {} more").format(len(problems) - MAX_PROBLEMS))
    return Markdown("\n").join(lines)


def problems_of(path: Path) -> list:
    """``validate(path)``, once per state of the run on disk (its ``stamp``), not once per page: it lists every
    chunk file (~0.2 s at the demo's size). Damage done since shows when the page reads the damaged array."""
    try:
        stamp = Run(str(path)).stamp()
    except Exception:  # not a run (or unreadable): validate says why
        return validate(str(path))
    return _problems_at(str(path), stamp)


@functools.lru_cache(maxsize=32)
def _problems_at(path: str, stamp: tuple) -> list:
    return validate(path)


def counts_text(state: ExplorerState) -> Markdown:
    """The sidebar's counts: what a brush selected, within what filters and search leave, of the run (a token
    run counts words, and in the sentence unit the sentences holding them)."""
    searched = state.search_query is not None
    narrowed = Markdown("after filters and search") if searched else Markdown("after filters")
    rows = "words" if state.data is not None and state.data.has_sentences else "examples"
    if state.has_selection:
        text = Markdown("**{:,}** selected · {:,} {} · {:,} {}").format(
            state.n_selected, state.n_filtered, narrowed, state.n_total, rows)
    elif state.filtered is None:
        text = Markdown("Nothing brushed (drag on a plot) · **{:,}** {}").format(state.n_total, rows)
    else:
        text = Markdown("Nothing brushed · **{:,}** {} · {:,} {}").format(state.n_filtered, narrowed, state.n_total,
                                                                         rows)
    if state.sentence_unit:
        text += Markdown(" · in **{:,}** of {:,} sentences").format(len(state.unit_rows()),
                                                                    state.data.sentences.count)
    return text


def time_left(elapsed: float, fraction: float) -> str:
    """"about N min left" from the time taken so far and the fraction done (the build weights its progress by
    cost, so the rate holds); empty until 2% is done, when the estimate would be noise."""
    if fraction < 0.02 or fraction >= 1:
        return ""
    seconds = elapsed * (1 - fraction) / fraction
    return f"about {seconds:.0f} s left" if seconds < 90 else f"about {seconds / 60:.0f} min left"


class DemoOffer(pn.viewable.Viewer):
    """Shown when the runs directory holds no run: builds the demo run in a thread, with progress."""

    runs_dir = param.Parameter()
    build = param.Callable(default=None, doc="``build(path, progress=...)`` writes the demo run at ``path``; "
                                             "default ``pipelines.build.build_demo``.")
    status = param.String(default="")
    fraction = param.Number(default=0.0, bounds=(0, 1))
    building = param.Boolean(default=False)

    def __init__(self, on_done=None, **params):
        super().__init__(**params)
        self._on_done = on_done
        self._started = time.monotonic()  # reset when a build starts
        self.button = pmui.Button(label="Build the demo run", variant="contained", color="primary")
        self.button.on_click(self._start)
        self.progress = pmui.LinearProgress(value=0, visible=False, sizing_mode="stretch_width")
        self.text = MarkdownPane(
            Markdown("### No run yet\nThe runs directory {} holds no t3vis run. Build the demo: all-MiniLM-L6-v2 "
                     "fine-tuned on BBC News with some labels flipped, so the data map has mislabeled examples to "
                     "find (a few minutes on a CPU; `t3vis demo` does the same from a terminal).").format(
                code(self.runs_dir)),
            sizing_mode="stretch_width")
        self.status_pane = MarkdownPane("", sizing_mode="stretch_width")
        self.layout = pn.Column(self.text, self.button, self.progress, self.status_pane, sizing_mode="stretch_width")

    def __panel__(self):
        return self.layout

    def _start(self, event=None) -> None:
        if self.building:
            return
        self.building = True
        self._started = time.monotonic()
        self.button.disabled = True
        self.progress.visible = True
        doc = pn.state.curdoc
        threading.Thread(target=self._build, args=(doc,), name="t3vis-demo", daemon=True).start()

    def _report(self, message: str, fraction: float) -> None:
        fraction = max(0.0, min(1.0, fraction))
        self.progress.value = int(round(100 * fraction))
        left = time_left(time.monotonic() - self._started, fraction)
        self.status_pane.object = Markdown("{} ({:.0f}%{})").format(message, 100 * fraction,
                                                                    f", {left}" if left else "")

    def _build(self, doc) -> None:
        path = Path(self.runs_dir) / DEMO_RUN_NAME
        try:
            if self.build is None:
                from pipelines.build import build_demo

                self.build = build_demo
            self.build(path, progress=self._report)
        except Exception as exc:  # show it in the page; the server stays up
            log.exception("demo build failed")
            self.status_pane.object = Markdown("**Building the demo failed:** {}").format(exc)
            self.button.disabled = False
            self.building = False
            return
        self.building = False
        if self._on_done is not None:
            if doc is not None:
                doc.add_next_tick_callback(lambda: self._on_done(DEMO_RUN_NAME))
            else:
                self._on_done(DEMO_RUN_NAME)


#: The overview's panels (pixels), sized so all four fit a 1600x1000 window under the page header.
PLOTS_HEIGHT, TABLE_HEIGHT = 440, 450
INSTANCE_HEIGHT, HEADS_HEIGHT, RIGHT_WIDTH = 500, 390, 470


def panel(view, height: int, name: str) -> pn.Column:
    """``view`` in a panel of fixed ``height`` that scrolls inside and that the user can resize (its corner)."""
    return pn.Column(view, height=height, sizing_mode="stretch_width", css_classes=[name], scroll=True,
                     styles={"resize": "vertical", "border-bottom": "1px solid #e0e0e0"})


class Explorer(pn.viewable.Viewer):
    """Projection view, data map and data table over one run, linked through one ``ExplorerState``.

    ``Explorer(run)`` opens a run (``Run`` or path) directly; ``Explorer(runs_dir=DIR, run_name=NAME)`` lets
    the page pick among the runs in ``DIR`` (and only those).
    """

    runs_dir = param.Parameter(default=None, doc="Runs directory the picker lists (None: only the given run).")
    state = param.ClassSelector(class_=ExplorerState, doc="This session's state (views share it).")

    def __init__(self, run: "Run | str | os.PathLike | None" = None, *, runs_dir=None, run_name: str | None = None,
                 **params):
        params.setdefault("state", ExplorerState())
        super().__init__(runs_dir=None if runs_dir is None else Path(runs_dir).resolve(), **params)
        self._page = None  # built on first display
        self._location = None
        self._opened = None  # the name of the run open, as the picker lists it
        load_extensions()  # in a notebook: Panel, Tabulator and bokeh inline (offline); served: the bokeh backend
        self.error = AlertPane("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.picker = pmui.Select(label="Run", options=[], sizing_mode="stretch_width")
        self.projection = ProjectionView(state=self.state)
        self.table = DataTable(state=self.state)
        self.filters = FilterPanel(state=self.state)
        # side by side: a head is clicked in the grid, then a token in the instance view
        self.heads = HeadView(state=self.state)
        self.instance = InstanceView(state=self.state)
        self.summary = SelectionSummary(state=self.state, shown=False)  # its tab is not the first
        self.demo = DemoOffer(runs_dir=self.runs_dir, on_done=self._demo_done) if self.runs_dir else None
        self.counts = MarkdownPane("", sizing_mode="stretch_width")
        # the sidebar's selects of the run's choices by holder, made when the page is built (``_show_selects``)
        self._selects: dict[pn.Column, list] = {}
        # a query that cannot run, said as text (styled as an error); the table keeps the last good search's rows
        self.search_message = MarkdownPane("", sizing_mode="stretch_width", styles={"color": "#b00020"})
        self.state.param.watch(lambda e: setattr(self.search_message, "object", e.new), "search_message")
        self._update_counts()
        self._refresh_picker()
        if run is not None:
            self.state.open(run)  # in code, a bad run raises: the caller sees the StoreError
            self.picker.options = [self.state.run.name]
            self.picker.value = self.state.run.name
        else:
            name = run_name or (default_run(self.runs_dir) if self.runs_dir else None)
            if name:
                self.open_run(name)
        self.picker.param.watch(lambda e: e.new and self._pick(e.new), "value")

    # ------------------------------------------------------------------ runs
    def _refresh_picker(self) -> None:
        if self.runs_dir is None:
            return
        names = list_runs(self.runs_dir)
        self.picker.options = names
        if self.demo is not None:
            self.demo.layout.visible = not any(is_run(self.runs_dir / n) for n in names)

    def _pick(self, name: str) -> None:
        """The picker chose run ``name``. A served page goes to ``?run=NAME``, built fresh like any new page: opened
        in place, a run with other layers or methods left a select out of step with its plot (a select given new
        options and a new value in two steps falls back to its first option, panel#1963). A bad run is explained
        here, keeping the current one; a notebook, with no URL to go to, opens the run in place, its selects drawn
        afresh (``_show_selects``)."""
        if self._location is None:
            self.open_run(name)
        elif name == self._opened:
            self.error.visible = False  # back on the open run: a bad pick's message no longer applies
        elif self._checked_path(name) is not None:
            self._location.search = run_query(name)
            self._location.reload = True

    def _checked_path(self, name: str) -> Path | None:
        """The path of run ``name`` if it resolves inside the runs directory and validates; else None, and why."""
        try:
            path = resolve_run(self.runs_dir, name) if self.runs_dir is not None else Path(name)
        except T3VisError as exc:
            self._show_error(str(exc))
            return None
        problems = problems_of(path)
        if problems:
            self._show_error(invalid_run(name, problems))
            return None
        return path

    def open_run(self, name: str) -> bool:
        """Open run ``name`` from the runs directory; on failure show why and keep the current run."""
        path = self._checked_path(name)
        if path is None:
            return False
        in_place = self._page is not None  # a notebook's page: the run opens in place, its selects drawn afresh
        if in_place:
            self._show_selects(False)
        try:
            self.state.open(str(path))
        except T3VisError as exc:
            self._show_error(str(exc))
            return False
        except Exception as exc:  # corrupt arrays and the like: explain in the page, keep serving
            log.error("opening %s failed:\n%s", name, traceback.format_exc())
            self._show_error(Markdown("run {} cannot be read: {}: {}").format(code(name), type(exc).__name__, exc))
            return False
        finally:
            if in_place:
                self._show_selects()
        self.error.visible = False
        self._opened = name
        if self.picker.value != name and name in self.picker.options:
            self.picker.value = name
        return True

    def _show_error(self, message: str) -> None:
        """Show ``message``: markup if it is ``Markdown``, else (an error's text) as text."""
        self.error.object = message
        self.error.visible = True

    def _demo_done(self, name: str) -> None:
        """The demo run is built: a served page reloads, so it shows exactly what any new page of the run shows
        (opened in place, the page's selects, built for an empty runs directory, sent their first options back:
        PCA of layer 3 where a new page shows UMAP of layer 6); in a notebook, the run opens in place."""
        if self._location is not None:
            self._location.reload = True
            return
        self._refresh_picker()
        self.open_run(name)
        if self.demo is not None:
            self.demo.layout.visible = False

    # ------------------------------------------------------------------ sidebar
    @param.depends("state.n_selected", "state.n_filtered", "state.n_total", "state.has_selection", "state.unit",
                   watch=True)
    def _update_counts(self) -> None:
        self.counts.object = counts_text(self.state) if self.state.run is not None else ""

    def _has_sentences(self) -> bool:
        return self.state.data is not None and self.state.data.has_sentences

    def _search_box(self):
        """The query box; it spins while a query runs (the page stays live meanwhile)."""
        box = pmui.TextInput.from_param(self.state.param.search, label="Search text", sizing_mode="stretch_width",
                                        placeholder='words, "a phrase" (Enter)')
        self.state.param.watch(lambda e: setattr(box, "loading", e.new), "searching")
        return box

    def _show_selects(self, shown: bool = True) -> None:
        """Put the selects of the run's choices (checkpoint, method, layer; their B twins; colour) in the sidebar, or
        take them out. A run opened in place takes them out while it changes their options and values, then puts them
        back, drawn afresh with both at once: a shown select given new options, then a new value, sent its first
        option back from the browser (panel#1963), so a notebook's switch to a six-layer run showed layer 3 where a
        fresh page shows 6."""
        for holder, selects in self._selects.items():
            holder.objects = list(selects) if shown else []

    def _controls(self) -> list:
        s = self.state.param
        select = lambda p, **kw: pmui.Select.from_param(p, sizing_mode="stretch_width", **kw)  # noqa: E731
        selects_a, selects_b, colour = (pn.Column(sizing_mode="stretch_width", margin=0) for _ in range(3))
        self._selects = {selects_a: [select(s.checkpoint), select(s.method), select(s.layer)],
                         selects_b: [select(s.checkpoint_b), select(s.method_b), select(s.layer_b)],
                         colour: [select(s.color_by, label="Colour by")]}
        self._show_selects()
        b_controls = pn.Column(selects_b, pmui.Switch.from_param(s.link_axes), visible=self.state.compare,
                               sizing_mode="stretch_width")
        self.state.param.watch(lambda e: setattr(b_controls, "visible", e.new), "compare")
        # a token run's unit: words, or the sentences holding them (hidden for runs whose rows are examples)
        unit = pmui.RadioButtonGroup.from_param(s.unit, sizing_mode="stretch_width", visible=self._has_sentences(),
                                                description="Words: a row and a point per word. Sentences: a row "
                                                "per sentence holding a selected word, and a data map of sentences.")
        self.state.param.watch(lambda e: setattr(unit, "visible", self._has_sentences()), "run")
        clear = pmui.Button(label="Clear selection", variant="outlined", sizing_mode="stretch_width")
        clear.on_click(lambda e: self.state.clear_selection())
        return [
            self.picker,
            pmui.Card(selects_a, pmui.Switch.from_param(s.compare), b_controls, title="Projection",
                      sizing_mode="stretch_width", collapsible=True),
            unit,
            colour,
            pmui.Card(self._search_box(),
                      pn.Row(pmui.Switch.from_param(s.search_regex), pmui.Switch.from_param(s.search_case)),
                      self.search_message, title="Search", sizing_mode="stretch_width", collapsible=True),
            pmui.Card(self.filters, title="Filters", sizing_mode="stretch_width", collapsible=True),
            pmui.Card(self.counts, clear, MarkdownPane(HELP, styles={"font-size": "12px"}),
                      title="Selection", sizing_mode="stretch_width", collapsible=True),
        ]

    # ------------------------------------------------------------------ layout
    def main_area(self) -> list:
        """T3-Vis's overview, every view at once on a 1600x1000 screen: the projection and data map over the table
        (and the selection summary, a tab beside it) on the left; the instance view over the head grid on the
        right. Each panel has a fixed height and scrolls inside, so nothing overlaps or jumps; drag a panel's
        bottom-right corner to resize it."""
        tabs = self.tabs = pmui.Tabs(("Examples", self.table), ("Selection summary", self.summary),
                                     sizing_mode="stretch_width", dynamic=True)  # the summary is built when opened
        summary_tab = len(tabs) - 1
        tabs.param.watch(lambda event: setattr(self.summary, "shown", event.new == summary_tab), "active")
        left = pn.Column(panel(self.projection, PLOTS_HEIGHT, "t3-plots"), panel(tabs, TABLE_HEIGHT, "t3-table"),
                         sizing_mode="stretch_width")
        right = pn.Column(panel(self.instance, INSTANCE_HEIGHT, "t3-instance"),
                          panel(self.heads, HEADS_HEIGHT, "t3-heads"), width=RIGHT_WIDTH)
        objects = [self.error]
        if self.demo is not None:
            objects.append(self.demo)
        objects.append(pn.Row(left, right, sizing_mode="stretch_width"))
        return objects

    def __panel__(self):
        if self._page is None:
            self._location = pn.state.location if pn.state.curdoc is not None and pn.state.curdoc.session_context \
                else None  # a served page's URL (None in a notebook)
            self._page = pmui.Page(title="t3vis explorer", sidebar=self._controls(), main=self.main_area(),
                                   sidebar_width=330, busy_indicator=None)
            with edit_readonly(self._page):
                # a Page follows the process-wide ``pn.state.busy``, which flips around every callback of every
                # session, and each flip re-walked every open page's whole model graph (~0.1 s a page): 20 open
                # pages made each click cost seconds. The views show their own spinners instead
                self._page.busy = False
        return self._page
