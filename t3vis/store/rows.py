"""Reading stored arrays: ``read`` (any selection) and ``RowReader``, the one way rows of an array are read.

Why one: the reader, the app's table pages and the pipelines' tasks all map rows to stored chunks; doing it once
keeps damage reporting (a StoreError naming the array and chunk, never fill values or a bare codec error) and chunk
caching in one place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import zarr

from ..errors import StoreError, T3VisError
from .integrity import CheckedStore


def read(arr: zarr.Array, selection: Any = Ellipsis) -> np.ndarray:
    """``arr[selection]``, index arrays applied per axis; a damaged chunk is a StoreError naming array and chunk."""
    try:
        return _select(arr, selection)
    except (T3VisError, OSError, MemoryError):  # named already, or the disk / memory, not the data
        raise
    except Exception as exc:  # a codec failed: find the chunk by reading again, checking every checksum first
        raise _damage(arr, selection, exc) from None


def _select(arr: zarr.Array, selection: Any) -> np.ndarray:
    parts = selection if isinstance(selection, tuple) else (selection,)
    if any(isinstance(p, (np.ndarray, list)) for p in parts):
        return arr.get_orthogonal_selection(selection)
    return arr[selection]


def _damage(arr: zarr.Array, selection: Any, exc: Exception) -> StoreError:
    store = arr.store if isinstance(arr.store, CheckedStore) else CheckedStore(arr.store, str(arr.store))
    try:
        _select(zarr.open_array(store=store.verifying(), path=arr.path, mode="r", zarr_format=3), selection)
    except StoreError as named:
        return named
    except Exception:  # noqa: BLE001 - no checksum to name the chunk (a schema v1 array): report the array
        pass
    return StoreError(f"{store.where}/{arr.path}: cannot be decoded ({type(exc).__name__}: {exc}); "
                      "`t3vis validate RUN` checks every chunk")


class RowReader:
    """Rows of one array's first axis (``None``: all of it).

    With ``cache_bytes`` it reads whole stored chunks and keeps the recently used ones (LRU by size, at least the
    last one; thread-safe), for callers that come back for nearby rows: table pages of text, pipeline tasks that
    share a chunk. Without, zarr reads only the chunks holding the rows and nothing is kept.
    """

    def __init__(self, array: zarr.Array, cache_bytes: int = 0):
        self.array = array
        self.chunk_rows = int(array.chunks[0])
        self.cache_bytes = int(cache_bytes)
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self._lock = threading.Lock()

    def __call__(self, rows: "slice | np.ndarray | None" = None) -> np.ndarray:
        arr = self.array
        if rows is None:
            return read(arr)
        if not self.cache_bytes:
            if isinstance(rows, slice):
                return read(arr, rows)
            rows = np.asarray(rows)
            return read(arr, (rows,) + (slice(None),) * (arr.ndim - 1)) if len(rows) else read(arr, slice(0, 0))
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(arr.shape[0]))
        rows = np.asarray(rows, dtype=np.int64)
        which = rows // self.chunk_rows
        parts = {int(c): self._chunk(int(c)) for c in np.unique(which)}
        first = next(iter(parts.values()), None)
        out = np.empty((len(rows),) + tuple(arr.shape[1:]), dtype=first.dtype if first is not None else arr.dtype)
        for c, chunk in parts.items():
            sel = which == c
            out[sel] = chunk[rows[sel] - c * self.chunk_rows]
        return out

    def _chunk(self, c: int) -> np.ndarray:
        with self._lock:
            got = self._chunks.get(c)
            if got is not None:
                self._chunks.move_to_end(c)
                return got
        start = c * self.chunk_rows
        got = np.asarray(read(self.array, slice(start, start + self.chunk_rows)))
        got.flags.writeable = False  # shared by every caller: never modified in place
        with self._lock:
            self._chunks[c] = got
            self._sizes[c] = _size(got)
            while len(self._chunks) > 1 and sum(self._sizes.values()) > self.cache_bytes:
                old, _ = self._chunks.popitem(last=False)
                self._sizes.pop(old)
        return got


def _size(values: np.ndarray) -> int:
    """Bytes a decoded chunk holds; strings estimated from the first 1,000 (their buffers are not in ``nbytes``)."""
    if values.dtype.kind not in "TUO":
        return int(values.nbytes)
    sample = values[:1000]
    return int(sum(len(s) for s in sample) / max(1, len(sample)) * len(values)) + 16 * len(values)
