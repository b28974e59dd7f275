"""Load a token-classification dataset: CoNLL-style column files, JSON Lines / JSON / Parquet records with a list
of words and a list of tags, or a Hugging Face ``datasets`` dataset saved with ``save_to_disk``.

Each reader turns bytes into sentences; every tag check lives in ``tagging.encode_tags``, so every format fails
the same way, with one line naming the file and the line (CoNLL) or row (records).
"""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DatasetError
from .dataset import _metadata_columns, _normalise_splits, _require_columns
from .loaders import _READERS, _read_hf_dataset, read_utf8
from .tagging import SENTENCE_COLUMNS, WORD_COLUMNS, TaggedDataset, encode_tags

#: Suffixes read as CoNLL-style column files.
CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio", ".tsv")
#: Suffixes read as records (one sentence per record): suffix -> ``loaders`` reader.
RECORD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
DOCSTART = "-DOCSTART-"
_LISTS = (list, tuple, np.ndarray)


def _existing(path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory; expected a CoNLL file ({', '.join(CONLL_SUFFIXES)}), "
                           "JSONL/JSON/Parquet records, or a Hugging Face dataset directory written by save_to_disk")
    return path


def _min_columns(token_column: int, tag_column: int) -> int:
    """The fewest columns in which ``token_column`` and ``tag_column`` name two different columns."""
    for n in range(1, 1000):
        if _resolve(token_column, n) is not None and _resolve(tag_column, n) not in (None, _resolve(token_column, n)):
            return n
    raise DatasetError(f"token_column={token_column}, tag_column={tag_column}: expected two different columns")


def _resolve(index: int, n: int) -> int | None:
    i = index if index >= 0 else n + index
    return i if 0 <= i < n else None


def load_conll(
    path,
    *,
    token_column: int = 0,
    tag_column: int = -1,
    tag_names: list[str] | None = None,
    scheme: str = "BIO",
    name: str | None = None,
) -> TaggedDataset:
    """Load a CoNLL-style file: one word per line, in columns; sentences separated by blank lines.

    - Columns: split on tabs when the line holds one (so a word may contain spaces), else on runs of spaces;
      ``token_column``/``tag_column`` pick the word and its tag (negative counts from the end); extra columns
      (POS, chunk) are ignored.
    - Blank or whitespace-only lines end a sentence; ``-DOCSTART-`` lines are skipped (and end one too).
    - Tags: ``O``, ``B-<type>``, ``I-<type>`` (``tag_names`` limits them). ``scheme="BIO"`` refuses an ``I-x``
      that does not continue an ``x`` mention; ``"IOB1"`` allows it and stores ``B-x`` (see ``encode_tags``).
    - Every sentence is ``train`` (a file has no splits; ``split_sentences`` makes them). Metadata: ``line``, the
      1-based line of the sentence's first word, to find it in the file.

    Bad input (too few columns, a bad or unknown tag, no sentences, not UTF-8) raises ``DatasetError`` naming the
    file and line.
    """
    path = _existing(path)
    needed = _min_columns(token_column, tag_column)
    sentences, current = [], []  # current: (word, tag, line) of the sentence being read
    for lineno, line in enumerate(read_utf8(path).split("\n"), start=1):
        line = line.strip()
        if not line or line.split(maxsplit=1)[0] == DOCSTART:
            if current:
                sentences.append(current)
            current = []
            continue
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        if len(fields) < needed:
            raise DatasetError(f"{path}: line {lineno} has {len(fields)} column(s); expected at least {needed} "
                               f"(token column {token_column}, tag column {tag_column}), or a blank line between "
                               "sentences")
        word, tag = fields[_resolve(token_column, len(fields))], fields[_resolve(tag_column, len(fields))]
        if not word:
            raise DatasetError(f"{path}: line {lineno}: empty token in column {token_column}; expected a word")
        current.append((word, tag, lineno))
    if current:
        sentences.append(current)
    if not sentences:
        raise DatasetError(f"{path}: no sentences; expected lines of a word and its tag, sentences separated by "
                           "blank lines")
    lines = [[lineno for _, _, lineno in sentence] for sentence in sentences]
    tags = [[tag for _, tag, _ in sentence] for sentence in sentences]
    ids, names = encode_tags(tags, tag_names=tag_names, scheme=scheme, where=str(path),
                             locate=lambda i, j: f"line {lines[i][j]}")
    frame = pd.DataFrame({"tokens": [[word for word, _, _ in sentence] for sentence in sentences], "tags": ids,
                          "split": "train", "line": np.array([ls[0] for ls in lines], np.int64)})
    return TaggedDataset(frame, names, name or path.stem, str(path))


