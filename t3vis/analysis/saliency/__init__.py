"""Token attributions for a sequence-classification Transformer: which input tokens a logit relies on.

One module per method family, all batched (``[B, T]`` in, ``[B, T]`` out, padding positions exactly 0), for any
transformers ``*ForSequenceClassification`` model:

- `registry`: the methods the app offers (name, label, function, exclusivity, interactive options) and
  `saliency`, which runs one by name.
- `gradients`: `gradient_x_input` (the interactive default) and `integrated_gradients` (with its completeness gap).
- `conservative_lrp`: `lrp`, conservative LRP (Ali et al. 2022, AttnLRP) and its propagation rules.
- `rollout`: `attention_rollout`, attention flow from the attention maps alone (no gradient, no target class).
- `deletion`: `deletion_curve`, how faithful an attribution is.
- `common`: the plumbing the gradient methods share (input checks, attribution mode, embedding swap), and
  `TokenTarget`, which makes a token classifier's word a target every method explains.

Only the registry is imported eagerly; the other names load their module (and torch) on first access, so
listing methods (the UI state does) costs no torch import.
"""

from __future__ import annotations

from ...lazy import lazy_attributes

from .registry import METHODS, REGISTRY, SaliencyMethod, get_method, label_of, saliency

_LAZY = {
    "ATTRIBUTION_LOCK": "common",
    "TokenTarget": "common",
    "word_embeddings": "common",
    "IGResult": "gradients",
    "gradient_x_input": "gradients",
    "integrated_gradients": "gradients",
    "LRPResult": "conservative_lrp",
    "conservative_propagation": "conservative_lrp",
    "lrp": "conservative_lrp",
    "attention_rollout": "rollout",
    "deletion_curve": "deletion",
}

__all__ = ["METHODS", "REGISTRY", "SaliencyMethod", "get_method", "label_of", "saliency", *_LAZY]

__getattr__ = lazy_attributes(__name__, _LAZY)
