"""Attention rollout (Abnar & Zuidema 2020): how much each input token flows into each output position.

Each layer's attention, averaged over heads, is mixed half-and-half with the identity to account for the
residual connection, ``Â = (A + I) / 2`` (rows re-normalised), and the layers are chained,
``rollout = Â_L ... Â_2 Â_1``. Entry ``[i, j]`` is the share of input token ``j`` in position ``i`` at the top.
It needs no gradient: it works from the ``attentions`` a model returns with ``output_attentions=True``
(eager attention). It is not in the registry: it answers "which tokens flow where" (``[B, T, T]``), not "which
tokens support class c", so it takes no target class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import T3VisError


def attention_rollout(
    attentions: Sequence[torch.Tensor], attention_mask: torch.Tensor | None = None, *, residual: bool = True
) -> torch.Tensor:
    """Rollout ``[B, T, T]`` from per-layer attention probabilities ``[B, H, T, T]``, first layer first.

    ``residual=False`` chains the raw head-averaged attentions. With ``attention_mask`` ``[B, T]``, rows and
    columns of padding positions are zeroed.
    """
    if len(attentions) == 0:
        raise T3VisError("attentions: expected one [batch, heads, tokens, tokens] tensor per layer, got none")
    rollout = None
    for layer, attention in enumerate(attentions):
        if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
            shape = tuple(attention.shape)
            raise T3VisError(f"attentions[{layer}]: expected [batch, heads, tokens, tokens], got {shape}")
        mixed = attention.mean(dim=1)
        if residual:
            mixed = mixed + torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
            mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    if attention_mask is not None:
        keep = torch.as_tensor(attention_mask, device=rollout.device).to(rollout.dtype)
        rollout = rollout * keep[:, :, None] * keep[:, None, :]
    return rollout
