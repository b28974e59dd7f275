"""The ``Task`` interface and the one place where logits become per-unit outputs."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


def unit_outputs(logits: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-unit probabilities and prediction from ``logits [n, C]``, and with gold ``labels [n]`` the gold-label
    probability, cross-entropy loss and margin. Computed in float64, stored as float32 / int16.

    margin = p(gold) - max over the other classes of p: AUM's margin on probabilities (Pleiss et al. 2020 take it
    on logits, which are not stored). Every consumer (training dynamics, the pipelines' extraction, the model
    server) uses this, so the same logits give the same numbers everywhere.
    """
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    probs = np.exp(log_probs)
    out = {"probs": probs.astype(np.float32), "pred": logits.argmax(axis=-1).astype(np.int16)}
    if labels is None:
        return out
    labels = np.asarray(labels, np.int64)
    rows = np.arange(len(labels))
    gold = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -np.inf
    out.update(gold_prob=gold.astype(np.float32), loss=(-log_probs[rows, labels]).astype(np.float32),
               margin=(gold - others.max(axis=-1)).astype(np.float32))
    return out


class Task(ABC):
    """What one kind of supervised NLP task changes in t3vis. Subclasses are stateless singletons."""

    #: Stored in ``run.attrs["task"]`` and accepted by ``--task``.
    name: str
    #: Shown to people.
    label: str
    #: The unit of analysis: every point, table row and score is one of these ("example" or "token").
    unit: str
    #: Per-unit arrays the task writes for each epoch (dynamics) and each checkpoint (extraction).
    unit_arrays: tuple[str, ...] = ("gold_prob", "pred", "loss", "margin")
    #: What the instance view draws for one example ("classes": class probabilities over the whole input;
    #: "tags": a tag under every word).
    instance_view: str
    #: The model head it trains and loads (``t3vis.models.loading.HEADS``): "sequence" or "token".
    head: str
    #: Per-unit arrays its mislabel scores read from the run's rows rather than its dynamics (``score_inputs``).
    score_input_names: tuple[str, ...] = ()

    def load_model(self, path, **kwargs):
        """``(model, tokenizer)`` for this task from a local model directory (see ``t3vis.models.load_model``)."""
        from ..models.loading import load_model

        return load_model(path, head=self.head, **kwargs)

    def load_checkpoint(self, weights_dir, **kwargs):
        """``(model, tokenizer)`` from a saved fine-tuned checkpoint of this task."""
        from ..models.loading import load_checkpoint

        return load_checkpoint(weights_dir, **kwargs)

    @abstractmethod
    def align_labels(self, dataset, config):
        """``dataset`` with label ids that mean the model's outputs (``config.id2label``), or a clear error."""

    def default_filters(self, label_names: list[str]) -> dict:
        """The filters an explorer opens a run of this task with (``ExplorerState.filters``); none by default."""
        return {}

    def score_inputs(self, run) -> dict[str, np.ndarray]:
        """The ``score_input_names`` arrays of ``run``, from its rows (labels, words): none by default."""
        return {}

    def outputs(self, logits: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per-unit probabilities, prediction and (with labels) gold probability, loss and margin."""
        return unit_outputs(logits, labels)

    def __repr__(self) -> str:
        return f"<task {self.name}>"
