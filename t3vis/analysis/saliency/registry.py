"""The saliency methods the app offers: one entry per method, the one place that names them.

Why a registry: a method's key is what the session state holds and the UI offers, the UI shows its label, the
model server must know which method needs the model to itself, and the instance view passes options that keep a
method interactive. Each of those reads the entry here instead of spelling the method as a string. A new method is
one module in this package plus one entry in ``REGISTRY``.

Importing this module loads no torch: an entry names its function as ``"module:attribute"`` (a module of this
package) and imports it on first use, so the UI state can list methods and stay light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ...errors import T3VisError


@dataclass(frozen=True)
class SaliencyMethod:
    """One token-attribution method: ``function(model, input_ids, attention_mask, target, **options)``.

    - ``name``: the key the session state holds and callers pass (``saliency(..., method=name)``).
    - ``label``: what the UI shows.
    - ``function``: ``"module:attribute"`` in this package, imported on first call.
    - ``scores``: the field of the function's result holding the ``[B, T]`` scores (``None``: the result is them).
    - ``exclusive``: the method changes the model while it runs (hooks, attention implementation), so no other
      call may use the model meanwhile.
    - ``options``: what interactive use passes (a method's defaults may be too slow for a click).
    - ``predicts``: ``target=None`` explains the class the method's own forward pass predicts, so explaining
      predictions costs no separate prediction pass.
    """

    name: str
    label: str
    function: str
    scores: str | None = None
    exclusive: bool = False
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    predicts: bool = False

    def load(self) -> Callable:
        """The method's function (imports its module, and torch, the first time)."""
        module, attribute = self.function.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), attribute)

    def relevance(self, model, input_ids, attention_mask, target, **options):
        """The method's ``[B, T]`` scores as a tensor, whatever else its result carries."""
        result = self.load()(model, input_ids, attention_mask, target, **options)
        return result if self.scores is None else getattr(result, self.scores)


REGISTRY: dict[str, SaliencyMethod] = {
    entry.name: entry
    for entry in (
        SaliencyMethod("grad_x_input", "grad x input", "gradients:gradient_x_input", predicts=True),
        SaliencyMethod("integrated_gradients", "integrated gradients", "gradients:integrated_gradients",
                       scores="attributions", options=MappingProxyType({"steps": 16, "batch_size": 16})),
        SaliencyMethod("lrp", "lrp", "conservative_lrp:lrp", scores="relevance", exclusive=True),
    )
}
#: The method keys, the first one the default.
METHODS = tuple(REGISTRY)


def get_method(name: str) -> SaliencyMethod:
    """The registry entry called ``name``; a ``T3VisError`` listing the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise T3VisError(f"method: expected one of {', '.join(METHODS)}, got {name!r}") from None


def label_of(name: str) -> str:
    """What the UI shows for method ``name``; a name not in the registry is shown as it is."""
    entry = REGISTRY.get(name) if isinstance(name, str) else None
    return name if entry is None else entry.label


def saliency(model, input_ids, attention_mask, target, method: str = METHODS[0], **options) -> np.ndarray:
    """Token relevance ``[B, T]`` (float32 numpy, padding 0) for ``target`` by ``method``, for the app.

    ``method`` is a key of ``REGISTRY`` (``"grad_x_input"``, ``"integrated_gradients"`` or ``"lrp"``);
    ``options`` go to the method (e.g. ``steps=32`` for integrated gradients, ``norm=True`` for gradient x input).
    """
    scores = get_method(method).relevance(model, input_ids, attention_mask, target, **options)
    return scores.detach().float().cpu().numpy()
