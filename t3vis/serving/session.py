"""The model side of one explorer session: the selected example's encoding, forward passes, saliency, memoised.

Why here and not in the UI: it is the session's view of the shared servers (which checkpoint, which pruned heads,
which example) and needs no widget. The session state is taken duck-typed (``run``, ``checkpoint``, ``data``,
as :class:`t3vis.ui.state.ExplorerState` has them), so this module imports neither panel nor the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import OrderedDict

import numpy as np

from ..analysis.saliency import get_method
from ..errors import T3VisError
from ..tasks.token_classification import sentence_spans
from .registry import server_for_checkpoint
from .results import Encoding, Forward, normalize_pruned
from .server import ModelServer
from .workers import submit


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

    def __init__(self, state, size: int = 12):
        self._state = weakref.ref(state)
        self._size = size
        self._memo: OrderedDict = OrderedDict()

    @property
    def state(self):
        return self._state()

    def _call(self, key, fn, *args, **kwargs) -> asyncio.Future:
        future = self._memo.get(key)
        if future is None or (future.done() and future.exception() is not None):
            future = submit(fn, *args, **kwargs)
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
        return await self._call(("server", checkpoint.weights_path), server_for_checkpoint, checkpoint)

    def _run_key(self) -> str:
        return self.state.run.loc.url

    def _example_text_label(self, example: int) -> tuple[str | list[str], int | None]:
        """The example's text and gold label; for a token run the row's whole sentence (a list of words)."""
        state = self.state
        data = state.data
        label = int(data.values("label")[example]) if "label" in data.attributes else None
        if self.per_word:
            return self.sentence(example)[1], label
        return str(data.text(np.array([example]))[0]), label

    @property
    def per_word(self) -> bool:
        """Whether the open run's rows are words (token classification)."""
        return self.state.run is not None and self.state.run.task == "token_classification"

    def sentence_rows(self, row: int) -> np.ndarray:
        """The rows (words, in order) of the sentence that word ``row`` belongs to."""
        data = self.state.data
        sentence = data.values("sentence")
        s = sentence[int(row)]
        start = int(row) - int(data.values("position")[int(row)])
        stop = start + 1
        while stop < len(sentence) and sentence[stop] == s:
            stop += 1
        return np.arange(start, stop)

    def word_of(self, example: int) -> int | None:
        """The row's word index in its sentence (token runs), else None."""
        return int(self.state.data.values("position")[int(example)]) if self.per_word else None

    def _sentences(self, spans: list[np.ndarray]) -> tuple[list[np.ndarray], list[list[str]], list[np.ndarray]]:
        """Sentences' rows, with their words (read in one call) and gold tag ids."""
        data = self.state.data
        text = [str(w) for w in data.text(np.concatenate(spans))] if spans else []
        ends = np.cumsum([len(s) for s in spans], dtype=np.int64)
        gold = np.asarray(data.values("label"))
        return spans, [text[e - len(s):e] for s, e in zip(spans, ends)], [gold[s].astype(np.int64) for s in spans]

    def sentence(self, row: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Word ``row``'s sentence: its rows, words and gold tag ids. Blocking (reads words): call it in the pool."""
        (rows,), (words,), (gold,) = self._sentences([self.sentence_rows(row)])
        return rows, words, gold

    def sentences_of(self, rows) -> tuple[list[np.ndarray], list[list[str]], list[np.ndarray]]:
        """Every sentence (in order) that holds one of the word ``rows``, as rows, words and gold tag ids: what
        re-predicting those words runs and scores. Blocking: call it in the pool."""
        return self._sentences(sentence_spans(self.state.data.values("sentence"), rows))

    def _input(self, example: int) -> int:
        """The row that names the model input of ``example``: its sentence's first word (token runs), so every word
        of a sentence shares one encoding and one forward pass; else the example itself."""
        return int(self.sentence_rows(example)[0]) if self.per_word else int(example)

    async def example(self, example: int) -> tuple[ModelServer, Encoding, int | None]:
        """``(server, encoding, gold label)`` of an example of the open run (of a word's sentence, for a token
        run: the label is the word's tag)."""
        server = await self.server()
        run = self._run_key()
        text, label = await self._call(("text", run, example), self._example_text_label, example)
        encode = server.encode_words if isinstance(text, list) else server.encode
        encoding = await self._call(("encode", server.name, run, self._input(example)), encode, text,
                                    self.state.run.max_length)
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
        key = ("forward", server.name, self._run_key(), self._input(example), pruned)
        if not attentions and key + (True,) in self._memo:
            attentions = True
        return await self._call(key + (attentions,), server.forward, encoding, pruned, attentions=attentions)

    async def saliency(self, example: int, target: int, method: str, pruned=()) -> np.ndarray:
        server, encoding, _ = await self.example(example)
        pruned = normalize_pruned(pruned)
        key = ("saliency", server.name, self._run_key(), example, pruned, int(target), method)
        word = {"word": self.word_of(example)} if self.per_word else {}
        return await self._call(key, server.saliency, encoding, int(target), method, pruned, **word,
                                **get_method(method).options)

    async def head_importance(self, example: int, pruned=()) -> np.ndarray:
        """Per-head importance ``[L, H]`` for this example alone (gradient of its loss w.r.t. the gates)."""
        server, encoding, label = await self.example(example)
        if label is None:
            raise T3VisError("instance head importance needs the example's gold label (the run has no 'label')")
        if self.per_word:  # a tagger's loss is over the sentence: every word's gold tag
            label = self.state.data.values("label")[self.sentence_rows(example)].astype(np.int64)
        pruned = normalize_pruned(pruned)
        key = ("importance", server.name, self._run_key(), self._input(example), pruned)
        return await self._call(key, server.head_importance, encoding, label, pruned)


_SESSIONS: "weakref.WeakKeyDictionary[object, SessionModel]" = weakref.WeakKeyDictionary()


def session_model(state) -> SessionModel:
    """The `SessionModel` of a session state (one per state object, shared by its views)."""
    model = _SESSIONS.get(state)
    if model is None:
        model = _SESSIONS[state] = SessionModel(state)
    return model
