"""Run-store I/O: chunk-aligned writes vs misaligned, and reading one layer vs all layers (laziness).

    python benchmarks/bench_store.py [--n 200000] [--dim 384] [--layers 7]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from t3vis.store import Run, RunWriter, schema


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--layers", type=int, default=7)
    args = ap.parse_args()
    n, d, L = args.n, args.dim, args.layers
    tmp = Path(tempfile.mkdtemp(prefix="t3vis-bench-store-"))
    try:
        frame = pd.DataFrame({"text": ["x"] * n, "label": np.zeros(n, int), "split": ["train"] * n})
        w = RunWriter.create(tmp / "run", examples=frame, label_names=["a", "b"], dataset={},
                             model=dict(name_or_path="bench", model_type="bert", num_layers=L - 1, num_heads=1,
                                        hidden_size=d))
        w.add_checkpoint("c", step=0, epoch=0)
        rng = np.random.default_rng(0)
        block = rng.normal(size=(L, schema.CHUNK_ROWS, d)).astype(np.float16)
        mb = L * n * d * 2 / 1e6

        def write(unit, rows_per_write):
            a = w.staged_array(unit, (L, n, d), "float16", (1, schema.CHUNK_ROWS, d))
            for start in range(0, n, rows_per_write):
                stop = min(n, start + rows_per_write)
                a[:, start:stop] = block[:, : stop - start] if rows_per_write <= schema.CHUNK_ROWS else \
                    np.concatenate([block] * (rows_per_write // schema.CHUNK_ROWS), axis=1)[:, : stop - start]
            w.commit(unit)

        aligned = timed(lambda: write("checkpoints/c/hidden_cls", schema.CHUNK_ROWS))
        misaligned = timed(lambda: write("checkpoints/c/hidden_mean", 256))
        run = Run(tmp / "run")
        ck = run.checkpoint("c")
        one = timed(lambda: ck.hidden(L // 2))
        everything = timed(lambda: ck.read("hidden_cls"))
        print(f"hidden states [{L}, {n:,}, {d}] float16 = {mb:,.0f} MB")
        print(f"write, whole 4096-row chunks : {aligned:6.2f} s  ({mb / aligned:,.0f} MB/s)")
        print(f"write, 256-row slices        : {misaligned:6.2f} s  ({misaligned / aligned:.1f}x slower)")
        print(f"read one layer               : {one:6.3f} s")
        print(f"read all {L} layers            : {everything:6.3f} s  ({everything / one:.1f}x one layer)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
