"""Token attributions for a sequence-classification Transformer: which input tokens a logit relies on.

Three methods, all batched (``[B, T]`` in, ``[B, T]`` out, padding positions exactly 0), for any
transformers ``*ForSequenceClassification`` model:

- `gradient_x_input`: one forward and backward pass; the interactive default.
- `integrated_gradients`: path integral from a baseline, with its completeness gap.
- `lrp`: conservative LRP (Ali et al. 2022, AttnLRP) via the rules of :mod:`t3vis.analysis.lrp`.

The model is always called with ``input_ids`` (never ``inputs_embeds``): the word-embedding module's
output is swapped by a forward hook. Calling with ``inputs_embeds`` would be wrong for GPT-2 classifiers,
which then cannot find the last non-padding token and pool the last position instead, and for RoBERTa
with left padding, whose position ids are derived from ``input_ids``. Position and token-type embeddings
are added by the model as usual.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from t3vis.analysis.lrp import ATTRIBUTION_LOCK, conservative_propagation
from t3vis.errors import ModelError, T3VisError

METHODS = ("grad_x_input", "integrated_gradients", "lrp")


class IGResult(NamedTuple):
    """Integrated-gradients attributions ``[B, T]`` and their completeness gap ``[B]``:
    ``delta = attributions.sum(-1) - (f(x) - f(baseline))``, which shrinks as ``steps`` grows."""

    attributions: torch.Tensor
    delta: torch.Tensor


class LRPResult(NamedTuple):
    """LRP relevance ``[B, T]``, the explained logit ``[B]``, and what the model's biases absorb ``[B]``:
    ``logit = relevance.sum(-1) + bias_share`` (checked by `lrp`)."""

    relevance: torch.Tensor
    logit: torch.Tensor
    bias_share: torch.Tensor


# ---------------------------------------------------------------------------------------------------------
# Shared plumbing


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_inputs(model, input_ids, attention_mask, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate and move the inputs to the model's device; ``target`` becomes a LongTensor ``[B]``."""
    input_ids = torch.as_tensor(input_ids)
    attention_mask = torch.as_tensor(attention_mask)
    shape = tuple(input_ids.shape)
    if input_ids.ndim != 2 or input_ids.dtype not in (torch.int32, torch.int64):
        raise T3VisError(f"input_ids: expected an integer tensor [batch, tokens], got {input_ids.dtype} {shape}")
    if attention_mask.shape != input_ids.shape:
        raise T3VisError(f"attention_mask: expected shape {shape} like input_ids, got {tuple(attention_mask.shape)}")
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if target.numel() == 1:
        target = target.expand(shape[0])
    if target.shape != (shape[0],):
        raise T3VisError(f"target: expected an int or one class per example ({shape[0]}), got {target.numel()} values")
    num_labels = model.config.num_labels
    if ((target < 0) | (target >= num_labels)).any():
        raise ModelError(f"target: classes must lie in [0, {num_labels}) (config.num_labels), got {target.tolist()}")
    device = _device(model)
    return input_ids.long().to(device), attention_mask.to(device), target.to(device)


@contextmanager
def _attribution_mode(model: nn.Module):
    """Eval mode (no dropout) and gradients on, even when the caller runs under ``torch.no_grad``."""
    was_training = model.training
    with ATTRIBUTION_LOCK, torch.enable_grad():
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


@contextmanager
def _word_embeddings_replaced(model: nn.Module, input_ids: torch.Tensor, embeddings: torch.Tensor):
    """During the context, the model's word-embedding lookup of exactly ``input_ids`` returns ``embeddings``."""
    replaced = []

    def hook(module, inputs, output):
        ids = inputs[0]  # models may pass a view of input_ids (GPT-2 reshapes them)
        if ids.data_ptr() == input_ids.data_ptr() and ids.shape == input_ids.shape:
            replaced.append(True)
            return embeddings
        return output

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
    if not replaced:
        raise ModelError(
            f"{type(model).__name__} did not look its word embeddings up from input_ids through "
            "get_input_embeddings(), so they cannot be attributed"
        )


