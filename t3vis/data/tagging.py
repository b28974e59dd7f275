"""``TaggedDataset``: a token-classification (NER) dataset as one tidy DataFrame with a row per sentence, the BIO
helpers every tagging consumer shares (``mentions``, ``encode_tags``), and ``split_sentences``.

Columns of ``TaggedDataset.frame``:

- ``tokens`` (list of str): the sentence's words, at least one.
- ``tags`` (list of int): one index into ``tag_names`` per word, a valid BIO sequence (every ``I-x`` continues an
  ``x`` mention).
- ``split`` (str): ``"train"`` or ``"validation"``.
- after ``inject_mention_noise``: ``flipped`` (list of bool) and ``original_tags`` (list of int), per word.
- any metadata columns (scalar values: the run keeps them per sentence and repeats them per word).

``tag_names`` as the loaders write them: ``"O"`` first, then ``B-<type>``, ``I-<type>`` for each entity type in
sorted order. Code that reads tags goes through the names (``align_tags`` may re-number them to a model's order).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import DatasetError
from .dataset import SPLITS
from .split import apportion, validation_count

#: Columns ``TaggedDataset.frame`` itself defines.
SENTENCE_COLUMNS = ("tokens", "tags", "split", "flipped", "original_tags")
#: Columns ``TaggedDataset.words()`` defines; a metadata column may take none of these names either.
WORD_COLUMNS = ("sentence", "position", "word", "tag", "split", "flipped", "original_tag")
#: Tag schemes a file may use: ``BIO`` (IOB2: every mention starts with ``B-``), ``IOB1`` (``I-`` starts a mention
#: unless it follows one of the same type). Data is always kept as BIO.
SCHEMES = ("BIO", "IOB2", "IOB1")
_TAG = re.compile(r"([BI])-(\S+)")


def parse_tag(tag) -> tuple[str, str] | None:
    """``("O", "")``, ``("B", type)`` or ``("I", type)`` for a BIO tag name; ``None`` for anything else."""
    if tag == "O":
        return "O", ""
    match = _TAG.fullmatch(tag) if isinstance(tag, str) else None
    return (match.group(1), match.group(2)) if match else None


def canonical_tag_names(types) -> list[str]:
    """``"O"``, then ``B-t``, ``I-t`` for each type ``t`` in sorted order: the tag order of a loaded dataset."""
    return ["O"] + [f"{prefix}-{kind}" for kind in sorted(set(types)) for prefix in "BI"]


def mentions(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """The entity mentions of a BIO tag sequence as ``(start, end, type)``, ``end`` exclusive, in order.

    ``B-x`` starts a mention; ``I-x`` continues an ``x`` mention and otherwise starts one (seqeval's default
    reading, so entity-level scores agree with ``seqeval``).
    """
    spans, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        parsed = parse_tag(tag)
        if parsed is None:
            raise DatasetError(f"tag {tag!r} at position {i}: not a BIO tag; expected O, B-<type> or I-<type>")
        prefix, tag_kind = parsed
        if start is not None and (prefix != "I" or tag_kind != kind):
            spans.append((start, i, kind))
            start = None
        if prefix != "O" and start is None:
            start, kind = i, tag_kind
    return spans


def encode_tags(
    sentences: Sequence[Sequence[str]],
    *,
    tag_names: Sequence[str] | None = None,
    scheme: str = "BIO",
    where: str,
    locate: Callable[[int, int], str],
) -> tuple[list[list[int]], list[str]]:
    """Tag ids into ``canonical_tag_names`` and those names, for sentences of tag names; every check in one place.

    ``tag_names`` (optional) are the tags allowed; their types are kept even where the data has no mention of
    them. ``scheme="BIO"`` refuses an ``I-x`` that does not continue an ``x`` mention; ``"IOB1"`` reads it as the
    start of a mention and stores ``B-x`` instead. Errors name ``where`` and ``locate(sentence, word)`` (a line or
    row).
    """
    scheme = str(scheme).upper()
    if scheme not in SCHEMES:
        raise DatasetError(f"{where}: scheme={scheme!r}; expected one of {list(SCHEMES)}")
    allowed = None
    if tag_names is not None:
        allowed = [str(name) for name in tag_names]
        bad = [name for name in allowed if parse_tag(name) is None]
        if bad:
            raise DatasetError(f"{where}: tag_names holds {bad[:5]}: not BIO tags; expected O, B-<type> or I-<type>")
        allowed = set(allowed)
    parsed: dict[str, tuple[str, str] | None] = {}
    types: set[str] = {parse_tag(name)[1] for name in allowed or ()} - {""}
    out_names: list[list[str]] = []
    for i, tags in enumerate(sentences):
        prev, kept = ("O", ""), []
        for j, tag in enumerate(tags):
            if tag not in parsed:
                parsed[tag] = parse_tag(tag)
            part = parsed[tag]
            if part is None:
                raise DatasetError(f"{where}: {locate(i, j)}: tag {tag!r} is not a BIO tag; "
                                   "expected O, B-<type> or I-<type>")
            if allowed is not None and tag not in allowed:
                raise DatasetError(f"{where}: {locate(i, j)}: tag {tag!r} is not in tag_names {sorted(allowed)}")
            prefix, kind = part
            if prefix == "I" and (prev[0] == "O" or prev[1] != kind):
                if scheme != "IOB1":
                    raise DatasetError(
                        f"{where}: {locate(i, j)}: tag {tag!r} does not continue a mention of type {kind!r} "
                        f"(previous tag {'-'.join(p for p in prev if p)!r}); expected B-{kind} to start a mention "
                        "(scheme='BIO'; pass scheme='IOB1' where I- may start one)")
                tag = f"B-{kind}"
            if kind:
                types.add(kind)
            kept.append(tag)
            prev = part
        out_names.append(kept)
    if not types:
        raise DatasetError(f"{where}: no entity tags (every tag is O); expected B-<type>/I-<type> tags")
    names = canonical_tag_names(types)
    position = {name: k for k, name in enumerate(names)}
    return [[position[t] for t in tags] for tags in out_names], names


# ---------------------------------------------------------------------------------------------------------------
# TaggedDataset


@dataclass(frozen=True, eq=False, repr=False)
class TaggedDataset:
    """A token-classification dataset, one row per sentence. Treat ``frame`` as read-only: every operation here
    returns a new dataset."""

    frame: pd.DataFrame
    tag_names: list[str]
    name: str
    source: str
    #: What was done to the data after loading (split, noise), with parameters: recorded in the run.
    steps: tuple[str, ...] = field(default=())

    def __post_init__(self):
        _check_structure(self.frame, self.tag_names, self.name)

    def __repr__(self) -> str:
        return (f"TaggedDataset(name={self.name!r}, sentences={len(self.frame):,}, words={self.n_words:,}, "
                f"types={len(self.entity_types)}, source={self.source!r})")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_words(self) -> int:
        return int(self.lengths().sum())

    @property
    def entity_types(self) -> list[str]:
        return sorted({part[1] for part in map(parse_tag, self.tag_names) if part and part[0] != "O"})

    @property
    def has_noise(self) -> bool:
        return "flipped" in self.frame.columns

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c not in SENTENCE_COLUMNS]

    def lengths(self) -> np.ndarray:
        """Words per sentence (int64), in frame order."""
        return _lengths(self.frame["tokens"])

    def with_frame(self, frame: pd.DataFrame, step: str | None = None) -> "TaggedDataset":
        """A copy holding ``frame`` (checked again), with ``step`` appended to the history."""
        steps = self.steps + ((step,) if step else ())
        return replace(self, frame=frame.reset_index(drop=True), steps=steps)

    def sentence_mentions(self, column: str = "tags") -> list[list[tuple[int, int, str]]]:
        """``mentions`` of every sentence's tags (``column``: ``tags`` or ``original_tags``)."""
        names = self.tag_names
        return [mentions([names[t] for t in tags]) for tags in self.frame[column]]

    def mention_counts(self) -> pd.DataFrame:
        """Mentions per entity type (rows, sorted) and split (columns, only splits present), plus ``total``."""
        spans = self.sentence_mentions()
        kinds = [kind for sentence in spans for _, _, kind in sentence]
        splits = np.repeat(self.frame["split"].to_numpy(str), [len(sentence) for sentence in spans])
        counts = pd.crosstab(pd.Categorical(kinds, categories=self.entity_types),
                             pd.Series(splits, name="split"), dropna=False)
        present = [s for s in SPLITS if s in set(self.frame["split"])]
        counts = counts.reindex(index=self.entity_types, columns=present, fill_value=0)
        counts["total"] = counts.sum(axis=1)
        counts.index.name, counts.columns.name = "type", None
        return counts

    def words(self) -> pd.DataFrame:
        """One row per word, sentences in order, words in order: ``sentence`` (int64 row of ``frame``),
        ``position`` (int32), ``word`` (str), ``tag`` (int64), ``split`` (str), with noise ``flipped`` (bool) and
        ``original_tag`` (int64), then the sentence's metadata repeated."""
        frame, lengths = self.frame, self.lengths()
        n = int(lengths.sum())
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        out = {
            "sentence": np.repeat(np.arange(len(frame), dtype=np.int64), lengths),
            "position": (np.arange(n, dtype=np.int64) - starts).astype(np.int32),
            "word": np.fromiter(_flat(frame["tokens"]), dtype=object, count=n),
            "tag": np.fromiter(_flat(frame["tags"]), dtype=np.int64, count=n),
            "split": np.repeat(frame["split"].to_numpy(str), lengths).astype(object),
        }
        if self.has_noise:
            out["flipped"] = np.fromiter(_flat(frame["flipped"]), dtype=bool, count=n)
            out["original_tag"] = np.fromiter(_flat(frame["original_tags"]), dtype=np.int64, count=n)
        words = pd.DataFrame(out)
        for column in self.metadata_columns:
            words[column] = frame[column].repeat(lengths).reset_index(drop=True)
        return words

    def describe(self) -> dict:
        """JSON-safe identity and shape of the dataset: the ``dataset`` attrs of a run."""
        counts = self.mention_counts()
        split = self.frame["split"].to_numpy(str)
        lengths = self.lengths()
        present = [s for s in SPLITS if s in counts.columns]
        info = {
            "name": self.name,
            "source": self.source,
            "n_sentences": len(self.frame),
            "n_words": int(lengths.sum()),
            "tag_names": list(self.tag_names),
            "entity_types": self.entity_types,
            "splits": {s: int((split == s).sum()) for s in present},
            "words": {s: int(lengths[split == s].sum()) for s in present},
            "mentions": {s: {k: int(v) for k, v in counts[s].items()} for s in present},
            "metadata_columns": self.metadata_columns,
            "steps": list(self.steps),
        }
        if self.has_noise:
            info["n_flipped"] = self.n_flipped_mentions()
            info["n_flipped_words"] = int(sum(map(sum, self.frame["flipped"])))
        return info

    def n_flipped_mentions(self) -> int:
        """Mentions holding a word whose tag noise changed (a mention whose type was flipped, shifted or not)."""
        return sum(any(flips[a:b]) for flips, spans in zip(self.frame["flipped"], self.sentence_mentions())
                   for a, b, _ in spans)

    def summary(self) -> str:
        """A short human-readable summary: size, source, mentions per type and split, injected noise, steps."""
        lines = [f"{self.name}: {len(self.frame):,} sentences, {self.n_words:,} words, "
                 f"{len(self.entity_types)} entity types (from {self.source})",
                 "mentions:", self.mention_counts().to_string()]
        if self.metadata_columns:
            lines.append(f"metadata: {', '.join(self.metadata_columns)}")
        if self.has_noise:
            lines.append(f"tag noise: {self.n_flipped_mentions():,} mentions changed "
                         f"({int(sum(map(sum, self.frame['flipped']))):,} words)")
        lines.extend(f"step: {s}" for s in self.steps)
        return "\n".join(lines)


