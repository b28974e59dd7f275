"""Record a token classifier's training: the same run and dynamics as ``DynamicsRecorder``, one row per *word*.

A model input is a sentence; a unit is a word, measured at its first sub-token (the standard alignment: the word's
tag on its first sub-token, the others ignored by the loss, ``t3vis.data.subwords.align_words``). Per word and
epoch: the gold-tag probability, prediction, loss and margin, at the end of the epoch (eval mode) and in training
(before each update), exactly as classification records them per example; at the end of the epoch, for a corpus
with an ``O`` tag, also the given tag's and type's probability among the entity tags and the type's share among the
word's nearest entity words (``typed_gold_prob``, ``type_prob``, ``neighbour_type_prob``: the word scores' inputs).
Words the truncation cut off are not measured (NaN, prediction -1). Each epoch also reports entity-level precision,
recall and F1 per split and per type (``seqeval``, the CoNLL convention), against the split's gold tags.

Use it from your own loop like ``DynamicsRecorder`` (rows passed to ``record_batch`` are sentence rows, logits
``[sentences, tokens, tags]``)::

    recorder = WordDynamicsRecorder("runs/ner", tagged)        # a TaggedDataset
    recorder.start(model, tokenizer)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import DatasetError, TrainingError
from ..models.inference import pad_token_id, predict_logits, token_logits, unit_offsets
from ..tasks.token_classification import (
    OUTSIDE,
    neighbour_type_prob,
    tag_types,
    type_prob,
    typed_gold_prob,
    unit_frame,
)
from .recorder import DynamicsRecorder, dynamics_from_logits, epoch_metrics

#: The label a loss ignores (PyTorch's cross-entropy default): every sub-token but a word's first.
IGNORE_INDEX = -100


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 (``entity_f1``), and F1 per type (``f1/<type>``), by seqeval."""
    from seqeval.metrics import classification_report

    report = classification_report(list(map(list, gold)), list(map(list, pred)), output_dict=True, zero_division=0)
    micro = report.get("micro avg", {})
    out = {"entity_precision": float(micro.get("precision", 0.0)), "entity_recall": float(micro.get("recall", 0.0)),
           "entity_f1": float(micro.get("f1-score", 0.0))}
    out.update({f"f1/{kind}": float(row["f1-score"]) for kind, row in report.items() if not kind.endswith(" avg")})
    return out


def padded_labels(labels: Sequence[Sequence[int]], tokenizer) -> torch.Tensor:
    """Sentences' sub-token labels as one ``[sentences, longest]`` tensor, padded on the tokenizer's padding side
    with ``IGNORE_INDEX`` (as their inputs are padded)."""
    width = max(map(len, labels))
    out = torch.full((len(labels), width), IGNORE_INDEX, dtype=torch.long)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for i, row in enumerate(labels):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        out[i, span] = torch.as_tensor(row, dtype=torch.long)
    return out


