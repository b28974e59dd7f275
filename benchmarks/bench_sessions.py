"""What an explorer session costs the server and the browser, one page and many at once; and does a closed session
give its memory back?

A real ``t3vis serve`` (``panel serve apps/``) on loopback over a synthetic run. Each figure says whose time it is:

- **server, one page in process**: CPU seconds to build the ``Explorer``, render it into a Bokeh document and
  serialise that, in this process (where a profiler can look), and how many Bokeh models the page has.
- **server, one page** (``--sessions``): a raw websocket client does what a browser does to get the page, and
  nothing else: GET the page (the server builds the session: ``apps/main.py``, the ``Explorer``, its Bokeh models),
  then open the websocket and pull the document (the server serialises it). No browser, so this is the server's
  own time. (``bokeh.client.pull_session`` cannot be used: it decodes the document, and Panel's JS components
  define their Bokeh models at run time; the raw client only times the reply.)
- **server, N pages at once** (``--concurrent N``): N raw clients at the same moment, seconds until each has its
  document. This is the server's share when N users on N machines open the page together.
- **browser, one page**: a chromium tab (Playwright) loads the page until the table shows, with the server idle
  otherwise; the server's CPU seconds over that load (including what the page asks after it renders: plot sizes,
  ranges) and chromium's CPU seconds (every chromium process) are read with psutil. The second is the client's cost,
  which on a real deployment each user's own machine pays.
- **N chromium tabs at once on this box** (``--tabs N``): the end-to-end figure when server and N browsers share
  this machine's cores (so it counts N pages' rendering too).

Then the memory check: ``--sessions`` tabs opened and closed one after another, server RSS before and after
(sessions expire 1 s after they close). The baseline is taken after one warm-up session.

    python benchmarks/bench_sessions.py --n 2225 --concurrent 20          # the demo's size; 20 users at once
    python benchmarks/bench_sessions.py --n 2225 --concurrent 20 --tabs 20  # also 20 chromium tabs on this box
    python benchmarks/bench_sessions.py --sessions 40 --n 100000         # memory over 40 sessions
    python benchmarks/bench_sessions.py --serve-args="--num-procs 2"     # options passed on to panel serve
    PYTHONPATH=/tmp/old python benchmarks/bench_sessions.py ...          # serve another checkout (an A/B)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

READY = "t3vis explorer ready"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
#: What the page shows once its table is filled: the page is interactive.
TABLE_SHOWN = "rows 1–20 of"
#: Seconds a loaded page is left alone before the CPU it cost is read (the requests it sends after rendering).
SETTLE_S = 2.0


#: Options for the memory check: a closed session expires after 1 s. Not for timing pages: a session is discarded
#: just the same when its page has not connected 1 s after the server built it, and built again when it does.
SHORT_LIVED = ["--check-unused-sessions", "500", "--unused-session-lifetime", "1000"]


def start_server(runs_dir: Path, port: int, extra: list[str] = (), timeout: float = 180) -> subprocess.Popen:
    """``t3vis serve`` of ``runs_dir``, started outside the checkout, so it runs the t3vis this Python imports
    (``PYTHONPATH=/other/checkout`` serves that tree: an A/B of two trees)."""
    proc = subprocess.Popen([sys.executable, "-m", "t3vis.cli", "serve", "--port", str(port), "--runs-dir",
                             str(runs_dir), "--", *extra], cwd=runs_dir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline, ready, needed = time.monotonic() + timeout, 0, _processes(extra)
    for line in proc.stdout:
        ready += READY in line
        if ready >= needed:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe from filling up
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("the server did not come up")


def _processes(extra) -> int:
    """How many server processes report ready (``--num-procs N``; 0 means one per core)."""
    args = list(extra)
    if "--num-procs" in args:
        n = int(args[args.index("--num-procs") + 1])
        return n or psutil.cpu_count()
    return 1


def server_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the server and its children (``--num-procs`` forks workers)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def chromium_cpu() -> float:
    """CPU seconds of every chromium process on the box (the benchmark's browser is the only one it starts)."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if "chrom" in (p.info["name"] or ""):
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    return total


# ---------------------------------------------------------------------- a raw websocket client
TOKEN = re.compile(r'"token"\s*:\s*"([^"]+)"')


async def pull_document(url: str) -> dict:
    """Do what a browser does to get the page, nothing more: GET it (the server builds the session), then pull the
    document over the websocket (the server serialises it). Seconds for each step, and the document's size."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    from bokeh.protocol import Protocol
    from bokeh.protocol.receiver import Receiver

    started = time.perf_counter()
    page = await AsyncHTTPClient(force_instance=True).fetch(url, request_timeout=600)
    got_page = time.perf_counter()
    token = TOKEN.search(page.body.decode()).group(1)
    ws_url = url.replace("http://", "ws://", 1).split("?")[0] + "/ws"
    origin = url.split("/apps")[0]
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Origin": origin}, request_timeout=600),
                                   subprotocols=["bokeh", token])
    protocol = Protocol()
    receiver = Receiver(protocol)

    async def receive(msgtype: str):
        while True:
            fragment = await conn.read_message()
            if fragment is None:
                raise RuntimeError(f"the server closed the websocket before {msgtype}")
            message = await receiver.consume(fragment)
            if message is not None and message.msgtype == msgtype:
                return message

    await receive("ACK")
    request = protocol.create("PULL-DOC-REQ")
    for text in (request.header_json, request.metadata_json, request.content_json):
        await conn.write_message(text)
    reply = await receive("PULL-DOC-REPLY")
    done = time.perf_counter()
    size = len(json.dumps(reply.content)) + sum(len(b.to_bytes()) for b in reply.buffers)
    conn.close()
    return {"page_s": got_page - started, "document_s": done - got_page, "total_s": done - started, "bytes": size}


def raw_page_cost(url: str, server: psutil.Process) -> dict:
    """One raw client's page (``pull_document``) on an otherwise idle server, with the server's CPU seconds."""
    before = server_cpu(server)
    out = run_async(pull_document(url))
    out["server_cpu_s"] = server_cpu(server) - before
    return out


async def pull_at_once(url: str, pages: int) -> list[float]:
    """Seconds until each of ``pages`` raw clients started together has its document."""
    results = await asyncio.gather(*(pull_document(url) for _ in range(pages)))
    return sorted(r["total_s"] for r in results)


# ---------------------------------------------------------------------- chromium
def open_and_close(browser, url: str, timeout: float = 120) -> None:
    """One browser tab: load the page until the table shows, then close the tab (its websocket closes)."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        page.goto(url)
        page.get_by_text(TABLE_SHOWN).wait_for(timeout=timeout * 1000)
    finally:
        page.close()


def browser_page_cost(browser, url: str, server: psutil.Process, timeout: float = 120) -> dict:
    """One tab on an otherwise idle server: seconds to the table shown, and the CPU seconds it cost the server and
    chromium (read ``SETTLE_S`` later, so the requests a rendered page sends count too)."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        server_before, chromium_before = server_cpu(server), chromium_cpu()
        started = time.perf_counter()
        page.goto(url)
        page.get_by_text(TABLE_SHOWN).wait_for(timeout=timeout * 1000)
        shown = time.perf_counter() - started
        time.sleep(SETTLE_S)
        return {"shown_s": shown, "server_cpu_s": server_cpu(server) - server_before,
                "chromium_cpu_s": chromium_cpu() - chromium_before}
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
            await page.get_by_text(TABLE_SHOWN).wait_for(timeout=timeout * 1000)
            return time.perf_counter() - started

        seconds = await asyncio.gather(*(one() for _ in range(pages)))
        await browser.close()
    return sorted(seconds)


def in_process(runs_dir: Path, repeat: int) -> dict:
    """CPU seconds per session in this process, split as a served page's are: build the ``Explorer``, render it into
    a Bokeh document (``server_doc``, as ``panel serve`` does), serialise the document; medians of ``repeat``
    sessions after a warm-up one, and the document's model count."""
    from bokeh.document import Document

    from t3vis.ui.explorer import Explorer
    from t3vis.ui.warmup import warm_up

    warm_up()
    rows, clock = [], time.process_time
    for i in range(repeat + 1):
        doc, t0 = Document(), clock()
        explorer = Explorer(runs_dir=runs_dir)
        t1 = clock()
        explorer.__panel__().server_doc(doc)
        t2 = clock()
        doc.to_json()
        t3 = clock()
        if i:
            rows.append({"build_s": t1 - t0, "render_s": t2 - t1, "json_s": t3 - t2, "total_s": t3 - t0})
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]} | {"models": len(doc.models)}


