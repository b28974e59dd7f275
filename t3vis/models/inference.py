"""The one batching and precision toolkit: training, the pipelines and the model server all batch through it.

Tokenise with early truncation (`clip_text`, `tokenize`), pad (`pad_ids`), bucket by length (`length_batches`),
decide bf16 (`fast_bf16`, `resolve_dtype`, `measured_copy`), the one max-length rule (`model_max_length`,
`resolve_max_length`), and `predict_logits` (logits as the training recorder measures an epoch). Logits become
probabilities, loss and margin only in :func:`t3vis.tasks.unit_outputs` (a floor above), so the same logits give
the same numbers in the store (:mod:`t3vis.analysis.extraction`), the training dynamics and the explorer.

Why the batching looks like it does: texts are tokenised without padding, sorted by length and cut into batches,
so a batch pads to its own longest text (on BBC-like data this removes most padding), and results are put back in
the caller's order. Models are cached per process (``cached_checkpoint``) so a worker loads each checkpoint once.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import copy
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

#: Model types whose classification head reads the first token ([CLS] / <s>); decoders read the last real one.
FIRST_TOKEN_TYPES = ("bert", "electra", "roberta", "xlm-roberta", "camembert", "distilbert", "albert", "deberta",
                     "deberta-v2", "mpnet")
#: Longest input when neither the caller nor the model says (BERT-family position limit), and the most a run
#: measures by default (`resolve_max_length`), so a long-context model is not trained at thousands of tokens.
DEFAULT_MAX_LENGTH = 512


# ---------------------------------------------------------------------------------------------------- dtype
@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16(device: "str | torch.device" = "cpu") -> bool:
    """Whether bf16 matmuls are fast here: a GPU that supports them, or a CPU with AMX or AVX512-BF16.

    Elsewhere bf16 is emulated and slower than fp32 (see DESIGN.md), so ``resolve_dtype("auto")`` picks fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())
    return False


