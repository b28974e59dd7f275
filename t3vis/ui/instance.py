"""Instance view: one example's tokens coloured by saliency or by a head's attention, the prediction, and pruning.

In a token-classification run the example is a word: the view shows its sentence as a strip of words with gold and
predicted tags (a click picks another word), that word's tag probabilities, and saliency for its tag.

The example comes from the session state (``state.example``, set by the table). The model runs off
the UI thread in the shared pool of :mod:`t3vis.serving`, with this session's pruned heads; results are
memoised per session (`session_model`) so the head view and this view share one forward pass.

This module is the view only: what to compute when the state changes and what to show. The HTML of tokens and
classes comes from the pure functions of :mod:`.tokens`, what re-predicting the selection computes from
:mod:`.repredict`; clicks come back through `widgets.ClickableHTML`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import panel as pn
import panel_material_ui as pmui
import param

from ..analysis.saliency import label_of
from ..errors import T3VisError
from ..serving import Encoding, Forward, NewestOnly, acall, normalize_pruned, session_model
from .repredict import MAX_REPREDICT, repredict, selection_sample
from .state import ExplorerState
from .text import HTML, AlertPane, Markdown, MarkdownPane
from .tokens import (
    CLASSES_SHOWN,
    attention_from,
    classes_html,
    diverging_colours,
    head_name,
    pruning_summary,
    selection_summary,
    sequential_colours,
    tags_html,
    token_units,
    tokens_html,
    unit_sums,
    word_tags,
)
from .widgets import NOTICE_STYLE, ClickableHTML

#: The re-predicted selection's result: a callout under its button, so the eye finds it where it clicked.
RESULT_STYLE = {"background": "#e8f1fb", "color": "#0b3c6f", "border-left": "4px solid #1976d2",
                "padding": "0 10px", "border-radius": "4px"}


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
    #: Token runs: the example's index in its sentence, the sentence's rows, words and gold tag ids.
    word: int | None = None
    sentence: np.ndarray | None = None
    words: list[str] | None = None
    gold_tags: np.ndarray | None = None

    @property
    def unit(self) -> Forward:
        """The pass as it concerns the explained unit: the example, or in a token run its word."""
        return self.forward.word(self.word)


class InstanceView(pn.viewable.Viewer):
    """The selected example: tokens coloured by saliency (click a class to explain it; click a token, with a head
    selected, to see that token's attention), the prediction, and what the pruned heads change."""

    state = param.ClassSelector(class_=ExplorerState)
    merge_words = param.Boolean(default=True, doc="Show words (word-pieces merged) rather than tokens.")
    focus = param.Integer(default=None, allow_None=True, doc="Unit whose attention is shown (None = saliency).")
    all_classes = param.Boolean(default=False, doc="List every class, not only the most probable (+N more).")

    def __init__(self, **params):
        super().__init__(**params)
        state = self.state
        self.model = session_model(state)
        self._shown: _Shown | None = None
        self._header = MarkdownPane("", sizing_mode="stretch_width", margin=(0, 5))
        self._message = AlertPane("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self._notice = MarkdownPane("", visible=False, sizing_mode="stretch_width", margin=(4, 5),
                                    styles=NOTICE_STYLE)
        self._pruning = MarkdownPane("", visible=False, sizing_mode="stretch_width", margin=(0, 5))
        self._tags = ClickableHTML(on_click=self._on_click, visible=False)
        self._classes = ClickableHTML(on_click=self._on_click)
        self._legend = MarkdownPane("", sizing_mode="stretch_width", margin=(0, 5))
        self._tokens = ClickableHTML(on_click=self._on_click)
        self._busy = pn.indicators.LoadingSpinner(value=False, size=18, visible=False)
        self._newest = NewestOnly(self._busy)
        self._repredict = pmui.Button(label="Re-predict selection with pruned heads", variant="contained",
                                      color="primary", disabled=True, sizing_mode="stretch_width")
        self._repredict.on_click(self._on_repredict)
        self._progress = pn.indicators.Progress(value=0, max=100, visible=False, sizing_mode="stretch_width",
                                                bar_color="primary")
        self._selection = MarkdownPane("", visible=False, sizing_mode="stretch_width", margin=(4, 5),
                                       styles=RESULT_STYLE)
        controls = pn.Row(
            pmui.Select.from_param(state.param.saliency_method, label="Saliency method", width=200),
            pmui.Checkbox.from_param(self.param.merge_words, label="merge word-pieces"),
            self._busy)
        # re-predicting the selection comes first, under the controls: below the example's tokens its result fell
        # outside the panel's visible part, with nothing pointing to it
        self._top = [controls, self._repredict, self._progress, self._selection, self._header, self._message,
                     self._notice, self._pruning, self._tags]
        self._layout = pn.Column(*self._top, self._classes, self._legend, self._tokens,
                                 sizing_mode="stretch_width", name="Instance")
        self._show_repredict()
        param.parameterized.async_executor(self.refresh)

    def __panel__(self):
        return self._layout

    def _arrange(self, per_word: bool) -> None:
        """A word's saliency comes right under its sentence's tags, the tags to choose from after it (a tagger has
        many: above the saliency they pushed it out of sight); an example's few classes come first."""
        explained = [self._legend, self._tokens]
        order = [*self._top, *(explained + [self._classes] if per_word else [self._classes] + explained)]
        if list(self._layout.objects) != order:
            self._layout.objects = order

    # ------------------------------------------------------------------ events
    # Order matters: `_on_new_example` must run before `_on_state` when the example changes (so the refresh
    # explains the new example's own prediction). param runs the watchers of one parameter in the order they are
    # registered, which for ``@param.depends`` is the order of definition in the class: keep it first.
    @param.depends("state.run", "state.checkpoint", "state.example", watch=True)
    def _on_new_example(self) -> None:
        """A new example starts from its own prediction, without a focused token (runs before `_on_state`)."""
        self.focus = None
        self.state.target_class = None

    @param.depends("state.run", "state.checkpoint", "state.example", "state.pruned_heads", "state.saliency_method",
                   "state.target_class", watch=True)
    async def _on_state(self) -> None:
        await self.refresh()

    @param.depends("state.head", watch=True)
    def _on_head(self) -> None:
        self._render()

    @param.depends("merge_words", watch=True)
    def _on_merge(self) -> None:
        self.focus = None
        self._render()

    def _on_click(self, key: str) -> None:
        kind, _, value = key.partition(":")
        if key in ("cls:all", "cls:few"):
            self.all_classes = key == "cls:all"
            self._render()
        elif kind == "cls":
            self.focus = None
            self.state.target_class = int(value)
        elif kind == "tok":
            unit = int(value)
            self.focus = None if self.focus == unit else unit
            self._render()
        elif kind == "word" and self._shown is not None and self._shown.sentence is not None:
            self.state.example = int(self._shown.sentence[int(value)])  # that word's row: explains its tag

    @param.depends("state.pruned_heads", "state.n_selected", watch=True)
    def _on_pruned_count(self) -> None:
        """The pruning or the selection changed: the last re-predicted selection no longer applies."""
        self._show_repredict()
        self._say("")

    def _show_repredict(self) -> None:
        """The re-predict button's label and state for the current pruning and selection."""
        state = self.state
        n = state.n_selected if state.mask is not None else state.n_total
        heads = len(state.pruned_heads)
        unit = "words" if self.model.per_word else "examples"
        count = f"{n:,} {unit}" if n <= MAX_REPREDICT else f"{MAX_REPREDICT:,} of {n:,} {unit}"
        self._repredict.disabled = not heads or not n
        self._repredict.label = (f"Re-predict {count} with {heads} pruned head{'s' if heads != 1 else ''}"
                                 if heads else "Prune heads to re-predict the selection")

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
            self._header.object = Markdown("**Instance** · pick an example: click a row in the table or a point in a "
                                           "plot.")
            self._render()
            return
        example, pruned, method = int(state.example), normalize_pruned(state.pruned_heads), state.saliency_method
        early = None
        with self._newest.running(token):
            try:
                server, encoding, label = await self.model.example(example)
                word = self.model.word_of(example)
                sentence = await acall(self.model.sentence, example) if word is not None else ()
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
                target = asked if asked is not None else int(forward.word(word).probs.argmax())
                if early is not None and guess == target:
                    saliency = await early
                else:
                    saliency = await self.model.saliency(example, target, method, pruned)
            except T3VisError as err:
                if self._newest.is_current(token):
                    self._shown = None
                    self._header.object = Markdown("**Example {}**").format(example)  # picked, if not explainable
                    self._show_message(str(err))
                    self._render()
                return
        if not self._newest.is_current(token):
            return  # a newer request superseded this one
        self._show_message("")
        self._shown = _Shown(example, encoding, label, forward, baseline, target, saliency, word, *sentence)
        self._render()

    def _label_names(self, n: int) -> list[str]:
        names = list(self.state.run.label_names) if self.state.run is not None else []
        return names if len(names) == n else [str(c) for c in range(n)]

    def _render(self) -> None:
        shown = self._shown
        if shown is None:
            self._classes.html = self._tokens.html = self._tags.html = ""
            self._legend.object = ""
            self._notice.visible = self._pruning.visible = self._tags.visible = False
            return
        encoding, forward, unit = shown.encoding, shown.forward, shown.unit
        names = self._label_names(len(unit.probs))
        gold = shown.label
        self._header.object = self._header_text(shown, names)
        self._notice.object = (Markdown("**Truncated:** this text is longer than the {} tokens the model reads (the "
                                        "run's maximum length); only its first {} tokens are analysed and shown.")
                               .format(encoding.max_length, len(encoding)) if encoding.truncated else "")
        self._notice.visible = encoding.truncated
        pruned = normalize_pruned(self.state.pruned_heads)
        baseline = None if shown.baseline is None else shown.baseline.word(shown.word)
        if baseline is not None:
            self._pruning.object = pruning_summary(names, gold, pruned, baseline, unit)
        self._pruning.visible = baseline is not None
        self._tags.html = self._tag_strip(shown, names) if shown.word is not None else ""
        self._tags.visible = shown.word is not None
        self._arrange(shown.word is not None)
        self._classes.html = classes_html(names, unit.probs, gold=gold, target=shown.target,
                                          baseline=None if baseline is None else baseline.probs,
                                          limit=None if self.all_classes else CLASSES_SHOWN)
        units = token_units(encoding, self.merge_words)
        focus = self.focus if self.focus is not None and self.focus < len(units) else None
        head = self.state.head
        method = label_of(self.state.saliency_method)
        if focus is not None and head is not None and forward.attentions is not None:
            layer, h = head
            values = attention_from(forward.attentions[layer, h], units[focus], units)
            self._legend.object = Markdown("Attention of **{}** over the input in head **{}** (click the token "
                                           "again for saliency)").format(units[focus].text, head_name(head))
            self._tokens.html = tokens_html(units, values, sequential_colours(values), focus=focus,
                                            value_label="attention", example=shown.example)
            return
        values = unit_sums(shown.saliency, units)
        if shown.word is None:
            legend = Markdown("Saliency ({}) for class **{}**: ").format(method, names[shown.target])
        else:
            legend = Markdown("Saliency ({}) for the tag **{}** of **{}**: ").format(
                method, names[shown.target], shown.words[shown.word])
        legend += Markdown("<span style='color:#d62728'>red</span> supports it, <span style='color:#1f77b4'>blue"
                           "</span> speaks against it. Click a {} to explain it").format(
                               "class" if shown.word is None else "tag below")
        if shown.word is not None:
            legend += Markdown(", a word above to explain that word")
        legend += Markdown(", a token to see its attention in the selected head." if head is not None else
                           "; select a head in the head view, then click a token to see its attention.")
        if focus is not None and head is None:
            legend = Markdown("**Select a head in the attention-head view** to see where this token attends. ") + legend
        self._legend.object = legend
        self._tokens.html = tokens_html(units, values, diverging_colours(values), focus=focus, example=shown.example)

    def _header_text(self, shown: _Shown, names: list[str]) -> Markdown:
        """Which example (a token run: which word of which sentence), its gold label, its prediction, ✓ or ✗."""
        unit, gold = shown.unit, shown.label
        pred = int(unit.probs.argmax())
        if shown.word is None:
            header = Markdown("**Example {}**").format(shown.example)
        else:
            sentence = int(self.state.data.values("sentence")[shown.example])
            header = Markdown("**«{}»** · sentence {}, word {}").format(shown.words[shown.word], sentence,
                                                                         shown.word)
        if gold is not None:
            header += Markdown(" · gold **{}**").format(names[gold])
        header += Markdown(" · predicted **{}** ({:.1%})").format(names[pred], unit.probs[pred])
        if gold is not None:
            header += Markdown(" ✓") if gold == pred else Markdown(" ✗")
        return header

    def _tag_strip(self, shown: _Shown, names: list[str]) -> HTML:
        """The sentence's words with gold and predicted tags (with this session's pruning), the shown word marked."""
        tags = word_tags(shown.forward.logits)
        probs = [float(shown.forward.probs[w, t]) if t >= 0 else float("nan") for w, t in enumerate(tags)]
        return tags_html(shown.words, [names[g] for g in shown.gold_tags],
                         [names[t] if t >= 0 else None for t in tags], probs, selected=shown.word)

    # ------------------------------------------------------------------ selection
    def _say(self, text: str) -> None:
        """Show ``text`` (``Markdown``) about the re-predicted selection under its button; "" hides the callout."""
        self._selection.object = text
        self._selection.visible = bool(text)

    async def _on_repredict(self, event=None) -> None:
        await self.repredict_selection()

    async def repredict_selection(self) -> dict | None:
        """Predict the current selection with and without the pruned heads (batched, with progress); in a token run
        the selected words' whole sentences (`tag_change`)."""
        state = self.state
        pruned = normalize_pruned(state.pruned_heads)
        if state.run is None or not pruned:
            return None
        rows, sampled_from = selection_sample(self.state.rows())
        self._repredict.disabled = True
        self._progress.visible, self._progress.value = True, 0
        unit = "words" if self.model.per_word else "examples"
        self._say(Markdown("Re-predicting {:,} {}…").format(len(rows), unit))

        def progress(done, total):
            self._progress.value = int(100 * done / max(total, 1))

        try:
            change = await repredict(state, self.model, await self.model.server(), rows, pruned, progress)
        except T3VisError as err:
            self._say(Markdown("Cannot re-predict: {}").format(err))
            return None
        finally:
            self._progress.visible = False
            self._show_repredict()
        change["pruned"] = [list(h) for h in pruned]
        self._say(Markdown("**Selection re-predicted** with {} pruned head{}: ").format(
            len(pruned), "s" if len(pruned) != 1 else "") + selection_summary(change, sampled_from))
        self.last_change = change
        return change


def _consume(task: asyncio.Future) -> None:
    """Retrieve a task's outcome so an unawaited failure is not reported as 'never retrieved'."""
    if not task.cancelled():
        task.exception()
