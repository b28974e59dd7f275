"""``TextDataset``: a labelled text-classification dataset as one tidy DataFrame, plus ``from_frame``, the single
place that turns a raw table (from any file format) into one, checking every column on the way in.

Columns of ``TextDataset.frame``:

- ``text`` (str): the input, never blank.
- ``label`` (int64): an index into ``label_names``.
- ``split`` (str): ``"train"`` or ``"validation"`` (the two splits a run store keeps).
- after ``inject_label_noise``: ``flipped`` (bool) and ``original_label`` (int64, the label before noise).
- any metadata columns, in the source's order (scalar values only: the run store keeps them as columns).

The frame is what ``RunWriter.create(examples=ds.frame, label_names=ds.label_names, dataset=ds.describe())`` takes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from numbers import Number

import numpy as np
import pandas as pd

from ..errors import DatasetError

#: The splits a run keeps (the same as ``t3vis.store.schema.SPLITS``; not imported, so data stays zarr-free).
SPLITS = ("train", "validation")
#: Columns ``TextDataset`` itself defines; a metadata column may not take these names.
RESERVED_COLUMNS = ("text", "label", "split", "flipped", "original_label")
#: Split names recognised in files and Hugging Face dataset dicts.
TRAIN_NAMES = ("train", "training")
VALIDATION_NAMES = ("validation", "valid", "val", "dev", "eval")
TEST_NAMES = ("test",)


@dataclass(frozen=True, eq=False, repr=False)
class TextDataset:
    """A labelled text dataset. Treat ``frame`` as read-only: every operation here returns a new dataset."""

    frame: pd.DataFrame
    label_names: list[str]
    name: str
    source: str
    #: What was done to the data after loading (split, noise), with parameters: recorded in the run for reproducibility.
    steps: tuple[str, ...] = field(default=())
    #: Whether the source gave integer class ids (names only attached to them) rather than class names: a model's
    #: ``label2id`` may re-number names, never ids (see ``labels.align_labels``).
    labels_are_ids: bool = False

    def __post_init__(self):
        _check_structure(self.frame, self.label_names, self.name)

    def __repr__(self) -> str:
        return (f"TextDataset(name={self.name!r}, n={len(self.frame):,}, classes={len(self.label_names)}, "
                f"source={self.source!r})")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def has_noise(self) -> bool:
        return "flipped" in self.frame.columns

    def with_frame(self, frame: pd.DataFrame, step: str | None = None) -> "TextDataset":
        """A copy holding ``frame`` (checked again), with ``step`` appended to the history."""
        steps = self.steps + ((step,) if step else ())
        return replace(self, frame=frame.reset_index(drop=True), steps=steps)

    def class_counts(self) -> pd.DataFrame:
        """Examples per class (rows, in label order) and split (columns, only splits present), plus ``total``."""
        labels = pd.Categorical.from_codes(self.frame["label"].to_numpy(), categories=self.label_names)
        counts = pd.crosstab(pd.Series(labels, name="label"), self.frame["split"].rename("split"), dropna=False)
        counts = counts.reindex(columns=[s for s in SPLITS if s in counts.columns])
        counts["total"] = counts.sum(axis=1)
        counts.columns.name = None
        return counts

    def describe(self) -> dict:
        """JSON-safe identity and shape of the dataset: the ``dataset`` attrs of a run."""
        counts = self.class_counts()
        info = {
            "name": self.name,
            "source": self.source,
            "n_examples": len(self.frame),
            "label_names": list(self.label_names),
            "splits": {s: int(counts[s].sum()) for s in SPLITS if s in counts.columns},
            "class_counts": {s: {k: int(v) for k, v in counts[s].items()} for s in SPLITS if s in counts.columns},
            "metadata_columns": [c for c in self.frame.columns if c not in RESERVED_COLUMNS],
            "steps": list(self.steps),
        }
        if self.has_noise:
            info["n_flipped"] = int(self.frame["flipped"].sum())
        return info

    def summary(self) -> str:
        """A short human-readable summary: size, source, class counts per split, injected noise."""
        lines = [f"{self.name}: {len(self.frame):,} examples, {self.n_classes} classes (from {self.source})",
                 self.class_counts().to_string()]
        meta = [c for c in self.frame.columns if c not in RESERVED_COLUMNS]
        if meta:
            lines.append(f"metadata: {', '.join(meta)}")
        if self.has_noise:
            flipped = self.frame["flipped"]
            lines.append(f"label noise: {int(flipped.sum()):,} labels flipped")
        lines.extend(f"step: {s}" for s in self.steps)
        return "\n".join(lines)


def _check_structure(frame: pd.DataFrame, label_names: list[str], where: str) -> None:
    """Cheap invariants every TextDataset holds; ``from_frame`` gives the detailed, row-level messages."""
    missing = [c for c in ("text", "label", "split") if c not in frame.columns]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {missing}; expected text, label, split "
                           f"(columns present: {list(frame.columns)})")
    if len(label_names) < 2 or len(set(label_names)) != len(label_names):
        raise DatasetError(f"{where}: label_names {list(label_names)}: expected at least 2 distinct names")
    if not pd.api.types.is_integer_dtype(frame["label"]):
        raise DatasetError(f"{where}: column 'label' has dtype {frame['label'].dtype}; expected integer class ids")
    labels = frame["label"].to_numpy()
    if len(labels) and (labels.min() < 0 or labels.max() >= len(label_names)):
        raise DatasetError(f"{where}: column 'label' holds values outside 0..{len(label_names) - 1}")
    unknown = sorted(set(frame["split"].unique()) - set(SPLITS))
    if unknown:
        raise DatasetError(f"{where}: column 'split' holds {unknown}; expected only {list(SPLITS)}")


# ---------------------------------------------------------------------------------------------------------------
# from_frame: raw table -> TextDataset


def from_frame(
    raw: pd.DataFrame,
    *,
    text_column: str = "text",
    label_column: str = "label",
    metadata_columns: list[str] | None = None,
    label_names: list[str] | None = None,
    split_column: str | None = None,
    name: str = "dataset",
    source: str = "<DataFrame>",
) -> TextDataset:
    """Check a raw table and turn it into a ``TextDataset``; every message names ``source``, the column and rows.

    Rows are named by ``raw.index`` (a 0-based row number for a plain table). See ``load_table`` for the rules on
    labels, splits and metadata.
    """
    _require_columns(raw, [text_column, label_column], source, "")
    if split_column is None and "split" in raw.columns and "split" not in (text_column, label_column):
        split_column = "split"
    if split_column is not None:
        _require_columns(raw, [split_column], source, "split_column ")
        raw = _normalise_splits(raw, split_column, source)
    if len(raw) == 0:
        raise DatasetError(f"{source}: no rows; expected at least one example")
    meta = _metadata_columns(raw, metadata_columns, used=(text_column, label_column, split_column), where=source)

    text = _check_text(raw[text_column], source, text_column)
    codes, names, are_ids = encode_labels(raw[label_column], label_names, source, label_column)
    raw = raw.reset_index(drop=True)  # the index only named rows in messages
    split = raw[split_column].astype(str) if split_column is not None else pd.Series("train", index=raw.index)
    frame = pd.concat([text.reset_index(drop=True).rename("text"), pd.Series(codes, name="label"),
                       split.rename("split"), raw[meta]], axis=1)
    return TextDataset(frame, names, name, source, labels_are_ids=are_ids)


def as_text_dataset(examples, *, label_names: list[str] | None = None, text_column: str = "text",
                    label_column: str = "label"):
    """A ``TextDataset`` from a ``TextDataset``, a pandas DataFrame or a ``datasets.Dataset``.

    Rows keep their order (row i is example id i in the run). Without a ``split`` column every row is ``train``.
    Integer labels without ``label_names`` keep their values as class ids (names ``"0"``, ``"1"``, ...), so
    they still index the model's outputs.
    """
    if isinstance(examples, TextDataset):
        return examples
    name, source = "dataset", "<DataFrame>"
    if hasattr(examples, "to_pandas") and hasattr(examples, "features"):  # a Hugging Face datasets.Dataset
        feature = examples.features.get(label_column)
        if label_names is None and getattr(feature, "names", None):
            label_names = list(feature.names)
        name, source = getattr(examples.info, "dataset_name", None) or "dataset", "<datasets.Dataset>"
        examples = examples.to_pandas()
    if not isinstance(examples, pd.DataFrame):
        raise DatasetError(f"examples: got {type(examples).__name__}; expected a TextDataset, a pandas DataFrame "
                           "or a datasets.Dataset with text and label columns")
    if label_names is None and label_column in examples and pd.api.types.is_integer_dtype(examples[label_column]):
        top = int(examples[label_column].max()) if len(examples) else 0
        label_names = [str(i) for i in range(max(top + 1, 2))]
    return from_frame(examples, text_column=text_column, label_column=label_column, label_names=label_names,
                      name=name, source=source)


def _require_columns(raw: pd.DataFrame, columns: list[str], where: str, what: str) -> None:
    for col in columns:
        if col not in raw.columns:
            raise DatasetError(f"{where}: {what}column {col!r} not found; columns present: {list(raw.columns)}")


def _rows(index: pd.Index, mask: np.ndarray, limit: int = 5) -> str:
    """'rows 3, 17, 40 and 12 more' for the rows where ``mask`` holds."""
    hits = index[np.asarray(mask)]
    shown = ", ".join(str(r) for r in hits[:limit])
    more = f" and {len(hits) - limit:,} more" if len(hits) > limit else ""
    return f"row{'s' if len(hits) > 1 else ''} {shown}{more}"


def _check_text(values: pd.Series, where: str, column: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise DatasetError(f"{where}: column {column!r} holds {values.dtype} values; expected text (strings)")
    missing = values.isna().to_numpy()
    not_str = ~missing & ~values.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    if not_str.any():
        first = values[not_str].iloc[0]
        raise DatasetError(f"{where}: column {column!r}: non-text values (e.g. {type(first).__name__} {first!r}) "
                           f"at {_rows(values.index, not_str)}; expected strings")
    blank = missing | (values.fillna("").astype(str).str.strip() == "").to_numpy()
    if blank.any():
        raise DatasetError(f"{where}: column {column!r}: empty or blank text at {_rows(values.index, blank)} "
                           f"(0-based data rows); expected non-empty text")
    return values.astype(str)


def encode_labels(values: pd.Series, label_names: list[str] | None, where: str, column: str = "label"
                  ) -> tuple[np.ndarray, list[str], bool]:
    """Class ids (int64), class names, and whether the column held integer ids, for a label column holding
    names (strings) or integer ids.

    Integers with ``label_names`` are indices into it; integers without are mapped, in sorted order, to names
    ``str(value)``. Strings must be among ``label_names`` when given; otherwise the sorted distinct strings are
    the names. At least two classes must occur.
    """
    index = values.index
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        dupes = sorted({n for n in label_names if label_names.count(n) > 1})
        if dupes or len(label_names) < 2:
            raise DatasetError(f"{where}: label_names {label_names}: expected at least 2 distinct names"
                               + (f" (repeated: {dupes})" if dupes else ""))
    missing = values.isna().to_numpy()
    if missing.any():
        raise DatasetError(f"{where}: column {column!r}: missing label at {_rows(index, missing)}; "
                           "expected a class name or integer id on every row")
    if pd.api.types.is_object_dtype(values):
        values = values.infer_objects()
    if pd.api.types.is_bool_dtype(values):
        values = values.astype(np.int64)
    if pd.api.types.is_float_dtype(values):
        fractional = (values != np.round(values)).to_numpy()
        if fractional.any():
            raise DatasetError(f"{where}: column {column!r}: non-integer number {values[fractional].iloc[0]!r} at "
                               f"{_rows(index, fractional)}; expected class names or integer class ids")
        values = values.astype(np.int64)

    if pd.api.types.is_integer_dtype(values):
        ints = values.to_numpy(dtype=np.int64)
        if label_names is not None:
            bad = (ints < 0) | (ints >= len(label_names))
            if bad.any():
                raise DatasetError(
                    f"{where}: column {column!r}: class id(s) {sorted(set(ints[bad].tolist()))[:5]} at "
                    f"{_rows(index, bad)} outside 0..{len(label_names) - 1}; expected indices into "
                    f"label_names {label_names}")
            codes, names = ints, label_names
        else:
            distinct = np.unique(ints)
            codes, names = np.searchsorted(distinct, ints).astype(np.int64), [str(v) for v in distinct]
    else:
        if not pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
            raise DatasetError(f"{where}: column {column!r} has dtype {values.dtype}; "
                               "expected class names (strings) or integer class ids")
        strings = values.map(lambda v: v if isinstance(v, str) else str(v)).to_numpy(dtype=object)
        names = label_names if label_names is not None else sorted(set(strings))
        position = {n: i for i, n in enumerate(names)}
        codes = np.fromiter((position.get(s, -1) for s in strings), dtype=np.int64, count=len(strings))
        bad = codes < 0
        if bad.any():
            offending = list(dict.fromkeys(strings[bad]))
            raise DatasetError(f"{where}: column {column!r}: label(s) {offending[:5]} at {_rows(index, bad)} "
                               f"not in label_names {names}")
    present = np.unique(codes)
    if len(present) < 2:
        only = names[present[0]] if len(present) else None
        raise DatasetError(f"{where}: column {column!r} holds a single class ({only!r}); "
                           "expected at least 2 classes")
    return codes, list(names), bool(pd.api.types.is_integer_dtype(values))


def _split_name(value) -> str | None:
    """The t3vis split a file's split name stands for (``"test"`` kept as is: it depends on the other names)."""
    if not isinstance(value, str):
        return None
    key = value.strip().lower()
    if key in TRAIN_NAMES:
        return "train"
    if key in VALIDATION_NAMES:
        return "validation"
    if key in TEST_NAMES:
        return "test"
    return None


