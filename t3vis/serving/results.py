"""What a model call returns, and how two sets of predictions compare (pure values: no model, no threads).

A run's stored logits were computed by the pipeline in its own numerics (bf16 where fast); `needs_recheck` says
which rows a fresh unpruned pass must confirm so that counting changed predictions stays exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..tasks import unit_outputs

Pruned = tuple[tuple[int, int], ...]


@dataclass(frozen=True, eq=False)
class Encoding:
    """One text as the model sees it, with what the instance view needs to show it.

    ``offsets`` are character spans into ``text`` (``(0, 0)`` for special tokens, or all None without a fast
    tokenizer); ``word_ids`` group word-pieces into words. A sentence of words (token classification) has ``text``
    the words joined by spaces and ``first_token`` set. ``truncated`` says the text went past ``max_length``
    tokens and only its first part is analysed.
    """

    text: str
    input_ids: torch.Tensor  # [1, T]
    attention_mask: torch.Tensor  # [1, T]
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int] | None, ...]
    word_ids: tuple[int | None, ...]
    special: tuple[bool, ...]
    truncated: bool
    max_length: int
    #: A sentence of words (token classification): each word's first sub-token (-1: cut off), in word order.
    first_token: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, eq=False)
class Forward:
    """A forward pass on one example: logits and probabilities ``[C]`` (a token classifier: ``[words, C]``, at
    each word's first sub-token, NaN for a word cut off), attentions ``[L, H, T, T]`` or None.

    Attentions are float16 (for display; 37 MB rather than 75 MB for a 512-token example of a 6x12 model).
    """

    logits: np.ndarray
    probs: np.ndarray
    attentions: np.ndarray | None

    def loss(self, label: int) -> float:
        """Cross-entropy for the gold ``label``."""
        return float(unit_outputs(self.logits[None], np.array([int(label)]))["loss"][0])

    def word(self, w: int | None) -> "Forward":
        """A tagger's pass seen from word ``w``: its logits and probabilities ``[C]`` (``None``: this pass itself),
        so what shows one prediction (class bars, pruning summary) shows a word's tag unchanged."""
        if w is None or self.logits.ndim == 1:
            return self
        return Forward(logits=self.logits[int(w)], probs=self.probs[int(w)], attentions=None)


@dataclass(frozen=True, eq=False)
class BatchPrediction:
    """Predictions for many examples: logits and probs ``[n, C]``, pred ``[n]``, loss ``[n]`` (None without labels)."""

    logits: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    loss: np.ndarray | None


def batch_prediction(logits: np.ndarray, labels: np.ndarray | None) -> BatchPrediction:
    """Probabilities, prediction and (with labels) loss of ``logits [n, C]``, by :func:`t3vis.tasks.unit_outputs`."""
    logits = np.asarray(logits, dtype=np.float32)
    out = unit_outputs(logits, labels)
    return BatchPrediction(logits, out["probs"], logits.argmax(-1), out.get("loss"))


def normalize_pruned(pruned: Iterable[Sequence[int]] | None) -> Pruned:
    """Sorted, deduplicated ``((layer, head), ...)``: a stable cache key for a set of pruned heads."""
    return tuple(sorted({(int(layer), int(head)) for layer, head in (pruned or ())}))


#: Error of extracted (bf16) logits against a fresh pass, relative to the row's largest |logit|: at most 3 % on
#: the demo's four checkpoints (99th percentile 0.6 %). Margins within twice that are re-checked.
STORED_LOGIT_ERROR = 0.03


def needs_recheck(stored_logits: np.ndarray, pruned_pred: np.ndarray) -> np.ndarray:
    """Rows whose unpruned prediction must be recomputed rather than read from rounded stored logits: those where
    the stored prediction differs from the pruned one, and near ties, where rounding could have picked the class.
    """
    stored_logits = np.asarray(stored_logits, dtype=np.float32)
    top2 = np.sort(stored_logits, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    tolerance = 2 * STORED_LOGIT_ERROR * np.abs(stored_logits).max(-1) + 1e-6
    return (stored_logits.argmax(-1) != np.asarray(pruned_pred)) | (margin <= tolerance)


def prediction_change(before: BatchPrediction, after: BatchPrediction) -> dict:
    """What pruning changed over a set of examples: flipped predictions and the mean loss change."""
    flipped = int((before.pred != after.pred).sum())
    change = {"n": int(len(before.pred)), "flipped": flipped}
    if before.loss is not None and after.loss is not None and len(before.loss):
        change["loss_before"] = float(before.loss.mean())
        change["loss_after"] = float(after.loss.mean())
        change["loss_change"] = change["loss_after"] - change["loss_before"]
    return change
