"""`ModelServer`: one loaded checkpoint shared by every session of the process; each call names its pruned heads.

Why it looks like this:

- Pruning never touches the weights: each call passes the session's pruned heads, which become head gates
  (:func:`t3vis.models.gates.head_gates`) held in a ``ContextVar`` of the worker thread running that call, so two
  sessions pruning different heads at the same moment each get their own, correct result.
- Interactive calls (prediction, attention, saliency) run in float32 with eager attention, so they match a plain
  forward pass exactly and can return attention weights. Batched re-prediction of a selection runs on a twin
  module tree over the same weight tensors with SDPA attention (no copy of the weights), under bf16 autocast
  where the CPU has fast bf16: ~3x faster here, and it compares pruned with unpruned computed the same way.
  The unpruned side can come from the checkpoint's extracted logits instead (`apredict_pruning`): half the work.
- A token classifier (`per_word`) is served through the same calls: an example is a sentence of words
  (`encode_words`), a forward pass gives one row per word, saliency explains one word's tag, and batched
  re-prediction takes sentences (`apredict_words`).
- Calls run in the shared pool (:mod:`t3vis.serving.workers`); LRP calls hold the model exclusively.

Long file: it is the one class every model call of the app goes through, and its parts share the gates session,
the lock, the twin model and the prediction cache; split by caller, each part would need all four.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelError, T3VisError
from ..models.gates import gates_from_pruned, head_gates, install_head_gates
from ..models.inference import (
    clip_text,
    fast_bf16,
    length_batches,
    model_max_length,
    pad_ids,
    pad_token_id,
    token_logits,
    tokenize,
)
from ..models.loading import load_checkpoint
from ..models.registry import num_layers_heads
from ..tasks import unit_outputs
from . import workers
from .results import (
    BatchPrediction,
    Encoding,
    Forward,
    Pruned,
    batch_prediction,
    needs_recheck,
    normalize_pruned,
)
from .workers import SharedLock, acall, submit

#: Per-example batch predictions kept per server, keyed by (pruned heads, text): the unpruned baseline of a
#: selection is computed once, and undoing a pruning is instant.
PREDICTION_CACHE_SIZE = 200_000


def _twin(model, attn_implementation: str):
    """A second module tree over the SAME weight tensors (nothing copied but Python objects), with its own config
    and attention implementation: batched prediction needs no attention weights, and SDPA is ~1.5x faster than
    the eager attention the interactive calls need for them. Switching the shared model would race other calls.
    """
    shared = {id(tensor): tensor for tensor in itertools.chain(model.parameters(), model.buffers())}
    twin = copy.deepcopy(model, shared)
    try:
        twin.set_attn_implementation(attn_implementation)
    except (ValueError, ImportError, AttributeError):  # the architecture has no such implementation: stay eager
        pass
    return twin.eval()


def _input_key(value: str | list[str]) -> bytes:
    """A cache key for a text, or for a sentence of words (hashed apart, so it never equals a text's)."""
    words = not isinstance(value, str)
    text = "\x1f".join(value) if words else value
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16,
                           person=b"words" if words else b"").digest()


def _window(jobs: Iterable[tuple[np.ndarray, Callable]], cancel: threading.Event | None = None):
    """Run ``(rows, call)`` jobs in the pool; yield ``(rows, future)`` in order, at most `WORKERS` running at once.

    A bounded window (rather than submitting everything) lets interactive calls from other sessions slip in
    between the batches of a long job, and makes ``cancel`` real: once it is set no further job starts, and
    jobs still queued behind other work are withdrawn; only those already running finish.
    """
    in_flight: deque = deque()
    for rows, call in jobs:
        if cancel is not None and cancel.is_set():
            break
        in_flight.append((rows, submit(call)))
        if len(in_flight) >= workers.WORKERS:
            yield in_flight.popleft()
    for rows, future in in_flight:
        if not (cancel is not None and cancel.is_set() and future.cancel()):
            yield rows, future