def resolve_dtype(dtype: "str | torch.dtype | None" = "auto", device: "str | torch.device" = "cpu") -> torch.dtype:
    """``"auto"`` (or None) -> bf16 where it is fast, else fp32; names like ``"float32"`` -> that dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype {dtype!r}: expected 'auto' or one of {sorted(names)}")
    return names[dtype]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------- pooling
def classification_position(model_type: str) -> str:
    """``"first"`` where the classifier reads the first token (encoders), ``"last"`` (last real token) elsewhere."""
    return "first" if model_type in FIRST_TOKEN_TYPES else "last"


def default_pooling(model_type: str) -> str:
    """Pooling the projections use by default.

    ``"cls"`` for encoders: their classification head reads that token, so fine-tuning trains it. ``"mean"`` for
    decoders: their "cls" (the last real token) summarises the text only at the top layer, the mean does at all.
    """
    return "cls" if classification_position(model_type) == "first" else "mean"


# ---------------------------------------------------------------------------------------------------- batching
#: Characters one token may stand for, generously: English prose averages ~4.5 per WordPiece/BPE token, and a
#: WordPiece word over 100 characters is one [UNK] token whichever cut leaves it over 100.
CHARS_PER_TOKEN = 64


def clip_text(text: str, max_length: int) -> str:
    """The start of ``text`` that ``max_length`` tokens can reach, so a huge text costs no more than a long one.

    Tokenizers truncate only after tokenising the whole text (one 50 MB text took 7.9 GB and 9x the time of a
    whole training run). ``max_length * CHARS_PER_TOKEN`` characters hold the first ``max_length`` tokens of any
    text that averages fewer characters per token up to there, so those texts keep exactly the token ids they had
    (tests/test_clip_text.py checks BBC News with MiniLM's tokenizer); only text padded with long runs of spaces
    could lose tokens to the cut.
    """
    limit = int(max_length) * CHARS_PER_TOKEN
    return text if len(text) <= limit else text[:limit]


def tokenize(tokenizer, texts, max_length: int, block: int = 1024) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length``, special tokens added, no padding (batches pad only to
    their longest). Tokenised ``block`` texts at a time, so the tokenizer's output for a large dataset stays small."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), block):
        enc = tokenizer([clip_text(str(t), max_length) for t in texts[start:start + block]], truncation=True,
                        max_length=int(max_length), padding=False, return_attention_mask=False,
                        return_token_type_ids=False)
        ids.extend(enc["input_ids"])
    return ids


def length_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (sorted, stable), so each pads to little."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_ids(ids: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest (on the right, or on the left for a tokenizer that pads there): ``(input_ids,
    attention_mask)`` as int64 tensors."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        span = slice(width - len(x), width) if padding_side == "left" else slice(0, len(x))
        input_ids[i, span] = torch.as_tensor(x, dtype=torch.long)
        mask[i, span] = 1
    return input_ids, mask


def pad_token_id(tokenizer, model: nn.Module | None = None) -> int:
    """The tokenizer's padding id, else the model config's, else end-of-sequence, else 0."""
    for candidate in (getattr(tokenizer, "pad_token_id", None),
                      getattr(getattr(model, "config", None), "pad_token_id", None),
                      getattr(tokenizer, "eos_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


# ---------------------------------------------------------------------------------------------------- max length
#: Tokenizers report "no limit" as a huge sentinel (1e30); anything above this is not a real limit.
NO_LIMIT = 1_000_000


def input_limit(model: nn.Module | None, tokenizer=None) -> int | None:
    """The longest input ``model`` and ``tokenizer`` take (position embeddings less those reserved before the
    first token, capped by the tokenizer's limit), or None when neither says."""
    from ..errors import ModelError
    from .registry import spec_for

    limits = []
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if positions:
        try:
            offset = spec_for(model).position_offset
        except ModelError:  # not head-addressable: no reserved positions known
            offset = 0
        limits.append(int(positions) - offset)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < NO_LIMIT:
        limits.append(int(tok_max))
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None


def model_max_length(model: nn.Module, tokenizer=None) -> int:
    """The longest input the model takes: its position limit, capped by the tokenizer's, else 512."""
    return input_limit(model, tokenizer) or DEFAULT_MAX_LENGTH


def resolve_max_length(tokenizer, model: nn.Module | None = None, max_length: int | None = None) -> int:
    """The truncation a new run trains and measures at: ``max_length`` when given, else the model's limit
    (`model_max_length`) capped at `DEFAULT_MAX_LENGTH`. Readers of a run use what it recorded instead."""
    if max_length is not None:
        return int(max_length)
    return min(DEFAULT_MAX_LENGTH, input_limit(model, tokenizer) or DEFAULT_MAX_LENGTH)


# ---------------------------------------------------------------------------------------------------- logits
def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def measured_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` itself when its weights are already ``dtype``, else a copy cast to it (the training weights stay
    as they are): the pipelines load a checkpoint cast to ``dtype``, so measuring the cast weights gives their
    numbers."""
    if next(model.parameters()).dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype)


@contextmanager
def measuring(model: nn.Module, bf16: bool = False):
    """``measured_copy`` of ``model`` (bf16 when ``bf16``) in eval mode, for a measurement pass; ``model``'s own
    train/eval mode is restored after, since the copy may be the model itself."""
    measured = measured_copy(model, torch.bfloat16 if bf16 else next(model.parameters()).dtype)
    was_training = model.training
    measured.eval()
    try:
        yield measured
    finally:
        model.train(was_training)


def predict_logits(model: nn.Module, token_ids: Sequence[Sequence[int]], *, pad_id: int,
                   padding_side: str = "right", batch_size: int = 64, bf16: bool = False,
                   chunk_rows: int | None = None, on_batch=None,
                   positions: Sequence[np.ndarray] | None = None, feature_units: np.ndarray | None = None):
    """Logits ``[n, classes]`` (float32) in eval mode without gradients, computed the way the pipelines' extraction
    computes a checkpoint's: rows in blocks of ``chunk_rows`` (default: the store's chunk), each cut into length-sorted
    batches (``length_batches``), padded (``pad_ids``), with the weights cast to bf16 when ``bf16`` (a copy; never
    autocast). Same weights, same numbers, up to bf16 rounding. The model's train/eval mode is restored.

    ``on_batch(rows_done)`` is called after each batch (for progress bars).

    ``positions`` (a token classifier, logits ``[batch, tokens, classes]``): per input, the token positions whose
    logits to keep (a word's first sub-token; -1: not measured, NaN logits). The result then has one row per
    position, inputs in order (``unit_offsets``).

    ``feature_units`` (with ``positions``; a boolean mask over the units): also return, as ``(logits, features)``,
    the encoder's last hidden state (what the classification head reads) at those units, ``[mask.sum(), D]``
    float32 in unit order (NaN for units without a position).
    """
    from ..store.schema import CHUNK_ROWS

    chunk_rows = int(chunk_rows or CHUNK_ROWS)
    lengths = np.fromiter(map(len, token_ids), np.int64, len(token_ids))
    offsets = None if positions is None else unit_offsets(positions)
    if feature_units is not None and positions is None:
        raise ValueError("predict_logits: feature_units needs positions (a token classifier's units)")
    feature_row = None  # where each unit's features go (-1: not asked for)
    if feature_units is not None:
        feature_units = np.asarray(feature_units, bool)
        feature_row = np.where(feature_units, np.cumsum(feature_units) - 1, -1)
    features: np.ndarray | None = None
    out: np.ndarray | None = None
    with measuring(model, bf16) as measured, torch.inference_mode():
        device = model_device(measured)
        for start in range(0, len(token_ids), chunk_rows):
            block = np.arange(start, min(len(token_ids), start + chunk_rows))
            for batch in length_batches(lengths[block], batch_size):
                rows = block[batch]
                input_ids, mask = pad_ids([token_ids[r] for r in rows], pad_id, padding_side)
                output = measured(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                  **({"output_hidden_states": True} if feature_row is not None else {}))
                logits = output.logits.float().cpu().numpy()
                hidden = None if feature_row is None else output.hidden_states[-1].float().cpu().numpy()
                if hidden is not None and features is None:
                    features = np.full((int(feature_units.sum()), hidden.shape[-1]), np.nan, np.float32)
                if out is None:
                    units = len(token_ids) if positions is None else int(offsets[-1])
                    out = np.empty((units, logits.shape[-1]), np.float32)
                if positions is None:
                    out[rows] = logits
                else:
                    shift = input_ids.shape[1] - mask.sum(1).numpy() if padding_side == "left" else None
                    for i, r in enumerate(rows):
                        step = 0 if shift is None else int(shift[i])
                        out[offsets[r]:offsets[r + 1]] = token_logits(logits[i], positions[r], step)
                        if hidden is not None:
                            wanted = feature_row[offsets[r]:offsets[r + 1]]
                            kept = wanted >= 0
                            features[wanted[kept]] = token_logits(hidden[i], positions[r], step)[kept]
                if on_batch is not None:
                    on_batch(len(rows))
    out = out if out is not None else np.empty((0, 0), np.float32)
    if feature_row is None:
        return out
    return out, features if features is not None else np.empty((0, 0), np.float32)


def unit_offsets(positions: Sequence[np.ndarray]) -> np.ndarray:
    """Where each input's units start in a per-unit array (``[n_inputs + 1]``, the last entry the total)."""
    return np.concatenate([[0], np.cumsum([len(p) for p in positions])]).astype(np.int64)


def token_logits(logits: np.ndarray, positions: np.ndarray, shift: int = 0) -> np.ndarray:
    """The rows of one input's token logits ``[tokens, C]`` at ``positions`` (+ ``shift``: left padding), NaN for
    a position of -1 (a word the truncation cut off)."""
    positions = np.asarray(positions, np.int64)
    out = np.full((len(positions), logits.shape[-1]), np.nan, np.float32)
    kept = positions >= 0
    out[kept] = logits[positions[kept] + shift]
    return out


# ---------------------------------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module
    tokenizer: object
    dtype: torch.dtype
    device: str


_CACHE: "OrderedDict[tuple, LoadedModel]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: Checkpoints kept loaded per process: the one being processed and the next, so a worker never thrashes.
CACHE_SIZE = int(os.environ.get("T3VIS_MODEL_CACHE", "2"))
#: How many times this process loaded a model (the pipelines' tests check "once per worker").
LOAD_COUNT = {"n": 0}


def cached_checkpoint(weights: str, *, dtype: "str | torch.dtype | None" = "auto", device: str | None = None,
                      attn_implementation: str = "sdpa") -> LoadedModel:
    """Load a checkpoint once per process (keyed by path, dtype, device, attention) and keep the last few.

    Workers call this from every task, so a checkpoint is read from disk once per worker, never sent through the
    task graph. Loading happens under a lock: two threads of one worker never load the same model twice.
    """
    from .loading import load_checkpoint

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    key = (os.fspath(weights), _stamp(weights), str(torch_dtype), device, attn_implementation)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        model, tokenizer = load_checkpoint(weights, attn_implementation=attn_implementation, dtype=torch_dtype)
        model.to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        loaded = LoadedModel(model, tokenizer, torch_dtype, device)
        LOAD_COUNT["n"] += 1
        _CACHE[key] = loaded
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return loaded


def _stamp(weights) -> tuple:
    """When the weight files last changed: a checkpoint rewritten in place is loaded again, not served stale."""
    stamps = []
    for name in ("config.json", "model.safetensors"):
        try:
            stamps.append(os.stat(os.path.join(weights, name)).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
