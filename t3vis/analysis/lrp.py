"""Conservative propagation rules that turn gradient x input into LRP for Transformers.

Ali et al. 2022 ("XAI for Transformers: Better Explanations through Conservative Propagation") and
Achtibat et al. 2024 (AttnLRP) show that plain gradient x input leaks or creates relevance in a
Transformer because of three non-linearities, and that LRP is recovered by treating, *in the backward
pass only*, the following quantities as constants:

- the attention probabilities ``softmax(QK^T)`` (AH rule: relevance flows through the values only);
- LayerNorm's ``1/std`` (LN rule; mean-centering is linear and stays in the graph);
- each activation's gate ``act(x) / x`` (identity rule, for GELU, tanh in BERT's pooler, ...).

Every remaining operation is linear in the hidden states (matmuls, sums, centering), so with these
constants the network is locally affine, ``f(h) = J h + c`` where ``c`` gathers what the biases
contribute. By Euler's theorem ``sum(grad * h) = f(h) - c``: gradient x input at any layer is then
conservative up to the bias share, and equals LRP-0 rule by rule (for a linear map z = Wx + b,
``x_i * dR/dx_i = sum_j x_i w_ij / z_j * R_j`` with ``R_j = z_j * df/dz_j``).

`conservative_propagation` applies the rules during a forward pass without changing any forward value.
The attribution functions built on it live in :mod:`t3vis.analysis.saliency`.
"""

from __future__ import annotations

import sys
import threading
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from t3vis.errors import ModelError

# Attribution switches models into modes other code must not observe half-way (hooks, an attention
# implementation): calls that take the gradient of a model hold this lock.
ATTRIBUTION_LOCK = threading.RLock()

_ATTENTION_NAME = "t3vis_conservative"
_ACTIVATION_MODULES = ("torch.nn.modules.activation", "transformers.activations")
_NOT_ELEMENTWISE = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.MultiheadAttention, nn.GLU)


def with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, ``surrogate``'s gradient in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def _conservative_attention(module, query, key, value, attention_mask, **kwargs):
    """The model's own eager attention, with the probabilities held constant for the backward pass.

    It runs the ``eager_attention_forward`` of the module's modeling file (so model-specific scaling and
    masking stay exact), then recomputes ``probs @ V`` with ``probs`` detached and checks that this is what
    the model computed: an attention that is not ``softmax(QK^T) V`` is refused rather than explained wrongly.
    """
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise ModelError(
            f"LRP needs the eager attention of {type(module).__name__}, but its module "
            f"{type(module).__module__} has no eager_attention_forward"
        )
    output, probs = eager(module, query, key, value, attention_mask, **kwargs)
    values = value.repeat_interleave(probs.shape[1] // value.shape[1], dim=1)  # grouped-query attention
    linear = torch.matmul(probs.detach().to(values.dtype), values).transpose(1, 2)
    if linear.shape != output.shape or not torch.allclose(linear, output, rtol=1e-3, atol=1e-5):
        raise ModelError(
            f"the attention of {type(module).__name__} is not softmax(QK^T) V; conservative LRP does not support it"
        )
    return with_gradient_of(output, linear), probs


ALL_ATTENTION_FUNCTIONS.register(_ATTENTION_NAME, _conservative_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(_ATTENTION_NAME, eager_mask)


def _layer_norm_rule(module: nn.LayerNorm, inputs, output):
    """LN rule: the forward value of LayerNorm, the gradient of ``(x - mean) / std`` with ``std`` constant."""
    (x,) = inputs
    dims = tuple(range(-len(module.normalized_shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)
    std = (centred.pow(2).mean(dim=dims, keepdim=True) + module.eps).sqrt()
    linear = centred / std.detach()
    if module.weight is not None:
        linear = linear * module.weight
    if module.bias is not None:
        linear = linear + module.bias
    return with_gradient_of(output, linear)


def _identity_rule(module, inputs, output):
    """Identity rule: ``act(x) = x * gate`` with ``gate = act(x) / x`` constant, so relevance passes unchanged."""
    x = inputs[0]
    gate = torch.where(x == 0, torch.zeros_like(x), output / torch.where(x == 0, torch.ones_like(x), x))
    return with_gradient_of(output, x * gate.detach())


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ in _ACTIVATION_MODULES and not isinstance(module, _NOT_ELEMENTWISE)


def _check_supported(model: nn.Module) -> list[nn.Module]:
    """The activation modules to patch; raises for modules whose rule is not implemented."""
    activations = []
    for name, module in model.named_modules():
        if "norm" in type(module).__name__.lower() and not isinstance(module, nn.LayerNorm):
            raise ModelError(
                f"LRP rules cover nn.LayerNorm only; module {name!r} is a {type(module).__name__}"
            )
        if _is_activation(module):
            param = next(model.parameters())
            if module(torch.zeros(1, dtype=param.dtype, device=param.device)).abs().item() != 0:
                raise ModelError(
                    f"the identity rule needs act(0) = 0; activation {name!r} ({type(module).__name__}) does not"
                )
            activations.append(module)
    return activations


@contextmanager
def _attention_implementation(model: nn.Module, name: str):
    """Temporarily dispatch the model's attention to ``name`` (a registered attention function)."""
    if not hasattr(model, "set_attn_implementation"):
        raise ModelError(f"{type(model).__name__} is not a transformers model: it has no set_attn_implementation")
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    if model.config._attn_implementation != name:
        raise ModelError(f"{type(model).__name__} cannot switch its attention implementation, which LRP needs")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@contextmanager
def conservative_propagation(model: nn.Module):
    """Within this context the model's backward pass follows the conservative LRP rules (see module doc).

    Forward values are unchanged (to float rounding), so the explained logit is the model's logit.
    Supported: models whose attention is the standard eager ``softmax(QK^T) V`` (BERT, RoBERTa, DistilBERT,
    GPT-2, ...), ``nn.LayerNorm`` normalisation, and element-wise activations with ``act(0) = 0``.
    Gated MLPs (``act(Wx) * Vx``, Llama-style) would need AttnLRP's uniform rule and are not handled:
    their relevance does not conserve. Hold :data:`ATTRIBUTION_LOCK` around the forward and backward pass.
    """
    activations = _check_supported(model)
    with ExitStack() as stack:
        stack.enter_context(_attention_implementation(model, _ATTENTION_NAME))
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                stack.callback(module.register_forward_hook(_layer_norm_rule).remove)
        for module in activations:
            stack.callback(module.register_forward_hook(_identity_rule).remove)
        yield
