"""Batched forward passes that return what the run store keeps per example (``t3vis extract``).

For every example: the pooled hidden state of every layer (the classification token and the mean over real
tokens), logits, loss, prediction, gold-label probability and token length. The Dask workers, the benchmarks and
the tests share this code, so the numbers in the store are exactly what a plain forward pass gives; loss,
prediction and gold-label probability come from the run's task (:func:`t3vis.tasks.unit_outputs`), as the training
dynamics do.

Why the batching looks like it does: texts are tokenised without padding, sorted by length and cut into batches
(:mod:`t3vis.models.inference`), so a batch pads to its own longest text (on BBC-like data this removes most
padding), and results are put back in the caller's order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.inference import (
    classification_position,
    length_batches,
    model_max_length,
    pad_ids,
    pad_token_id,
    tokenize,
)
from ..tasks import Task, get_task

#: Arrays ``extract`` returns, in the order the store lists them.
OUTPUT_NAMES = ("hidden_cls", "hidden_mean", "logits", "loss", "pred", "gold_prob", "length")


def pooled_outputs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   labels: torch.Tensor, task: Task | None = None) -> dict[str, np.ndarray]:
    """One forward pass: every layer's pooled hidden states (``[L+1, B, D]`` float16), logits and, from them
    (:func:`t3vis.tasks.unit_outputs`), loss, prediction and gold-label probability."""
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
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
        logits = out.logits.float().cpu().numpy()
        units = (task or get_task()).outputs(logits, np.asarray(labels))
        return {
            "hidden_cls": cls.to(torch.float16).cpu().numpy(),
            "hidden_mean": mean.to(torch.float16).cpu().numpy(),
            "logits": logits,
            "loss": units["loss"],
            "pred": units["pred"],
            "gold_prob": units["gold_prob"],
            "length": lengths.to(torch.int32).cpu().numpy(),
        }


def extract(model: nn.Module, tokenizer, texts, labels, *, batch_size: int = 64,
            max_length: int | None = None, task: Task | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` over ``texts`` in length-sorted batches; arrays come back in the order of ``texts``.

    Hidden states are ``[L+1, n, D]`` (layer 0 is the embedding output), the rest ``[n]`` or ``[n, C]``.
    """
    ids = tokenize(tokenizer, texts, max_length or model_max_length(model, tokenizer))
    return extract_ids(model, ids, labels, pad_id=pad_token_id(tokenizer, model), batch_size=batch_size, task=task)


