"""Cosine nearest neighbours over a layer's pooled hidden states: exact search, and greedy search over a stored
kNN graph (``checkpoints/<name>/neighbours/layer_<k>``, built by ``pipelines/neighbours.py``).

Numpy/numba; the arrays come through a ``Checkpoint`` (``neighbours``/``centroid`` below back its methods, and keep
the unit vectors for the next query). Exact search is one matrix-vector product (cheap up to ~10^5 rows); beyond
that a query walks the graph from the best rows of a fixed sample (best-first over a pool of ``ef`` candidates, as
HNSW searches one layer), touching a few thousand rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numba
import numpy as np

from ..errors import StoreError
from .rows import read

#: Rows up to which a vector query is answered exactly even when an index is stored.
EXACT_QUERY_ROWS = 100_000
#: A graph search starts from the best ``SEEDS`` rows of every ``ENTRY_STRIDE``-th row (at least ``ENTRY_SAMPLE``
#: rows): a kNN graph of clustered data has few edges between clusters, so the walk must start in the right one.
ENTRY_SAMPLE = 4096
ENTRY_STRIDE = 16
SEEDS = 32
#: Candidate pool of the graph search: at least this, and at least 4k.
MIN_EF = 160
#: Rows per block of an exact search (bounds its temporaries).
BLOCK_ROWS = 1 << 16


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 rows of unit length (all-zero rows stay zero, so they match nothing)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of ``sims`` (rows: last axis), best first; ties broken by index."""
    k = min(k, sims.shape[-1])
    if k <= 0:
        return np.zeros(sims.shape[:-1] + (0,), dtype=np.int64)
    part = np.argpartition(-sims, k - 1, axis=-1)[..., :k]
    order = np.lexsort((part, -np.take_along_axis(sims, part, axis=-1)), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def exact(vectors: np.ndarray, query: np.ndarray, k: int, exclude: "int | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of unit ``vectors`` most cosine-similar to unit ``query`` (row ``exclude`` left out)."""
    ids, sims = [], []
    for start in range(0, len(vectors), BLOCK_ROWS):
        block = vectors[start:start + BLOCK_ROWS] @ query
        if exclude is not None and start <= exclude < start + len(block):
            block[exclude - start] = -np.inf
        best = top_k(block, k)
        ids.append(best + start)
        sims.append(block[best])
    ids, sims = np.concatenate(ids), np.concatenate(sims)
    best = top_k(sims, k)
    keep = np.isfinite(sims[best])
    return ids[best][keep].astype(np.int64), sims[best][keep].astype(np.float32)


def exact_graph(vectors: np.ndarray, k: int, block_rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The exact kNN graph of unit ``vectors`` (self excluded): ids ``[n, k]`` int32 and sims ``[n, k]`` float32."""
    n = len(vectors)
    k = min(k, n - 1)
    ids = np.empty((n, k), dtype=np.int32)
    sims = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block_rows):
        block = vectors[start:start + block_rows] @ vectors.T
        _rows_top_k(block, start, ids[start:start + len(block)], sims[start:start + len(block)])
    return ids, sims


@numba.njit(cache=True, nogil=True, parallel=True)
def _rows_top_k(block, start, ids, sims):
    """Per row of ``block`` (rows ``start``.. of the graph) its ``k`` best columns other than itself, best first."""
    k = ids.shape[1]
    for r in numba.prange(block.shape[0]):
        best_s = np.full(k, -np.inf, dtype=np.float32)
        best_i = np.full(k, -1, dtype=np.int32)
        row = block[r]
        for c in range(row.shape[0]):
            s = row[c]
            if s <= best_s[k - 1] or c == start + r:
                continue
            i = k - 1
            while i > 0 and best_s[i - 1] < s:
                best_s[i] = best_s[i - 1]
                best_i[i] = best_i[i - 1]
                i -= 1
            best_s[i] = s
            best_i[i] = c
        ids[r] = best_i
        sims[r] = best_s


def entry_stride(n: int) -> int:
    """Every how many rows a graph search tries as an entry point (a strided view: no copy of the rows)."""
    return max(1, min(ENTRY_STRIDE, n // ENTRY_SAMPLE))


@numba.njit(cache=True, nogil=True)
def _search(vectors, graph, query, seeds, ef):
    """Best-first search: expand the best unexpanded row of a sorted pool of ``ef`` until none is left."""
    n, degree = graph.shape
    d = vectors.shape[1]
    visited = np.zeros(n, dtype=np.bool_)
    pool_ids = np.full(ef, -1, dtype=np.int64)
    pool_sims = np.full(ef, -np.inf, dtype=np.float32)
    expanded = np.zeros(ef, dtype=np.bool_)
    todo = seeds.copy()
    count = len(todo)
    first = True
    while True:
        for t in range(count):
            row = todo[t]
            if row < 0 or visited[row]:
                continue
            visited[row] = True
            s = np.float32(0.0)
            for j in range(d):
                s += vectors[row, j] * query[j]
            if s <= pool_sims[ef - 1]:
                continue
            i = ef - 1  # insert, keeping the pool sorted best first
            while i > 0 and pool_sims[i - 1] < s:
                pool_sims[i] = pool_sims[i - 1]
                pool_ids[i] = pool_ids[i - 1]
                expanded[i] = expanded[i - 1]
                i -= 1
            pool_sims[i] = s
            pool_ids[i] = row
            expanded[i] = False
        if first:
            todo = np.empty(degree, dtype=np.int64)
            first = False
        best = -1
        for i in range(ef):
            if pool_ids[i] >= 0 and not expanded[i]:
                best = i
                break
        if best < 0:
            break
        expanded[best] = True
        node = pool_ids[best]
        for j in range(degree):
            todo[j] = graph[node, j]
        count = degree
    return pool_ids, pool_sims


def graph_search(vectors: np.ndarray, graph: np.ndarray, query: np.ndarray, k: int,
                 exclude: "int | None" = None, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximately the ``k`` rows of unit ``vectors`` most similar to unit ``query``, walking the kNN ``graph``."""
    ef = max(MIN_EF, 4 * k, ef or 0)
    stride = entry_stride(len(vectors))
    seeds = top_k(vectors[::stride] @ query, SEEDS) * stride
    ids, sims = _search(vectors, graph, np.ascontiguousarray(query, dtype=np.float32), seeds, ef)
    keep = (ids >= 0) & (ids != (-1 if exclude is None else exclude))
    return ids[keep][:k], sims[keep][:k]


# ---------------------------------------------------------------------------------------------- a checkpoint's
#: Arrays kept for the next query (key -> array, most recent last): unit vectors (4 bytes x n x D) and graphs.
_KEPT: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_KEPT_ENTRIES = 4
_KEPT_LOCK = threading.Lock()


def _kept(key: tuple, make) -> np.ndarray:
    """``make()``, read-only, kept under ``key`` for the next query (a session clicks one example after another)."""
    with _KEPT_LOCK:
        if key in _KEPT:
            _KEPT.move_to_end(key)
            return _KEPT[key]
    value = make()
    value.flags.writeable = False
    with _KEPT_LOCK:
        _KEPT[key] = value
        while len(_KEPT) > _KEPT_ENTRIES:
            _KEPT.popitem(last=False)
    return value


def _resolve(checkpoint, layer, pooling) -> tuple[int, str, object]:
    """(layer, pooling, stored graph group or None): the last layer by default; the stored graph's pooling, else
    the projections' of that layer, else ``cls``; a graph of another pooling is not used."""
    layer = checkpoint.run.num_layers if layer is None else int(layer)
    group = checkpoint.neighbours_group(layer)
    if pooling is None:
        projected = [checkpoint.projection_attrs(m, l).get("pooling") for m, l in checkpoint.projections()
                     if l == layer]
        pooling = group.attrs.get("pooling") if group is not None else next((p for p in projected if p), "cls")
    if group is not None and group.attrs.get("pooling") != pooling:
        group = None
    return layer, pooling, group


def _vectors(checkpoint, layer: int, pooling: str) -> np.ndarray:
    run = checkpoint.run
    key = (run.loc.url, str(run.attrs.get("created")), checkpoint.name, "unit", layer, pooling)
    return _kept(key, lambda: unit_rows(checkpoint.hidden(layer, pooling)))


def neighbours(checkpoint, query, k: int = 20, layer: int | None = None,
               pooling: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``Checkpoint.neighbours``: a row's from its stored graph row when that holds ``k``, else exact up to
    ``EXACT_QUERY_ROWS`` rows (or without a graph), else a walk over the graph."""
    if int(k) < 1:
        raise StoreError(f"neighbours: k = {k}, expected at least 1")
    layer, pooling, group = _resolve(checkpoint, layer, pooling)
    n = checkpoint.run.n_examples
    if isinstance(query, (int, np.integer)):
        row = int(query)
        if not 0 <= row < n:
            raise StoreError(f"neighbours: row {row}, expected 0..{n - 1}")
        if group is not None and k <= group["ids"].shape[1]:
            return read(group["ids"], row)[:k].astype(np.int64), read(group["sims"], row)[:k].astype(np.float32)
        vectors = _vectors(checkpoint, layer, pooling)
        return exact(vectors, vectors[row], k, exclude=row)
    vectors = _vectors(checkpoint, layer, pooling)
    query = np.asarray(query, dtype=np.float32)
    if query.shape != vectors.shape[1:]:
        raise StoreError(f"neighbours: a query vector of shape {query.shape}, expected ({vectors.shape[1]},) "
                         f"(the hidden size of layer {layer})")
    query = unit_rows(query)
    if group is None or n <= EXACT_QUERY_ROWS:
        return exact(vectors, query, k)
    run = checkpoint.run
    key = (run.loc.url, str(run.attrs.get("created")), checkpoint.name, "graph", layer)
    return graph_search(vectors, _kept(key, lambda: read(group["ids"])), query, k)


def centroid(checkpoint, rows, layer: int | None = None, pooling: str | None = None) -> np.ndarray:
    """``Checkpoint.centroid``: the unit mean of ``rows``' unit vectors."""
    layer, pooling, _ = _resolve(checkpoint, layer, pooling)
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        raise StoreError("neighbours: no rows to take the centroid of; select some examples first")
    vectors = _vectors(checkpoint, layer, pooling)
    total = np.zeros(vectors.shape[1], dtype=np.float64)
    for start in range(0, len(rows), BLOCK_ROWS):  # a 1M-row selection never copies its vectors at once
        total += vectors[rows[start:start + BLOCK_ROWS]].sum(axis=0, dtype=np.float64)
    return unit_rows(total)