def load_tagged(
    path,
    *,
    tokens_column: str = "tokens",
    tags_column: str | None = None,
    tag_names: list[str] | None = None,
    split_column: str | None = None,
    name: str | None = None,
    scheme: str = "BIO",
) -> TaggedDataset:
    """Load ``path`` as a ``TaggedDataset``, by its suffix.

    - ``.conll``/``.txt``/``.iob``/``.bio``/``.tsv``: ``load_conll`` (columns 0 and -1).
    - ``.jsonl``/``.ndjson``/``.json``/``.parquet``/``.pq``: one sentence per record, ``tokens_column`` a list of
      words and ``tags_column`` (default ``tags``, else ``ner_tags``) a list of tags: names, or integer ids into
      ``tag_names``.
    - a directory: a Hugging Face dataset written by ``save_to_disk``; a ``Sequence(ClassLabel)`` tags column
      supplies the tag names.
    - Splits as ``load_table``: ``split_column`` (default: a ``split`` column if any, else all ``train``);
      train/validation names map as there, ``test`` becomes validation only when no validation split exists. A
      DatasetDict's splits follow the same rule.
    - Other scalar columns are kept as per-sentence metadata. ``scheme`` as in ``load_conll``.

    Bad input (ragged tokens/tags, an empty sentence, a bad or unknown tag) raises ``DatasetError`` naming the
    file and the row (0-based; ``train[5]`` in a DatasetDict).
    """
    path = _existing(path)
    source = str(path)
    if path.is_dir():
        raw, _, hf_split = _read_hf_dataset(path, "ner_tags", split_column)
        column = tags_column or _default_tags_column(raw, source)
        names = tag_names or _hf_tag_names(path, column)
        return from_records(raw, tokens_column=tokens_column, tags_column=column, tag_names=names,
                            split_column=hf_split or split_column, name=name or path.name, source=source,
                            scheme=scheme)
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        if split_column is not None or tags_column is not None or tokens_column != "tokens":
            raise DatasetError(f"{path}: a CoNLL file has no named columns; leave tokens_column, tags_column and "
                               "split_column unset (load_conll picks columns by position)")
        return load_conll(path, tag_names=tag_names, scheme=scheme, name=name)
    if suffix not in RECORD_SUFFIXES:
        raise DatasetError(f"{path}: unknown format {path.suffix!r}; expected one of "
                           f"{sorted(CONLL_SUFFIXES + tuple(RECORD_SUFFIXES))} or a Hugging Face dataset directory")
    raw = _READERS[RECORD_SUFFIXES[suffix]](path, tokens_column)
    return from_records(raw, tokens_column=tokens_column, tags_column=tags_column, tag_names=tag_names,
                        split_column=split_column, name=name or path.stem, source=source, scheme=scheme)


def _default_tags_column(raw: pd.DataFrame, where: str) -> str:
    for column in ("tags", "ner_tags"):
        if column in raw.columns:
            return column
    raise DatasetError(f"{where}: no tags column: expected 'tags' or 'ner_tags' (or pass tags_column); "
                       f"columns present: {list(raw.columns)}")


