"""Models: loading and saving local checkpoints, where each architecture keeps its heads, and per-head gates."""

from .gates import active_gates, gates_from_pruned, head_gates, install_head_gates, remove_head_gates
from .loading import default_model_path, load_checkpoint, load_model, model_info, save_model
from .registry import (
    ArchitectureSpec,
    attention_modules,
    head_input_modules,
    layer_modules,
    num_layers_heads,
    spec_for,
    supported_model_types,
)

__all__ = [
    "ArchitectureSpec",
    "active_gates",
    "attention_modules",
    "default_model_path",
    "gates_from_pruned",
    "head_gates",
    "head_input_modules",
    "install_head_gates",
    "layer_modules",
    "load_checkpoint",
    "load_model",
    "model_info",
    "num_layers_heads",
    "remove_head_gates",
    "save_model",
    "spec_for",
    "supported_model_types",
]
