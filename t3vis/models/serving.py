"""Models for the app: one shared copy of each checkpoint per process, each session's pruning its own.

Why it looks like this:

- A server process holds each checkpoint's weights once (`get_server`, a small LRU keyed by path), read-only and
  shared by every session. Pruning never touches the weights: each call passes the session's pruned heads, which
  become head gates (:func:`t3vis.models.gates.head_gates`) held in a ``ContextVar`` of the worker thread running
  that call, so two sessions pruning different heads at the same moment each get their own, correct result.
- Model calls run in one module-level thread pool (`submit`, `acall`), never on the UI event loop, so the page
  stays responsive. Each worker runs torch with ONE intra-op thread: on a busy 2-core box one thread per
  interactive call is faster than two fighting for the cores. Batched re-prediction gets its parallelism from
  the pool instead: its batches are spread over the workers.
- Interactive calls (prediction, attention, saliency) run in float32 with eager attention, so they match a plain
  forward pass exactly and can return attention weights. Batched re-prediction of a selection runs on a twin
  module tree over the same weight tensors with SDPA attention (no copy of the weights), under bf16 autocast
  where the CPU has fast bf16: ~3x faster here, and it compares pruned with unpruned computed the same way.
  The unpruned side can come from the checkpoint's extracted logits instead (`apredict_pruning`): half the work.
- LRP switches the shared model into conservative-propagation mode for the duration of a call; those calls take
  the model exclusively (a readers-writer lock), all others share it.

Core module: imports neither panel nor bokeh.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelError, T3VisError
from .gates import gates_from_pruned, head_gates, install_head_gates
from .inference import clip_text, fast_bf16, length_batches, model_max_length, pad_ids, pad_token_id, tokenize
from .loading import load_checkpoint, weights_directory
from .registry import num_layers_heads

Pruned = tuple[tuple[int, int], ...]

#: Worker threads for model calls (each runs torch single-threaded).
WORKERS = int(os.environ.get("T3VIS_MODEL_WORKERS", max(1, min(8, os.cpu_count() or 1))))
#: Checkpoints kept loaded per server process.
SERVED_MODELS = int(os.environ.get("T3VIS_SERVED_MODELS", "2"))
#: Per-example batch predictions kept per server, keyed by (pruned heads, text): the unpruned baseline of a
#: selection is computed once, and undoing a pruning is instant.
PREDICTION_CACHE_SIZE = 200_000


# ---------------------------------------------------------------------------------------------------- the pool
def _single_threaded_worker() -> None:
    """Pool initializer: torch runs one intra-op thread in this worker.

    ``torch.set_num_threads`` also changes the default that threads started *later* pick up, so the previous
    value is set back from a short-lived helper thread; this worker keeps its one thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(previous,))
    restore.start()
    restore.join()


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """The process-wide pool that runs model calls (created on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(WORKERS, thread_name_prefix="t3vis-model",
                                       initializer=_single_threaded_worker)
        return _POOL


def submit(fn: Callable, /, *args, **kwargs) -> Future:
    """Run ``fn(*args, **kwargs)`` on a model worker thread."""
    return pool().submit(fn, *args, **kwargs)


async def acall(fn: Callable, /, *args, **kwargs):
    """Await ``fn(*args, **kwargs)`` run on a model worker thread (the event loop stays free meanwhile)."""
    return await asyncio.wrap_future(submit(fn, *args, **kwargs))


class _SharedLock:
    """Many holders in shared mode or one in exclusive mode; a waiting exclusive holder goes first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


# ---------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class Encoding:
    """One text as the model sees it, with what the instance view needs to show it.

    ``offsets`` are character spans into ``text`` (``(0, 0)`` for special tokens, or all None without a fast
    tokenizer); ``word_ids`` group word-pieces into words. ``truncated`` says the text went past ``max_length``
    tokens and only its first part is analysed.
    """

    text: str
    input_ids: torch.Tensor  # [1, T]
    attention_mask: torch.Tensor  # [1, T]
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int] | None, ...]
    word_ids: tuple[int | None, ...]
    special: tuple[bool, ...]
    truncated: bool
    max_length: int

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, eq=False)
class Forward:
    """A forward pass on one example: logits and probabilities ``[C]``, attentions ``[L, H, T, T]`` or None.

    Attentions are float16 (for display; 37 MB rather than 75 MB for a 512-token example of a 6x12 model).
    """

    logits: np.ndarray
    probs: np.ndarray
    attentions: np.ndarray | None

    def loss(self, label: int) -> float:
        """Cross-entropy for the gold ``label``."""
        return float(-np.log(max(float(self.probs[int(label)]), 1e-30)))


