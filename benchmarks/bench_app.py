"""Explorer speed and memory on synthetic runs (issue 5 targets), measured server-side without a browser.

Each session is a real ``Explorer`` rendered into a Bokeh ``Document`` (what ``panel serve`` does per page), so
a brush runs exactly the server path: the BoundsXY/Lasso stream event, the state's masks, the re-rasterized
highlight in every plot, the counts, and the table page (with its text).

    python benchmarks/bench_app.py --n 1000000 10000000          # writes runs under /tmp/t3vis_bench if missing
    python benchmarks/bench_app.py --run runs/my-run             # an existing run
    python benchmarks/bench_app.py --n 1000000 --first-page      # + time to first page through `panel serve`

Targets: brush -> highlight + counts + table page <= 60 ms at 1M, <= 250 ms at 10M; pan/zoom re-aggregation
(count_cat colouring) <= 150 ms at 10M; first page of a 1M run <= 5 s after the server is up; server memory with
10M loaded <= 3 GB, each extra session <= 50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCH_DIR = Path(os.environ.get("T3VIS_BENCH_DIR", "/tmp/t3vis_bench"))


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def ensure_run(n: int) -> Path:
    from t3vis.store.synth import synth_run

    path = BENCH_DIR / f"synth-{n // 1_000_000}m" if n >= 1_000_000 else BENCH_DIR / f"synth-{n}"
    if not (path / "store.zarr" / "zarr.json").exists():
        t = time.perf_counter()
        synth_run(path, n)
        print(f"  wrote {path} in {time.perf_counter() - t:.0f} s")
    return path


def session(run_path: Path):
    """One explorer session rendered into its own Document (as a served page is)."""
    from bokeh.document import Document

    from t3vis.ui.explorer import Explorer

    explorer = Explorer(str(run_path))
    doc = Document()
    root = explorer.__panel__().get_root(doc)
    doc.add_root(root)
    return explorer, doc


def timed(fn, repeat: int = 5, doc=None) -> list[tuple[float, float]]:
    """(wall, CPU) milliseconds per call; ``doc`` is made the current document, as the server does for events.

    CPU time is this process's (all threads): on a shared machine it shows the work, wall time the wait.
    """
    from panel.io.state import set_curdoc

    out = []
    for _ in range(repeat):
        with set_curdoc(doc):
            t, c = time.perf_counter(), time.process_time()
            fn()
            out.append(((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000))
    return out


def range_callback(explorer, which: str = "a"):
    """The RangeXY callback of a rendered plot: calling it is what a browser pan/zoom message does."""
    from holoviews.plotting.bokeh.callbacks import RangeXYCallback

    pane = explorer.projection._projection if which != "datamap" else explorer.projection._datamap
    (plot, _), = pane._plots.values()
    for sub in plot.traverse(lambda p: p):
        for cb in getattr(sub, "callbacks", []):
            if isinstance(cb, RangeXYCallback):
                return cb
    raise RuntimeError("no RangeXY callback found")


def star(cx: float, cy: float, r: float, k: int = 100) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    rr = r * (0.75 + 0.25 * np.sin(5 * t))
    return np.c_[cx + rr * np.cos(t), cy + rr * np.sin(t)]


def bench_run(run_path: Path, repeat: int) -> dict:
    from t3vis.ui.data import clear_cache
    from t3vis.ui.warmup import warm_up

    clear_cache()
    out: dict = {"run": str(run_path)}
    t = time.perf_counter()
    warm_up()
    out["warm_up_s"] = time.perf_counter() - t
    base = rss_mb()
    t = time.perf_counter()
    explorer, doc = session(run_path)
    out["first_session_s"] = time.perf_counter() - t
    state = explorer.state
    out["n"] = state.n_total
    out["rss_after_first_session_mb"] = rss_mb()
    out["first_session_mb"] = out["rss_after_first_session_mb"] - base

    plot = explorer.projection.plots["a"]
    x, y = state.data.xy(plot.spec)
    qx, qy = np.nanpercentile(x, [35, 55]), np.nanpercentile(y, [35, 55])
    boxes = [(qx[0], qy[0], qx[1], qy[1]), (qx[0] * 1.01, qy[0], qx[1], qy[1] * 0.99)]
    i = iter(range(10**6))
    out["first_brush_ms"] = timed(lambda: plot.box.event(bounds=boxes[next(i) % 2]), 1, doc)
    out["box_ms"] = timed(lambda: plot.box.event(bounds=boxes[next(i) % 2]), repeat, doc)
    out["box_selected"] = state.n_selected
    polys = [star(np.mean(qx), np.mean(qy), (qx[1] - qx[0])), star(np.mean(qx), np.mean(qy), (qx[1] - qx[0]) * 0.9)]
    out["lasso_ms"] = timed(lambda: plot.lasso.event(geometry=polys[next(i) % 2]), repeat, doc)
    out["lasso_selected"] = state.n_selected

    # pan/zoom with count_cat colouring (label) and no selection: re-aggregates every layer of one plot
    state.clear_selection()
    cb = range_callback(explorer)
    xr, yr = state.data.xy_extent(plot.spec)
    spans = [(xr[0] + f * (xr[1] - xr[0]), xr[1] - f * (xr[1] - xr[0]), yr[0] + f * (yr[1] - yr[0]),
              yr[1] - f * (yr[1] - yr[0])) for f in (0.05, 0.1, 0.15, 0.2, 0.25, 0.02)]
    j = iter(range(10**6))

    def zoom():
        x0, x1, y0, y1 = spans[next(j) % len(spans)]
        asyncio.run(cb.on_msg({"x0": x0, "x1": x1, "y0": y0, "y1": y1}))

    out["zoom_ms"] = timed(zoom, repeat, doc)
    out["color_by"] = state.color_by

    # pan/zoom again with a selection: the dimmed layer (every example) and the highlight are both re-aggregated
    plot.box.event(bounds=boxes[0])
    out["zoom_selected_ms"] = timed(zoom, repeat, doc)

    # table: sort by loss (all selected rows, partitioned), next page
    table = explorer.table
    out["sort_ms"] = timed(lambda: table.param.update(sort_by="loss", ascending=not table.ascending), repeat, doc)
    out["next_page_ms"] = timed(lambda: table._step(+1), repeat, doc)

    # an extra session: its memory is masks + its own page, not columns
    before = rss_mb()
    extra = [session(run_path) for _ in range(3)]
    for e, _ in extra:
        e.projection.plots["a"].box.event(bounds=boxes[1])
    out["extra_session_mb"] = (rss_mb() - before) / len(extra)
    out["rss_final_mb"] = rss_mb()
    return out


def first_page_seconds(run_path: Path, timeout: float = 120.0) -> tuple[float, float]:
    """(start -> server ready, ready -> first page drawn) through a real `panel serve apps/` and chromium.

    Ready = the start-up hook (apps/app_hooks.py: imports, numba warm-up, default run preloaded) has printed
    its line; drawn = the projection canvas and the table's first page are in the page.
    """
    from playwright.sync_api import sync_playwright

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(root / "apps"), "--address", "127.0.0.1",
                             "--port", str(port), "--liveness", "--args", "--runs-dir", str(run_path.parent)],
                            env=env, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "t3vis explorer ready" in line:
                break
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError("panel serve did not come up")
        else:
            raise RuntimeError("panel serve exited before it was ready")
        up = time.perf_counter()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t = time.perf_counter()
            page.goto(f"http://localhost:{port}/apps?run={run_path.name}")
            page.wait_for_selector(".bk-events", timeout=timeout * 1000)
            page.get_by_text("rows 1–20 of").wait_for(timeout=timeout * 1000)
            shown = time.perf_counter() - t
            browser.close()
        return up - t0, shown
    finally:
        proc.terminate()
        proc.wait(10)


def med(samples) -> str:
    """Median wall (CPU) milliseconds."""
    wall = statistics.median(s[0] for s in samples)
    cpu = statistics.median(s[1] for s in samples)
    return f"{wall:.0f} ({cpu:.0f})"


def report(res: dict) -> str:
    return (f"| {res['n']:,} | {res['first_session_s']:.2f} | {med(res['first_brush_ms'])} | "
            f"{med(res['box_ms'])} [{res['box_selected']:,}] | {med(res['lasso_ms'])} [{res['lasso_selected']:,}] | "
            f"{med(res['zoom_ms'])} | {med(res['zoom_selected_ms'])} | {med(res['sort_ms'])} | "
            f"{med(res['next_page_ms'])} | "
            f"{res['rss_after_first_session_mb']:.0f} | {res['extra_session_mb']:.1f} |")


HEADER = ("Times are median wall ms (CPU ms of the server process); [n] = examples selected.\n\n"
          "| examples | first session (s) | first brush | box brush | lasso brush (100 vertices) | "
          "pan/zoom (count_cat) | pan/zoom with a selection | sort by loss | next page | server RSS (MB) | "
          "per extra session (MB) |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="*", default=[1_000_000], help="synthetic run sizes")
    parser.add_argument("--run", nargs="*", default=[], help="existing runs to measure")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--first-page", action="store_true", help="also time the first page via panel serve")
    args = parser.parse_args(argv)
    runs = [ensure_run(n) for n in args.n] + [Path(r) for r in args.run]
    print(HEADER)
    for path in runs:
        res = bench_run(path, args.repeat)
        print(report(res), flush=True)
        walls = lambda key: [round(w) for w, _ in res[key]]  # noqa: E731
        print(f"<!-- {path.name}: box {walls('box_ms')}, lasso {walls('lasso_ms')}, zoom {walls('zoom_ms')} ms; "
              f"warm-up {res['warm_up_s']:.1f} s; load average {os.getloadavg()[0]:.1f} -->", flush=True)
    if args.first_page:
        for path in runs:
            up, shown = first_page_seconds(path)
            print(f"first page of {path.name}: server up after {up:.1f} s, plot and table shown {shown:.1f} s "
                  "after that", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
