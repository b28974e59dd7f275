"""The table's order: a page of rows sorted by a column, without sorting all of a 10M-row selection."""

from __future__ import annotations

import numpy as np


def page_order(values: np.ndarray | None, rows: np.ndarray, start: int, stop: int, ascending: bool = True
               ) -> np.ndarray:
    """Rows ``start:stop`` of ``rows`` ordered by ``values[rows]`` (NaN last, ties by row), without a full sort.

    Each row gets one uint64 key (order-preserving float32 bits, then the row index), so the order is total;
    ``argpartition`` brings exactly ranks ``start..stop-1`` into the window and only the window is sorted.
    ``values=None`` keeps ``rows``' own order.
    """
    stop = min(stop, len(rows))
    if start >= stop:
        return rows[:0]
    if values is None:
        return rows[start:stop]
    keys = sort_keys(values[rows], rows, ascending)
    if stop - start < len(keys):
        part = np.argpartition(keys, [start, stop - 1])[start:stop]
    else:
        part = np.arange(len(keys))
    return rows[part[np.argsort(keys[part])]]


def sort_keys(values: np.ndarray, rows: np.ndarray, ascending: bool = True) -> np.ndarray:
    """uint64 keys whose order is (value, row): float32 bits made sortable in the high word, row in the low."""
    v = np.array(values, dtype=np.float32)
    if not ascending:
        np.negative(v, out=v)
    v[np.isnan(v)] = np.inf
    bits = v.view(np.uint32)
    bits = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    return (bits.astype(np.uint64) << np.uint64(32)) | np.asarray(rows).astype(np.uint64)
