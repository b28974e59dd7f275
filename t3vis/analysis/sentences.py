"""The sentence level of a token run: its words' dynamics summed up per sentence (the "examples" unit).

A sentence is as trustworthy as its least trusted tag, so its data map follows the *weakest word*: at each epoch
the lowest given-tag probability among its words, then the mean (confidence) and standard deviation
(variability) of that across epochs, as a word's data map does with its own probability. Every column here is
per word (each word holds its sentence's value), so the explorer colours, filters, sorts and brushes sentences
through the same per-row machinery as words.

Pure numpy over the run's columns; imports no panel/bokeh.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Per-word columns holding the word's sentence's value, and what each means (tooltips, legends, export).
SENTENCE_COLUMNS = {
    "sentence_confidence": "the sentence's weakest word: at each epoch the lowest probability of the given tag "
                           "among its words, averaged across epochs. Range 0 to 1.",
    "sentence_variability": "the standard deviation across epochs of that lowest probability. Range 0 to 0.5.",
    "sentence_correctness": "the fraction of epochs in which every word of the sentence was tagged as given. "
                            "Range 0 to 1.",
    "sentence_wrong_tags": "how many of the sentence's words the model tags differently from the given tag "
                           "(last epoch).",
    "sentence_mislabel_score": "the highest mislabel score among the sentence's words.",
    "sentence_words": "how many words the sentence has.",
}

#: The columns that count words (integers).
COUNTS = ("sentence_wrong_tags", "sentence_words")


@dataclass(frozen=True)
class Sentences:
    """Where a token run's sentences lie among its word rows (rows are sorted by sentence).

    ``group[row]``: the sentence's index (0..S-1, in row order); ``starts``: each sentence's first row, then the
    number of rows (``[S + 1]``); ``weakest``: the row of each sentence's least confident word (its point in the
    sentence data map and its row in the table).
    """

    group: np.ndarray
    starts: np.ndarray
    weakest: np.ndarray

    def __post_init__(self):
        for a in (self.group, self.starts, self.weakest):  # shared by every session of a run: read-only
            a.flags.writeable = False

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def per_word(self, values: np.ndarray) -> np.ndarray:
        """A per-sentence array spread over the sentences' words."""
        return np.asarray(values)[self.group]

    def holding(self, rows: np.ndarray) -> np.ndarray:
        """The sentences (indices, ascending) that hold at least one of the word ``rows`` (sorted ascending)."""
        groups = self.group[np.asarray(rows, np.int64)]
        if len(groups) < 2:
            return groups.astype(np.int64)
        return groups[np.concatenate([[True], groups[1:] != groups[:-1]])].astype(np.int64)

    def points(self, rows: np.ndarray | None) -> np.ndarray:
        """The rows that stand for the sentences holding any of the word ``rows`` (sorted; None = every sentence):
        each one's weakest word, its point in the sentence data map and its row in the explorer's table."""
        return self.weakest if rows is None else self.weakest[self.holding(rows)]

    def rows_of(self, groups: np.ndarray) -> np.ndarray:
        """Every word row of the sentences ``groups``."""
        groups = np.asarray(groups, np.int64)
        sizes = self.sizes[groups]
        first = np.repeat(self.starts[groups], sizes)
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return first + within


def marked_sentences(sentences: Sentences, read_text: Callable[[np.ndarray], np.ndarray], rows) -> list[str]:
    """The whole sentence of each word row, that word «marked» (plain text); ``read_text(rows)`` gives the words
    of some rows (all the page's sentences are read at once)."""
    from ..tasks.token_classification import MARK

    rows = np.asarray(rows, np.int64)
    groups = sentences.group[rows]
    words = read_text(sentences.rows_of(groups))
    out, at = [], 0
    for row, g in zip(rows, groups):
        start, size = int(sentences.starts[g]), int(sentences.sizes[g])
        own = [str(w) for w in words[at:at + size]]
        own[row - start] = f"{MARK[0]}{own[row - start]}{MARK[1]}"
        out.append(" ".join(own))
        at += size
    return out


