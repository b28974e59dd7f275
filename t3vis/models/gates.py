"""Per-head gates, without copying the model and without ``head_mask`` (gone in transformers 5).

A forward pre-hook on each layer's attention output projection multiplies head ``h``'s slice of its input by
``gates[layer, h]``: 0 prunes the head (exactly like zeroing its value weights), 1 keeps it, and a ones tensor
with ``requires_grad`` gives ``d loss / d gate``, the head importance of Michel et al. (2019).

The app shares one model across sessions that run in different threads, each with its own pruned heads, so the
gates live in a ``ContextVar`` (one value per thread and per asyncio task) rather than on the model. Hooks are
installed once; with no gates set in the current context they return at once and change nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

import torch
from torch import nn

from ..errors import ModelError
from .registry import head_input_modules, num_layers_heads

#: model key -> gates [L, H] for the current thread / task. Replaced, never mutated, so contexts never share edits.
_ACTIVE: ContextVar[MappingProxyType] = ContextVar("t3vis_head_gates", default=MappingProxyType({}))
_KEY_ATTR = "_t3vis_head_gate_key"
_HANDLES_ATTR = "_t3vis_head_gate_handles"
_keys = itertools.count()


def _gate_hook(key: int, layer: int, num_heads: int):
    def hook(module: nn.Module, args: tuple):
        gates = _ACTIVE.get().get(key)
        if gates is None:
            return None
        x = args[0]
        gate = gates[layer].to(dtype=x.dtype, device=x.device)
        gated = (x.unflatten(-1, (num_heads, -1)) * gate[:, None]).flatten(-2)
        return (gated, *args[1:])

    return hook


def install_head_gates(model: nn.Module) -> int:
    """Install the gate hooks on ``model`` once (idempotent); returns the key its gates are stored under."""
    key = getattr(model, _KEY_ATTR, None)
    if key is not None:
        return key
    key = next(_keys)
    _, num_heads = num_layers_heads(model)
    handles = [module.register_forward_pre_hook(_gate_hook(key, layer, num_heads))
               for layer, module in enumerate(head_input_modules(model))]
    setattr(model, _HANDLES_ATTR, handles)
    setattr(model, _KEY_ATTR, key)
    return key


def remove_head_gates(model: nn.Module) -> None:
    """Remove the hooks ``install_head_gates`` added (a no-op if there are none)."""
    for handle in getattr(model, _HANDLES_ATTR, ()):
        handle.remove()
    for attr in (_HANDLES_ATTR, _KEY_ATTR):
        if hasattr(model, attr):
            delattr(model, attr)


def _as_gates(model: nn.Module, gates) -> torch.Tensor:
    shape = num_layers_heads(model)
    gates = gates if isinstance(gates, torch.Tensor) else torch.as_tensor(gates, dtype=torch.float32)
    if tuple(gates.shape) != shape:
        raise ModelError(f"head gates: expected shape (layers, heads) = {shape}, got {tuple(gates.shape)}")
    return gates


@contextmanager
def head_gates(model: nn.Module, gates) -> Iterator[torch.Tensor | None]:
    """Gate ``model``'s heads with ``gates`` ``[L, H]`` in this thread/task for the duration of the block.

    ``gates`` may be a tensor (kept as is, so a ``requires_grad`` tensor collects gradients) or array-like;
    ``None`` switches gating off inside the block. Other threads using the same model are unaffected.
    """
    key = install_head_gates(model)
    gates = None if gates is None else _as_gates(model, gates)
    active = dict(_ACTIVE.get())
    active[key] = gates
    token = _ACTIVE.set(MappingProxyType(active))
    try:
        yield gates
    finally:
        _ACTIVE.reset(token)


def active_gates(model: nn.Module) -> torch.Tensor | None:
    """The gates in force for ``model`` in the current thread/task, or None."""
    key = getattr(model, _KEY_ATTR, None)
    return None if key is None else _ACTIVE.get().get(key)


def gates_from_pruned(pruned: Iterable[tuple[int, int]], num_layers: int, num_heads: int) -> torch.Tensor:
    """Ones ``[L, H]`` (float32) with a zero at each pruned ``(layer, head)``."""
    gates = torch.ones(num_layers, num_heads)
    for layer, head in pruned:
        if not (0 <= layer < num_layers and 0 <= head < num_heads):
            raise ModelError(f"pruned head ({layer}, {head}) is out of range: the model has "
                             f"{num_layers} layers x {num_heads} heads")
        gates[layer, head] = 0.0
    return gates