def word_embeddings(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The word (token) embeddings ``[B, T, D]`` the model looks up for ``input_ids``, without gradient."""
    with torch.no_grad():
        return model.get_input_embeddings()(input_ids.to(_device(model)))


def _logits_at(model, input_ids, attention_mask, embeddings: torch.Tensor) -> torch.Tensor:
    """The model's logits ``[B, C]`` when the word embeddings of ``input_ids`` are ``embeddings``."""
    with _word_embeddings_replaced(model, input_ids, embeddings):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


def _selected(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, target[:, None])[:, 0]


# ---------------------------------------------------------------------------------------------------------
# Methods


def gradient_x_input(model, input_ids, attention_mask, target, *, norm: bool = False) -> torch.Tensor:
    """Gradient x input on the word embeddings: ``[B, T]``, padding 0.

    Per token ``sum_d e_d * dlogit_target / de_d`` over the embedding dimension: signed, positive where the
    token's embedding pushes the target logit up. The attributed input is the word-embedding lookup only
    (position and token-type embeddings are constants), the usual choice and Captum's. ``norm=True`` gives
    the unsigned L2 norm over the embedding dimension instead of the sum.
    ``target`` is a class index or one per example; the model's mode is restored afterwards.
    """
    input_ids, attention_mask, target = _check_inputs(model, input_ids, attention_mask, target)
    embeddings = word_embeddings(model, input_ids).requires_grad_(True)
    with _attribution_mode(model):
        logits = _logits_at(model, input_ids, attention_mask, embeddings)
        (gradient,) = torch.autograd.grad(_selected(logits, target).sum(), embeddings)
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
    input_ids, attention_mask, target = _check_inputs(model, input_ids, attention_mask, target)
    inputs = word_embeddings(model, input_ids)
    reference = _baseline_embeddings(model, input_ids, baseline)
    nodes, weights = _quadrature(steps, rule)
    n = input_ids.shape[0]
    per_pass = max(1, batch_size // n)
    integral = torch.zeros_like(inputs)
    with _attribution_mode(model):
        for start in range(0, steps, per_pass):
            alphas = torch.as_tensor(nodes[start : start + per_pass], dtype=inputs.dtype, device=inputs.device)
            k = len(alphas)
            points = reference + alphas[:, None, None, None] * (inputs - reference)
            points = points.reshape(k * n, *inputs.shape[1:]).requires_grad_(True)
            ids = input_ids.repeat(k, 1)
            logits = _logits_at(model, ids, attention_mask.repeat(k, 1), points)
            (gradient,) = torch.autograd.grad(_selected(logits, target.repeat(k)).sum(), points)
            step_weights = torch.as_tensor(weights[start : start + k], dtype=inputs.dtype, device=inputs.device)
            integral += (step_weights[:, None, None, None] * gradient.reshape(k, *inputs.shape)).sum(0)
        with torch.no_grad():
            both_ends = torch.cat([inputs, reference])
            ends = _logits_at(model, input_ids.repeat(2, 1), attention_mask.repeat(2, 1), both_ends)
            ends = _selected(ends, target.repeat(2))
    attributions = ((inputs - reference) * integral).sum(-1) * attention_mask.to(inputs.dtype)
    delta = attributions.sum(-1) - (ends[:n] - ends[n:])
    return IGResult(attributions, delta)


def _transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of Transformer layers: the first ModuleList with ``config.num_hidden_layers`` entries."""
    layers = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == layers:
            return module
    raise ModelError(f"{type(model).__name__}: no list of {layers} Transformer layers (config.num_hidden_layers)")


def _first_layer_input_captured(model: nn.Module, store: dict):
    """Forward pre-hook on the first Transformer layer that swaps its hidden states for a leaf tensor."""

    def hook(module, args, kwargs):
        if "hidden_states" in kwargs:
            store["hidden"] = kwargs["hidden_states"].detach().requires_grad_(True)
            return args, {**kwargs, "hidden_states": store["hidden"]}
        store["hidden"] = args[0].detach().requires_grad_(True)
        return (store["hidden"], *args[1:]), kwargs

    return _transformer_blocks(model)[0].register_forward_pre_hook(hook, with_kwargs=True)


def _bias_probes(model: nn.Module, probe: torch.Tensor) -> list:
    """Hooks adding ``(probe - 1) * bias`` to every biased module's output: zero in value, but
    ``d logit_e / d probe_e`` is exactly the contribution of all biases to example ``e``."""

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.shape[-1:] != module.bias.shape:
            return output  # not a plain "+ bias" output; the conservation check catches what this misses
        shape = (-1,) + (1,) * (output.ndim - 1)
        return output + (probe - probe.detach()).reshape(shape) * module.bias

    return [
        module.register_forward_hook(hook)
        for module in model.modules()
        if isinstance(getattr(module, "bias", None), nn.Parameter)
    ]


def lrp(model, input_ids, attention_mask, target, *, check: bool = True) -> LRPResult:
    """Conservative LRP for Transformers (Ali et al. 2022; AttnLRP, Achtibat et al. 2024): relevance ``[B, T]``.

    Gradient x input at the input of the first Transformer layer (word + position + token-type embeddings,
    after BERT's embedding LayerNorm), with the backward pass following the AH, LN and identity rules of
    :func:`t3vis.analysis.lrp.conservative_propagation`. Relevance is attributed there rather than at the
    word embeddings because position embeddings would otherwise act as a large bias absorbing relevance.

    Conservation: the rules make the network locally affine, so ``logit = relevance.sum(-1) + bias_share``
    where ``bias_share`` is the part absorbed by the biases inside the layers and the head (linear biases,
    LayerNorm shifts), measured per example through a probe on every biased module. Bias-free models
    conserve exactly. We report the bias share instead of spreading it onto tokens: any such split (e.g.
    the ``z - b`` denominator variant of LRP-0) is a convention that is unstable when contributions cancel.
    With ``check`` the identity is verified and a ``ModelError`` raised where it fails by more than 1% of the
    total absolute contribution, meaning the model has a non-linearity the rules do not cover.
    """
    input_ids, attention_mask, target = _check_inputs(model, input_ids, attention_mask, target)
    captured: dict = {}
    probe = torch.ones(input_ids.shape[0], dtype=next(model.parameters()).dtype, device=input_ids.device)
    with _attribution_mode(model), conservative_propagation(model), ExitStack() as hooks:
        probe.requires_grad_(True)
        hooks.callback(_first_layer_input_captured(model, captured).remove)
        for handle in _bias_probes(model, probe):
            hooks.callback(handle.remove)
        logit = _selected(model(input_ids=input_ids, attention_mask=attention_mask).logits, target)
        if "hidden" not in captured:
            raise ModelError(f"{type(model).__name__}: its first Transformer layer was not called with hidden states")
        gradient, bias_share = torch.autograd.grad(logit.sum(), [captured["hidden"], probe], allow_unused=True)
    relevance = (gradient * captured["hidden"].detach()).sum(-1) * attention_mask.to(gradient.dtype)
    bias_share = torch.zeros_like(probe) if bias_share is None else bias_share
    result = LRPResult(relevance, logit.detach(), bias_share)
    if check:
        _check_conservation(model, result)
    return result


def _check_conservation(model: nn.Module, result: LRPResult, tolerance: float = 0.01) -> None:
    residual = result.logit - result.relevance.sum(-1) - result.bias_share
    scale = result.relevance.abs().sum(-1) + result.bias_share.abs() + result.logit.abs()
    worst = (residual.abs() / scale.clamp_min(1e-12)).max().item()
    if worst > tolerance:
        raise ModelError(
            f"LRP does not conserve relevance for {type(model).__name__} (residual {worst:.1%} of the total): it has a "
            "non-linearity the rules do not cover (e.g. RMSNorm or a gated MLP). Pass check=False to get the "
            "non-conservative relevance anyway."
        )


def saliency(model, input_ids, attention_mask, target, method: str = "grad_x_input", **options) -> np.ndarray:
    """Token relevance ``[B, T]`` (float32 numpy, padding 0) for ``target`` by ``method``, for the app.

    ``method`` is one of ``"grad_x_input"``, ``"integrated_gradients"`` or ``"lrp"``; ``options`` go to the
    method (e.g. ``steps=32`` for integrated gradients, ``norm=True`` for gradient x input).
    """
    if method == "grad_x_input":
        scores = gradient_x_input(model, input_ids, attention_mask, target, **options)
    elif method == "integrated_gradients":
        scores = integrated_gradients(model, input_ids, attention_mask, target, **options).attributions
    elif method == "lrp":
        scores = lrp(model, input_ids, attention_mask, target, **options).relevance
    else:
        raise T3VisError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return scores.detach().float().cpu().numpy()


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
    input_ids = torch.as_tensor(input_ids).long().to(_device(model))
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
    with _attribution_mode(model), torch.no_grad():
        predicted = model(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)
        for fraction in fractions:
            deleted = (rank < torch.ceil(fraction * available)) & candidates
            ids = input_ids.masked_fill(deleted, replacement_id)
            probs = model(input_ids=ids, attention_mask=attention_mask).logits.softmax(-1)
            curve.append(_selected(probs, predicted))
    return torch.stack(curve, dim=1)
