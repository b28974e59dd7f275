"""Conservative LRP for Transformers: the propagation rules that turn gradient x input into LRP, and `lrp`.

Ali et al. 2022 ("XAI for Transformers: Better Explanations through Conservative Propagation") and
Achtibat et al. 2024 (AttnLRP) show that plain gradient x input leaks or creates relevance in a
Transformer because of three kinds of non-linearity, and that LRP is recovered by treating, *in the
backward pass only*, the following quantities as constants:

- the attention probabilities ``softmax(QK^T)`` (AH rule: relevance flows through the values only);
- LayerNorm's ``1/std`` (LN rule; mean-centering is linear and stays in the graph);
- each activation's gate ``act(x) / x`` (identity rule: GELU in the MLPs, tanh in BERT's pooler, ...).

Every remaining operation is linear in the hidden states (matmuls, sums, centering), so with these
constants the network is locally affine, ``f(h) = J h + sum_b b * df/db`` over its biases ``b``. By
Euler's theorem gradient x input then conserves the logit up to the bias share, and equals the LRP-0
rule layer by layer (for ``z = Wx + b``: ``x_i * df/dx_i = sum_j x_i w_ij / z_j * R_j`` with
``R_j = z_j * df/dz_j``).

`conservative_propagation` applies the rules during a forward pass without changing any forward value:
a thread-local torch function mode catches ``softmax``, ``layer_norm`` and element-wise activation calls
wherever they happen (including inline ones such as RoBERTa's ``torch.tanh`` head), and forward hooks
cover activation modules built from primitive ops (GPT-2's ``NewGELUActivation``).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ...errors import ModelError
from .common import attribution_mode, check_inputs, selected

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}
_LAYER_NORM = {F.layer_norm}
_ELEMENTWISE = {
    torch.tanh, torch.Tensor.tanh, F.tanh,
    F.gelu, F.silu, F.mish, F.elu, F.leaky_relu,
    torch.relu, torch.Tensor.relu, F.relu,
}  # fmt: skip
_ACTIVATION_MODULES = ("torch.nn.modules.activation", "transformers.activations")
_NOT_ELEMENTWISE = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.MultiheadAttention, nn.GLU)


def with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, ``surrogate``'s gradient in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def identity_rule(x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``act(x)`` as ``x * gate`` with ``gate = act(x) / x`` constant: relevance passes through unchanged."""
    with torch.no_grad():
        gate = (output / x).nan_to_num_(nan=0.0)  # 0/0 where x = 0, as act(0) = 0
    ruled = with_gradient_of(output, x * gate)
    ruled._t3vis_identity_rule = True  # so a module hook does not apply the rule a second time
    return ruled


def layer_norm_rule(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, output):  # noqa: A002
    """LayerNorm's value with the gradient of ``(x - mean) / std * weight + bias`` at constant ``std``.

    Takes ``F.layer_norm``'s arguments (same names) plus the ``output`` it computed.
    """
    dims = tuple(range(-len(normalized_shape), 0))
    centred = input - input.mean(dim=dims, keepdim=True)
    std = (centred.pow(2).mean(dim=dims, keepdim=True) + eps).sqrt()
    linear = centred / std.detach()
    if weight is not None:
        linear = linear * weight
    if bias is not None:
        linear = linear + bias
    return with_gradient_of(output, linear)


