"""Words to sub-tokens: tokenize pre-split sentences and keep, for every word, where its sub-tokens are.

The standard alignment for token classification: a word's tag sits on its first sub-token and every other
sub-token is ignored by the loss (``-100``, PyTorch's ``ignore_index``). Truncation cuts at a word boundary: a
word whose sub-tokens do not all fit is dropped whole, so every kept word reads back complete and a tag is never
attached to a word the model saw only part of.

Duck-typed on the tokenizer (no transformers import), so ``t3vis.data`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import DatasetError, ModelError

#: The label on sub-tokens the loss ignores (every sub-token but a word's first, and special tokens).
IGNORE_INDEX = -100


@dataclass
class WordAlignment:
    """Sub-token inputs of a batch of sentences and how they map to words."""

    #: Per sentence: sub-token ids with special tokens, at most ``max_length``, no padding.
    input_ids: list[list[int]]
    #: Per sentence, per sub-token: the index of its word, -1 for special tokens.
    word_ids: list[list[int]]
    #: Per sentence, per word (int64): the index of its first sub-token, -1 if truncated away or without sub-tokens.
    first_token: list[np.ndarray]
    #: Per sentence, per sub-token: the word's tag on its first sub-token, ``IGNORE_INDEX`` elsewhere; ``None``
    #: without tags.
    labels: list[list[int]] | None


def align_words(tokenizer, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[int]] | None,
                max_length: int) -> WordAlignment:
    """Tokenize ``sentences`` (lists of words) with a fast tokenizer (``is_split_into_words=True``) and align
    ``tags`` (one per word, optional) to sub-tokens; at most ``max_length`` sub-tokens per sentence with special
    tokens, cut at a word boundary.

    A word that yields no sub-token (e.g. only a zero-width space, which BERT's normaliser drops) has
    ``first_token`` -1 and no label, like a truncated one.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"tokenizer {type(tokenizer).__name__} is a slow (Python) tokenizer: it cannot map "
                         "sub-tokens to words; expected a fast tokenizer (a model directory with tokenizer.json, "
                         "loaded with AutoTokenizer)")
    sentences = [list(map(str, words)) for words in sentences]
    if tags is not None:
        tags = [list(t) for t in tags]
        if len(tags) != len(sentences):
            raise DatasetError(f"align_words: {len(sentences)} sentences but {len(tags)} tag lists; expected one each")
        for i, (words, word_tags) in enumerate(zip(sentences, tags)):
            if len(words) != len(word_tags):
                raise DatasetError(f"align_words: sentence {i} has {len(words)} words but {len(word_tags)} tags; "
                                   "expected one tag per word")
    n_special = int(tokenizer.num_special_tokens_to_add(pair=False))
    if int(max_length) <= n_special:
        raise DatasetError(f"max_length={max_length}: expected more than the {n_special} special tokens")
    if not sentences:
        return WordAlignment([], [], [], [] if tags is not None else None)
    encoding = _encode(tokenizer, sentences)
    input_ids, word_ids = list(encoding["input_ids"]), [_word_ids(encoding, i) for i in range(len(sentences))]
    cut = {i: _whole_words(ids, max_length) for i, ids in enumerate(word_ids) if len(ids) > max_length}
    if cut:  # tokenize the words that fit again, so the tokenizer places its special tokens
        again = _encode(tokenizer, [sentences[i][:k] for i, k in cut.items()])
        for j, (i, k) in enumerate(cut.items()):
            input_ids[i], word_ids[i] = again["input_ids"][j], _word_ids(again, j)
            if len(input_ids[i]) > max_length or max(word_ids[i], default=-1) >= k:
                raise ModelError(f"tokenizer {type(tokenizer).__name__}: the first {k} words of sentence {i} "
                                 f"tokenize to {len(input_ids[i])} sub-tokens, more than when whole; expected a "
                                 "tokenizer that splits each word on its own")
    first_token = [_first_tokens(ids, len(words)) for ids, words in zip(word_ids, sentences)]
    labels = None
    if tags is not None:
        labels = []
        for ids, first, word_tags in zip(word_ids, first_token, tags):
            row = [IGNORE_INDEX] * len(ids)
            for w in np.flatnonzero(first >= 0):
                row[first[w]] = int(word_tags[w])
            labels.append(row)
    return WordAlignment([list(map(int, ids)) for ids in input_ids], word_ids, first_token, labels)


def _encode(tokenizer, sentences: list[list[str]]):
    # verbose=False: a sentence longer than the model's limit is cut here, not in the tokenizer, so its warning is noise
    return tokenizer(sentences, is_split_into_words=True, add_special_tokens=True, truncation=False, verbose=False)


def _word_ids(encoding, i: int) -> list[int]:
    return [-1 if w is None else int(w) for w in encoding.word_ids(i)]


def _whole_words(word_ids: list[int], max_length: int) -> int:
    """How many leading words fit whole in ``max_length`` sub-tokens, special tokens included."""
    content = [w for w in word_ids if w >= 0]
    budget = max_length - (len(word_ids) - len(content))
    return content[budget]  # the first word with a sub-token past the budget; every word before it fits


def _first_tokens(word_ids: list[int], n_words: int) -> np.ndarray:
    first = np.full(n_words, -1, np.int64)
    for position in range(len(word_ids) - 1, -1, -1):
        if word_ids[position] >= 0:
            first[word_ids[position]] = position
    return first
