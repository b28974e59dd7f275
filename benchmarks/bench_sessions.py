"""Does a closed session give its memory back? Server RSS before and after N sessions are opened and closed.

A real ``t3vis serve`` (``panel serve apps/``) on loopback over a synthetic run; each session is a tab of Debian's
chromium (Playwright) that loads the whole explorer page and is closed right after. (``bokeh.client.pull_session``
cannot decode the page: Panel's JS components define their Bokeh models at run time.) Sessions are expired after 1 s unused (``--unused-session-lifetime``), so the wait is short. The
baseline is taken after one warm-up session (the run's columns then sit in the shared per-process cache).

    python benchmarks/bench_sessions.py                 # 20 sessions over a 20k-row synthetic run
    python benchmarks/bench_sessions.py --sessions 40 --n 100000
    python benchmarks/bench_sessions.py --concurrent 20  # also: 20 pages opened at once, seconds to a shown table
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
READY = "t3vis explorer ready"


def start_server(runs_dir: Path, port: int, timeout: float = 180) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "t3vis.cli", "serve", "--port", str(port), "--runs-dir",
                             str(runs_dir), "--", "--check-unused-sessions", "500", "--unused-session-lifetime",
                             "1000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if READY in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe from filling up
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("the server did not come up")


CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def open_and_close(browser, url: str, timeout: float = 120) -> None:
    """One browser tab: load the page until the table shows, then close the tab (its websocket closes)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url)
        page.get_by_text("rows 1–20 of").wait_for(timeout=timeout * 1000)
    finally:
        page.close()


async def load_at_once(url: str, pages: int, timeout: float = 600) -> list[float]:
    """Seconds from each page's request to its table showing, for ``pages`` tabs opened at the same moment."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)

        async def one() -> float:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            started = time.perf_counter()
            await page.goto(url, timeout=timeout * 1000)
            await page.get_by_text("rows 1–20 of").wait_for(timeout=timeout * 1000)
            return time.perf_counter() - started

        seconds = await asyncio.gather(*(one() for _ in range(pages)))
        await browser.close()
    return sorted(seconds)


def settle(proc: psutil.Process, seconds: float = 4.0) -> int:
    """RSS once expired sessions are destroyed (a few expiry checks) and it stops moving."""
    time.sleep(seconds)
    return proc.memory_info().rss


def measure(sessions: int, n: int, port: int | None = None, concurrent: int = 0) -> dict:
    from playwright.sync_api import sync_playwright

    from t3vis.serve import free_port

    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        subprocess.run([sys.executable, "-m", "t3vis.cli", "synth", str(runs / "synth"), "--n", str(n)],
                       cwd=ROOT, check=True, capture_output=True)
        port = port or free_port("127.0.0.1")
        server = start_server(runs, port)
        try:
            proc = psutil.Process(server.pid)
            url = f"http://127.0.0.1:{port}/apps"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                open_and_close(browser, url)  # warm-up: shared caches, first renders
                before = settle(proc)
                peak, started = before, time.perf_counter()
                for _ in range(sessions):
                    open_and_close(browser, url)
                    peak = max(peak, proc.memory_info().rss)
                seconds = time.perf_counter() - started
                browser.close()
            after = settle(proc)
            loads = asyncio.run(load_at_once(url, concurrent)) if concurrent else []
        finally:
            server.terminate()
            server.wait(30)
    return {"sessions": sessions, "n": n, "before_mb": before / 2**20, "peak_mb": peak / 2**20,
            "after_mb": after / 2**20, "growth": after / before - 1, "seconds_per_session": seconds / sessions,
            "loads": loads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--n", type=int, default=20_000, help="rows of the synthetic run")
    parser.add_argument("--concurrent", type=int, default=0, help="then open this many pages at once and time them")
    args = parser.parse_args()
    r = measure(args.sessions, args.n, concurrent=args.concurrent)
    print(f"{r['sessions']} sessions over {r['n']:,} rows: RSS {r['before_mb']:.0f} MB before, peak "
          f"{r['peak_mb']:.0f} MB, {r['after_mb']:.0f} MB after closing ({r['growth']:+.1%}); "
          f"{r['seconds_per_session']:.2f} s per session")
    if r["loads"]:
        loads = r["loads"]
        p95 = loads[min(len(loads) - 1, int(round(0.95 * (len(loads) - 1))))]
        print(f"{len(loads)} pages opened at once: table shown after p50 {statistics.median(loads):.1f} s, "
              f"p95 {p95:.1f} s, max {loads[-1]:.1f} s [target p95 <= 5 s]")


if __name__ == "__main__":
    main()