def _flat(column: pd.Series):
    return itertools.chain.from_iterable(column)


def _lengths(column: pd.Series) -> np.ndarray:
    return np.fromiter(map(len, column), dtype=np.int64, count=len(column))


def tag_codes(tag_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per tag id: its prefix code (0 O, 1 B, 2 I, 3 not BIO) and its type's index (-1 for O and non-BIO)."""
    parsed = [parse_tag(name) for name in tag_names]
    kinds = sorted({p[1] for p in parsed if p and p[0] != "O"})
    prefix = np.array([3 if p is None else "OBI".index(p[0]) for p in parsed], np.int8)
    kind = np.array([kinds.index(p[1]) if p and p[0] != "O" else -1 for p in parsed], np.int64)
    return prefix, kind


def _check_structure(frame: pd.DataFrame, tag_names: list[str], where: str) -> None:
    """Invariants every TaggedDataset holds (vectorised, so re-checking a 2M-word dataset stays cheap); the
    loaders give the detailed, line-level messages."""
    missing = [c for c in ("tokens", "tags", "split") if c not in frame.columns]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {missing}; expected tokens, tags, split "
                           f"(columns present: {list(frame.columns)})")
    names = list(tag_names)
    if len(set(names)) != len(names) or not any(p and p[0] != "O" for p in map(parse_tag, names)):
        raise DatasetError(f"{where}: tag_names {names}: expected distinct names with at least one B-<type>")
    clash = [c for c in frame.columns if c not in SENTENCE_COLUMNS and c in WORD_COLUMNS]
    if clash:
        raise DatasetError(f"{where}: metadata column(s) {clash} clash with the per-word columns {list(WORD_COLUMNS)}")
    unknown = sorted(set(frame["split"].unique()) - set(SPLITS))
    if unknown:
        raise DatasetError(f"{where}: column 'split' holds {unknown}; expected only {list(SPLITS)}")
    if not all(isinstance(words, (list, tuple, np.ndarray)) for words in frame["tokens"]):
        raise DatasetError(f"{where}: column 'tokens' holds non-list values; expected a list of words per sentence")
    lengths = _lengths(frame["tokens"])
    if (lengths == 0).any():
        raise DatasetError(f"{where}: sentence {int(np.argmax(lengths == 0))} has no words; expected at least one")
    columns = [c for c in ("tags", "flipped", "original_tags") if c in frame.columns]
    if "flipped" in frame.columns and "original_tags" not in frame.columns:
        raise DatasetError(f"{where}: column 'flipped' without 'original_tags'; expected both (from noise)")
    for column in columns:
        bad = np.flatnonzero(_lengths(frame[column]) != lengths)
        if len(bad):
            raise DatasetError(f"{where}: sentence {int(bad[0])}: {column} has a different length than tokens")
    prefix, kind = tag_codes(names)
    starts = np.zeros(int(lengths.sum()), bool)
    starts[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
    for column in [c for c in ("tags", "original_tags") if c in columns]:
        tags = np.fromiter(_flat(frame[column]), dtype=np.int64, count=len(starts))
        if len(tags) and (tags.min() < 0 or tags.max() >= len(names)):
            raise DatasetError(f"{where}: column {column!r} holds ids outside 0..{len(names) - 1}")
        p, k = prefix[tags], kind[tags]
        prev_p, prev_k = np.roll(p, 1), np.roll(k, 1)
        bad = (p == 3) | ((p == 2) & (starts | (prev_p == 0) | (prev_k != k)))
        if bad.any():
            word = int(np.argmax(bad))
            sentence = int(np.searchsorted(np.cumsum(lengths), word, side="right"))
            raise DatasetError(f"{where}: sentence {sentence}: {column} is not a valid BIO sequence "
                               f"(tag {names[tags[word]]!r} at word {word - int(np.flatnonzero(starts)[sentence])})")


# ---------------------------------------------------------------------------------------------------------------
# splitting


def split_sentences(ds: TaggedDataset, validation_fraction: float = 0.2, seed: int = 0,
                    overwrite: bool = False) -> TaggedDataset:
    """Put ``round(validation_fraction * n)`` sentences in ``validation``, the rest in ``train``.

    Stratified by each sentence's rarest entity type (or "no entity"), so that rare types reach both splits in
    proportion, within one sentence per stratum. Deterministic for a seed (one ``numpy`` Generator, rows in frame
    order). As ``split_train_validation``: a dataset that already has validation rows (from its file) is
    returned unchanged unless ``overwrite=True``.
    """
    n_validation = validation_count(ds, validation_fraction, overwrite, "sentences")
    if n_validation is None:
        return ds
    frame, n = ds.frame, len(ds.frame)
    spans = ds.sentence_mentions()
    totals = pd.Series([kind for s in spans for _, _, kind in s]).value_counts().to_dict()
    rarest = [min((kind for _, _, kind in s), key=lambda k: (totals[k], k), default="") for s in spans]
    strata, stratum = np.unique(np.array(rarest, dtype=object).astype(str), return_inverse=True)
    shares = apportion(n_validation, np.bincount(stratum, minlength=len(strata)).astype(float))
    rng = np.random.default_rng(seed)
    is_validation = np.zeros(n, dtype=bool)
    for k in range(len(strata)):
        rows = np.flatnonzero(stratum == k)
        is_validation[rng.permutation(rows)[: shares[k]]] = True
    out = frame.copy()
    out["split"] = np.where(is_validation, "validation", "train").astype(object)
    return ds.with_frame(out, f"split_sentences(validation_fraction={validation_fraction}, seed={seed})")
