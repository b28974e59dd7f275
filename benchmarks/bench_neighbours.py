"""Nearest neighbours at 1M x 384 (clustered, float16 like the store): kNN-graph build time and size per million
rows, per-query ms of a k=20 walk over the graph (median), recall@20 against exact search, and exact search in
the same run as the baseline.

    python benchmarks/bench_neighbours.py [--rows 1000000] [--dim 384] [--queries 200] [--jobs 2]

Queries are vectors that are no row (a perturbed row, the centroid of a row's neighbours: what "similar to the
selection" asks); a row's own neighbours are one read of the stored graph.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from t3vis.analysis.neighbours import K, build_graph
from t3vis.store import knn


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows around n/500 centres (float16), built in blocks so 1M x 384 never needs float32 all at once."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(10, n // 500), d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float16)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        out[start:start + m] = centres[rng.integers(0, len(centres), m)] + 0.7 * rng.standard_normal((m, d))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args()
    print(f"load {os.getloadavg()[0]:.2f}; {args.rows:,} x {args.dim} float16, K = {K}, {args.jobs} jobs")
    x = clustered(args.rows, args.dim)
    started = time.perf_counter()
    ids, sims, attrs = build_graph(x, n_jobs=args.jobs)
    build = time.perf_counter() - started
    size = ids.nbytes + sims.nbytes
    per_m = 1e6 / args.rows
    print(f"build ({attrs['method']}): {build:.1f} s ({build * per_m:.1f} s per 1M rows), graph {size / 2**20:.0f} "
          f"MiB ({size * per_m / 2**20:.0f} MiB per 1M rows, before compression)")
    vectors = knn.unit_rows(x)
    rng = np.random.default_rng(1)
    queries = []
    for i in range(args.queries):
        row = rng.integers(args.rows)
        if i % 2:
            queries.append(knn.unit_rows(vectors[ids[row, :8]].mean(axis=0)))
        else:
            noise = rng.standard_normal(args.dim).astype(np.float32) / np.sqrt(args.dim)
            queries.append(knn.unit_rows(vectors[row] + 0.5 * noise))
    knn.graph_search(vectors, ids, queries[0], 20)  # compile
    walk, exact, recall = [], [], []
    for i, q in enumerate(queries):
        t = time.perf_counter()
        found, _ = knn.graph_search(vectors, ids, q, 20)
        walk.append(time.perf_counter() - t)
        t = time.perf_counter()
        truth, _ = knn.exact(vectors, q, 20)
        exact.append(time.perf_counter() - t)
        recall.append(len(set(found) & set(truth)) / 20)
    w, e = np.median(walk) * 1e3, np.median(exact) * 1e3
    print(f"query k=20: graph walk median {w:.2f} ms (p95 {np.percentile(walk, 95) * 1e3:.2f}); exact median "
          f"{e:.1f} ms; {e / w:.0f}x faster")
    print(f"recall@20 vs exact: mean {np.mean(recall):.3f}, min {np.min(recall):.2f} over {len(queries)} queries")
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
