"""Writing a run store so that a reader never sees half of anything.

Units (an epoch of dynamics, one checkpoint array, a projection) are written under ``.staging/`` and renamed
into ``store.zarr`` when complete. A unit written chunk by chunk (the pipelines' extraction) marks each finished
chunk under ``.progress/`` so that a killed run resumes where it stopped. Completion markers (a checkpoint's
``complete`` attr, the run's ``complete`` attr) are written last.

Every array is made by ``create_array``: each chunk carries a CRC-32C and every chunk is stored, even one equal to
the fill value, so that damage (a missing, truncated or altered chunk) is an error on read (``integrity.py``).
"""

from __future__ import annotations

import datetime as _dt
import posixpath
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from ..version import __version__
from ..errors import RunExistsError, StoreError
from . import schema
from .location import Location

COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
#: Strings (vlen-utf8): zarr's default for them.
STRING_COMPRESSOR = ZstdCodec(level=0)
#: Last in every codec chain: a chunk whose bytes changed fails its read instead of decoding to garbage.
CHECKSUM = Crc32cCodec()
#: zarr does not store this in the metadata: every handle that writes an array must be opened with it. Without it
#: zarr skips (and deletes) chunks equal to the fill value, and a missing chunk could not be told from damage.
ARRAY_CONFIG = {"write_empty_chunks": True}
#: A string column with more distinct values than this is stored as strings, not categories.
MAX_CATEGORIES = 256
#: Columns holding label indices (decoded with the run's label names).
LABEL_COLUMNS = ("label", "original_label")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def column_kind(name: str, values: np.ndarray) -> str:
    """How views treat a column: categorical (few distinct values), continuous, text, flag."""
    if name == "id":
        return "id"
    if name == "text":
        return "text"
    if values.dtype == bool:
        return "flag"
    if values.dtype.kind in "iuf":
        return "continuous"
    return "categorical"


def encode_column(name: str, series: pd.Series) -> tuple[np.ndarray, dict]:
    """Turn a pandas column into an array plus attrs; strings other than text become category codes."""
    if name == "text":
        return _strings(series), {"kind": "text"}
    if name == "id":
        if pd.api.types.is_integer_dtype(series):
            return series.to_numpy(dtype=np.int64), {"kind": "id"}
        return _strings(series), {"kind": "id"}
    if pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=bool), {"kind": "flag"}
    if pd.api.types.is_numeric_dtype(series):
        arr = series.to_numpy()
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        return arr, {"kind": "continuous"}
    strings = series.astype(str)
    if strings.nunique() > MAX_CATEGORIES:  # titles, file names, ids: plain strings, not a colour legend
        return _strings(strings), {"kind": "string"}
    cat = pd.Categorical(strings)
    return cat.codes.astype(np.int32), {"kind": "categorical", "categories": [str(c) for c in cat.categories]}


def create_array(url: str, *, shape: tuple[int, ...], dtype, chunks: tuple[int, ...]) -> zarr.Array:
    """The one way the project makes an array: blosc (zstd for strings), then a checksum; every chunk stored."""
    strings = dtype is str or np.dtype(dtype).kind in "TUO"
    compressors = (STRING_COMPRESSOR if strings else COMPRESSOR, CHECKSUM)
    return zarr.create_array(url, shape=shape, dtype=str if strings else dtype, chunks=chunks,
                             compressors=compressors, config=ARRAY_CONFIG, zarr_format=3)


def open_array(url: str) -> zarr.Array:
    """An existing (staged) array, to write more of its chunks with the same guarantees as ``create_array``."""
    return zarr.open_array(url, mode="r+", zarr_format=3).with_config(ARRAY_CONFIG)


def _strings(series: pd.Series) -> np.ndarray:
    """Variable-length UTF-8 (stored with zarr's vlen-utf8 codec, not fixed-width)."""
    return np.array(series.astype(str).tolist(), dtype=np.dtypes.StringDType())


