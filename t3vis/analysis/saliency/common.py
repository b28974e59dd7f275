"""Plumbing the gradient-based methods share: input checks, attribution mode, and the word-embedding swap.

The model is always called with ``input_ids`` (never ``inputs_embeds``): the word-embedding module's
output is swapped by a forward hook. Calling with ``inputs_embeds`` would be wrong for GPT-2 classifiers,
which then cannot find the last non-padding token and pool the last position instead, and for RoBERTa
with left padding, whose position ids are derived from ``input_ids``. Position and token-type embeddings
are added by the model as usual.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
from torch import nn

from ...errors import ModelError, T3VisError

# Attribution adds hooks to a model and may switch its attention implementation: calls that take the
# gradient of a model hold this lock so they never see each other's rules.
ATTRIBUTION_LOCK = threading.RLock()


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_inputs(model, input_ids, attention_mask, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    device = device_of(model)
    return input_ids.long().to(device), attention_mask.to(device), target.to(device)


@contextmanager
def attribution_mode(model: nn.Module):
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
        return model.get_input_embeddings()(input_ids.to(device_of(model)))


def logits_at(model, input_ids, attention_mask, embeddings: torch.Tensor) -> torch.Tensor:
    """The model's logits ``[B, C]`` when the word embeddings of ``input_ids`` are ``embeddings``."""
    with _word_embeddings_replaced(model, input_ids, embeddings):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


def selected(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each row's entry at its ``target`` column: ``[B, C], [B] -> [B]``."""
    return logits.gather(1, target[:, None])[:, 0]


class TokenTarget(nn.Module):
    """A token classifier seen as a sequence classifier of one token per row: its logits ``[B, C]`` are the
    wrapped model's at ``positions`` (``[B]``, a word's first sub-token). Every method here then explains a word's
    tag unchanged (the target is a class, as for a text). Attributes not defined here (``config``,
    ``base_model``, ``get_input_embeddings``) are the wrapped model's, so the architecture registry and the
    propagation rules find its layers; hooks and modes reach it as a submodule. A batch that repeats its rows
    (integrated gradients evaluates ``k`` copies) repeats the positions too."""

    def __init__(self, model: nn.Module, positions):
        super().__init__()
        self.model = model
        self.positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
        self.train(model.training)  # modes are restored to the wrapper's: it must start as the model is

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        logits = out.logits
        if logits.ndim != 3:
            raise ModelError(f"{type(self.model).__name__} gives logits of shape {tuple(logits.shape)}; a word target "
                             "needs a token classifier ([batch, tokens, classes])")
        copies, rest = divmod(logits.shape[0], len(self.positions))
        if rest:
            raise T3VisError(f"positions: {len(self.positions)} for a batch of {logits.shape[0]} rows; expected one "
                             "position per row")
        positions = self.positions.to(logits.device).repeat(copies)
        out.logits = logits[torch.arange(logits.shape[0], device=logits.device), positions]
        return out