class WordDynamicsRecorder(DynamicsRecorder):
    """``DynamicsRecorder`` for token classification: ``examples`` is a ``TaggedDataset``."""

    def __init__(self, run_dir, examples, **kwargs):
        kwargs.setdefault("task", "token_classification")
        super().__init__(run_dir, examples, **kwargs)
        self._entity_features: np.ndarray | None = None  # the last measurement's, until epoch_extras takes them

    # -------------------------------------------------------------- what the token task changes
    def _as_dataset(self, examples, **columns):
        from ..data.tagging import TaggedDataset

        if not isinstance(examples, TaggedDataset):
            raise DatasetError(f"examples: got {type(examples).__name__}; expected a TaggedDataset (from "
                               "t3vis.data.load_tagged or load_conll) for token classification")
        return examples

    def _adopt(self, dataset) -> None:
        self.dataset = dataset
        words = dataset.words()
        self.labels = words["tag"].to_numpy(np.int64)
        self.split = words["split"].to_numpy(str)
        self.sentence_split = dataset.frame["split"].to_numpy(str)
        self.offsets = unit_offsets([np.empty(len(t)) for t in dataset.frame["tokens"]])

    @property
    def label_names(self) -> list[str]:
        return list(self.dataset.tag_names)

    @property
    def input_split(self) -> np.ndarray:
        return self.sentence_split

    def _units(self, tokenizer) -> tuple[pd.DataFrame, list[str]]:
        from ..data.subwords import align_words

        frame = self.dataset.frame
        tags = [list(t) for t in frame["tags"]]
        self.alignment = align_words(tokenizer, list(frame["tokens"]), tags, self.max_length)
        self._token_ids = self.alignment.input_ids
        self.first_token = self.alignment.first_token
        self.measured = np.concatenate([np.asarray(f) >= 0 for f in self.first_token]) if len(frame) else \
            np.zeros(0, bool)
        units = unit_frame(self.dataset)
        lengths = np.fromiter(map(len, self._token_ids), np.int32, len(self._token_ids))
        units["length"] = np.repeat(lengths, np.diff(self.offsets))  # the sentence's sub-tokens, as measured
        units["measured"] = self.measured
        outside = self.label_names.index(OUTSIDE) if OUTSIDE in self.label_names else -1
        # the words whose features the type-neighbour share needs: measured entity words
        self.entity_words = self.measured & (self.labels != outside) if outside >= 0 else np.zeros_like(self.measured)
        return units, self.label_names

    def batch_labels(self, rows: np.ndarray) -> torch.Tensor:
        """Sub-token labels of the sentences ``rows``, padded like their inputs (``IGNORE_INDEX`` on padding)."""
        return padded_labels([self.alignment.labels[r] for r in rows], self.tokenizer)

    def record_batch(self, rows: Sequence[int], logits) -> None:
        """A training forward pass: ``logits [len(rows), tokens, tags]`` of sentence ``rows`` (right-padded as
        ``pad_ids`` pads), before the update; recorded per word at its first sub-token."""
        if isinstance(logits, torch.Tensor):
            logits = logits.detach().float().cpu().numpy()
        rows = np.asarray(rows, np.int64)
        if logits.ndim != 3 or len(rows) != len(logits):
            raise TrainingError(f"record_batch: {len(rows)} sentences but logits of shape {logits.shape}; expected "
                                "[sentences, tokens, tags]")
        width = logits.shape[1]
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        units = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows])
        word_logits = np.concatenate([
            token_logits(logits[i], self.first_token[r], width - len(self._token_ids[r]) if left else 0)
            for i, r in enumerate(rows)])
        kept = self.measured[units]
        self._passes.add(units[kept], dynamics_from_logits(word_logits[kept], self.labels[units[kept]], self.task))

    def measure(self, model: torch.nn.Module, on_batch=None) -> np.ndarray:
        """Per-word logits; with an ``O`` tag, the entity words' last hidden states too (kept for
        ``epoch_extras``)."""
        logits = predict_logits(model, self._token_ids, pad_id=pad_token_id(self.tokenizer),
                                padding_side=getattr(self.tokenizer, "padding_side", "right"),
                                batch_size=self.batch_size, bf16=bool(self.bf16), on_batch=on_batch,
                                positions=self.first_token,
                                feature_units=self.entity_words if self.entity_words.any() else None)
        logits, self._entity_features = logits if isinstance(logits, tuple) else (logits, None)
        return logits

    def epoch_extras(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        """With an ``O`` tag: ``typed_gold_prob`` (the given tag among the entity tags), ``type_prob`` (the given
        type, B- and I- summed) and ``neighbour_type_prob`` (the given type's share among the nearest entity words,
        in this epoch's features)."""
        if OUTSIDE not in self.label_names:
            return {}
        outside = self.label_names.index(OUTSIDE)
        extras = {"typed_gold_prob": typed_gold_prob(logits, self.labels, outside),
                  "type_prob": type_prob(logits, self.labels, outside, self.label_names)}
        features, self._entity_features = self._entity_features, None
        if features is not None:
            names = tag_types(self.label_names)
            kinds = sorted({name for i, name in enumerate(names) if i != outside})
            type_of_tag = np.array([kinds.index(name) if name in kinds else -1 for name in names], np.int64)
            word_types = type_of_tag[self.labels[self.entity_words]]
            shares = np.full(len(self.labels), np.nan, np.float32)
            shares[self.entity_words] = neighbour_type_prob(features, word_types, len(kinds))
            extras["neighbour_type_prob"] = shares
        return extras

    def metrics(self, dynamics: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Word accuracy and mean loss per split (over measured words), and entity-level scores per split."""
        measured = self.measured
        out = epoch_metrics({k: np.asarray(v)[measured] for k, v in dynamics.items()}, self.labels[measured],
                            self.split[measured])
        names = np.asarray(self.dataset.tag_names, object)
        pred = np.asarray(dynamics["pred"], np.int64)
        pred_names = np.where(pred >= 0, names[np.clip(pred, 0, None)], "O")
        gold_names = names[self.labels]
        for split in np.unique(self.sentence_split):
            rows = np.flatnonzero(self.sentence_split == split)
            gold = [gold_names[self.offsets[r]:self.offsets[r + 1]] for r in rows]
            predicted = [pred_names[self.offsets[r]:self.offsets[r + 1]] for r in rows]
            out.update({f"{split}_{key}": value for key, value in entity_scores(gold, predicted).items()})
        return out
