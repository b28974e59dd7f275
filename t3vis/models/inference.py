"""Batched forward passes that return what the run store keeps per example.

For every example: the pooled hidden state of every layer (the classification token and the mean over real
tokens), logits, loss, prediction, gold-label probability and token length. The Dask workers, the benchmarks and
the tests share this code, so the numbers in the store are exactly what a plain forward pass gives.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Model types whose classification head reads the first token ([CLS] / <s>); decoders read the last real one.
FIRST_TOKEN_TYPES = ("bert", "electra", "roberta", "xlm-roberta", "camembert", "distilbert", "albert", "deberta",
                     "deberta-v2", "mpnet")
#: Longest input when neither the caller nor the model says (BERT-family position limit).
DEFAULT_MAX_LENGTH = 512
#: Arrays ``extract`` returns, in the order the store lists them.
OUTPUT_NAMES = ("hidden_cls", "hidden_mean", "logits", "loss", "pred", "gold_prob", "length")


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


def pad_ids(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest: ``(input_ids, attention_mask)`` as int64 tensors."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = torch.as_tensor(x, dtype=torch.long)
        mask[i, :len(x)] = 1
    return input_ids, mask


def pad_token_id(tokenizer, model: nn.Module | None = None) -> int:
    for candidate in (getattr(tokenizer, "pad_token_id", None),
                      getattr(getattr(model, "config", None), "pad_token_id", None),
                      getattr(tokenizer, "eos_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


# ---------------------------------------------------------------------------------------------------- forward
def pooled_outputs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   labels: torch.Tensor) -> dict[str, np.ndarray]:
    """One forward pass: every layer's pooled hidden states (``[L+1, B, D]`` float16), logits and friends."""
    device = next(model.parameters()).device
    input_ids, attention_mask, labels = input_ids.to(device), attention_mask.to(device), labels.to(device)
    with torch.inference_mode():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        lengths = attention_mask.sum(1)
        # the token the classifier reads: first (encoders) or last real one (decoders; padding is on the right)
        position = 0 if classification_position(model.config.model_type) == "first" else lengths - 1
        rows = torch.arange(len(lengths), device=device)
        cls = torch.stack([h[rows, position] for h in out.hidden_states])  # [L+1, B, D]
        # mean over real tokens, accumulated in fp32 one layer at a time (no [L+1, B, T, D] fp32 copy)
        weights = (attention_mask.to(torch.float32) / lengths[:, None].to(torch.float32))[:, None, :]  # [B, 1, T]
        mean = torch.stack([torch.bmm(weights, h.float())[:, 0] for h in out.hidden_states])
        logits = out.logits.float()
        logp = F.log_softmax(logits, dim=-1)
        loss = F.nll_loss(logp, labels, reduction="none")
        return {
            "hidden_cls": cls.to(torch.float16).cpu().numpy(),
            "hidden_mean": mean.to(torch.float16).cpu().numpy(),
            "logits": logits.cpu().numpy(),
            "loss": loss.cpu().numpy(),
            "pred": logits.argmax(-1).to(torch.int16).cpu().numpy(),
            "gold_prob": logp.gather(1, labels[:, None])[:, 0].exp().cpu().numpy(),
            "length": lengths.to(torch.int32).cpu().numpy(),
        }


def extract(model: nn.Module, tokenizer, texts, labels, *, batch_size: int = 64,
            max_length: int | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` over ``texts`` in length-sorted batches; arrays come back in the order of ``texts``.

    Hidden states are ``[L+1, n, D]`` (layer 0 is the embedding output), the rest ``[n]`` or ``[n, C]``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    ids = tokenize(tokenizer, texts, max_length or model_max_length(model, tokenizer))
    pad = pad_token_id(tokenizer, model)
    n = len(ids)
    out: dict[str, np.ndarray] = {}
    for rows in length_batches([len(x) for x in ids], batch_size):
        input_ids, mask = pad_ids([ids[i] for i in rows], pad)
        part = pooled_outputs(model, input_ids, mask, torch.as_tensor(labels[rows]))
        for name, values in part.items():
            axis = 1 if name.startswith("hidden") else 0
            if name not in out:
                shape = list(values.shape)
                shape[axis] = n
                out[name] = np.empty(shape, values.dtype)
            index = (slice(None), rows) if axis else rows
            out[name][index] = values
    return out


def model_max_length(model: nn.Module, tokenizer=None) -> int:
    """The longest input the model takes: its position limit, capped by the tokenizer's, else 512."""
    limits = []
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions:
        offset = 2 if model.config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(int(positions) - offset)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 1_000_000:
        limits.append(int(tok_max))
    return min(limits) if limits else DEFAULT_MAX_LENGTH


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