def _hf_tag_names(path: Path, column: str) -> list[str] | None:
    """The ClassLabel names of a Hugging Face dataset's ``Sequence(ClassLabel)`` column, if it is one (the
    dataset is memory-mapped, so loading it again to read its features is cheap)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    first = loaded[next(iter(loaded))] if isinstance(loaded, datasets.DatasetDict) else loaded
    inner = getattr(first.features.get(column), "feature", None)
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def from_records(
    raw: pd.DataFrame,
    *,
    tokens_column: str = "tokens",
    tags_column: str | None = None,
    tag_names: list[str] | None = None,
    split_column: str | None = None,
    name: str = "dataset",
    source: str = "<DataFrame>",
    scheme: str = "BIO",
) -> TaggedDataset:
    """Check a table of sentences (a list of words and a list of tags per row) and turn it into a
    ``TaggedDataset``; every message names ``source`` and the row (``raw.index``)."""
    tags_column = tags_column or _default_tags_column(raw, source)
    _require_columns(raw, [tokens_column, tags_column], source, "")
    if split_column is None and "split" in raw.columns and "split" not in (tokens_column, tags_column):
        split_column = "split"
    if split_column is not None:
        _require_columns(raw, [split_column], source, "split_column ")
        raw = _normalise_splits(raw, split_column, source)
    if len(raw) == 0:
        raise DatasetError(f"{source}: no rows; expected one sentence per row")
    used = (tokens_column, tags_column, split_column) + SENTENCE_COLUMNS + WORD_COLUMNS
    meta = _metadata_columns(raw, None, used=used, where=source)
    id_names = [str(n) for n in tag_names] if tag_names is not None else None
    rows = list(raw.index)
    sentences, tags = [], []
    for row, words, row_tags in zip(rows, raw[tokens_column], raw[tags_column]):
        where = f"{source}: row {row}"
        words = _words(words, where, tokens_column)
        sentences.append(words)
        tags.append(_tag_names(row_tags, len(words), id_names, where, tokens_column, tags_column))
    ids, names = encode_tags(tags, tag_names=id_names, scheme=scheme, where=source,
                             locate=lambda i, j: f"row {rows[i]}, word {j}")
    raw = raw.reset_index(drop=True)
    split = raw[split_column].astype(str) if split_column is not None else pd.Series("train", index=raw.index)
    frame = pd.concat([pd.DataFrame({"tokens": sentences, "tags": ids}), split.rename("split"), raw[meta]], axis=1)
    return TaggedDataset(frame, names, name, source)


def _words(value, where: str, column: str) -> list[str]:
    if not isinstance(value, _LISTS):
        raise DatasetError(f"{where}: {column!r} is a {type(value).__name__}; expected a list of words")
    words = list(value)
    if not words:
        raise DatasetError(f"{where}: empty sentence ({column!r} is an empty list); expected at least one word")
    for j, word in enumerate(words):
        if not isinstance(word, str) or not word.strip():
            raise DatasetError(f"{where}: {column!r} word {j} is {word!r}; expected a non-blank string")
    return [str(word) for word in words]  # plain str, also from Arrow/NumPy string arrays


def _tag_names(value, n_words: int, id_names: list[str] | None, where: str, tokens_column: str,
               tags_column: str) -> list[str]:
    """A row's tags as names (integer ids looked up in ``id_names``), as many as its words."""
    if not isinstance(value, _LISTS):
        raise DatasetError(f"{where}: {tags_column!r} is a {type(value).__name__}; expected a list of tags")
    values = list(value)
    if len(values) != n_words:
        raise DatasetError(f"{where}: {n_words} words in {tokens_column!r} but {len(values)} tags in "
                           f"{tags_column!r}; expected one tag per word")
    out = []
    for j, tag in enumerate(values):
        if isinstance(tag, str):
            out.append(tag)
        elif isinstance(tag, Integral) and not isinstance(tag, bool):
            if id_names is None:
                raise DatasetError(f"{where}: {tags_column!r} word {j} is the integer id {tag}; integer tags need "
                                   "tag_names (the name of each id) or a ClassLabel feature")
            if not 0 <= tag < len(id_names):
                raise DatasetError(f"{where}: {tags_column!r} word {j} is id {tag}, outside "
                                   f"0..{len(id_names) - 1} of tag_names {id_names}")
            out.append(id_names[tag])
        else:
            raise DatasetError(f"{where}: {tags_column!r} word {j} is {tag!r}; expected a tag name or integer id")
    return out