def settle(proc: psutil.Process, seconds: float = 4.0) -> int:
    """RSS once expired sessions are destroyed (a few expiry checks) and it stops moving."""
    time.sleep(seconds)
    return proc.memory_info().rss


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def measure(sessions: int, n: int, concurrent: int = 0, tabs: int = 0, serve_args: list[str] = ()) -> dict:
    from playwright.sync_api import sync_playwright

    out: dict = {"sessions": sessions, "n": n}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        subprocess.run([sys.executable, "-m", "t3vis.cli", "synth", str(runs / "synth"), "--n", str(n)],
                       cwd=tmp, check=True, capture_output=True)
        out["in_process"] = in_process(runs, max(sessions, 3))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            with serving(runs, serve_args) as (url, proc):
                # raw clients first: a browser page closed before it reported itself rendered leaves its session
                # re-queuing a plot refresh until the session expires (see RESULTS.md), which would count here
                run_async(pull_document(url))  # warm-up: shared caches, first renders
                out["raw"] = [raw_page_cost(url, proc) for _ in range(sessions)]
                out["at_once"] = run_async(pull_at_once(url, concurrent)) if concurrent else []
                open_and_close(browser, url)
                out["browser"] = [browser_page_cost(browser, url, proc) for _ in range(sessions)]
            with serving(runs, [*serve_args, *SHORT_LIVED]) as (url, proc):
                open_and_close(browser, url)
                before = settle(proc)
                peak, started = before, time.perf_counter()
                for _ in range(sessions):
                    open_and_close(browser, url)
                    peak = max(peak, proc.memory_info().rss)
                seconds = time.perf_counter() - started
                after = settle(proc)
            browser.close()
        out.update(before_mb=before / 2**20, peak_mb=peak / 2**20, after_mb=after / 2**20,
                   growth=after / before - 1, seconds_per_session=seconds / sessions)
        if tabs:  # last, with a fresh server: this one leaves the box busy for minutes
            with serving(runs, serve_args) as (url, proc):
                run_async(load_at_once(url, 1))  # warm-up
                out["tabs"] = run_async(load_at_once(url, tabs))
    return out


