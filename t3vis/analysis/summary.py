"""What a selection of examples has in common: confusion counts, histograms against the whole run, top words.

Small pure functions over arrays (no model, no panel); the explorer's selection summary
(:mod:`t3vis.ui.summary`) and ``benchmarks/bench_summary.py`` put them together with the model server.

Top words. Each sampled example is attributed for its predicted class (positive = supports the prediction), so a
word with a high mean drives the selection's predictions. Per example the caller passes its *words* with one
score each: word-pieces merged into the word they spell (their scores summed, so a word carries all its pieces'
relevance), special tokens left out. Here words are keyed case-insensitively (``casefold``; the text search
ignores case by default, so a clicked word finds the examples it came from), words made only of punctuation and
symbols are skipped (they carry position more than meaning), and each word's score is the mean over its
occurrences (every time it appears in any sampled example). A word must occur in ``min_examples`` different
examples (2 by default, 1 when the sample has a single example) so one odd example cannot fill the list.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Most examples the summary attributes (a larger selection is sampled); the sample is seeded, so the same
#: selection gives the same words.
MAX_SAMPLE = 256
SAMPLE_SEED = 0
#: Words the summary lists.
TOP_WORDS = 20


def sample_rows(rows: np.ndarray, size: int = MAX_SAMPLE, seed: int = SAMPLE_SEED) -> np.ndarray:
    """At most ``size`` of ``rows``, drawn without replacement by a seeded generator, in ascending order."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) <= size:
        return np.sort(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))


def _smallest_uint(size: int):
    return np.uint8 if size <= 2**8 else np.uint16 if size <= 2**16 else np.uint32


def masked_counts(codes: np.ndarray, size: int, mask: np.ndarray | None) -> np.ndarray:
    """How many rows in ``mask`` (None = all) have each code ``0..size-1``: one pass, ~30 ms at 10M rows."""
    return np.bincount(codes if mask is None else codes[mask], minlength=size)[:size]


def pair_codes(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """One code per row, ``label * C + pred``, and ``C * C`` where either is outside ``[0, C)`` (missing labels):
    computed once per run and checkpoint, so a new selection costs one `masked_counts`."""
    labels, preds = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    valid = (labels >= 0) & (labels < num_classes) & (preds >= 0) & (preds < num_classes)
    size = num_classes * num_classes + 1
    return np.where(valid, labels * num_classes + preds, size - 1).astype(_smallest_uint(size))


def confusion_from_codes(codes: np.ndarray, num_classes: int, mask: np.ndarray | None = None) -> np.ndarray:
    """``counts[label, pred]`` (int64 ``[C, C]``) over the rows in ``mask`` from `pair_codes`; missing not counted."""
    k = num_classes * num_classes
    return masked_counts(codes, k + 1, mask)[:k].astype(np.int64).reshape(num_classes, num_classes)


def confusion_counts(labels: np.ndarray, preds: np.ndarray, num_classes: int, mask: np.ndarray | None = None
                     ) -> np.ndarray:
    """``counts[label, pred]`` over the rows in ``mask`` (None = all); rows whose label or prediction is outside
    ``[0, num_classes)`` are not counted."""
    return confusion_from_codes(pair_codes(labels, preds, num_classes), num_classes, mask)


def value_range(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values, widened to a unit interval when they are all equal (or absent)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


@dataclass(frozen=True)
class Binned:
    """Each row's bin among equal-width ``edges`` (``bins + 1`` of them), ``bins`` for a value that is missing
    (NaN, inf) or outside the edges, and the whole run's count per code (``[bins + 1]``, missing last)."""

    edges: np.ndarray
    codes: np.ndarray
    whole: np.ndarray

    @property
    def bins(self) -> int:
        return len(self.edges) - 1


@dataclass(frozen=True)
class Histogram:
    """Counts of one value over the whole run and over a selection, in the same bins (``edges``); ``missing_*``
    count the values left out of the bins."""

    edges: np.ndarray
    whole: np.ndarray
    selected: np.ndarray
    missing_whole: int
    missing_selected: int


def bin_values(values: np.ndarray, bins: int = 30, span: tuple[float, float] | None = None) -> Binned:
    """Bin every row once (default span: the finite range), so each selection then costs one `masked_counts`.

    Bins are ``[e_i, e_i+1)``, the last one closed, as ``np.histogram``'s.
    """
    values = np.asarray(values, dtype=np.float64)
    lo, hi = value_range(values) if span is None else span
    with np.errstate(invalid="ignore"):
        position = (values - lo) * (bins / (hi - lo))
        inside = np.isfinite(position) & (values >= lo) & (values <= hi)
    codes = np.full(len(values), bins, dtype=_smallest_uint(bins + 1))
    codes[inside] = np.minimum(position[inside].astype(np.int64), bins - 1)
    return Binned(np.linspace(lo, hi, bins + 1), codes, masked_counts(codes, bins + 1, None))


def compare(binned: Binned, mask: np.ndarray | None) -> Histogram:
    """The run's histogram and the selection's (``mask``; None = all rows) from rows binned once."""
    selected = binned.whole if mask is None else masked_counts(binned.codes, binned.bins + 1, mask)
    return Histogram(binned.edges, binned.whole[:-1], selected[:-1], int(binned.whole[-1]), int(selected[-1]))


def compare_histogram(values: np.ndarray, mask: np.ndarray | None, bins: int = 30,
                      span: tuple[float, float] | None = None) -> Histogram:
    """``values`` binned over ``span`` (default: the whole run's finite range) for all rows and for ``mask``."""
    return compare(bin_values(values, bins, span), mask)


def is_punctuation(word: str) -> bool:
    """Only punctuation and symbols (Unicode categories P* and S*), or nothing at all."""
    return all(unicodedata.category(c)[0] in "PS" for c in word.strip())


@dataclass(frozen=True)
class WordScore:
    """A word's mean attribution over its ``count`` occurrences in ``examples`` different examples."""

    word: str
    mean: float
    count: int
    examples: int


def top_words(per_example: Iterable[Sequence[tuple[str, float]]], k: int = TOP_WORDS,
              min_examples: int | None = None) -> list[WordScore]:
    """The ``k`` words of highest mean attribution over all examples (see the module doc for the rules).

    ``per_example`` holds, for each example, its ``(word, score)`` pairs. Ties are broken by word, so the order is
    stable.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    seen_in: dict[str, int] = {}
    n = 0
    for words in per_example:
        n += 1
        here = set()
        for word, score in words:
            key = word.strip().casefold()
            if is_punctuation(key):
                continue
            sums[key] = sums.get(key, 0.0) + float(score)
            counts[key] = counts.get(key, 0) + 1
            here.add(key)
        for key in here:
            seen_in[key] = seen_in.get(key, 0) + 1
    need = min(2, n) if min_examples is None else min_examples
    ranked = sorted((WordScore(w, sums[w] / counts[w], counts[w], seen_in[w]) for w in sums if seen_in[w] >= need),
                    key=lambda s: (-s.mean, s.word))
    return ranked[:k]
