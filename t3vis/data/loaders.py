"""Load a labelled text dataset from a file: CSV/TSV, JSON Lines (or a JSON array), Parquet, or a Hugging Face
``datasets`` dataset saved with ``save_to_disk``. Each reader only turns bytes into a raw DataFrame; the column
checks all live in ``dataset.from_frame`` so every format fails the same way.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pandas as pd

from ..errors import DatasetError
from .dataset import TextDataset, from_frame, resolve_splits

#: File suffix -> format.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
           ".parquet": "parquet", ".pq": "parquet"}
#: Column that carries a Hugging Face DatasetDict's split names into ``from_frame`` (never kept).
_HF_SPLIT = "__t3vis_split__"


def load_table(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    metadata_columns: list[str] | None = None,
    label_names: list[str] | None = None,
    split_column: str | None = None,
    name: str | None = None,
) -> TextDataset:
    """Load ``path`` as a ``TextDataset``; bad input raises ``DatasetError`` naming the file, column and rows.

    - Formats by suffix: ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.json`` (JSON Lines, or one array of
      objects), ``.parquet``/``.pq``; a directory is read as a Hugging Face dataset saved with ``save_to_disk``.
      Text files must be UTF-8 (a BOM is fine). In CSV/TSV only empty cells are missing ("NA" is text).
    - Labels: class names (strings) or integer ids. With ``label_names``, names must be among them and ids must
      index them; without, names are the sorted distinct values (ids map to ``str(id)``; a Hugging Face
      ``ClassLabel`` column supplies its own names). At least two classes must occur.
    - Splits: from ``split_column`` (default: a column named ``split`` if there is one; otherwise every row is
      ``train`` and ``split_train_validation`` makes a validation split). Names ``train``/``training`` ->
      train; ``validation``/``valid``/``val``/``dev``/``eval`` -> validation; ``test`` -> validation only if no
      validation-like split exists, else its rows are dropped with a warning (held-out test data stays held
      out). A ``DatasetDict`` follows the same rule for its splits and ignores others (e.g. ``unsupervised``)
      with a warning.
    - Metadata: ``metadata_columns`` keeps exactly those; by default (``None``) every other column holding
      scalar values is kept (lists/dicts are skipped, as are names t3vis reserves: text, label, split,
      flipped, original_label). Pass ``[]`` to keep none.
    - Row numbers in messages are 0-based data rows (header excluded); ``train[5]`` names a DatasetDict row.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory; expected a CSV, TSV, JSONL, JSON or Parquet file, "
                           "or a Hugging Face dataset directory written by save_to_disk")
    checks = dict(text_column=text_column, label_column=label_column, metadata_columns=metadata_columns,
                  split_column=split_column, name=name or path.stem, source=str(path))
    if path.is_dir():
        raw, hf_names, hf_split = _read_hf_dataset(path, label_column, split_column)
        checks.update(name=name or path.name, split_column=hf_split or split_column)
        return from_frame(raw, label_names=label_names or hf_names, **checks)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetError(f"{path}: unknown format {path.suffix!r}; expected one of {sorted(FORMATS)} "
                           "or a Hugging Face dataset directory")
    raw = _READERS[fmt](path, text_column)
    return from_frame(raw, label_names=label_names, **checks)


