"""Instance view: one example's tokens coloured by saliency or by a head's attention, the prediction, and pruning.

The example comes from the session state (``state.example``, set by the table or a plot). The model runs off
the UI thread in the shared pool of :mod:`t3vis.models.serving`, with this session's pruned heads; results are
memoised per session (`session_model`) so the head view and this view share one forward pass.

Rendering is HTML built from literal ``text.HTML`` templates (token texts and label names go in escaped) by small
pure functions, tested without a browser: one ``<span>`` per token (or per word when word-pieces are merged),
clicks reported by `ClickableHTML`, a tiny JS component that sends the ``data-click`` key of the clicked element to
Python. A 512-token example is ~60 kB of HTML, built in ~2.5 ms and drawn at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import panel as pn
import param
from panel.custom import JSComponent

from ..errors import T3VisError
from ..models import serving
from ..models.serving import Encoding, Forward, ModelServer, acall, normalize_pruned, prediction_change
from .state import ExplorerState
from .text import HTML, AlertPane, Markdown, MarkdownPane

#: Saliency options for interactive use (integrated gradients with its 64-step default takes seconds).
SALIENCY_OPTIONS = {"integrated_gradients": {"steps": 16, "batch_size": 16}}
#: Most examples the "re-predict selection" button runs (a larger selection is sampled, and says so).
MAX_REPREDICT = 5_000
#: Colours: positive saliency, negative saliency, attention.
POSITIVE, NEGATIVE, ATTENTION = (214, 39, 40), (31, 119, 180), (117, 63, 171)

CSS = """
:host { display: block; width: 100%; }
.t3-clickable { font-family: var(--bokeh-font-family, sans-serif); font-size: 13px; }
.tokens { line-height: 1.9; max-height: 26em; overflow-y: auto; padding: 4px 6px; border: 1px solid #ddd;
          border-radius: 4px; background: #fff; }
.tok { padding: 1px 2px; border-radius: 3px; cursor: pointer; }
.tok.special { font-size: 10px; color: #666; }
.tok.focus { outline: 2px solid #222; outline-offset: 1px; }
.tok:hover { outline: 1px solid #888; }
.classes { display: flex; flex-wrap: wrap; gap: 6px; }
.cls { position: relative; min-width: 9em; padding: 4px 8px; border: 1px solid #ccc; border-radius: 4px;
       cursor: pointer; overflow: hidden; background: #fafafa; }
.cls .bar { position: absolute; left: 0; top: 0; bottom: 0; background: rgba(117, 63, 171, 0.18); }
.cls .name, .cls .p { position: relative; }
.cls .p { float: right; margin-left: 8px; font-variant-numeric: tabular-nums; }
.cls .delta { position: relative; display: block; font-size: 11px; color: #555; }
.cls.target { border: 2px solid #222; }
.cls.gold .name::after { content: " \\2605"; color: #b8860b; }
.hgrid { display: grid; gap: 2px; align-items: stretch; }
.hgrid .lab { font-size: 11px; color: #555; text-align: center; align-self: center; }
.cell { position: relative; border: 1px solid #ddd; border-radius: 3px; cursor: pointer; min-height: 30px;
        display: flex; align-items: center; justify-content: center; font-size: 11px;
        font-variant-numeric: tabular-nums; }
.cell img { width: 100%; height: 100%; image-rendering: pixelated; display: block; }
.cell.selected { outline: 3px solid #222; z-index: 1; }
.cell.pruned { opacity: 0.35; background-image: repeating-linear-gradient(45deg, transparent 0 4px, #999 4px 5px); }
.cell .x { position: absolute; top: 0; right: 0; border: none; background: rgba(255,255,255,0.85); cursor: pointer;
           font-size: 11px; line-height: 1; padding: 1px 3px; border-radius: 0 3px 0 3px; }
.cell.pruned .x { opacity: 1; background: #ffd; }
"""


class ClickableHTML(JSComponent):
    """HTML whose elements carrying ``data-click="key"`` report clicks to Python: ``on_click(key)``.

    One component (not a widget per token or cell) keeps a 512-token text or a 12x12 grid one DOM update.
    ``html`` is markup only when it is an ``HTML`` object (a literal template); any other string shows as text.
    """

    html = param.String(default="")

    _esm = """
    export function render({ model }) {
      const root = document.createElement("div");
      root.className = "t3-clickable";
      root.innerHTML = model.html;
      root.addEventListener("click", (event) => {
        const target = event.target.closest("[data-click]");
        if (target && root.contains(target)) {
          event.stopPropagation();
          model.send_msg(target.dataset.click);
        }
      });
      model.on("html", () => { root.innerHTML = model.html; });
      return root;
    }
    """

    def __init__(self, on_click: Callable[[str], None] | None = None, **params):
        params.setdefault("stylesheets", [CSS])
        params.setdefault("sizing_mode", "stretch_width")
        super().__init__(**params)
        self._click_callbacks = [on_click] if on_click else []

    def on_click(self, callback: Callable[[str], None]) -> None:
        self._click_callbacks.append(callback)

    def _handle_msg(self, data) -> None:
        for callback in self._click_callbacks:
            callback(str(data))

    def _process_param_change(self, params):
        if "html" in params:
            params = {**params, "html": str(HTML.escape(params["html"]))}
        return super()._process_param_change(params)


# ---------------------------------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Unit:
    """What the view shows as one block: a token, or a word made of consecutive word-pieces ``[start, stop)``."""

    text: str
    start: int
    stop: int
    gap: str  # what separates it from the previous unit: "", " " or "\n"
    special: bool


def _gap(source: str) -> str:
    if not source:
        return ""
    return "\n" if "\n" in source else " "


def _piece_text(token: str) -> tuple[str, bool]:
    """A token's display text and whether it continues the previous word (for tokenizers without offsets)."""
    if token.startswith("##"):
        return token[2:] or token, True
    for mark in ("\u0120", "\u2581"):  # GPT-2 and SentencePiece word-start marks
        if token.startswith(mark):
            return token[1:] or token, False
    return token, False


def token_units(encoding: Encoding, merge_words: bool = True) -> list[Unit]:
    """The blocks to show: tokens, or words (consecutive word-pieces of one word merged) when ``merge_words``.

    Text comes from the character offsets into the original text, so case and accents survive lower-casing
    tokenizers; gaps between blocks keep the text's spaces and line breaks.
    """
    units: list[Unit] = []
    previous_end = None  # end offset of the last ordinary token
    for i, token in enumerate(encoding.tokens):
        last = units[-1] if units else None
        if encoding.special[i]:
            units.append(Unit(token, i, i + 1, " " if units else "", True))
            continue
        offset = encoding.offsets[i]
        if offset is None:
            text, continues = _piece_text(token)
            gap = "" if continues else " "
        else:
            text = encoding.text[offset[0]:offset[1]]
            gap = _gap(encoding.text[previous_end:offset[0]]) if previous_end is not None else ""
            previous_end = offset[1]
        if last is not None and last.special:
            gap = " "
        word = encoding.word_ids[i]
        if (merge_words and last is not None and not last.special and not gap and word is not None
                and encoding.word_ids[last.start] == word):
            if offset is not None:
                text = encoding.text[encoding.offsets[last.start][0]:offset[1]]
            else:
                text = last.text + text
            units[-1] = Unit(text, last.start, i + 1, last.gap, False)
        else:
            units.append(Unit(text, i, i + 1, gap if units else "", False))
    return units


def unit_sums(values: np.ndarray, units: list[Unit]) -> np.ndarray:
    """Per-unit sum of per-token values (saliency and attention received both add up over word-pieces)."""
    values = np.asarray(values, dtype=np.float64)
    return np.array([values[u.start:u.stop].sum() for u in units])


def attention_from(attention: np.ndarray, unit: Unit, units: list[Unit]) -> np.ndarray:
    """Where ``unit`` attends (``attention`` is one head's ``[T, T]``): its tokens' rows averaged, summed per unit.

    Rows of attention sum to 1, so the result does too: a distribution over the shown units.
    """
    row = np.asarray(attention[unit.start:unit.stop], dtype=np.float64).mean(0)
    return unit_sums(row, units)


def _mix(colour: tuple[int, int, int], t: float) -> str:
    t = float(min(1.0, max(0.0, t)))
    r, g, b = (round(255 + (c - 255) * t) for c in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


def diverging_colours(values: np.ndarray) -> list[tuple[str, str]]:
    """(background, text colour) per value: red for positive, blue for negative, white at 0, scaled by max |v|."""
    values = np.asarray(values, dtype=np.float64)
    scale = float(np.abs(values).max()) if len(values) else 0.0
    scale = scale if scale > 0 else 1.0
    out = []
    for v in values / scale:
        background = _mix(POSITIVE if v >= 0 else NEGATIVE, abs(v))
        out.append((background, "#fff" if abs(v) > 0.6 else "#000"))
    return out


def sequential_colours(values: np.ndarray, colour=ATTENTION) -> list[tuple[str, str]]:
    """(background, text colour) per value in [0, max]: white to ``colour``."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0, None)
    scale = float(values.max()) if len(values) else 0.0
    scale = scale if scale > 0 else 1.0
    return [(_mix(colour, v), "#fff" if v > 0.6 else "#000") for v in values / scale]


def tokens_html(units: list[Unit], values: np.ndarray, colours: list[tuple[str, str]], *, focus: int | None = None,
                value_label: str = "saliency", example: int | None = None) -> HTML:
    """One clickable span per unit (``data-click="tok:<k>"``), coloured, its value in the tooltip.

    The block carries ``data-example`` and ``data-showing`` (saliency or attention) for tests and scripts.
    """
    parts = [HTML('<div class="tokens" data-showing="{}"{}>').format(
        value_label, HTML(' data-example="{}"').format(int(example)) if example is not None else HTML(""))]
    span = HTML('<span class="{}" data-click="tok:{}" title="{}: {} {:+.4g}" style="background:{};color:{}">{}</span>')
    for k, (unit, value, (background, ink)) in enumerate(zip(units, values, colours)):
        if unit.gap == "\n":
            parts.append(HTML("<br>"))
        elif unit.gap:
            parts.append(" ")
        classes = "tok" + (" special" if unit.special else "") + (" focus" if k == focus else "")
        parts.append(span.format(classes, k, unit.text, value_label, value, background, ink, unit.text))
    parts.append(HTML("</div>"))
    return HTML("").join(parts)


def classes_html(label_names, probs: np.ndarray, *, gold: int | None, target: int,
                 baseline: np.ndarray | None = None) -> HTML:
    """One clickable box per class (``data-click="cls:<c>"``): probability bar, gold star, change from unpruned."""
    box = HTML('<div class="{}" data-click="cls:{}" title="Show saliency for {}"><span class="bar" '
               'style="width:{:.1f}%"></span><span class="name">{}</span><span class="p">{:.1%}</span>{}</div>')
    parts = [HTML('<div class="classes">')]
    for c, name in enumerate(label_names):
        p = float(probs[c])
        classes = "cls" + (" target" if c == target else "") + (" gold" if c == gold else "")
        delta = HTML("")
        if baseline is not None:
            delta = HTML('<span class="delta">unpruned {:.1%} ({:+.1%})</span>').format(
                float(baseline[c]), p - float(baseline[c]))
        parts.append(box.format(classes, c, name, p * 100, name, p, delta))
    parts.append(HTML("</div>"))
    return HTML("").join(parts)


def pruning_summary(label_names, label: int | None, pruned, before: Forward, after: Forward) -> Markdown:
    """Markdown: what the pruned heads do to this example's prediction and loss."""
    names = list(label_names)
    p0, p1 = int(before.probs.argmax()), int(after.probs.argmax())
    text = Markdown("**{} {} pruned** · prediction ").format(len(pruned), "heads" if len(pruned) != 1 else "head")
    text += (Markdown("{} → **{}**").format(names[p0], names[p1]) if p0 != p1 else
             Markdown("{} (unchanged)").format(names[p1]))
    if label is not None:
        l0, l1 = before.loss(label), after.loss(label)
        text += Markdown(" · loss {:.3f} → {:.3f} ({:+.3f})").format(l0, l1, l1 - l0)
    return text


def selection_summary(change: dict, sampled_from: int | None = None) -> Markdown:
    """Markdown for the re-predicted selection."""
    n = change["n"]
    text = Markdown("**{:,}** examples").format(n)
    if sampled_from:
        text += Markdown(" (a random sample of the {:,} selected)").format(sampled_from)
    text += Markdown(" · predictions changed: **{:,}** ({:.1%})").format(change["flipped"],
                                                                          change["flipped"] / max(n, 1))
    if "loss_change" in change:
        text += Markdown(" · mean loss {:.3f} → {:.3f} (**{:+.3f}**)").format(
            change["loss_before"], change["loss_after"], change["loss_change"])
    if "accuracy_before" in change:
        text += Markdown(" · accuracy {:.1%} → {:.1%}").format(change["accuracy_before"], change["accuracy_after"])
    if change.get("baseline") == "extracted":
        text += Markdown(" · unpruned: the checkpoint's extracted predictions (near ties re-checked)")
    return text


def head_name(head) -> str:
    return f"L{head[0]}·H{head[1]}"


# ---------------------------------------------------------------------------------------------------- model side
class NewestOnly:
    """The refreshes of one view overlap (each awaits the model); only the newest may show its outcome, and the
    view's spinner turns until that one ends. ``token = start()``, then ``is_current(token)`` before showing."""

    def __init__(self, spinner):
        self._spinner = spinner
        self._newest = 0

    def start(self) -> int:
        self._newest += 1
        return self._newest

    def is_current(self, token: int) -> bool:
        return token == self._newest

    @contextlib.contextmanager
    def running(self, token: int):
        self._spinner.value = self._spinner.visible = True
        try:
            yield
        finally:
            if self.is_current(token):
                self._spinner.value = self._spinner.visible = False


class SessionModel:
    """The model side of one session: the selected example's encoding, forward passes, saliency, memoised.

    Values are futures of calls running in the shared pool; both views of a session await the same future,
    so selecting an example runs one forward pass even though two views need it. Keys include the checkpoint's
    weights and the pruned heads, so nothing stale is ever returned.
    """

    def __init__(self, state: ExplorerState, size: int = 12):
        self._state = weakref.ref(state)
        self._size = size
        self._memo: OrderedDict = OrderedDict()

    @property
    def state(self) -> ExplorerState:
        return self._state()

    def _call(self, key, fn, *args, **kwargs) -> asyncio.Future:
        future = self._memo.get(key)
        if future is None or (future.done() and future.exception() is not None):
            future = serving.submit(fn, *args, **kwargs)
            self._memo[key] = future
            while len(self._memo) > self._size:
                self._memo.popitem(last=False)
        self._memo.move_to_end(key)
        return asyncio.wrap_future(future)

    def checkpoint(self):
        state = self.state
        if state.run is None or state.checkpoint is None:
            raise T3VisError("no run or checkpoint is open")
        return state.run.checkpoint(state.checkpoint)

    async def server(self) -> ModelServer:
        checkpoint = self.checkpoint()
        return await self._call(("server", checkpoint.weights_path), serving.server_for_checkpoint, checkpoint)

    def _run_key(self) -> str:
        return self.state.run.loc.url

    def _example_text_label(self, example: int) -> tuple[str, int | None]:
        state = self.state
        data = state.data
        text = str(data.text(np.array([example]))[0])
        label = int(data.values("label")[example]) if "label" in data.attributes else None
        return text, label

    async def example(self, example: int) -> tuple[ModelServer, Encoding, int | None]:
        """``(server, encoding, gold label)`` of an example of the open run."""
        server = await self.server()
        run = self._run_key()
        text, label = await self._call(("text", run, example), self._example_text_label, example)
        encoding = await self._call(("encode", server.name, run, example), server.encode, text,
                                    serving.run_max_length(self.state.run))
        return server, encoding, label

    def stored_prediction(self, example: int) -> int | None:
        """The prediction the run store holds for this example at this checkpoint (unpruned), if any."""
        state = self.state
        try:
            if "pred" not in state.data.attributes or not self.checkpoint().has("pred"):
                return None
            return int(state.data.values("pred", state.checkpoint)[example])
        except (T3VisError, IndexError):
            return None

    async def forward(self, example: int, pruned=(), attentions: bool = True) -> Forward:
        """The forward pass; one computed with attentions also answers a request without them."""
        server, encoding, _ = await self.example(example)
        pruned = normalize_pruned(pruned)
        key = ("forward", server.name, self._run_key(), example, pruned)
        if not attentions and key + (True,) in self._memo:
            attentions = True
        return await self._call(key + (attentions,), server.forward, encoding, pruned, attentions=attentions)

    async def saliency(self, example: int, target: int, method: str, pruned=()) -> np.ndarray:
        server, encoding, _ = await self.example(example)
        pruned = normalize_pruned(pruned)
        key = ("saliency", server.name, self._run_key(), example, pruned, int(target), method)
        return await self._call(key, server.saliency, encoding, int(target), method, pruned,
                                **SALIENCY_OPTIONS.get(method, {}))

    async def head_importance(self, example: int, pruned=()) -> np.ndarray:
        """Per-head importance ``[L, H]`` for this example alone (gradient of its loss w.r.t. the gates)."""
        server, encoding, label = await self.example(example)
        if label is None:
            raise T3VisError("instance head importance needs the example's gold label (the run has no 'label')")
        pruned = normalize_pruned(pruned)
        key = ("importance", server.name, self._run_key(), example, pruned)
        return await self._call(key, server.head_importance, encoding, label, pruned)


_SESSIONS: "weakref.WeakKeyDictionary[ExplorerState, SessionModel]" = weakref.WeakKeyDictionary()


#: A readable warning box (Panel's Alert pane loses its contrast under the Material theme).
NOTICE_STYLE = {"background": "#fff4e5", "color": "#5f2b00", "border-left": "4px solid #ed6c02",
                "padding": "0 10px", "border-radius": "4px"}


def session_model(state: ExplorerState) -> SessionModel:
    """The `SessionModel` of a session state (one per state object, shared by its views)."""
    model = _SESSIONS.get(state)
    if model is None:
        model = _SESSIONS[state] = SessionModel(state)
    return model


# ---------------------------------------------------------------------------------------------------- the view
@dataclass
class _Shown:
    """What the view currently shows (kept so token clicks re-render without a model call)."""

    example: int
    encoding: Encoding
    label: int | None
    forward: Forward
    baseline: Forward | None
    target: int
    saliency: np.ndarray


class InstanceView(pn.viewable.Viewer):
    """The selected example: tokens coloured by saliency (click a class to explain it; click a token, with a head
    selected, to see that token's attention), the prediction, and what the pruned heads change."""

    state = param.ClassSelector(class_=ExplorerState)
    merge_words = param.Boolean(default=True, doc="Show words (word-pieces merged) rather than tokens.")
    focus = param.Integer(default=None, allow_None=True, doc="Unit whose attention is shown (None = saliency).")

    def __init__(self, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self.model = session_model(state)
        self._shown: _Shown | None = None
        self._header = MarkdownPane("", sizing_mode="stretch_width", margin=(0, 5))
        self._message = AlertPane("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self._notice = MarkdownPane("", visible=False, sizing_mode="stretch_width", margin=(4, 5),
                                    styles=NOTICE_STYLE)
        self._pruning = MarkdownPane("", visible=False, sizing_mode="stretch_width", margin=(0, 5))
        self._classes = ClickableHTML(on_click=self._on_click)
        self._legend = MarkdownPane("", sizing_mode="stretch_width", margin=(0, 5))
        self._tokens = ClickableHTML(on_click=self._on_click)
        self._busy = pn.indicators.LoadingSpinner(value=False, size=18, visible=False)
        self._newest = NewestOnly(self._busy)
        self._repredict = pn.widgets.Button(label="Re-predict selection with pruned heads", color="primary",
                                            disabled=True)
        self._repredict.on_click(self._on_repredict)
        self._progress = pn.indicators.Progress(value=0, max=100, visible=False, sizing_mode="stretch_width",
                                                bar_color="primary")
        self._selection = MarkdownPane("", sizing_mode="stretch_width", margin=(0, 5))
        controls = pn.Row(
            pn.widgets.Checkbox.from_param(self.param.merge_words, name="merge word-pieces"),
            pn.widgets.Select.from_param(state.param.saliency_method, name="", width=180),
            self._busy)
        self._layout = pn.Column(
            pn.Row(self._header, controls), self._message, self._notice, self._pruning, self._classes,
            self._legend, self._tokens, pn.Row(self._repredict), self._progress, self._selection,
            sizing_mode="stretch_width", name="Instance")
        state.param.watch(self._on_new_example, ["run", "checkpoint", "example"])  # registered first: runs first
        state.param.watch(self._on_state, ["run", "checkpoint", "example", "pruned_heads", "saliency_method",
                                           "target_class"])
        state.param.watch(self._on_head, ["head"])
        state.param.watch(self._on_pruned_count, ["pruned_heads", "n_selected"])
        self._on_pruned_count()
        param.parameterized.async_executor(self.refresh)

    def __panel__(self):
        return self._layout

    # ------------------------------------------------------------------ events
    def _on_new_example(self, *events) -> None:
        """A new example starts from its own prediction, without a focused token (runs before `_on_state`)."""
        self.focus = None
        self.state.target_class = None

    async def _on_state(self, *events) -> None:
        await self.refresh()

    def _on_head(self, *events) -> None:
        self._render()

    @param.depends("merge_words", watch=True)
    def _on_merge(self) -> None:
        self.focus = None
        self._render()

    def _on_click(self, key: str) -> None:
        kind, _, value = key.partition(":")
        if kind == "cls":
            self.focus = None
            self.state.target_class = int(value)
        elif kind == "tok":
            unit = int(value)
            self.focus = None if self.focus == unit else unit
            self._render()

    def _on_pruned_count(self, *events) -> None:
        state = self.state
        n = state.n_selected if state.mask is not None else state.n_total
        heads = len(state.pruned_heads)
        count = f"{n:,} examples" if n <= MAX_REPREDICT else f"{MAX_REPREDICT:,} of {n:,} examples"
        self._repredict.disabled = not heads or not n
        self._repredict.label = (f"Re-predict {count} with {heads} pruned head{'s' if heads != 1 else ''}"
                                 if heads else "Prune heads to re-predict the selection")
        if events:
            self._selection.object = ""

    # ------------------------------------------------------------------ computing
    def _show_message(self, text: str) -> None:
        self._message.object = text
        self._message.visible = bool(text)

    async def refresh(self) -> None:
        """Recompute for the current state (example, checkpoint, pruned heads, method, target class)."""
        token = self._newest.start()
        state = self.state
        if state.example is None or state.run is None:
            self._shown = None
            self._show_message("")
            self._header.object = Markdown("**Instance** · pick an example in the table or a plot.")
            self._render()
            return
        example, pruned, method = int(state.example), normalize_pruned(state.pruned_heads), state.saliency_method
        early = None
        with self._newest.running(token):
            try:
                server, encoding, label = await self.model.example(example)
                asked = state.target_class if state.target_class in range(server.num_labels) else None
                # Saliency needs its class. Start it beside the forward pass on a guess (the class asked for, else
                # the prediction stored in the run) and redo it only when the guess proves wrong: the two calls run
                # on two workers, so selecting an example costs about one saliency call, not a forward pass plus one.
                guess = asked if asked is not None else self.model.stored_prediction(example)
                if guess is not None:
                    early = asyncio.ensure_future(self.model.saliency(example, guess, method, pruned))
                    early.add_done_callback(_consume)  # it may end unawaited (wrong guess, error elsewhere)
                passes = [self.model.forward(example, pruned)]
                if pruned:
                    passes.append(self.model.forward(example, (), attentions=False))
                forward, *rest = await asyncio.gather(*passes)
                baseline = rest[0] if rest else None
                target = asked if asked is not None else int(forward.probs.argmax())
                if early is not None and guess == target:
                    saliency = await early
                else:
                    saliency = await self.model.saliency(example, target, method, pruned)
            except T3VisError as err:
                if self._newest.is_current(token):
                    self._shown = None
                    self._show_message(str(err))
                    self._render()
                return
        if not self._newest.is_current(token):
            return  # a newer request superseded this one
        self._show_message("")
        self._shown = _Shown(example, encoding, label, forward, baseline, target, saliency)
        self._render()

    def _label_names(self, n: int) -> list[str]:
        names = list(self.state.run.label_names) if self.state.run is not None else []
        return names if len(names) == n else [str(c) for c in range(n)]

    def _render(self) -> None:
        shown = self._shown
        if shown is None:
            self._classes.html = self._tokens.html = ""
            self._legend.object = ""
            self._notice.visible = self._pruning.visible = False
            return
        encoding, forward = shown.encoding, shown.forward
        names = self._label_names(len(forward.probs))
        pred = int(forward.probs.argmax())
        gold = shown.label
        header = Markdown("**Example {}**").format(shown.example)
        if gold is not None:
            header += Markdown(" · gold **{}**").format(names[gold])
        header += Markdown(" · predicted **{}** ({:.1%})").format(names[pred], forward.probs[pred])
        if gold is not None:
            header += " ✓" if gold == pred else " ✗"
        self._header.object = header
        self._notice.object = (Markdown("**Truncated:** this text is longer than the {} tokens the model reads (the "
                                        "run's maximum length); only its first {} tokens are analysed and shown.")
                               .format(encoding.max_length, len(encoding)) if encoding.truncated else "")
        self._notice.visible = encoding.truncated
        pruned = normalize_pruned(self.state.pruned_heads)
        if shown.baseline is not None:
            self._pruning.object = pruning_summary(names, gold, pruned, shown.baseline, forward)
        self._pruning.visible = shown.baseline is not None
        self._classes.html = classes_html(names, forward.probs, gold=gold, target=shown.target,
                                          baseline=None if shown.baseline is None else shown.baseline.probs)
        units = token_units(encoding, self.merge_words)
        focus = self.focus if self.focus is not None and self.focus < len(units) else None
        head = self.state.head
        method = self.state.saliency_method.replace("_", " ")
        if focus is not None and head is not None and forward.attentions is not None:
            layer, h = head
            values = attention_from(forward.attentions[layer, h], units[focus], units)
            self._legend.object = Markdown("Attention of **{}** over the input in head **{}** (click the token "
                                           "again for saliency)").format(units[focus].text, head_name(head))
            self._tokens.html = tokens_html(units, values, sequential_colours(values), focus=focus,
                                            value_label="attention", example=shown.example)
            return
        values = unit_sums(shown.saliency, units)
        legend = Markdown("Saliency ({}) for class **{}**: <span style='color:#d62728'>red</span> supports it, "
                          "<span style='color:#1f77b4'>blue</span> speaks against it. Click a class to explain "
                          "it").format(method, names[shown.target])
        legend += Markdown(", a token to see its attention in the selected head." if head is not None else
                           "; select a head in the head view, then click a token to see its attention.")
        if focus is not None and head is None:
            legend = Markdown("**Select a head in the attention-head view** to see where this token attends. ") + legend
        self._legend.object = legend
        self._tokens.html = tokens_html(units, values, diverging_colours(values), focus=focus, example=shown.example)

    # ------------------------------------------------------------------ selection
    def _selection_rows(self) -> tuple[np.ndarray, int | None]:
        rows = self.state.rows()
        if len(rows) <= MAX_REPREDICT:
            return rows, None
        rng = np.random.default_rng(0)
        return np.sort(rng.choice(rows, MAX_REPREDICT, replace=False)), len(rows)

    async def _on_repredict(self, event=None) -> None:
        await self.repredict_selection()

    async def repredict_selection(self) -> dict | None:
        """Predict the current selection with and without the pruned heads (batched, with progress)."""
        state = self.state
        pruned = normalize_pruned(state.pruned_heads)
        if state.run is None or not pruned:
            return None
        rows, sampled_from = self._selection_rows()
        self._repredict.disabled = True
        self._progress.visible, self._progress.value = True, 0
        self._selection.object = Markdown("Re-predicting {:,} examples…").format(len(rows))
        try:
            server = await self.model.server()
            max_length = serving.run_max_length(state.run)
            checkpoint = self.model.checkpoint()
            texts, stored = await acall(lambda: ([str(t) for t in state.data.text(rows)],
                                                 serving.extracted_logits(checkpoint, rows, max_length)))
            labels = np.asarray(state.data.values("label"))[rows] if "label" in state.data.attributes else None

            def progress(done, total):
                self._progress.value = int(100 * done / max(total, 1))

            before, after = await server.apredict_pruning(texts, labels, pruned, stored_logits=stored,
                                                          max_length=max_length, progress=progress)
        except T3VisError as err:
            self._selection.object = Markdown("Cannot re-predict: {}").format(err)
            return None
        finally:
            self._progress.visible = False
            self._on_pruned_count()
        change = prediction_change(before, after)
        if labels is not None and len(labels):
            change["accuracy_before"] = float((before.pred == labels).mean())
            change["accuracy_after"] = float((after.pred == labels).mean())
        change["pruned"] = [list(h) for h in pruned]
        change["baseline"] = "fresh" if stored is None else "extracted"
        self._selection.object = selection_summary(change, sampled_from)
        self.last_change = change
        return change


def _consume(task: asyncio.Future) -> None:
    """Retrieve a task's outcome so an unawaited failure is not reported as 'never retrieved'."""
    if not task.cancelled():
        task.exception()


def pruned_json(pruned) -> str:
    """The pruned heads as JSON ``[[layer, head], ...]`` (what the export button downloads)."""
    return json.dumps([list(h) for h in normalize_pruned(pruned)])