@dataclass(frozen=True, eq=False)
class BatchPrediction:
    """Predictions for many examples: logits and probs ``[n, C]``, pred ``[n]``, loss ``[n]`` (None without labels)."""

    logits: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    loss: np.ndarray | None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def batch_prediction(logits: np.ndarray, labels: np.ndarray | None) -> BatchPrediction:
    logits = np.asarray(logits, dtype=np.float32)
    probs = _softmax(logits)
    loss = None
    if labels is not None:
        gold = probs[np.arange(len(logits)), np.asarray(labels, dtype=np.int64)]
        loss = -np.log(np.maximum(gold, 1e-30)).astype(np.float32)
    return BatchPrediction(logits, probs, logits.argmax(-1), loss)


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


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def normalize_pruned(pruned: Iterable[Sequence[int]] | None) -> Pruned:
    """Sorted, deduplicated ``((layer, head), ...)``: a stable cache key for a set of pruned heads."""
    return tuple(sorted({(int(layer), int(head)) for layer, head in (pruned or ())}))


# ---------------------------------------------------------------------------------------------------- server
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
        self._lock = _SharedLock()
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
        analysed at, `run_max_length`) is usually shorter than the model's.
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

    def forward(self, encoding: Encoding, pruned=(), *, attentions: bool = True) -> Forward:
        """Logits and probabilities (float32) and, optionally, every head's attention for one example."""
        with self._session(pruned), torch.inference_mode():
            out = self.model(input_ids=encoding.input_ids.to(self.device),
                             attention_mask=encoding.attention_mask.to(self.device),
                             output_attentions=attentions)
        logits = out.logits[0].float().cpu().numpy()
        maps = None
        if attentions:
            if not out.attentions or out.attentions[0] is None:
                raise ModelError(f"{self.name}: the model returned no attention weights (load it with eager attention)")
            maps = torch.stack([a[0] for a in out.attentions]).to(torch.float16).cpu().numpy()
        return Forward(logits=logits, probs=_softmax(logits), attentions=maps)

    def saliency(self, encoding: Encoding, target: int, method: str = "grad_x_input", pruned=(), **options) -> np.ndarray:
        """Relevance ``[T]`` of each token for class ``target`` (see :func:`t3vis.analysis.saliency.saliency`)."""
        from ..analysis.saliency import saliency

        with self._session(pruned, exclusive=(method == "lrp")):
            scores = saliency(self.model, encoding.input_ids, encoding.attention_mask, int(target),
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
            loss = F.cross_entropy(logits.float(), torch.tensor([int(label)], device=self.device))
            (gradient,) = torch.autograd.grad(loss, gates)
        raw = gradient.abs().cpu().numpy().astype(np.float32)
        return normalize_per_layer(raw) if normalize else raw

    # ------------------------------------------------------------------ many examples
    def _predict_rows(self, ids: list[list[int]], pruned) -> np.ndarray:
        """Logits ``[b, C]`` (float32) for one batch of token-id lists."""
        input_ids, mask = pad_ids(ids, self._pad)
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.batch_autocast
                    else nullcontext())
        with self._session(pruned, model=self.batch_model), torch.inference_mode(), autocast:
            out = self.batch_model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        return out.logits.float().cpu().numpy()

    def _plan(self, texts: list[str], pruned: Pruned, batch_size: int, max_length: int | None):
        """Cache keys, the logits already cached (by row), and the batches ``(rows, token ids)`` left to run."""
        max_length = min(int(max_length or self.max_length), self.max_length)
        keys = [(pruned, max_length, _text_key(str(text))) for text in texts]
        with self._cache_lock:
            cached = {row: self._cache[key] for row, key in enumerate(keys) if key in self._cache}
        todo = np.asarray([row for row in range(len(texts)) if row not in cached], dtype=np.int64)
        if not len(todo):
            return keys, cached, []
        ids = tokenize(self.tokenizer, [texts[row] for row in todo], max_length)
        batches = [(todo[part], [ids[j] for j in part]) for part in length_batches([len(x) for x in ids], batch_size)]
        return keys, cached, batches

    def _schedule(self, batches, pruned: Pruned):
        """Yield ``(rows, future)`` in order, with at most `WORKERS` batches running at once.

        A bounded window (rather than submitting everything) lets interactive calls from other sessions slip in
        between the batches of a long job.
        """
        in_flight: deque = deque()
        for rows, ids in batches:
            in_flight.append((rows, submit(self._predict_rows, ids, pruned)))
            if len(in_flight) >= WORKERS:
                yield in_flight.popleft()
        yield from in_flight

    def _store(self, keys, cached: dict, rows: np.ndarray, logits: np.ndarray) -> int:
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

    async def apredict(self, texts: Sequence[str], labels=None, pruned=(), *, batch_size: int = 32,
                       max_length: int | None = None, progress: Callable[[int, int], None] | None = None
                       ) -> BatchPrediction:
        """`predict` for the event loop: tokenizing and batches run in the pool, ``progress`` on the loop."""
        texts, pruned = [str(t) for t in texts], normalize_pruned(pruned)
        labels = self._check_labels(texts, labels)
        keys, cached, batches = await acall(self._plan, texts, pruned, batch_size, max_length)
        if progress:
            progress(len(cached), len(texts))
        for rows, future in self._schedule(batches, pruned):
            self._store(keys, cached, rows, await asyncio.wrap_future(future))
            if progress:
                progress(len(cached), len(texts))
        return self._result(cached, labels)

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