def read_utf8(path: Path) -> str:
    """The file's text; a non-UTF-8 file fails with the byte offset and line of the first bad byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # not utf-8-sig: its error offsets skip the BOM
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DatasetError(f"{path}: not UTF-8: byte 0x{data[err.start]:02x} at byte offset {err.start} "
                           f"(line {line}); expected UTF-8 text (convert it, e.g. iconv -f latin1 -t utf-8)") from None


def _read_delimited(path: Path, text_column: str, sep: str) -> pd.DataFrame:
    text = read_utf8(path)
    try:
        # Only empty cells are missing: a review that says "NA" or "null" is text. The text column stays str.
        return pd.read_csv(io.StringIO(text), sep=sep, keep_default_na=False, na_values=[""],
                           dtype={text_column: str})
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: empty file; expected a header row and data rows") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise DatasetError(f"{path}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {err}") from None


def _read_csv(path: Path, text_column: str) -> pd.DataFrame:
    return _read_delimited(path, text_column, ",")


def _read_tsv(path: Path, text_column: str) -> pd.DataFrame:
    return _read_delimited(path, text_column, "\t")


def _read_json(path: Path, text_column: str) -> pd.DataFrame:
    """JSON Lines, or (``.json`` only) one array of objects."""
    text = read_utf8(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
        rows = enumerate(records, start=1)
        what = "array element"
    else:
        fast = _read_json_lines_arrow(text)
        if fast is not None:
            return fast
        rows, what = [], "line"
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}: invalid JSON on line {lineno}, column {err.colno}: {err.msg}; "
                                   "expected one JSON object per line") from None
    records = []
    for position, record in rows:
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: {what} {position} is a {type(record).__name__}; expected a JSON object "
                               "(one example with named fields)")
        records.append(record)
    if not records:
        raise DatasetError(f"{path}: no records; expected one JSON object per example")
    return pd.DataFrame.from_records(records)


def _read_json_lines_arrow(text: str) -> pd.DataFrame | None:
    """pyarrow's JSON Lines reader (~10x faster than one ``json.loads`` a line), or ``None`` where it cannot
    read the file (a bad line, a field whose type changes between rows): the line-by-line parser then reads it,
    or says which line is wrong."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    try:
        table = pa_json.read_json(io.BytesIO(text.encode("utf-8")))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table.to_pandas() if table.num_rows else None


def _read_parquet(path: Path, text_column: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise DatasetError(f"{path}: cannot read as Parquet: {err}") from None


_READERS = {"csv": _read_csv, "tsv": _read_tsv, "jsonl": _read_json, "json": _read_json, "parquet": _read_parquet}


def _read_hf_dataset(path: Path, label_column: str, split_column: str | None
                     ) -> tuple[pd.DataFrame, list[str] | None, str | None]:
    """A ``save_to_disk`` directory -> (raw frame, ClassLabel names or None, split column name or None)."""
    is_dict = (path / "dataset_dict.json").exists()
    if not is_dict and not (path / "state.json").exists():
        raise DatasetError(f"{path}: a directory, but not a Hugging Face dataset written by save_to_disk "
                           "(no dataset_dict.json or state.json); expected a dataset directory or a table file")
    try:
        import datasets
    except ImportError:
        raise DatasetError(f"{path}: reading a Hugging Face dataset needs the 'datasets' package "
                           "(pip install datasets)") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise DatasetError(f"{path}: cannot load the Hugging Face dataset: {err}") from None

    if not is_dict:
        return loaded.to_pandas(), _class_label_names(loaded.features, label_column), None
    if split_column is not None:
        raise DatasetError(f"{path}: split_column={split_column!r} given, but a DatasetDict has its own splits "
                           f"{list(loaded)}; leave split_column unset")
    mapping = resolve_splits(list(loaded))
    if not mapping:
        raise DatasetError(f"{path}: splits {list(loaded)}; expected a train, validation or test split")
    ignored = [s for s in loaded if s not in mapping]
    if ignored:
        warnings.warn(f"{path}: ignoring split(s) {ignored}; using {mapping}", stacklevel=3)
    frames = []
    for source_split, split in mapping.items():
        frame = loaded[source_split].to_pandas()
        frame.index = [f"{source_split}[{i}]" for i in range(len(frame))]
        frame[_HF_SPLIT] = split
        frames.append(frame)
    first = loaded[next(iter(mapping))]
    return pd.concat(frames), _class_label_names(first.features, label_column), _HF_SPLIT


def _class_label_names(features, label_column: str) -> list[str] | None:
    import datasets

    feature = features.get(label_column) if features is not None else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
