"""Head importance (Michel et al., 2019) and each head's aggregate attention pattern, in one pass over a sample.

Importance: a gate ``xi[l, h]`` multiplies head ``h`` of layer ``l`` (``t3vis.models.gates``); with every gate at 1
the model is unchanged, and ``|d loss / d xi|`` says how much the loss moves if the head is scaled, i.e. a
first-order estimate of what pruning it costs. As in the paper's code, each batch gets one backward pass (to
the gates only: the weights are frozen), the absolute gradient is accumulated over batches, and the result is
divided by the number of examples (``raw``). ``normalized`` divides each layer by its L2 norm (the paper's
per-layer normalisation), so heads are compared within a layer on a common scale.

Aggregate attention: the mean attention matrix per head over the same sample, restricted to the first ``m``
positions; entry ``[i, j]`` averages over the examples that have both positions.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.gates import head_gates
from ..models.inference import length_batches, model_max_length, pad_ids, pad_token_id, tokenize
from ..models.registry import num_layers_heads


@dataclass(frozen=True)
class HeadImportance:
    raw: np.ndarray          # [L, H] float32: mean over examples of |d loss / d gate|, per batch as in the paper
    normalized: np.ndarray   # [L, H] float32: raw divided by each layer's L2 norm
    attention: np.ndarray    # [L, H, m, m] float32: mean attention over the sample (empty m=0 if not asked)
    n_examples: int


def normalize_per_layer(raw: np.ndarray, exponent: float = 2.0) -> np.ndarray:
    """Divide each layer's importances by their L-``exponent`` norm (Michel et al. 2019, section 4.2)."""
    raw = np.asarray(raw, dtype=np.float64)
    norm = np.power(np.power(np.abs(raw), exponent).sum(-1, keepdims=True), 1.0 / exponent)
    return (raw / (norm + 1e-20)).astype(np.float32)


@contextmanager
def _frozen(model: nn.Module):
    """Parameters without gradients for the block: the backward pass then only reaches the gates."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def gated_loss(model: nn.Module, gates: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               labels: torch.Tensor, *, output_attentions: bool = False):
    """Summed cross-entropy of a batch with ``gates`` [L, H] applied; returns ``(loss, attentions or None)``."""
    with head_gates(model, gates):
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=output_attentions)
    logits = out.logits if out.logits.dtype == torch.float64 else out.logits.float()  # fp32 at least
    if logits.ndim == 3:  # a token classifier: labels [B, T], -100 where no tag is read (the standard alignment)
        logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    loss = F.cross_entropy(logits, labels, reduction="sum", ignore_index=-100)
    return loss, (out.attentions if output_attentions else None)


def head_importance(model: nn.Module, tokenizer, texts, labels, *, batch_size: int = 32,
                    max_length: int | None = None, attention_size: int = 64) -> HeadImportance:
    """Importance of every head and its mean attention pattern over ``texts`` (one backward per batch).

    ``attention_size`` is ``m``; 0 skips the attention patterns. Attention needs a model loaded with
    ``attn_implementation="eager"`` (the only one that returns attention weights).
    """
    labels = np.asarray(labels, dtype=np.int64)
    ids = tokenize(tokenizer, texts, max_length or model_max_length(model, tokenizer))
    return importance_of_inputs(model, ids, list(labels), pad_token_id(tokenizer, model), batch_size=batch_size,
                                attention_size=attention_size)


def word_head_importance(model: nn.Module, tokenizer, sentences, tags, *, batch_size: int = 32,
                         max_length: int | None = None, attention_size: int = 64) -> HeadImportance:
    """``head_importance`` of a token classifier over ``sentences`` (lists of words) with their ``tags``: the
    loss is the summed cross-entropy of every word's tag at its first sub-token."""
    from ..data.subwords import align_words

    alignment = align_words(tokenizer, sentences, tags, max_length or model_max_length(model, tokenizer))
    return importance_of_inputs(model, alignment.input_ids, alignment.labels, pad_token_id(tokenizer, model),
                                batch_size=batch_size, attention_size=attention_size)


def importance_of_inputs(model: nn.Module, ids, targets, pad: int, *, batch_size: int = 32,
                         attention_size: int = 64) -> HeadImportance:
    """The shared loop: ``ids`` token ids per input, ``targets`` a class id per input (sequence classifier) or
    a label per token, -100 where none (token classifier)."""
    num_layers, num_heads = num_layers_heads(model)
    device = next(model.parameters()).device
    m = int(attention_size)
    gates = torch.ones(num_layers, num_heads, device=device, requires_grad=True)
    total = torch.zeros(num_layers, num_heads, dtype=torch.float64, device=device)
    att_sum = torch.zeros(num_layers, num_heads, m, m, dtype=torch.float64, device=device)
    att_count = torch.zeros(m, m, dtype=torch.float64, device=device)
    with _frozen(model):
        for rows in length_batches([len(x) for x in ids], batch_size):
            input_ids, mask = pad_ids([ids[i] for i in rows], pad)
            input_ids, mask = input_ids.to(device), mask.to(device)
            loss, attentions = gated_loss(model, gates, input_ids, mask, _batch_targets(targets, rows, mask.shape[1],
                                                                                       device),
                                          output_attentions=m > 0)
            (grad,) = torch.autograd.grad(loss, gates)
            total += grad.abs().double()
            if m:
                _accumulate_attention(att_sum, att_count, attentions, mask, m)
    raw = (total / max(1, len(ids))).cpu().numpy().astype(np.float32)
    attention = (att_sum / att_count.clamp(min=1)).cpu().numpy().astype(np.float32)
    return HeadImportance(raw=raw, normalized=normalize_per_layer(raw), attention=attention, n_examples=len(ids))


def _batch_targets(targets, rows, width: int, device) -> torch.Tensor:
    """The batch's labels: ``[B]`` class ids, or ``[B, width]`` token labels right-padded with -100."""
    picked = [targets[i] for i in rows]
    if np.ndim(picked[0]) == 0:
        return torch.as_tensor(np.asarray(picked, np.int64), device=device)
    out = torch.full((len(picked), width), -100, dtype=torch.long)
    for b, row in enumerate(picked):
        out[b, :len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out.to(device)


def _accumulate_attention(att_sum: torch.Tensor, att_count: torch.Tensor, attentions, mask: torch.Tensor,
                          m: int) -> None:
    """Add a batch's attention over the first ``m`` positions, counting only (query, key) pairs that exist."""
    if attentions is None or any(a is None for a in attentions):
        raise ValueError("the model returned no attention weights; load it with attn_implementation='eager'")
    width = min(m, mask.shape[1])
    valid = mask[:, :width].double()
    pair = valid[:, :, None] * valid[:, None, :]  # [B, w, w]
    att_count[:width, :width] += pair.sum(0)
    for layer, a in enumerate(attentions):
        att_sum[layer, :, :width, :width] += torch.einsum("bhij,bij->hij", a[:, :, :width, :width].detach().double(),
                                                          pair)