def resolve_splits(names: list[str]) -> dict[str, str]:
    """Map a source's split names to t3vis splits: train-like -> train, validation-like -> validation, and
    ``test`` -> validation only when no validation-like split exists (a real validation set wins). Names not in
    the result are not used."""
    kinds = {n: _split_name(n) for n in names}
    has_validation = "validation" in kinds.values()
    out = {}
    for n, kind in kinds.items():
        if kind == "test" and not has_validation:
            out[n] = "validation"
        elif kind in SPLITS:
            out[n] = kind
    return out


def _normalise_splits(raw: pd.DataFrame, column: str, where: str) -> pd.DataFrame:
    values = raw[column]
    mapping = resolve_splits([v for v in values.dropna().unique() if isinstance(v, str)])
    unknown = ~values.map(lambda v: _split_name(v) is not None).to_numpy(dtype=bool)
    if unknown.any():
        examples = list(dict.fromkeys(values[unknown].astype(str)))[:5]
        raise DatasetError(f"{where}: split column {column!r}: unknown split name(s) {examples} at "
                           f"{_rows(raw.index, unknown)}; expected one of "
                           f"{list(TRAIN_NAMES + VALIDATION_NAMES + TEST_NAMES)}")
    mapped = values.map(mapping)
    dropped = mapped.isna().to_numpy()
    if dropped.any():
        counts = values[dropped].value_counts().to_dict()
        warnings.warn(f"{where}: split column {column!r}: dropping {int(dropped.sum()):,} row(s) of split(s) "
                      f"{counts}: a validation split exists, so 'test' is held out", stacklevel=3)
    raw = raw.loc[~dropped].copy()
    raw[column] = mapped[~dropped].astype(str)
    return raw


def _is_scalar_column(values: pd.Series) -> bool:
    if isinstance(values.dtype, pd.ArrowDtype):
        import pyarrow as pa

        return not pa.types.is_nested(values.dtype.pyarrow_dtype)
    if not pd.api.types.is_object_dtype(values):
        return True
    return all(v is None or isinstance(v, (str, Number, bool, np.generic)) for v in values)


def _metadata_columns(raw: pd.DataFrame, requested: list[str] | None, used: tuple, where: str) -> list[str]:
    """Requested columns (checked), or by default every other column holding scalar values."""
    if requested is None:
        return [c for c in raw.columns
                if c not in used and c not in RESERVED_COLUMNS and isinstance(c, str) and _is_scalar_column(raw[c])]
    _require_columns(raw, list(requested), where, "metadata ")
    for col in requested:
        if col in RESERVED_COLUMNS:
            raise DatasetError(f"{where}: metadata column {col!r} clashes with a column t3vis defines "
                               f"{list(RESERVED_COLUMNS)}; rename it")
        if not _is_scalar_column(raw[col]):
            raise DatasetError(f"{where}: metadata column {col!r} holds non-scalar values (lists, dicts, ...); "
                               "expected one number, string or flag per row")
    return list(requested)
