"""What a ``Run`` returns beyond columns and arrays: the stacked per-epoch dynamics and the cross-fitted
probabilities (plain records, so the reader stays about reading)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dynamics:
    """Per-epoch training dynamics, arrays of shape [epochs, n]."""

    epochs: np.ndarray
    gold_prob: np.ndarray
    pred: np.ndarray
    loss: np.ndarray
    margin: np.ndarray | None = None  # this and below: optional, see schema.OPTIONAL_DYNAMICS_ARRAYS
    train_gold_prob: np.ndarray | None = None
    train_margin: np.ndarray | None = None
    typed_gold_prob: np.ndarray | None = None
    type_prob: np.ndarray | None = None
    neighbour_type_prob: np.ndarray | None = None


@dataclass(frozen=True)
class CrossFit:
    """Out-of-sample class probabilities from ``t3vis crossfit``: ``probs [n, C]`` (NaN where ``fold`` is -1),
    ``fold [n]`` (the fold whose model predicted the row, never one that trained on it) and how (``attrs``)."""

    probs: np.ndarray
    fold: np.ndarray
    attrs: dict
