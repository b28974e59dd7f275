"""Screenshots of the explorer for the README: serves a run with the documented command and captures the page.

    python docs/screenshots.py [--runs-dir runs] [--run bbc-news-minilm] [--out docs/img]

Starts ``t3vis serve`` (127.0.0.1, a free port) on the runs directory, opens the run in Debian's chromium at
1600x1000 and saves, under ``--out``:

- ``overview.png``: the page as it opens (projection, data map, table, head grid and instance view);
- ``selection.png``: after a box brush on the projection (the selection over its dimmed context);
- ``instance.png``: after a click on the table's first row (the example's saliency, attention and head grid).
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests

VIEWPORT = {"width": 1600, "height": 1000}
CHROMIUM = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(runs_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "t3vis.cli", "serve", "--runs-dir", str(runs_dir),
                             "--port", str(port)])
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/apps", timeout=30).ok:
                return proc, f"http://127.0.0.1:{port}/apps"
        except requests.RequestException:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("t3vis serve did not come up within 120 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--run", default="bbc-news-minilm")
    ap.add_argument("--out", default=str(Path(__file__).parent / "img"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc, url = serve(Path(args.runs_dir))
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{url}?run={quote(args.run)}")
            page.get_by_text(re.compile(r"rows 1–\d+ of")).first.wait_for(timeout=180_000)
            page.wait_for_timeout(3000)  # the plots' first rasters
            page.screenshot(path=str(out / "overview.png"))
            # a box over the data map's easy-to-learn corner (top left), where every run has examples
            canvas = page.locator(".bk-Canvas, .bk-canvas").nth(1).bounding_box()
            if canvas:
                x0, y0 = canvas["x"] + canvas["width"] * 0.2, canvas["y"] + canvas["height"] * 0.1
                page.mouse.move(x0, y0)
                page.mouse.down()
                page.mouse.move(x0 + canvas["width"] * 0.3, y0 + canvas["height"] * 0.25, steps=8)
                page.mouse.up()
                page.wait_for_timeout(3000)
                page.screenshot(path=str(out / "selection.png"))
            page.locator(".tabulator-row").first.click()
            page.wait_for_timeout(8000)  # the example's saliency and attention from the model server
            page.screenshot(path=str(out / "instance.png"))
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print("\n".join(str(p) for p in sorted(out.glob("*.png"))))


if __name__ == "__main__":
    main()
