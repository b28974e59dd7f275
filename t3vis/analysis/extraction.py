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
    labels = np.asarray(labels, dtype=np.int64)
    ids = tokenize(tokenizer, texts, max_length or model_max_length(model, tokenizer))
    pad = pad_token_id(tokenizer, model)
    n = len(ids)
    out: dict[str, np.ndarray] = {}
    for rows in length_batches([len(x) for x in ids], batch_size):
        input_ids, mask = pad_ids([ids[i] for i in rows], pad)
        part = pooled_outputs(model, input_ids, mask, torch.as_tensor(labels[rows]), task)
        for name, values in part.items():
            axis = 1 if name.startswith("hidden") else 0
            if name not in out:
                shape = list(values.shape)
                shape[axis] = n
                out[name] = np.empty(shape, values.dtype)
            index = (slice(None), rows) if axis else rows
            out[name][index] = values
    return out
