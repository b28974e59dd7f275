"""Attention-head view: a layers x heads grid of head importance or attention patterns; click to select or prune.

Modes: ``importance`` (cell saturation and value) or ``pattern`` (each cell a small heatmap of the head's
attention matrix). Scales: ``aggregate`` (from the run store: importance and mean attention over a sample) or
``instance`` (the selected example, computed on demand with this session's pruned heads).

The grid is one HTML block (`ClickableHTML`): a cell reports ``head:<l>,<h>`` (select) and its corner button
``prune:<l>,<h>`` (prune / restore). Patterns are tiny PNGs (the head's matrix block-averaged to at most
``THUMBNAIL`` x ``THUMBNAIL``), so 72 heads of a 512-token example are ~100 kB, not a 75 MB matrix.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import panel as pn
import param
from PIL import Image

from ..errors import StoreError, T3VisError
from ..paths import export_filename
from ..serving import NewestOnly, normalize_pruned, session_model
from .state import ExplorerState
from .text import HTML, AlertPane, Markdown, MarkdownPane
from .tokens import ATTENTION, head_name
from .widgets import ClickableHTML

#: Largest side of a head's pattern thumbnail (a longer matrix is block-averaged down to this).
THUMBNAIL = 32
IMPORTANCE_COLOUR = (217, 95, 2)


def pool_attention(attention: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    """Block-average the last two axes of ``attention`` ``[..., T, T]`` to at most ``size`` x ``size``.

    Bins are as equal as possible (``linspace`` edges); a matrix already that small is returned as is.
    """
    attention = np.asarray(attention, dtype=np.float32)
    t_rows, t_cols = attention.shape[-2:]
    if t_rows <= size and t_cols <= size:
        return attention

    def pool(a: np.ndarray, axis: int, n: int) -> np.ndarray:
        edges = np.linspace(0, n, min(size, n) + 1).round().astype(np.int64)
        sums = np.add.reduceat(a, edges[:-1], axis=axis)
        shape = [1] * a.ndim
        shape[axis] = len(edges) - 1
        return sums / np.diff(edges).reshape(shape)

    return pool(pool(attention, -2, t_rows), -1, t_cols)


def _lut(colour) -> np.ndarray:
    t = np.linspace(0.0, 1.0, 256)[:, None]
    return np.round(255 + (np.asarray(colour, dtype=np.float64) - 255) * t).astype(np.uint8)


_PATTERN_LUT = _lut(ATTENTION)


def pattern_png(matrix: np.ndarray) -> str:
    """A ``data:`` URI of a PNG of one head's matrix, white (0) to purple (the matrix's max)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    top = matrix.max() if matrix.size else 0.0
    index = np.zeros(matrix.shape, np.uint8) if top <= 0 else np.round(255 * np.clip(matrix / top, 0, 1)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(_PATTERN_LUT[index], "RGB").save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _mix(colour, t: float) -> str:
    t = float(min(1.0, max(0.0, t)))
    r, g, b = (round(255 + (c - 255) * t) for c in colour)
    return f"rgb({r},{g},{b})"


def grid_html(num_layers: int, num_heads: int, cell, *, pruned=(), selected=None, square: bool = False) -> HTML:
    """The layers x heads grid. ``cell(l, h) -> (style, inner, tooltip)`` fills each cell (``inner`` is markup
    only as ``HTML``).

    Every cell selects its head on click (``head:l,h``); its corner button prunes or restores it (``prune:l,h``).
    """
    pruned = set(normalize_pruned(pruned))
    selected = tuple(selected) if selected is not None else None
    label = HTML('<span class="lab">{}</span>')
    box = HTML('<div class="{}" data-click="head:{},{}" title="{}: {}{}" style="{}">{}<button class="x" '
               'data-click="prune:{},{}" title="{} {}">{}</button></div>')
    parts = [HTML('<div class="hgrid" style="grid-template-columns:2.2em repeat({}, minmax(0, 1fr))">').format(
        num_heads), label.format("")]
    parts += [label.format(f"H{h}") for h in range(num_heads)]
    for layer in range(num_layers):
        parts.append(label.format(f"L{layer}"))
        for head in range(num_heads):
            style, inner, title = cell(layer, head)
            is_pruned = (layer, head) in pruned
            classes = "cell" + (" pruned" if is_pruned else "") + (" selected" if selected == (layer, head) else "")
            if square:
                style += ";aspect-ratio:1"
            name = head_name((layer, head))
            parts.append(box.format(classes, layer, head, name, title, " (pruned)" if is_pruned else "", style,
                                    inner, layer, head, "Restore" if is_pruned else "Prune", name,
                                    "↺" if is_pruned else "×"))
    parts.append(HTML("</div>"))
    return HTML("").join(parts)


def importance_html(importance: np.ndarray, *, pruned=(), selected=None) -> HTML:
    """Grid of importance values: saturation proportional to the value (relative to the largest)."""
    importance = np.asarray(importance, dtype=np.float64)
    top = float(np.nanmax(importance)) if importance.size else 0.0
    top = top if top > 0 else 1.0

    def cell(layer, head):
        value = float(importance[layer, head])
        t = value / top
        ink = "#fff" if t > 0.6 else "#000"
        return f"background:{_mix(IMPORTANCE_COLOUR, t)};color:{ink}", f"{value:.2f}", f"importance {value:.3g}"

    return grid_html(*importance.shape, cell, pruned=pruned, selected=selected)


def patterns_html(patterns: np.ndarray, *, pruned=(), selected=None) -> HTML:
    """Grid of attention-pattern thumbnails (``patterns`` ``[L, H, m, m]``, already pooled)."""
    size = patterns.shape[-1]

    def cell(layer, head):
        image = HTML('<img src="{}" alt="">').format(pattern_png(patterns[layer, head]))
        return "padding:0", image, f"attention pattern ({size}x{size})"

    return grid_html(*patterns.shape[:2], cell, pruned=pruned, selected=selected, square=True)


def pruned_json(pruned) -> str:
    """The pruned heads as JSON ``[[layer, head], ...]`` (what the export button downloads)."""
    return json.dumps([list(h) for h in normalize_pruned(pruned)])


class HeadView(pn.viewable.Viewer):
    """Layers x heads grid: importance or attention patterns, aggregate or for the selected example.

    Click a cell to select its head (the instance view then shows that head's attention for a clicked token);
    the corner button prunes / restores the head for this session. Pruned heads can be restored all at once
    and exported as JSON ``[[layer, head], ...]``.
    """

    state = param.ClassSelector(class_=ExplorerState)
    mode = param.Selector(default="importance", objects=["importance", "pattern"])
    scale = param.Selector(default="aggregate", objects=["aggregate", "instance"])

    def __init__(self, **params):
        super().__init__(**params)
        state = self.state
        self.model = session_model(state)
        self._values: tuple | None = None  # (kind, array) last computed
        self._grid = ClickableHTML(on_click=self.click)
        self._message = AlertPane("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self._busy = pn.indicators.LoadingSpinner(value=False, size=18, visible=False)
        self._newest = NewestOnly(self._busy)
        self._pruned_text = MarkdownPane("", sizing_mode="stretch_width", margin=(0, 5))
        self._restore = pn.widgets.Button(label="Restore all", disabled=True, width=110)
        self._restore.on_click(lambda event: self.restore_all())
        self._export = pn.widgets.FileDownload(callback=self._export_file, filename="pruned_heads.json",
                                               label="Export pruned", color="light", width=130)
        self._layout = pn.Column(
            pn.Row(pn.widgets.RadioButtonGroup.from_param(self.param.mode, color="light"),
                   pn.widgets.RadioButtonGroup.from_param(self.param.scale, color="light"), self._busy),
            self._message, self._grid, pn.Row(self._pruned_text, self._restore, self._export),
            sizing_mode="stretch_width", name="Attention heads")
        # a plain watcher, not ``@param.depends``: `_on_data` needs the events, to know which parameters changed
        state.param.watch(self._on_data, ["run", "checkpoint", "example", "pruned_heads"])
        self._on_marks()
        param.parameterized.async_executor(self.refresh)

    def __panel__(self):
        return self._layout

    # ------------------------------------------------------------------ actions
    def click(self, key: str) -> None:
        """Handle a grid click: ``head:l,h`` selects (or deselects) a head, ``prune:l,h`` toggles its pruning."""
        kind, _, value = key.partition(":")
        head = tuple(int(v) for v in value.split(","))
        if kind == "head":
            self.state.head = None if self.state.head == head else head
        elif kind == "prune":
            self.toggle_pruned(head)

    def toggle_pruned(self, head) -> None:
        """Prune ``head`` for this session, or restore it if pruned."""
        head = (int(head[0]), int(head[1]))
        pruned = set(normalize_pruned(self.state.pruned_heads))
        pruned ^= {head}
        self.state.pruned_heads = normalize_pruned(pruned)

    def restore_all(self) -> None:
        self.state.pruned_heads = ()

    def _export_file(self):
        state = self.state
        if state.run is not None:
            self._export.filename = export_filename(state.run.name, state.checkpoint or "", "pruned-heads") + ".json"
        return io.StringIO(pruned_json(state.pruned_heads))

    # ------------------------------------------------------------------ data
    async def _on_data(self, *events) -> None:
        names = {e.name for e in events}
        if self.scale == "aggregate" and names <= {"example", "pruned_heads"}:
            return  # aggregate values do not depend on the example or the pruning
        await self.refresh()

    @param.depends("mode", "scale", watch=True)
    async def _on_mode(self) -> None:
        await self.refresh()

    @param.depends("state.head", "state.pruned_heads", watch=True)
    def _on_marks(self) -> None:
        pruned = normalize_pruned(self.state.pruned_heads)
        self._restore.disabled = not pruned
        names = ", ".join(map(head_name, pruned))
        self._pruned_text.object = (Markdown("**Pruned ({}):** {}").format(len(pruned), names) if pruned else
                                    "No heads pruned (click × on a cell to prune it).")
        self._render()

    def _show_message(self, text: str) -> None:
        self._message.object = text
        self._message.visible = bool(text)

    def _aggregate(self) -> np.ndarray:
        checkpoint = self.state.run.checkpoint(self.state.checkpoint)
        name = "head_importance" if self.mode == "importance" else "attention"
        if not checkpoint.has(name):
            raise StoreError(f"checkpoint '{checkpoint.name}' has no {name.replace('_', ' ')} yet: run the head "
                             "importance pipeline (`t3vis pipeline RUN`), or switch to the instance scale")
        values = checkpoint.read(name)
        return values if self.mode == "importance" else pool_attention(values)

    async def refresh(self) -> None:
        """Fetch what the current mode and scale show, then redraw."""
        token = self._newest.start()
        state = self.state
        if state.run is None or state.checkpoint is None:
            self._values = None
            self._show_message("Open a run with checkpoints to see its attention heads.")
            self._render()
            return
        with self._newest.running(token):
            try:
                if self.scale == "aggregate":
                    values = self._aggregate()
                elif state.example is None:
                    raise T3VisError("Select an example (in the table) to see its instance-scale heads.")
                elif self.mode == "importance":
                    values = await self.model.head_importance(int(state.example), state.pruned_heads)
                else:
                    forward = await self.model.forward(int(state.example), state.pruned_heads)
                    values = pool_attention(forward.attentions)
            except T3VisError as err:
                if self._newest.is_current(token):
                    self._values = None
                    self._show_message(str(err))
                    self._render()
                return
        if not self._newest.is_current(token):
            return
        self._show_message("")
        self._values = (self.mode, values)
        self._render()

    def _render(self) -> None:
        if self._values is None:
            self._grid.html = ""
            return
        mode, values = self._values
        marks = dict(pruned=self.state.pruned_heads, selected=self.state.head)
        self._grid.html = importance_html(values, **marks) if mode == "importance" else patterns_html(values, **marks)
