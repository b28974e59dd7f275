"""Building the cosine kNN graph of a layer's pooled hidden states: what ``pipelines/neighbours.py`` stores.

The graph is plain arrays (``ids [n, K]`` int32, ``sims [n, K]`` float16, best first, the row itself left out):
a row's neighbours are one read, and ``store/knn.py`` walks the same graph for any other vector (a selection's
centroid). Small runs get the exact graph (one blocked matrix product); larger ones NN-descent (``pynndescent``,
installed with umap-learn; its own index object is a pickle, so only its graph is kept).
"""

from __future__ import annotations

import numpy as np

from ..store.knn import exact_graph, unit_rows

#: Neighbours stored per row: a row query up to this many is one read of the stored graph.
K = 32
#: Rows up to which the graph is computed exactly (cost ~ n^2 d; 50k x 384 is ~10^12 flops, tens of seconds).
EXACT_BUILD_ROWS = 50_000


def build_graph(x: np.ndarray, k: int = K, *, exact_rows: int = EXACT_BUILD_ROWS, seed: int = 0,
                n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray, dict]:
    """The cosine kNN graph of the rows of ``x``: ``(ids [n, k] int32, sims [n, k] float16, attrs)``."""
    vectors = unit_rows(x)
    n = len(vectors)
    k = max(0, min(k, n - 1))
    if n <= exact_rows or k == 0:
        ids, sims = exact_graph(vectors, k)
        return ids, sims.astype(np.float16), {"method": "exact", "k": k}
    from pynndescent import NNDescent

    index = NNDescent(vectors, metric="dot", n_neighbors=k + 1, random_state=seed, low_memory=True,
                      compressed=True, n_jobs=n_jobs, verbose=False)
    graph, distance = index.neighbor_graph
    ids, sims = drop_self(graph, 1.0 - distance, k)
    return ids, sims.astype(np.float16), {"method": "nndescent", "k": k}


def drop_self(graph: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``k`` entries other than the row itself (NN-descent lists it, usually first)."""
    n = len(graph)
    rows = np.arange(n)[:, None]
    other = graph != rows
    other[other.sum(axis=1) > k, -1] = False  # self absent: drop the last entry instead
    keep = np.argsort(~other, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(graph, keep, axis=1).astype(np.int32),
            np.take_along_axis(sims, keep, axis=1).astype(np.float32))