class ModelServer:
    """One loaded checkpoint shared by every session of the process; every call names the heads it prunes.

    Methods run in the calling thread: call them through `submit`/`acall` (or `apredict`) from the UI.
    """

    def __init__(self, model, tokenizer, *, name: str = "", batch_autocast: bool | None = None):
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.num_layers, self.num_heads = num_layers_heads(model)
        self.max_length = model_max_length(model, tokenizer)
        self.device = next(model.parameters()).device
        self.batch_autocast = fast_bf16(self.device) if batch_autocast is None else bool(batch_autocast)
        self._pad = pad_token_id(tokenizer, model)
        self._lock = SharedLock()
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.batch_model = _twin(model, "sdpa")
        for gated in (self.model, self.batch_model):  # hooks once, up front: never while a thread runs the model
            install_head_gates(gated)

    @classmethod
    def load(cls, weights_path, **kwargs) -> ModelServer:
        """Load a checkpoint (float32, eager attention so attention weights can be returned)."""
        model, tokenizer = load_checkpoint(weights_path, attn_implementation="eager", dtype=torch.float32)
        return cls(model, tokenizer, name=str(weights_path), **kwargs)

    def __repr__(self) -> str:
        return f"ModelServer({self.name!r}, {self.num_layers}x{self.num_heads} heads)"

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    # ------------------------------------------------------------------ gates
    def gates(self, pruned: Iterable[Sequence[int]] | None) -> torch.Tensor | None:
        """Gates ``[L, H]`` that prune ``pruned`` (None when nothing is pruned: the hooks then do nothing)."""
        pruned = normalize_pruned(pruned)
        return gates_from_pruned(pruned, self.num_layers, self.num_heads) if pruned else None

    @contextmanager
    def _session(self, pruned, *, exclusive: bool = False, model=None):
        """This thread sees the model with ``pruned`` heads gated off; LRP-style calls hold it exclusively."""
        gates = self.gates(pruned)
        model = self.model if model is None else model
        with (self._lock.exclusive() if exclusive else self._lock.shared()), head_gates(model, gates):
            yield

    # ------------------------------------------------------------------ one example
    def encode(self, text: str, max_length: int | None = None) -> Encoding:
        """Tokenize ``text``, truncated to ``max_length`` tokens (default and cap: the model's limit).

        ``truncated`` tells whether the text went past it. A run's own maximum (the length it was trained and
        analysed at, `Run.max_length`) is usually shorter than the model's.
        """
        if not isinstance(text, str):
            raise T3VisError(f"text: expected a string, got {type(text).__name__}")
        max_length = min(int(max_length or self.max_length), self.max_length)
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        clipped = clip_text(text, max_length)  # a prefix: offsets still index ``text``
        enc = self.tokenizer(clipped, truncation=True, max_length=max_length, return_tensors="pt",
                             return_special_tokens_mask=True, return_offsets_mapping=fast)
        ids = enc["input_ids"]
        special = tuple(bool(s) for s in enc["special_tokens_mask"][0].tolist())
        tokens = tuple(self.tokenizer.convert_ids_to_tokens(ids[0].tolist()))
        if fast:
            offsets = tuple((int(a), int(b)) for a, b in enc["offset_mapping"][0].tolist())
            word_ids = tuple(enc.word_ids(0))
            covered = max((end for (_, end), sp in zip(offsets, special) if not sp), default=0)
            truncated = bool(text[covered:].strip())
        else:
            offsets = (None,) * len(tokens)
            word_ids = tuple(None if sp else i for i, sp in enumerate(special))
            full = self.tokenizer(clipped, truncation=False, add_special_tokens=True)["input_ids"]
            truncated = len(clipped) < len(text) or len(full) > max_length
        return Encoding(text=text, input_ids=ids, attention_mask=enc["attention_mask"], tokens=tokens,
                        offsets=offsets, word_ids=word_ids, special=special, truncated=truncated,
                        max_length=max_length)

    @property
    def per_word(self) -> bool:
        """Whether the model tags every token (a token classifier) rather than classifying the whole text."""
        return type(self.model).__name__.endswith("ForTokenClassification")

    def encode_words(self, words: Sequence[str], max_length: int | None = None) -> Encoding:
        """A sentence of words as the tagger sees it (``t3vis.data.subwords.align_words``: whole words kept up to
        ``max_length`` sub-tokens), with character offsets into the words joined by single spaces."""
        from ..data.subwords import align_words

        words = [str(w) for w in words]
        max_length = min(int(max_length or self.max_length), self.max_length)
        alignment = align_words(self.tokenizer, [words], None, max_length)
        ids, word_ids, first = alignment.input_ids[0], alignment.word_ids[0], alignment.first_token[0]
        starts = np.concatenate([[0], np.cumsum([len(w) + 1 for w in words])[:-1]]).astype(int)
        tokens = tuple(self.tokenizer.convert_ids_to_tokens(ids))
        read = np.flatnonzero(first >= 0)
        kept = int(read[-1]) + 1 if len(read) else 0  # words up to the last one read (an empty word may sit inside)
        # offsets within each word (the kept words tokenise to exactly these ids), moved into the joined text
        spans = (self.tokenizer(words[:kept], is_split_into_words=True, return_offsets_mapping=True)["offset_mapping"]
                 if kept else [(0, 0)] * len(ids))
        offsets = tuple((0, 0) if w < 0 else (int(starts[w] + a), int(starts[w] + b))
                        for w, (a, b) in zip(word_ids, spans))
        return Encoding(text=" ".join(words), input_ids=torch.as_tensor([ids]),
                        attention_mask=torch.ones((1, len(ids)), dtype=torch.long), tokens=tokens,
                        offsets=offsets, word_ids=tuple(None if w < 0 else int(w) for w in word_ids),
                        special=tuple(w < 0 for w in word_ids), truncated=kept < len(words),
                        max_length=max_length, first_token=tuple(int(f) for f in first))

    def forward(self, encoding: Encoding, pruned=(), *, attentions: bool = True) -> Forward:
        """Logits and probabilities (float32) and, optionally, every head's attention for one example."""
        with self._session(pruned), torch.inference_mode():
            out = self.model(input_ids=encoding.input_ids.to(self.device),
                             attention_mask=encoding.attention_mask.to(self.device),
                             output_attentions=attentions)
        logits = out.logits[0].float().cpu().numpy()
        if encoding.first_token is not None:  # a tagger: one row per word, at its first sub-token
            logits = token_logits(logits, np.asarray(encoding.first_token))
        maps = None
        if attentions:
            if not out.attentions or out.attentions[0] is None:
                raise ModelError(f"{self.name}: the model returned no attention weights (load it with eager attention)")
            maps = torch.stack([a[0] for a in out.attentions]).to(torch.float16).cpu().numpy()
        probs = unit_outputs(logits.reshape(-1, logits.shape[-1]), None)["probs"].reshape(logits.shape)
        return Forward(logits=logits, probs=probs, attentions=maps)

    def saliency(self, encoding: Encoding, target: int, method: str = "grad_x_input", pruned=(), *,
                 word: int | None = None, **options) -> np.ndarray:
        """Relevance ``[T]`` of each token for class ``target`` (see :func:`t3vis.analysis.saliency.saliency`);
        for a tagger, of ``word``'s tag (its first sub-token's logit, through ``TokenTarget``)."""
        from ..analysis.saliency import TokenTarget, get_method, saliency

        model = self.model
        if encoding.first_token is not None:
            position = encoding.first_token[int(word)] if word is not None else -1
            if position < 0:
                raise T3VisError(f"word {word}: not read by the model (cut off by the maximum length); pick another "
                                 "word" if word is not None else "word: a tagger explains one word's tag; give word=")
            model = TokenTarget(self.model, [position])
        with self._session(pruned, exclusive=get_method(method).exclusive):
            scores = saliency(model, encoding.input_ids, encoding.attention_mask, int(target),
                              method=method, **options)
        return scores[0]

    def head_importance(self, encoding: Encoding, label: int, pruned=(), *, normalize: bool = True) -> np.ndarray:
        """Importance ``[L, H]`` of each head for this one example: ``|d loss / d gate|`` (Michel et al. 2019).

        Gates are ones with the ``pruned`` heads at 0 (so a pruned head's value estimates what restoring it
        does). ``normalize`` divides each layer by its L2 norm, as the run store's ``head_importance`` is.
        """
        from ..analysis.importance import normalize_per_layer

        gates = gates_from_pruned(normalize_pruned(pruned), self.num_layers, self.num_heads).requires_grad_(True)
        with self._lock.shared(), head_gates(self.model, gates), torch.enable_grad():
            logits = self.model(input_ids=encoding.input_ids.to(self.device),
                                attention_mask=encoding.attention_mask.to(self.device)).logits
            if encoding.first_token is not None:  # a tagger: the loss of every word's gold tag (``label``: per word)
                kept = [(f, int(t)) for f, t in zip(encoding.first_token, np.atleast_1d(label)) if f >= 0]
                logits = logits[0, [f for f, _ in kept]]
                target = torch.tensor([t for _, t in kept], device=self.device)
            else:
                target = torch.tensor([int(label)], device=self.device)
            loss = F.cross_entropy(logits.float(), target)
            (gradient,) = torch.autograd.grad(loss, gates)
        raw = gradient.abs().cpu().numpy().astype(np.float32)
        return normalize_per_layer(raw) if normalize else raw

    # ------------------------------------------------------------------ many examples
    def _predict_rows(self, ids: list[list[int]], pruned, positions: list[np.ndarray] | None = None):
        """Logits ``[b, C]`` (float32) for one batch of token-id lists; for a tagger (``positions``: each input's
        words' first sub-tokens) one ``[words, C]`` array per input, NaN for a word cut off."""
        input_ids, mask = pad_ids(ids, self._pad)  # right-padded: positions need no shift
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.batch_autocast
                    else nullcontext())
        with self._session(pruned, model=self.batch_model), torch.inference_mode(), autocast:
            out = self.batch_model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        logits = out.logits.float().cpu().numpy()
        return logits if positions is None else [token_logits(row, p) for row, p in zip(logits, positions)]

    def _plan(self, inputs: list, pruned: Pruned, batch_size: int, max_length: int | None):
        """Cache keys, the logits already cached (by row), and the batches ``(rows, token ids, positions)`` left to
        run. ``inputs`` are texts, or sentences (lists of words, aligned by ``align_words``) for a tagger."""
        from ..data.subwords import align_words

        max_length = min(int(max_length or self.max_length), self.max_length)
        keys = [(pruned, max_length, _input_key(x)) for x in inputs]
        with self._cache_lock:
            cached = {row: self._cache[key] for row, key in enumerate(keys) if key in self._cache}
        todo = np.asarray([row for row in range(len(inputs)) if row not in cached], dtype=np.int64)
        if not len(todo):
            return keys, cached, []
        chosen = [inputs[row] for row in todo]
        if isinstance(chosen[0], str):
            ids, positions = tokenize(self.tokenizer, chosen, max_length), None
        else:
            alignment = align_words(self.tokenizer, chosen, None, max_length)
            ids, positions = alignment.input_ids, alignment.first_token
        batches = [(todo[part], [ids[j] for j in part], None if positions is None else [positions[j] for j in part])
                   for part in length_batches([len(x) for x in ids], batch_size)]
        return keys, cached, batches

    def _schedule(self, batches, pruned: Pruned):
        return _window((rows, lambda ids=ids, at=at: self._predict_rows(ids, pruned, at)) for rows, ids, at in batches)

    def _store(self, keys, cached: dict, rows: np.ndarray, logits) -> int:
        with self._cache_lock:
            for row, value in zip(rows.tolist(), logits):
                self._cache[keys[row]] = value
                cached[row] = value
            while len(self._cache) > PREDICTION_CACHE_SIZE:
                self._cache.popitem(last=False)
        return len(rows)

    def _result(self, cached: dict, labels) -> BatchPrediction:
        n = len(cached)
        logits = np.stack([cached[row] for row in range(n)]) if n else np.zeros((0, self.num_labels), np.float32)
        return batch_prediction(logits, labels)

    def _check_labels(self, texts, labels):
        if labels is None:
            return None
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(texts),):
            raise T3VisError(f"labels: expected one label per text ({len(texts)}), got shape {labels.shape}")
        return labels

    def predict(self, texts: Sequence[str], labels=None, pruned=(), *, batch_size: int = 32,
                max_length: int | None = None, progress: Callable[[int, int], None] | None = None
                ) -> BatchPrediction:
        """Predict many texts with ``pruned`` heads gated off, batches spread over the pool.

        Texts are truncated to ``max_length`` tokens (default and cap: the model's limit). ``progress(done,
        total)`` is called after each batch. Results are cached per (pruned heads, text), so the unpruned
        baseline of a selection is computed once. Blocking: call it from a script or a worker thread; the UI
        awaits `apredict`.
        """
        texts, pruned = [str(t) for t in texts], normalize_pruned(pruned)
        labels = self._check_labels(texts, labels)
        keys, cached, batches = self._plan(texts, pruned, batch_size, max_length)
        if progress:
            progress(len(cached), len(texts))
        for rows, future in self._schedule(batches, pruned):
            self._store(keys, cached, rows, future.result())
            if progress:
                progress(len(cached), len(texts))
        return self._result(cached, labels)

    async def _apredict_inputs(self, inputs: list, pruned: Pruned, batch_size: int, max_length: int | None,
                               progress: Callable[[int, int], None] | None) -> dict:
        """Logits of every input by row (cached or computed in the pool), ``progress`` called on the loop."""
        keys, cached, batches = await acall(self._plan, inputs, pruned, batch_size, max_length)
        if progress:
            progress(len(cached), len(inputs))
        for rows, future in self._schedule(batches, pruned):
            self._store(keys, cached, rows, await asyncio.wrap_future(future))
            if progress:
                progress(len(cached), len(inputs))
        return cached

    async def apredict(self, texts: Sequence[str], labels=None, pruned=(), *, batch_size: int = 32,
                       max_length: int | None = None, progress: Callable[[int, int], None] | None = None
                       ) -> BatchPrediction:
        """`predict` for the event loop: tokenizing and batches run in the pool, ``progress`` on the loop."""
        texts, pruned = [str(t) for t in texts], normalize_pruned(pruned)
        labels = self._check_labels(texts, labels)
        cached = await self._apredict_inputs(texts, pruned, batch_size, max_length, progress)
        return self._result(cached, labels)

    async def apredict_words(self, sentences: Sequence[Sequence[str]], pruned=(), *, batch_size: int = 32,
                             max_length: int | None = None, progress: Callable[[int, int], None] | None = None
                             ) -> list[np.ndarray]:
        """A tagger's logits ``[words, C]`` (float32) for each sentence (a list of words) with ``pruned`` heads gated
        off, NaN for a word cut off by ``max_length`` sub-tokens: `apredict` for sentences (same batching, numerics,
        pool and cache), each word read at its first sub-token as the recorder and the pipelines read it."""
        if not self.per_word:
            raise T3VisError(f"{self.name}: a {type(self.model).__name__} classifies whole texts; predicting words "
                             "needs a token classifier (a token-classification run)")
        sentences = [[str(w) for w in words] for words in sentences]
        if any(not words for words in sentences):
            raise T3VisError("sentences: expected at least one word in each sentence, got an empty one")
        cached = await self._apredict_inputs(sentences, normalize_pruned(pruned), batch_size, max_length, progress)
        return [cached[row] for row in range(len(sentences))]

    async def apredict_pruning(self, texts: Sequence[str], labels, pruned, *, stored_logits: np.ndarray | None = None,
                               max_length: int | None = None, progress: Callable[[int, int], None] | None = None
                               ) -> tuple[BatchPrediction, BatchPrediction]:
        """``(before, after)``: predictions of ``texts`` without and with the ``pruned`` heads.

        ``stored_logits`` (the checkpoint's extracted logits for these texts, at the same truncation) stand in for
        the unpruned pass, which halves the work of a first re-prediction. The pipeline computed them in its own
        numerics (bf16 where fast), so they differ from a fresh unpruned pass by rounding: on the demo model mean
        |delta logit| 0.001, against 0.01 for pruning one head. The examples where that rounding could
        decide whether the prediction changed (`needs_recheck`) get a fresh unpruned pass, so the count of changed
        predictions is exact; the mean loss change carries only the rounding noise.
        """
        texts, pruned = [str(t) for t in texts], normalize_pruned(pruned)
        labels = self._check_labels(texts, labels)
        n = len(texts)
        if stored_logits is not None and np.shape(stored_logits) != (n, self.num_labels):
            raise T3VisError(f"stored logits: expected shape ({n}, {self.num_labels}), got {np.shape(stored_logits)}")
        total = n if stored_logits is not None else 2 * n

        def report(offset):
            return (lambda done, _: progress(offset + done, total)) if progress else None

        after = await self.apredict(texts, labels, pruned, max_length=max_length, progress=report(0))
        if stored_logits is None:
            before = await self.apredict(texts, labels, (), max_length=max_length, progress=report(n))
            return before, after
        logits = np.array(stored_logits, dtype=np.float32)
        changed = np.flatnonzero(needs_recheck(logits, after.pred))
        if len(changed):
            fresh = await self.apredict([texts[i] for i in changed], None, (), max_length=max_length)
            logits[changed] = fresh.logits
        return batch_prediction(logits, labels), after

    # ------------------------------------------------------------------ saliency of many examples
    def _saliency_rows(self, encodings: Sequence[Encoding], targets, method: str, pruned: Pruned, options
                       ) -> list[np.ndarray]:
        """Relevance ``[T_i]`` of each encoding of one batch for its target (``None``: its predicted class), padded
        into one pass, under bf16 autocast where fast (grad x input, MiniLM: ~3x faster, r = 0.9998 to float32)."""
        from ..analysis.saliency import get_method, saliency

        side = getattr(self.tokenizer, "padding_side", "right")
        ids, mask = pad_ids([e.input_ids[0].tolist() for e in encodings], self._pad, side)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.batch_autocast else nullcontext()
        entry = get_method(method)
        with self._session(pruned, exclusive=entry.exclusive), autocast:
            if targets is None and not entry.predicts:
                with torch.no_grad():
                    targets = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                                         ).logits.argmax(-1).cpu()
            scores = saliency(self.model, ids, mask, targets, method=method, **options)
        width = ids.shape[1]
        return [scores[i, width - len(e):] if side == "left" else scores[i, :len(e)] for i, e in enumerate(encodings)]

    def _saliency_jobs(self, texts, targets, method, pruned, max_length, batch_size, options):
        """The encodings of ``texts`` and one ``(rows, call)`` job per batch of similar length."""
        from ..analysis.saliency import get_method

        options = dict(get_method(method).options if options is None else options)
        if targets is not None:
            targets = np.asarray(targets, dtype=np.int64)
            if targets.shape != (len(texts),):
                raise T3VisError(f"targets: expected one class per text ({len(texts)}), got shape {targets.shape}")
        encodings = [self.encode(text, max_length) for text in texts]
        jobs = [(rows, lambda rows=rows: self._saliency_rows(
                    [encodings[i] for i in rows], None if targets is None else targets[rows], method, pruned, options))
                for rows in length_batches([len(e) for e in encodings], batch_size)]
        return encodings, jobs

    def saliency_many(self, texts: Sequence[str], targets=None, method: str = "grad_x_input", pruned=(), **kwargs
                      ) -> list[tuple[Encoding, np.ndarray] | None]:
        """`asaliency_many` for scripts and benchmarks (blocking; never call it on a running event loop)."""
        return asyncio.run(self.asaliency_many(texts, targets, method, pruned, **kwargs))

    async def asaliency_many(self, texts: Sequence[str], targets=None, method: str = "grad_x_input", pruned=(), *,
                             max_length: int | None = None, batch_size: int = 8, options=None,
                             progress: Callable[[int, int], None] | None = None,
                             cancel: threading.Event | None = None) -> list[tuple[Encoding, np.ndarray] | None]:
        """``(encoding, relevance [T])`` per text for class ``targets[i]`` (default: the predicted class) by
        ``method``; ``None`` for texts not reached because ``cancel`` was set. Encoding and batches run in the pool,
        ``progress(done, total)`` on the loop after each batch; ``options`` default to the method's interactive ones.
        Gradient methods hold the attribution lock, so batches run one at a time whatever the pool, each short (8
        texts of 128 tokens: ~0.3 s), and other sessions' calls wait little.
        """
        texts, pruned = [str(t) for t in texts], normalize_pruned(pruned)
        encodings, jobs = await acall(self._saliency_jobs, texts, targets, method, pruned, max_length, batch_size,
                                      options)
        out: list = [None] * len(texts)
        done = 0
        for rows, future in _window(jobs, cancel):
            for row, scores in zip(rows.tolist(), await asyncio.wrap_future(future)):
                out[row] = (encodings[row], scores)
            done += len(rows)
            if progress:
                progress(done, len(texts))
        return out
