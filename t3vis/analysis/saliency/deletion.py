"""Faithfulness of an attribution: how fast the prediction falls when its most relevant tokens are deleted.

Not a saliency method but the yardstick for them (``benchmarks/bench_deletion.py`` compares the registry's
methods with it), so it lives beside them.
"""

from __future__ import annotations

import torch

from ...errors import ModelError, T3VisError
from .common import attribution_mode, device_of, selected


def deletion_curve(
    model,
    input_ids,
    attention_mask,
    relevance,
    *,
    fractions=(0.0, 0.1, 0.2, 0.3, 0.5),
    replacement_id: int | None = None,
    protected=None,
) -> torch.Tensor:
    """Probability ``[B, F]`` of each example's predicted class after deleting its most relevant tokens.

    For each fraction ``f`` the ``ceil(f * n)`` tokens of highest (signed) ``relevance`` among the ``n`` attended,
    unprotected ones are replaced by ``replacement_id`` (default ``config.pad_token_id``; attention is kept so
    positions do not shift). A faithful method makes the probability fall fast; the drop is ``p[:, :1] - p``.
    ``protected`` (bool ``[B, T]``, e.g. the tokenizer's special-tokens mask) marks tokens never deleted.
    """
    input_ids = torch.as_tensor(input_ids).long().to(device_of(model))
    attention_mask = torch.as_tensor(attention_mask).to(input_ids.device)
    relevance = torch.as_tensor(relevance, dtype=torch.float32).to(input_ids.device)
    if relevance.shape != input_ids.shape:
        expected = tuple(input_ids.shape)
        raise T3VisError(f"relevance: expected shape {expected} like input_ids, got {tuple(relevance.shape)}")
    replacement_id = model.config.pad_token_id if replacement_id is None else replacement_id
    if replacement_id is None:
        raise ModelError("deletion_curve needs replacement_id or config.pad_token_id")
    candidates = attention_mask.bool()
    if protected is not None:
        candidates &= ~torch.as_tensor(protected, dtype=torch.bool, device=input_ids.device)
    order = relevance.masked_fill(~candidates, -torch.inf).argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)  # 0 for the most relevant token
    available = candidates.sum(1, keepdim=True)
    curve = []
    with attribution_mode(model), torch.no_grad():
        predicted = model(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)
        for fraction in fractions:
            deleted = (rank < torch.ceil(fraction * available)) & candidates
            ids = input_ids.masked_fill(deleted, replacement_id)
            probs = model(input_ids=ids, attention_mask=attention_mask).logits.softmax(-1)
            curve.append(selected(probs, predicted))
    return torch.stack(curve, dim=1)