def run_async(coroutine):
    """``asyncio.run`` on a thread of its own (Playwright's sync API holds an event loop in this one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@contextlib.contextmanager
def serving(runs: Path, serve_args: list[str]):
    """A ``t3vis serve`` of ``runs`` for the block: (page URL, the server's process)."""
    from t3vis.serve import free_port

    port = free_port("127.0.0.1")
    server = start_server(runs, port, serve_args)
    process = psutil.Process(server.pid)
    try:
        yield f"http://127.0.0.1:{port}/apps", process
    finally:
        workers = process.children(recursive=True)  # --num-procs forks (they end with it; this is a backstop)
        server.terminate()
        server.wait(30)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5, help="pages measured one at a time (and for memory)")
    parser.add_argument("--n", type=int, default=20_000, help="rows of the synthetic run")
    parser.add_argument("--concurrent", type=int, default=0, help="raw clients that pull the page at once")
    parser.add_argument("--tabs", type=int, default=0, help="chromium tabs that load the page at once, on this box")
    parser.add_argument("--serve-args", default="", help='options for panel serve, e.g. "--num-procs 2"')
    args = parser.parse_args()
    load = psutil.getloadavg()[0]
    r = measure(args.sessions, args.n, args.concurrent, args.tabs, shlex.split(args.serve_args))
    median = lambda rows, key: statistics.median(row[key] for row in rows)  # noqa: E731
    raw, browser = r["raw"], r["browser"]
    print(f"synthetic run of {r['n']:,} rows, load {load:.2f} at the start, {psutil.getloadavg()[0]:.2f} at the end "
          f"{args.serve_args}")
    own = r["in_process"]
    print(f"server, one page in process (CPU, median): {own['total_s']:.2f} s = build the Explorer "
          f"{own['build_s']:.2f} s + render its document {own['render_s']:.2f} s + serialise it {own['json_s']:.2f} s "
          f"({own['models']} Bokeh models)")
    print(f"server, one page (raw client, median of {len(raw)}): {median(raw, 'total_s'):.2f} s = build the session "
          f"{median(raw, 'page_s'):.2f} s + send the document {median(raw, 'document_s'):.2f} s "
          f"({median(raw, 'bytes') / 2**20:.1f} MB); server CPU {median(raw, 'server_cpu_s'):.2f} s [target <= 1.5 s]")
    print(f"browser, one page (chromium, median of {len(browser)}): table shown after "
          f"{median(browser, 'shown_s'):.2f} s; CPU: server {median(browser, 'server_cpu_s'):.2f} s, chromium "
          f"{median(browser, 'chromium_cpu_s'):.2f} s")
    if r["at_once"]:
        loads = r["at_once"]
        print(f"server, {len(loads)} pages at once (raw clients: N users on N machines, the server's share): "
              f"p50 {statistics.median(loads):.1f} s, p95 {percentile(loads, 0.95):.1f} s, max {loads[-1]:.1f} s")
    if r.get("tabs"):
        loads = r["tabs"]
        print(f"{len(loads)} chromium tabs at once on this box (server and browsers share its cores): table shown "
              f"after p50 {statistics.median(loads):.1f} s, p95 {percentile(loads, 0.95):.1f} s, max {loads[-1]:.1f} s "
              "[target p95 <= 5 s]")
    print(f"memory, {r['sessions']} sessions opened and closed: RSS {r['before_mb']:.0f} MB before, peak "
          f"{r['peak_mb']:.0f} MB, {r['after_mb']:.0f} MB after ({r['growth']:+.1%}); "
          f"{r['seconds_per_session']:.2f} s per session")


if __name__ == "__main__":
    main()