# ---------------------------------------------------------------------------------------------------- registry
_SERVERS: OrderedDict[str, ModelServer] = OrderedDict()
_SERVERS_LOCK = threading.Lock()
_LOADING: dict[str, threading.Lock] = {}


def _check_weights(weights_path, what: str) -> str:
    if not weights_path:
        raise ModelError(f"{what} has no model weights recorded (a synthetic run, or a run written without "
                         "weights), so predictions, attention and saliency cannot be computed for it")
    path = Path(weights_directory(str(weights_path)))
    if not path.is_dir():
        raise ModelError(f"the model weights of {what} are missing: expected a directory with model.safetensors "
                         f"and config.json at {path} (moved or deleted?)")
    return str(path.resolve())


def get_server(weights_path, *, what: str | None = None) -> ModelServer:
    """The shared `ModelServer` of a checkpoint directory, loaded on first use (once, even under concurrency).

    Raises `ModelError` with a message for the user when the weights are not recorded or not on disk.
    """
    key = _check_weights(weights_path, what or f"checkpoint {weights_path}")
    with _SERVERS_LOCK:
        if key in _SERVERS:
            _SERVERS.move_to_end(key)
            return _SERVERS[key]
        loading = _LOADING.setdefault(key, threading.Lock())
    with loading:
        with _SERVERS_LOCK:
            if key in _SERVERS:
                return _SERVERS[key]
        server = ModelServer.load(key)
        with _SERVERS_LOCK:
            _SERVERS[key] = server
            while len(_SERVERS) > SERVED_MODELS:
                _SERVERS.popitem(last=False)
            _LOADING.pop(key, None)
        return server


def server_for_checkpoint(checkpoint) -> ModelServer:
    """The shared server of a run store checkpoint (:class:`t3vis.store.Checkpoint`)."""
    return get_server(checkpoint.weights_path, what=f"checkpoint '{checkpoint.name}' of run '{checkpoint.run.name}'")


def served() -> list[str]:
    """Paths of the checkpoints loaded in this process (for tests and a status line)."""
    with _SERVERS_LOCK:
        return list(_SERVERS)


def clear_servers() -> None:
    with _SERVERS_LOCK:
        _SERVERS.clear()


def run_max_length(run) -> int | None:
    """The truncation a run was trained and analysed with (``attrs.training.max_length``, else the model's)."""
    training = run.attrs.get("training") or {}
    value = training.get("max_length") or run.model.get("max_length")
    return int(value) if value else None


#: Error of extracted (bf16) logits against a fresh pass, relative to the row's largest |logit|: at most 3 % on
#: the demo's four checkpoints (99th percentile 0.6 %). Margins within twice that are re-checked.
STORED_LOGIT_ERROR = 0.03


def needs_recheck(stored_logits: np.ndarray, pruned_pred: np.ndarray) -> np.ndarray:
    """Rows whose unpruned prediction must be recomputed rather than read from rounded stored logits: those where
    the stored prediction differs from the pruned one, and near ties, where rounding could have picked the class.
    """
    stored_logits = np.asarray(stored_logits, dtype=np.float32)
    top2 = np.sort(stored_logits, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    tolerance = 2 * STORED_LOGIT_ERROR * np.abs(stored_logits).max(-1) + 1e-6
    return (stored_logits.argmax(-1) != np.asarray(pruned_pred)) | (margin <= tolerance)


def extracted_logits(checkpoint, rows, max_length: int | None) -> np.ndarray | None:
    """The checkpoint's extracted logits for ``rows`` if the pipeline wrote them at ``max_length``, else None."""
    recorded = (checkpoint.attrs.get("extract") or {}).get("max_length")
    same_truncation = (int(recorded) if recorded else None) == (int(max_length) if max_length else None)
    if not checkpoint.has("logits") or not same_truncation:
        return None
    return checkpoint.read("logits", np.asarray(rows))


def prediction_change(before: BatchPrediction, after: BatchPrediction) -> dict:
    """What pruning changed over a set of examples: flipped predictions and the mean loss change."""
    flipped = int((before.pred != after.pred).sum())
    change = {"n": int(len(before.pred)), "flipped": flipped}
    if before.loss is not None and after.loss is not None and len(before.loss):
        change["loss_before"] = float(before.loss.mean())
        change["loss_after"] = float(after.loss.mean())
        change["loss_change"] = change["loss_after"] - change["loss_before"]
    return change