def extract_ids(model: nn.Module, ids, labels, *, pad_id: int, batch_size: int = 64, task: Task | None = None,
                on_batch=None) -> dict[str, np.ndarray]:
    """``extract`` of already tokenised inputs (``ids``: token id lists); ``on_batch(rows)`` after each batch."""
    labels = np.asarray(labels, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for rows in length_batches([len(x) for x in ids], batch_size):
        input_ids, mask = pad_ids([ids[i] for i in rows], pad_id)
        part = pooled_outputs(model, input_ids, mask, torch.as_tensor(labels[rows]), task)
        _place(out, part, rows, len(ids))
        if on_batch is not None:
            on_batch(len(rows))
    return out


def extract_checkpoint(writer, name: str, model: nn.Module, ids, labels, *, pad_id: int, batch_size: int = 64,
                       bf16: bool = False, task: Task | None = None, on_batch=None) -> np.ndarray:
    """The pipelines' extraction of checkpoint ``name``, in this process, from a model in memory: the seven
    arrays are staged chunk by chunk exactly as the Dask tasks stage them (same chunks, batches and cast), for
    ``writer.commit_checkpoint`` once the checkpoint is registered. Returns the logits ``[n, C]``.

    Why: the training recorder measures every example after each epoch anyway; keeping the hidden states of that
    same forward pass spares the pipelines a second pass per checkpoint."""
    from ..models.inference import measuring
    from ..store import schema

    n, rows = len(ids), max(1, min(schema.CHUNK_ROWS, len(ids)))
    labels = np.asarray(labels, np.int64)
    logits = None
    with measuring(model, bf16) as measured:
        for index, start in enumerate(range(0, n, rows)):
            block = slice(start, min(n, start + rows))
            out = extract_ids(measured, ids[block], labels[block], pad_id=pad_id, batch_size=batch_size,
                              task=task, on_batch=on_batch)
            if logits is None:
                layers, _, hidden = out["hidden_cls"].shape
                layout = schema.extracted_layout(n, layers - 1, hidden, out["logits"].shape[1], rows)
                for array in schema.EXTRACTED_ARRAYS:
                    writer.staged_array(schema.checkpoint_path(name, array), *layout[array],
                                        attrs=schema.HIDDEN_ATTRS.get(array))
                logits = np.empty((n, out["logits"].shape[1]), np.float32)
            writer.write_extracted_chunk(name, index, out)
            logits[block] = out["logits"]
    return logits if logits is not None else np.empty((0, 0), np.float32)


def _place(out: dict[str, np.ndarray], part: dict[str, np.ndarray], rows: np.ndarray, n: int) -> None:
    """Put a batch's arrays at ``rows`` of the full arrays (length ``n`` along the row axis, made on first use)."""
    for name, values in part.items():
        axis = 1 if name.startswith("hidden") else 0
        if name not in out:
            shape = list(values.shape)
            shape[axis] = n
            out[name] = np.empty(shape, values.dtype)
        out[name][(slice(None), rows) if axis else rows] = values


# ------------------------------------------------------------------------------------------------ words
def word_outputs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 word_ids: list[list[int]], first_token: list[np.ndarray]) -> dict[str, np.ndarray]:
    """One forward pass of right-padded sentences; per word (sentences in order): the hidden state of every layer
    at its first sub-token (``hidden_cls``, the token its tag is read from) and the mean over its sub-tokens
    (``hidden_mean``), ``[L+1, words, D]`` float16, and the logits at its first sub-token ``[words, C]``. A word
    without sub-tokens (cut off by the truncation) gets zeros and NaN logits."""
    from ..models.inference import token_logits

    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    n_words = [len(f) for f in first_token]
    width, most = input_ids.shape[1], max(max(n_words, default=0), 1)
    # membership [B, W, T]: 1/|sub-tokens of word w| where token t belongs to word w
    member = torch.zeros((len(n_words), most, width), dtype=torch.float32, device=device)
    for b, ids in enumerate(word_ids):
        tokens = [t for t, w in enumerate(ids) if w >= 0]
        member[b, [ids[t] for t in tokens], tokens] = 1.0
    member = member / member.sum(-1, keepdim=True).clamp(min=1.0)
    first = torch.as_tensor(np.concatenate([np.clip(f, 0, None) for f in first_token]) if sum(n_words) else
                            np.zeros(0, np.int64), device=device)
    rows = torch.as_tensor(np.repeat(np.arange(len(n_words)), n_words), device=device)
    slots = torch.as_tensor(np.concatenate([np.arange(k) for k in n_words]) if sum(n_words) else
                            np.zeros(0, np.int64), device=device)
    kept = torch.as_tensor(np.concatenate(first_token) >= 0 if sum(n_words) else np.zeros(0, bool), device=device)
    with torch.inference_mode():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        cls = torch.stack([h[rows, first] for h in out.hidden_states]) * kept[None, :, None]
        mean = torch.stack([torch.bmm(member, h.float())[rows, slots] for h in out.hidden_states])
        logits = out.logits.float().cpu().numpy()
    word_logits = np.concatenate([token_logits(logits[b], first_token[b]) for b in range(len(n_words))]) \
        if sum(n_words) else np.zeros((0, logits.shape[-1]), np.float32)
    return {"hidden_cls": cls.to(torch.float16).cpu().numpy(), "hidden_mean": mean.to(torch.float16).cpu().numpy(),
            "logits": word_logits}


def extract_words(model: nn.Module, tokenizer, sentences, tags, *, batch_size: int = 64,
                  max_length: int | None = None, task: Task | None = None) -> dict[str, np.ndarray]:
    """``extract`` for token classification: ``sentences`` (lists of words) and their ``tags`` (tag ids) in,
    the same seven arrays out with one row per word (sentences in order); ``length`` is the sentence's sub-token
    count. Words cut off by the truncation have NaN loss and gold probability and prediction -1."""
    from ..data.subwords import align_words
    from ..tasks import get_task

    task = task or get_task("token_classification")
    alignment = align_words(tokenizer, sentences, None, max_length or model_max_length(model, tokenizer))
    ids, first_token = alignment.input_ids, alignment.first_token
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in first_token])]).astype(np.int64)
    n_units = int(offsets[-1])
    pad = pad_token_id(tokenizer, model)
    out: dict[str, np.ndarray] = {}
    for rows in length_batches([len(x) for x in ids], batch_size):
        input_ids, mask = pad_ids([ids[i] for i in rows], pad)
        part = word_outputs(model, input_ids, mask, [alignment.word_ids[i] for i in rows],
                            [first_token[i] for i in rows])
        _place(out, part, np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in rows]), n_units)
    labels = np.concatenate([np.asarray(t, np.int64) for t in tags]) if n_units else np.zeros(0, np.int64)
    measured = np.concatenate(first_token) >= 0 if n_units else np.zeros(0, bool)
    unit = task.outputs(np.nan_to_num(out["logits"], nan=0.0), labels)
    for name in ("loss", "gold_prob"):
        out[name] = np.where(measured, unit[name], np.nan).astype(np.float32)
    out["pred"] = np.where(measured, unit["pred"], -1).astype(np.int16)
    out["length"] = np.repeat(np.fromiter(map(len, ids), np.int32, len(ids)), np.diff(offsets))
    return {name: out[name] for name in OUTPUT_NAMES}