class _ConservativeRules(TorchFunctionMode):
    """Applies the AH, LN and identity rules to every matching torch call made in this thread."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if func in _SOFTMAX:
            return output.detach()
        if func in _LAYER_NORM:
            return layer_norm_rule(*args, **kwargs, output=output)
        if func in _ELEMENTWISE:
            return identity_rule(args[0] if args else kwargs["input"], output)
        return output


def _activation_hook(module, inputs, output):
    if getattr(output, "_t3vis_identity_rule", False):  # the module called a function the mode already ruled
        return output
    return identity_rule(inputs[0], output)


def _activation_modules(model: nn.Module) -> list[nn.Module]:
    """Element-wise activation modules; raises for one whose identity rule is undefined (``act(0) != 0``)."""
    found = []
    zero = torch.zeros(1, dtype=next(model.parameters(), torch.zeros(1)).dtype)
    for name, module in model.named_modules():
        if type(module).__module__ in _ACTIVATION_MODULES and not isinstance(module, _NOT_ELEMENTWISE):
            with torch.no_grad():
                at_zero = module(zero).abs().item()
            if at_zero != 0:
                kind = type(module).__name__
                raise ModelError(f"the identity rule needs act(0) = 0; activation {name!r} ({kind}) does not")
            found.append(module)
    return found


@contextmanager
def _eager_attention(model: nn.Module):
    """Eager attention (its softmax is a visible torch call) for the duration of the context."""
    previous = getattr(getattr(model, "config", None), "_attn_implementation", "eager")
    if previous in ("eager", None):
        yield
        return
    if not hasattr(model, "set_attn_implementation"):
        raise ModelError(f"{type(model).__name__} uses {previous!r} attention; LRP needs attn_implementation='eager'")
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@contextmanager
def conservative_propagation(model: nn.Module):
    """Within this context the model's backward pass follows the conservative LRP rules (see module doc).

    Forward values are unchanged up to float rounding, so the explained logit is the model's logit. Covers
    softmax attention (the model is switched to eager attention meanwhile), LayerNorm and element-wise
    activations with ``act(0) = 0``. Not covered, so not conservative: RMSNorm and gated MLPs
    (``act(Wx) * Vx``, Llama-style), which would need AttnLRP's uniform rule; `lrp` below
    detects such leaks. Hold :data:`.common.ATTRIBUTION_LOCK` around the forward and backward pass.
    """
    with ExitStack() as stack:
        for module in _activation_modules(model):
            stack.callback(module.register_forward_hook(_activation_hook).remove)
        stack.enter_context(_eager_attention(model))
        stack.enter_context(_ConservativeRules())
        yield


# ---------------------------------------------------------------------------------------------------------
# The method


class LRPResult(NamedTuple):
    """LRP relevance ``[B, T]``, the explained logit ``[B]``, and what the model's biases absorb ``[B]``:
    ``logit = relevance.sum(-1) + bias_share`` (checked by `lrp`)."""

    relevance: torch.Tensor
    logit: torch.Tensor
    bias_share: torch.Tensor


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
    :func:`conservative_propagation`. Relevance is attributed there rather than at the
    word embeddings because position embeddings would otherwise act as a large bias absorbing relevance.

    Conservation: the rules make the network locally affine, so ``logit = relevance.sum(-1) + bias_share``
    where ``bias_share`` is the part absorbed by the biases inside the layers and the head (linear biases,
    LayerNorm shifts), measured per example through a probe on every biased module. Bias-free models
    conserve exactly. We report the bias share instead of spreading it onto tokens: any such split (e.g.
    the ``z - b`` denominator variant of LRP-0) is a convention that is unstable when contributions cancel.
    With ``check`` the identity is verified and a ``ModelError`` raised where it fails by more than 1% of the
    total absolute contribution, meaning the model has a non-linearity the rules do not cover.
    """
    input_ids, attention_mask, target = check_inputs(model, input_ids, attention_mask, target)
    captured: dict = {}
    probe = torch.ones(input_ids.shape[0], dtype=next(model.parameters()).dtype, device=input_ids.device)
    with attribution_mode(model), conservative_propagation(model), ExitStack() as hooks:
        probe.requires_grad_(True)
        hooks.callback(_first_layer_input_captured(model, captured).remove)
        for handle in _bias_probes(model, probe):
            hooks.callback(handle.remove)
        logit = selected(model(input_ids=input_ids, attention_mask=attention_mask).logits, target)
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
