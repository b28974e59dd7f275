"""Where each architecture keeps its attention heads.

transformers 5 has no ``head_mask`` argument and no ``prune_heads``, so anything that gates, prunes or reads
single heads needs to know the module layout. Paths here were checked against transformers 5.24 and are
tested with tiny random models of every listed type (``tests/test_models.py``).

Paths are dotted and relative: ``layers`` from ``model.base_model`` (so a task model such as
``BertForSequenceClassification`` and a bare ``BertModel`` both work), the others from one block.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ModelError


@dataclass(frozen=True)
class ArchitectureSpec:
    """The module layout of one family of architectures.

    ``head_input`` is the module whose *input* is the concatenation of the heads' outputs
    (``[..., H * d_head]``, head ``h`` at ``[h * d_head:(h + 1) * d_head]``): gating that input gates a head.
    ``attention`` is the module that computes the attention weights (it returns them with eager attention).
    ``position_offset`` counts the position embeddings a model reserves before the first token.
    """

    model_types: tuple[str, ...]
    layers: str
    head_input: str
    attention: str
    position_offset: int = 0


SPECS: tuple[ArchitectureSpec, ...] = (
    ArchitectureSpec(("bert", "electra"), "encoder.layer", "attention.output.dense", "attention.self"),
    ArchitectureSpec(("roberta", "xlm-roberta", "camembert"), "encoder.layer", "attention.output.dense",
                     "attention.self", position_offset=2),
    ArchitectureSpec(("distilbert",), "transformer.layer", "attention.out_lin", "attention"),
    ArchitectureSpec(("gpt2",), "h", "attn.c_proj", "attn"),
    ArchitectureSpec(("llama", "mistral", "qwen2"), "layers", "self_attn.o_proj", "self_attn"),
)

_BY_TYPE = {model_type: spec for spec in SPECS for model_type in spec.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


def spec_for(model: nn.Module) -> ArchitectureSpec:
    """The layout of ``model`` (a transformers model), or a ModelError naming the supported types."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = _BY_TYPE.get(model_type)
    if spec is None:
        raise ModelError(
            f"model type {model_type!r} ({type(model).__name__}) is not supported for head-level analysis; "
            f"expected one of: {', '.join(supported_model_types())}"
        )
    return spec


def _submodule(root: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError as err:
        raise ModelError(f"{type(root).__name__} has no {what} module at '{path}' ({err})") from None


def layer_modules(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks, first to last."""
    spec = spec_for(model)
    return list(_submodule(model.base_model, spec.layers, "layer list"))


def head_input_modules(model: nn.Module) -> list[nn.Module]:
    """Per layer, the module whose input is the concatenated head outputs (the attention output projection)."""
    spec = spec_for(model)
    return [_submodule(block, spec.head_input, "attention output projection") for block in layer_modules(model)]


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Per layer, the module that computes the attention weights."""
    spec = spec_for(model)
    return [_submodule(block, spec.attention, "attention") for block in layer_modules(model)]


def num_layers_heads(model: nn.Module) -> tuple[int, int]:
    """``(L, H)``: transformer blocks and attention (query) heads per block."""
    return len(layer_modules(model)), int(model.config.num_attention_heads)
