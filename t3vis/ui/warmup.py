"""Compile the numba kernels once per process, before the first user waits on them.

datashader compiles each aggregator on first use (0.3-0.6 s each) and the brush kernels compile too; doing it
at server start keeps that out of the first page and the first brush.
"""

from __future__ import annotations

import threading

import numpy as np

_done = threading.Event()
_started = threading.Lock()


def warm_up() -> None:
    """Run every aggregation and mask kernel the views use on a tiny frame (idempotent, thread-safe)."""
    if _done.is_set():
        return
    with _started:
        if _done.is_set():
            return
        import datashader as ds
        import pandas as pd

        from . import masks

        rng = np.random.default_rng(0)
        n = 1000
        x = rng.random(n).astype(np.float32)
        y = rng.random(n).astype(np.float32)
        frame = pd.DataFrame({"x": x, "y": y, "v": rng.random(n).astype(np.float32),
                              "c": pd.Categorical.from_codes(rng.integers(0, 3, n).astype(np.int8), list("abc"))})
        canvas = ds.Canvas(plot_width=50, plot_height=50, x_range=(0, 1), y_range=(0, 1))
        for agg in (ds.count(), ds.count_cat("c"), ds.mean("v")):
            canvas.points(frame, "x", "y", agg)
        big_x = np.repeat(x, masks.PARALLEL_MIN // n + 1)
        big_y = np.repeat(y, masks.PARALLEL_MIN // n + 1)
        for xs, ys in ((x, y), (big_x, big_y)):
            masks.box_mask(xs, ys, (0.2, 0.2, 0.6, 0.6))
            masks.lasso_mask(xs, ys, np.array([[0.1, 0.1], [0.9, 0.2], [0.5, 0.9]]))
        _done.set()


def warm_up_in_background() -> threading.Thread:
    thread = threading.Thread(target=warm_up, name="t3vis-warm-up", daemon=True)
    thread.start()
    return thread