def sentence_groups(sentence: np.ndarray, confidence: np.ndarray | None = None) -> Sentences:
    """The ``Sentences`` of rows whose ``sentence`` column is sorted; ``weakest`` is each sentence's row of lowest
    ``confidence`` (NaN never chosen over a number; the first row without it)."""
    sentence = np.asarray(sentence, np.int64)
    if len(sentence) and np.any(np.diff(sentence) < 0):
        raise ValueError("rows are not sorted by sentence")
    n = len(sentence)
    new = np.ones(n, bool)
    new[1:] = sentence[1:] != sentence[:-1]
    starts = np.append(np.flatnonzero(new), n).astype(np.int64)
    group = (np.cumsum(new) - 1).astype(np.int32)
    if confidence is None or n == 0:
        weakest = starts[:-1].copy()
    else:
        c = np.where(np.isnan(confidence), np.inf, confidence)
        order = np.lexsort((np.arange(n), c, group))  # by sentence, then confidence, then row
        weakest = order[starts[:-1]]
    return Sentences(group=group, starts=starts, weakest=weakest.astype(np.int64))


def sentence_dynamics(sentences: Sentences, gold_prob: np.ndarray, pred: np.ndarray, labels: np.ndarray
                      ) -> dict[str, np.ndarray]:
    """Per-sentence confidence, variability and correctness from per-word ``gold_prob``/``pred`` [epochs, n].

    Words without a measurement (NaN: cut off by the model's length) are left out of their sentence's minimum.
    """
    gold_prob = np.asarray(gold_prob, np.float64)
    starts = sentences.starts[:-1]
    if not len(starts):
        empty = np.zeros(0, np.float32)
        return {"confidence": empty, "variability": empty, "correctness": empty}
    weakest = np.fmin.reduceat(gold_prob, starts, axis=1)  # [epochs, S], NaN only if all words are
    wrong = (np.asarray(pred) != np.asarray(labels)[None, :]).astype(np.int64)
    all_right = np.add.reduceat(wrong, starts, axis=1) == 0
    with warnings.catch_warnings():  # a sentence no epoch measured stays NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"confidence": np.nanmean(weakest, 0).astype(np.float32),
                "variability": np.nanstd(weakest, 0).astype(np.float32),
                "correctness": all_right.mean(0).astype(np.float32)}


def sentence_columns(sentences: Sentences, dynamics, labels: np.ndarray, mislabel: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """The ``SENTENCE_COLUMNS``, per word, from a run's ``Dynamics``, its tag ids and its words' mislabel scores."""
    found = sentence_dynamics(sentences, dynamics.gold_prob, dynamics.pred, labels)
    starts = sentences.starts[:-1]
    wrong = (np.asarray(dynamics.pred[-1]) != np.asarray(labels)).astype(np.int64)
    scores = np.where(np.isnan(mislabel), -np.inf, mislabel)
    highest = np.maximum.reduceat(scores, starts) if len(starts) else np.zeros(0)
    per_sentence = {
        "sentence_confidence": found["confidence"],
        "sentence_variability": found["variability"],
        "sentence_correctness": found["correctness"],
        "sentence_wrong_tags": np.add.reduceat(wrong, starts) if len(starts) else np.zeros(0, np.int64),
        "sentence_mislabel_score": np.where(np.isinf(highest), np.nan, highest),
        "sentence_words": sentences.sizes,
    }
    return {k: sentences.per_word(np.asarray(v, np.int32 if k in COUNTS else np.float32))
            for k, v in per_sentence.items()}


def sentence_level(run, words: dict[str, np.ndarray] | None = None
                   ) -> tuple[Sentences, dict[str, np.ndarray] | None]:
    """A token run's ``Sentences`` and its ``SENTENCE_COLUMNS`` (None before any epoch, when ``weakest`` is each
    sentence's first word). ``words``: the run's ``datamaps.run_columns``, if the caller has them already."""
    from .datamaps import MISLABEL_COLUMN, run_columns

    words = run_columns(run) if words is None else words
    if words is None:
        return sentence_groups(run.column("sentence")), None
    sentences = sentence_groups(run.column("sentence"), words["confidence"])
    return sentences, sentence_columns(sentences, run.dynamics(), run.column("label"), words[MISLABEL_COLUMN])
