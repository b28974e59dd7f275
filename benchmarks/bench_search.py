"""Text search over synthetic runs: ``Run.search`` (Arrow kernels) against a brute-force Python loop, exactness on a
sample.

    python benchmarks/bench_search.py [--n 1000000 10000000] [--dir DIR] [--repeat 5] [--sample 20000]

Runs are written with ``t3vis.store.synth`` (one checkpoint; 10M takes minutes) under ``--dir`` and reused when
already there. For each query: the first search (reads the text and converts it to Arrow, "cold"), then the median
of ``--repeat`` searches (the text kept in memory, as the app keeps it). The Python loop runs the same query (its
``re`` twin) over a random sample of rows; its time is scaled to all rows for the ratio, and its matches on the
sample must equal the search's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from t3vis.store import Run
from t3vis.store.search import parse
from t3vis.store.synth import synth_run

QUERIES = [("word", "market", {}), ("two words", "market profit", {}), ("phrase", '"market profit"', {}),
           ("regex", r"mar[a-z]+t\s+(bank|profit)", {"regex": True}), ("case-sensitive word", "Market", {"case": True})]


def python_loop(texts: list[str], query) -> np.ndarray:
    """The brute-force baseline: every text tried against every term with Python's ``re``."""
    import re

    patterns = [re.compile(t.python, 0 if query.case else re.IGNORECASE) for t in query.terms]
    return np.array([i for i, text in enumerate(texts) if all(p.search(text) for p in patterns)], dtype=np.int64)


def bench(path: Path, n: int, repeat: int, sample: int) -> None:
    if not (path / "store.zarr").exists():
        t = time.perf_counter()
        synth_run(path, n, checkpoints=1, num_layers=1, num_heads=1, hidden_size=4, attention_size=4)
        print(f"wrote {n:,} examples in {time.perf_counter() - t:.0f} s")
    run = Run(str(path))
    rows = np.sort(np.random.default_rng(0).choice(n, min(sample, n), replace=False))
    texts = [str(t) for t in run.text(rows)]
    print(f"\n{n:,} texts, load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print(f"{'query':<22}{'matches':>12}{'cold s':>9}{'warm ms':>10}{'loop s (all)':>14}{'ratio':>8}  exact")
    for name, text, options in QUERIES:
        t = time.perf_counter()
        found = run.search(text, **options)
        cold = time.perf_counter() - t
        warm = []
        for _ in range(repeat):
            t = time.perf_counter()
            run.search(text, **options)
            warm.append(time.perf_counter() - t)
        warm = float(np.median(warm))
        t = time.perf_counter()
        expect = rows[python_loop(texts, parse(text, **options))]
        loop = (time.perf_counter() - t) * n / len(rows)
        exact = np.array_equal(found[np.isin(found, rows)], expect)
        print(f"{name:<22}{len(found):>12,}{cold:>9.2f}{warm * 1e3:>10.0f}{loop:>14.1f}{loop / warm:>7.0f}x  "
              f"{'yes' if exact else 'NO'}")
        assert exact, f"{name}: the search differs from the Python loop on the sample"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "t3vis-bench-search"),
                    help="where the synthetic runs are written and kept for the next time")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sample", type=int, default=20_000, help="rows the Python loop runs over")
    args = ap.parse_args()
    root = Path(args.dir)
    for n in args.n:
        bench(root / f"synth-{n}", n, args.repeat, args.sample)


if __name__ == "__main__":
    main()
