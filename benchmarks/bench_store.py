"""Run-store I/O: chunk-aligned writes vs misaligned, reading one layer vs all layers (laziness), and the cost
of the integrity checks (checksummed chunks, strict reads, ``validate`` quick and deep).

    python benchmarks/bench_store.py [--n 200000] [--dim 384] [--layers 7] [--repeat 5] [--skip-misaligned]

Reads are the median of ``--repeat`` runs from the page cache (the first read warms it).
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
from t3vis.store.writer import COMPRESSOR, create_array


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_time(fn, repeat: int) -> float:
    fn()  # warm the page cache and zarr's metadata
    return float(np.median([timed(fn) for _ in range(repeat)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-misaligned", action="store_true", help="skip the slow 256-row write (reads only)")
    args = ap.parse_args()
    n, d, L = args.n, args.dim, args.layers
    tmp = Path(tempfile.mkdtemp(prefix="t3vis-bench-store-"))
    try:
        rng = np.random.default_rng(0)
        words = np.array("market film minister match software profit album vote goal phone".split())
        text = [" ".join(words[rng.integers(0, len(words), 12)]) for _ in range(min(n, 10_000))]
        frame = pd.DataFrame({"text": (text * (n // len(text) + 1))[:n], "label": rng.integers(0, 2, n),
                              "split": ["train"] * n, "loss": rng.random(n).astype(np.float32)})
        w = RunWriter.create(tmp / "run", examples=frame, label_names=["a", "b"], dataset={},
                             model=dict(name_or_path="bench", model_type="bert", num_layers=L - 1, num_heads=1,
                                        hidden_size=d))
        w.add_checkpoint("c", step=0, epoch=0)
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
        misaligned = None if args.skip_misaligned else timed(lambda: write("checkpoints/c/hidden_mean", 256))
        run = Run(tmp / "run")
        ck = run.checkpoint("c")
        one = median_time(lambda: ck.hidden(L // 2), args.repeat)
        everything = median_time(lambda: ck.read("hidden_cls"), args.repeat)
        column = median_time(lambda: run.column("loss"), args.repeat)
        page = np.sort(rng.choice(n, 50, replace=False))
        texts = median_time(lambda: run.column("text", page), args.repeat)
        checksum_cost = crc_read_cost(tmp, ck.hidden(L // 2), args.repeat)
        checks = {}
        try:
            from t3vis.store import validate

            for deep in (False, True):
                checks[deep] = median_time(lambda: validate(tmp / "run", deep=deep), max(1, args.repeat // 2))
        except TypeError:  # a validate without quick/deep modes
            checks[None] = median_time(lambda: validate(tmp / "run"), max(1, args.repeat // 2))
        print(f"hidden states [{L}, {n:,}, {d}] float16 = {mb:,.0f} MB")
        print(f"write, whole 4096-row chunks : {aligned:6.2f} s  ({mb / aligned:,.0f} MB/s)")
        if misaligned is not None:
            print(f"write, 256-row slices        : {misaligned:6.2f} s  ({misaligned / aligned:.1f}x slower)")
        print(f"read one layer               : {one:6.3f} s")
        print(f"read all {L} layers            : {everything:6.3f} s  ({everything / one:.1f}x one layer)")
        print(f"read one layer, crc32c vs not: {checksum_cost[1] * 1e3:6.1f} ms vs {checksum_cost[0] * 1e3:.1f} ms "
              f"(+{checksum_cost[1] / checksum_cost[0] - 1:.0%}: the checksum's cost, measured alternately)")
        print(f"read one float32 column      : {column * 1e3:6.1f} ms")
        print(f"read 50 random text rows     : {texts * 1e3:6.1f} ms")
        for deep, seconds in checks.items():
            mode = {None: "", False: " --quick", True: " --deep"}[deep]
            print(f"{'validate' + mode:<29}: {seconds:6.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def crc_read_cost(tmp: Path, layer: np.ndarray, repeat: int) -> tuple[float, float]:
    """Median read time of one layer stored without and with the crc32c codec (same chunks, same blosc)."""
    import zarr

    rows = (schema.CHUNK_ROWS, layer.shape[1])
    plain = zarr.create_array(str(tmp / "plain"), shape=layer.shape, dtype=layer.dtype, chunks=rows,
                              compressors=COMPRESSOR, zarr_format=3)
    checked = create_array(str(tmp / "checked"), shape=layer.shape, dtype=layer.dtype, chunks=rows)
    plain[...], checked[...] = layer, layer
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeat):  # alternate, so load from other processes hits both alike
        for i, arr in enumerate((plain, checked)):
            times[i].append(median_time(lambda: arr[...], 1))
    return float(np.median(times[0])), float(np.median(times[1]))


if __name__ == "__main__":
    main()
