"""Gradient methods on the word embeddings: gradient x input (the interactive default) and integrated gradients.

Both attribute the word-embedding lookup only (position and token-type embeddings are constants), the usual
choice and Captum's; the embeddings are swapped in through :func:`common.logits_at`, never ``inputs_embeds``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ...errors import ModelError, T3VisError
from .common import attribution_mode, check_inputs, logits_at, selected, word_embeddings


class IGResult(NamedTuple):
    """Integrated-gradients attributions ``[B, T]`` and their completeness gap ``[B]``:
    ``delta = attributions.sum(-1) - (f(x) - f(baseline))``, which shrinks as ``steps`` grows."""

    attributions: torch.Tensor
    delta: torch.Tensor


def gradient_x_input(model, input_ids, attention_mask, target, *, norm: bool = False) -> torch.Tensor:
    """Gradient x input on the word embeddings: ``[B, T]``, padding 0.

    Per token ``sum_d e_d * dlogit_target / de_d`` over the embedding dimension: signed, positive where the
    token's embedding pushes the target logit up. The attributed input is the word-embedding lookup only
    (position and token-type embeddings are constants), the usual choice and Captum's. ``norm=True`` gives
    the unsigned L2 norm over the embedding dimension instead of the sum.
    ``target`` is a class index or one per example, or None for each example's predicted class (taken from this
    same forward pass, so no separate prediction is needed); the model's mode is restored afterwards.
    """
    predicted = target is None
    input_ids, attention_mask, target = check_inputs(model, input_ids, attention_mask, 0 if predicted else target)
    embeddings = word_embeddings(model, input_ids).requires_grad_(True)
    with attribution_mode(model):
        logits = logits_at(model, input_ids, attention_mask, embeddings)
        if predicted:
            target = logits.detach().argmax(-1)
        (gradient,) = torch.autograd.grad(selected(logits, target).sum(), embeddings)
    product = gradient * embeddings.detach()
    scores = product.norm(dim=-1) if norm else product.sum(-1)
    return scores * attention_mask.to(scores.dtype)


def _quadrature(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and weights summing to 1 for the path integral over alpha."""
    if steps < 2:
        raise T3VisError(f"steps: expected at least 2 integration steps, got {steps}")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    if rule == "trapezoid":
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    raise T3VisError(f"rule: expected 'gausslegendre' or 'trapezoid', got {rule!r}")


def _baseline_embeddings(model, input_ids, baseline) -> torch.Tensor:
    embeddings = word_embeddings(model, input_ids)
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != embeddings.shape:
            expected = tuple(embeddings.shape)
            raise T3VisError(f"baseline: expected embeddings of shape {expected}, got {tuple(baseline.shape)}")
        return baseline.to(embeddings)
    if baseline == "zeros":
        return torch.zeros_like(embeddings)
    if baseline == "pad":
        pad = model.config.pad_token_id
        if pad is None:
            raise ModelError("baseline='pad' needs config.pad_token_id; set it or pass baseline='zeros' or a tensor")
        return word_embeddings(model, torch.full_like(input_ids, pad))
    raise T3VisError(f"baseline: expected 'pad', 'zeros' or a tensor of embeddings, got {baseline!r}")


def integrated_gradients(
    model,
    input_ids,
    attention_mask,
    target,
    *,
    baseline: str | torch.Tensor = "pad",
    steps: int = 64,
    rule: str = "gausslegendre",
    batch_size: int = 64,
) -> IGResult:
    """Integrated gradients (Sundararajan et al. 2017) on the word embeddings: ``IGResult([B, T], delta [B])``.

    ``attr_t = sum_d (e - e')_td * integral_0^1 dlogit/de(e' + a (e - e'))_td da`` with the baseline ``e'``
    the pad token's embedding at every position (``"pad"``), zeros, or a tensor ``[B, T, D]``; position and
    token-type embeddings stay. The integral uses ``rule`` (Gauss-Legendre, or the trapezoid rule on a
    uniform grid) with ``steps`` nodes, evaluated ``batch_size`` rows (nodes x examples) per forward pass.
    ``delta`` is the completeness gap: by the gradient theorem it tends to 0 as the quadrature converges.
    """
    input_ids, attention_mask, target = check_inputs(model, input_ids, attention_mask, target)
    inputs = word_embeddings(model, input_ids)
    reference = _baseline_embeddings(model, input_ids, baseline)
    nodes, weights = _quadrature(steps, rule)
    n = input_ids.shape[0]
    per_pass = max(1, batch_size // n)
    integral = torch.zeros_like(inputs)
    with attribution_mode(model):
        for start in range(0, steps, per_pass):
            alphas = torch.as_tensor(nodes[start : start + per_pass], dtype=inputs.dtype, device=inputs.device)
            k = len(alphas)
            points = reference + alphas[:, None, None, None] * (inputs - reference)
            points = points.reshape(k * n, *inputs.shape[1:]).requires_grad_(True)
            ids = input_ids.repeat(k, 1)
            logits = logits_at(model, ids, attention_mask.repeat(k, 1), points)
            (gradient,) = torch.autograd.grad(selected(logits, target.repeat(k)).sum(), points)
            step_weights = torch.as_tensor(weights[start : start + k], dtype=inputs.dtype, device=inputs.device)
            integral += (step_weights[:, None, None, None] * gradient.reshape(k, *inputs.shape)).sum(0)
        with torch.no_grad():
            both_ends = torch.cat([inputs, reference])
            ends = logits_at(model, input_ids.repeat(2, 1), attention_mask.repeat(2, 1), both_ends)
            ends = selected(ends, target.repeat(2))
    attributions = ((inputs - reference) * integral).sum(-1) * attention_mask.to(inputs.dtype)
    delta = attributions.sum(-1) - (ends[:n] - ends[n:])
    return IGResult(attributions, delta)