class RunWriter:
    """Writes one run directory. Open an existing run with ``RunWriter(path)``; make one with ``create``."""

    def __init__(self, path: "str | Location", **storage_options):
        self.loc = Location.of(path, **storage_options)
        if not self.loc.exists(schema.ROOT_METADATA):
            raise StoreError(f"{self.loc.url}: no run store here (expected {schema.STORE_DIR}/zarr.json)")
        self.root = self.loc.open_group(schema.STORE_DIR, mode="r+")

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: "str | Location",
        *,
        examples: pd.DataFrame,
        label_names: list[str],
        model: Mapping[str, Any],
        dataset: Mapping[str, Any],
        name: str | None = None,
        task: str = schema.DEFAULT_TASK,
        overwrite: bool = False,
        extra_attrs: Mapping[str, Any] | None = None,
        chunk_rows: int = schema.COLUMN_CHUNK_ROWS,
        **storage_options,
    ) -> "RunWriter":
        """Create a run: root attrs and the example columns, all-or-nothing.

        ``examples`` needs columns ``text``, ``label`` (int index into ``label_names``) and ``split``; ``id`` is
        added if absent. Other columns are kept as metadata. An existing run is only replaced with ``overwrite``.
        """
        loc = Location.of(path, **storage_options)
        if loc.exists(schema.STORE_DIR) and not overwrite:
            raise RunExistsError(f"{loc.url}: already holds a run; pass overwrite=True (CLI: --overwrite) to replace it")
        missing = [c for c in ("text", "label", "split") if c not in examples.columns]
        if missing:
            raise StoreError(f"examples: missing column(s) {missing}; expected at least text, label, split")
        for key in schema.REQUIRED_MODEL_ATTRS:
            if key not in model:
                raise StoreError(f"model attrs: missing '{key}'")
        examples = examples.reset_index(drop=True)
        if "id" not in examples.columns:
            examples.insert(0, "id", np.arange(len(examples), dtype=np.int64))
        if task not in schema.TASKS:
            raise StoreError(f"task {task!r}: expected one of {list(schema.TASKS)}")
        labels = examples["label"].to_numpy()
        if len(labels) and (labels.min() < 0 or labels.max() >= len(label_names)):
            raise StoreError(f"examples.label: values must be in 0..{len(label_names) - 1} (label_names)")

        staged = posixpath.join(schema.STAGING_DIR, "_create", schema.STORE_DIR)
        loc.rm(staged)
        root = loc.open_group(staged, mode="w")
        root.attrs.update({
            "schema_version": schema.SCHEMA_VERSION,
            "t3vis_version": __version__,
            "name": name or posixpath.basename(loc.root),
            "task": task,
            "created": _now(),
            "label_names": list(label_names),
            "model": dict(model),
            "dataset": dict(dataset),
            "n_examples": int(len(examples)),
            **(dict(extra_attrs) if extra_attrs else {}),
        })
        root.create_group("examples")
        n = len(examples)
        for col in examples.columns:
            values, attrs = encode_column(col, examples[col])
            if col in LABEL_COLUMNS:
                values, attrs = values.astype(np.int16), {"kind": "categorical", "categories": list(label_names)}
            if col == "split":
                values, attrs = _encode_split(examples[col])
            is_str = isinstance(values.dtype, np.dtypes.StringDType)
            rows = min(chunk_rows, schema.TEXT_CHUNK_ROWS) if is_str else chunk_rows
            arr = create_array(loc.url_of(staged, "examples", col), shape=(n,), chunks=(max(1, min(rows, n)),),
                               dtype=values.dtype)
            if n:
                arr[:] = values
            arr.attrs.update(attrs)
        root.create_group("dynamics")
        root.create_group("checkpoints")
        if loc.exists(schema.STORE_DIR):  # overwrite: drop the old run only now that the new one is complete
            loc.rm(schema.WEIGHTS_DIR)
            loc.rm(schema.PROGRESS_DIR)
            loc.rm(schema.STAGING_DIR, "checkpoints")
            loc.rm(schema.STAGING_DIR, "dynamics")
            loc.mv(schema.STORE_DIR, posixpath.join(schema.STAGING_DIR, "_old"))
            loc.mv(staged, schema.STORE_DIR)
            loc.rm(schema.STAGING_DIR, "_old")
        else:
            loc.mv(staged, schema.STORE_DIR)
        return cls(loc)

    # ------------------------------------------------------------------ attrs
    @property
    def attrs(self) -> dict:
        return dict(self.root.attrs)

    def update_attrs(self, **attrs: Any) -> None:
        self.root.attrs.update(attrs)

    @property
    def n_examples(self) -> int:
        return int(self.root.attrs["n_examples"])

    # ------------------------------------------------------------------ staged units
    # A unit is a path below store.zarr (an array or a group). It is built under .staging/<unit> and renamed
    # into place by ``commit``; readers only ever see committed units.
    def is_done(self, unit: str) -> bool:
        return self.loc.exists(schema.STORE_DIR, unit, "zarr.json")

    def is_staged(self, unit: str) -> bool:
        """Whether ``unit`` is being written (staged, not yet committed)."""
        return self.loc.exists(schema.STAGING_DIR, unit, "zarr.json")

    def prepare(self, unit: str) -> None:
        """Create the groups above ``unit``. The driver does this before tasks commit units side by side, so that
        parallel commits never race to create the same group."""
        parent = posixpath.dirname(unit)
        if parent:
            self.root.require_group(parent)

    def commit(self, unit: str) -> None:
        """Move a finished staged unit into the store (replacing an older one) and drop its progress marks."""
        self.prepare(unit)
        if self.is_done(unit):
            self.loc.rm(schema.STORE_DIR, unit)
        self.loc.mv(posixpath.join(schema.STAGING_DIR, unit), posixpath.join(schema.STORE_DIR, unit))
        self.loc.rm(schema.PROGRESS_DIR, unit)

    def _new_staged(self, unit: str) -> str:
        rel = posixpath.join(schema.STAGING_DIR, unit)
        self.loc.rm(rel)
        return rel

    def write_array(self, unit: str, values: np.ndarray, attrs: Mapping[str, Any] | None = None,
                    chunk_rows: int = schema.CHUNK_ROWS) -> None:
        """Write one whole array atomically: stage, fill, commit. Chunked as ``schema.default_chunks``."""
        values = np.asarray(values)
        rel = self._new_staged(unit)
        chunks = schema.default_chunks(unit, values.shape, chunk_rows)
        a = create_array(self.loc.url_of(rel), shape=values.shape, dtype=values.dtype, chunks=chunks)
        a[...] = values
        if attrs:
            a.attrs.update(dict(attrs))
        self.commit(unit)

    def write_group(self, unit: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None = None,
                    chunk_rows: int | None = None) -> None:
        """Write a group of whole arrays atomically (e.g. one epoch of dynamics)."""
        rel = self._new_staged(unit)
        g = self.loc.open_group(rel, mode="w")
        for name, values in arrays.items():
            values = np.asarray(values)
            chunks = schema.default_chunks(name, values.shape, chunk_rows or schema.CHUNK_ROWS)
            create_array(self.loc.url_of(rel, name), shape=values.shape, dtype=values.dtype,
                         chunks=chunks)[...] = values
        if attrs:
            g.attrs.update(dict(attrs))
        self.commit(unit)

    # chunked units: big arrays written one row-chunk at a time, resumably -------------
    def staged_array(self, unit: str, shape: tuple[int, ...], dtype, chunks: tuple[int, ...],
                     attrs: Mapping[str, Any] | None = None) -> zarr.Array:
        """Open (or create) the staged array ``unit``; reopening keeps finished chunks, so a killed run resumes.

        Write whole chunks, then ``mark_chunk``; ``commit`` when every chunk is marked.
        """
        rel = posixpath.join(schema.STAGING_DIR, unit)
        if self.is_staged(unit):
            a = open_array(self.loc.url_of(rel))
            if (tuple(a.shape) == tuple(shape) and np.dtype(a.dtype) == np.dtype(dtype)
                    and tuple(a.chunks) == tuple(chunks)):
                return a
            self.loc.rm(schema.PROGRESS_DIR, unit)
        self.loc.rm(rel)
        self.loc.rm(schema.PROGRESS_DIR, unit)
        a = create_array(self.loc.url_of(rel), shape=shape, dtype=dtype, chunks=chunks)
        if attrs:
            a.attrs.update(dict(attrs))
        return a

    def write_chunk(self, unit: str, index: int, values: np.ndarray) -> None:
        """Write row-chunk ``index`` of the staged array ``unit`` whole, cast to the array's dtype (rows are the
        first axis; the second for hidden states); then ``mark_chunk``. A shape that is not the chunk's is a
        StoreError, and nothing is written."""
        a = open_array(self.loc.url_of(schema.STAGING_DIR, unit))
        axis = schema.row_axis(unit)
        size = a.chunks[axis]
        rows = slice(index * size, min(a.shape[axis], (index + 1) * size))
        expected = a.shape[:axis] + (rows.stop - rows.start,) + a.shape[axis + 1:]
        if rows.start >= rows.stop or np.shape(values) != expected:
            raise StoreError(f"{unit}: chunk {index} holds shape {expected if rows.start < rows.stop else '(none)'}"
                             f", got values of shape {np.shape(values)}")
        a[(slice(None),) * axis + (rows,)] = np.asarray(values).astype(a.dtype, copy=False)

    def write_extracted_chunk(self, checkpoint: str, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write row-chunk ``index`` of each of ``checkpoint``'s staged extracted arrays, then mark it in each (last:
        a chunk is done once every array holds it)."""
        units = {array: schema.checkpoint_path(checkpoint, array) for array in schema.EXTRACTED_ARRAYS}
        for array, unit in units.items():
            self.write_chunk(unit, index, arrays[array])
        for unit in units.values():
            self.mark_chunk(unit, index)

    def chunk_done(self, unit: str, index: int) -> bool:
        return self.loc.exists(schema.PROGRESS_DIR, unit, f"{index}.done")

    def mark_chunk(self, unit: str, index: int) -> None:
        """Record that chunk ``index`` of a staged array is fully written (call after the write returns)."""
        self.loc.touch(schema.PROGRESS_DIR, unit, f"{index}.done")

    def chunks_done(self, unit: str) -> set[int]:
        return {int(f.split(".")[0]) for f in self.loc.ls(schema.PROGRESS_DIR, unit) if f.endswith(".done")}

    # ------------------------------------------------------------------ dynamics
    def write_epoch(self, epoch: int, *, gold_prob: np.ndarray, pred: np.ndarray, loss: np.ndarray,
                    step: int | None = None, **optional: np.ndarray | None) -> None:
        """Record one epoch of training dynamics for every example (atomic per epoch); ``optional``: arrays of
        ``schema.OPTIONAL_DYNAMICS_ARRAYS`` (margin, train_gold_prob, ...), None ones left out."""
        n = self.n_examples
        unknown = sorted(set(optional) - set(schema.OPTIONAL_DYNAMICS_ARRAYS))
        if unknown:
            raise StoreError(f"dynamics: unknown array(s) {unknown}; expected among "
                             f"{sorted(schema.OPTIONAL_DYNAMICS_ARRAYS)}")
        arrays = {"gold_prob": gold_prob, "pred": pred, "loss": loss}
        arrays.update({k: v for k, v in optional.items() if v is not None})
        dtypes = {**schema.DYNAMICS_ARRAYS, **schema.OPTIONAL_DYNAMICS_ARRAYS}
        for key, values in arrays.items():
            if np.shape(values) != (n,):
                raise StoreError(f"dynamics.{key}: expected shape ({n},), got {np.shape(values)}")
            arrays[key] = np.asarray(values).astype(dtypes[key])
        self.write_group(f"dynamics/{int(epoch)}", arrays, {"epoch": int(epoch), "step": step},
                         chunk_rows=schema.COLUMN_CHUNK_ROWS)

    def write_crossfit(self, probs: np.ndarray, fold: np.ndarray, attrs: Mapping[str, Any]) -> None:
        """Record cross-fitted probabilities ``[n, C]`` (NaN on rows not cross-fitted) and each row's fold ``[n]``
        (-1: none), atomically, replacing an older cross-fit; ``attrs`` say how (folds, seed, config)."""
        n, classes = self.n_examples, len(self.root.attrs["label_names"])
        if np.shape(probs) != (n, classes) or np.shape(fold) != (n,):
            raise StoreError(f"crossfit: expected probs ({n}, {classes}) and fold ({n},), got "
                             f"{np.shape(probs)} and {np.shape(fold)}")
        arrays = {k: np.asarray(v).astype(schema.CROSSFIT_ARRAYS[k]) for k, v in {"probs": probs, "fold": fold}.items()}
        self.write_group(schema.CROSSFIT_GROUP, arrays, attrs, chunk_rows=schema.COLUMN_CHUNK_ROWS)

    # ------------------------------------------------------------------ checkpoints
    def add_checkpoint(self, name: str, *, step: int, epoch: float, weights: str | None = None,
                       **attrs: Any) -> zarr.Group:
        """Register a checkpoint (its group and where its weights are). Arrays come later as units."""
        _check_name(name)
        g = self.root.require_group(schema.checkpoint_path(name))
        g.attrs.update({"step": int(step), "epoch": float(epoch), "weights": weights, "complete": False, **attrs})
        return g

    def weights_dir(self, name: str) -> str:
        """Relative path of a checkpoint's weight directory."""
        _check_name(name)
        return posixpath.join(schema.WEIGHTS_DIR, name)

    def mark_checkpoint_complete(self, name: str, **attrs: Any) -> None:
        """Write the completion marker, last, once every extracted array is in place; ``attrs`` (how the arrays
        were made) just before it."""
        missing = [a for a in schema.EXTRACTED_ARRAYS if not self.is_done(schema.checkpoint_path(name, a))]
        if missing:
            raise StoreError(f"{schema.checkpoint_path(name)}: cannot mark complete, missing {missing}")
        group = self.root[schema.checkpoint_path(name)]
        if attrs:
            group.attrs.update(attrs)
        group.attrs["complete"] = True

    def commit_checkpoint(self, name: str, **attrs: Any) -> None:
        """Commit the checkpoint's staged extracted arrays, then mark it complete (``attrs``: how they were made)."""
        for unit in (schema.checkpoint_path(name, array) for array in schema.EXTRACTED_ARRAYS):
            if not self.is_done(unit):
                self.commit(unit)
        self.mark_checkpoint_complete(name, **attrs)

    def checkpoint_names(self) -> list[str]:
        g = self.root["checkpoints"]
        return sorted(g.group_keys(), key=lambda k: (g[k].attrs.get("step", 0), k))


def _encode_split(series: pd.Series) -> tuple[np.ndarray, dict]:
    values = series.astype(str).to_numpy()
    unknown = sorted(set(values) - set(schema.SPLITS))
    if unknown:
        raise StoreError(f"examples.split: unknown split(s) {unknown}; expected {list(schema.SPLITS)}")
    codes = np.zeros(len(values), dtype=np.int8)
    for i, split in enumerate(schema.SPLITS):
        codes[values == split] = i
    return codes, {"kind": "categorical", "categories": list(schema.SPLITS)}


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise StoreError(f"checkpoint name {name!r}: expected a non-empty name without '/' or a leading '.'")


def iter_chunks(n: int, chunk_rows: int) -> Iterable[tuple[int, slice]]:
    """(chunk index, row slice) pairs covering ``range(n)``."""
    for i, start in enumerate(range(0, n, chunk_rows)):
        yield i, slice(start, min(n, start + chunk_rows))
