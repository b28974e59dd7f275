"""Fixtures for the explorer tests: small synthetic runs, a runs directory with broken runs, an in-process server.

Import the fixtures into a test module with ``from ui_fixtures import *``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t3vis.store import RunWriter
from t3vis.store.synth import synth_run

SMALL_N = 4000


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    """A runs directory: one good synthetic run ``small`` plus a bare run (no projections, no dynamics)."""
    root = tmp_path_factory.mktemp("runs")
    synth_run(root / "small", SMALL_N, checkpoints=3, num_layers=2, num_heads=2, hidden_size=4, seed=1)
    bare_run(root / "bare", 500)
    return root


@pytest.fixture(scope="session")
def small_run(runs_dir) -> Path:
    return runs_dir / "small"


@pytest.fixture(scope="session")
def broken_runs_dir(tmp_path_factory, small_run) -> Path:
    """Runs directory with an empty dir, a corrupt store, a store of another schema version, and a good run."""
    import shutil

    import zarr

    root = tmp_path_factory.mktemp("broken")
    (root / "empty").mkdir()
    (root / "corrupt" / "store.zarr").mkdir(parents=True)
    (root / "corrupt" / "store.zarr" / "zarr.json").write_text("{ this is not json")
    shutil.copytree(small_run, root / "future")
    group = zarr.open_group(str(root / "future" / "store.zarr"), mode="r+", zarr_format=3)
    group.attrs["schema_version"] = 99
    shutil.copytree(small_run, root / "good")
    (root / "outside-secret.txt").write_text("not a run")
    return root


def bare_run(path: Path, n: int) -> Path:
    """A run with examples and one checkpoint's loss/pred only: no projections, no training dynamics."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"text": [f"example {i}" for i in range(n)], "label": rng.integers(0, 3, n),
                          "split": np.where(rng.random(n) < 0.8, "train", "validation")})
    writer = RunWriter.create(path, examples=frame, label_names=["a", "b", "c"], name="bare",
                              model={"name_or_path": "x", "model_type": "bert", "num_layers": 2, "num_heads": 2,
                                     "hidden_size": 4},
                              dataset={"name": "bare"})
    writer.add_checkpoint("step-10", step=10, epoch=1.0)
    writer.write_array("checkpoints/step-10/loss", rng.random(n).astype(np.float32))
    writer.write_array("checkpoints/step-10/pred", rng.integers(0, 3, n).astype(np.int16))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve():
    """``serve(factory) -> url``: serves a Panel app in this process (threaded); stopped after the test."""
    import panel as pn
    import requests

    servers = []

    def start(factory, path: str = "app") -> str:
        port = free_port()
        servers.append(pn.serve({path: factory}, port=port, address="127.0.0.1", threaded=True, show=False,
                                liveness=True))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(f"http://localhost:{port}/liveness", timeout=1).ok:
                    return f"http://localhost:{port}/{path}"
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not come up")

    yield start
    for server in servers:
        server.stop()


CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture
def chromium():
    """Debian's chromium driven by Playwright (never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def small_page(runs_dir, chromium, serve):
    """``(page, explorer)``: chromium on a served explorer of the run ``small``, its table's first page shown."""
    import re

    from playwright.sync_api import expect

    from t3vis.ui.explorer import Explorer

    sessions = []

    def app():
        sessions.append(Explorer(runs_dir=runs_dir, run_name="small"))
        return sessions[-1]

    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(serve(app))
    expect(page.get_by_text(re.compile(rf"rows 1–20 of {SMALL_N:,}"))).to_be_visible(timeout=90_000)
    return page, sessions[0]


def dump(obj) -> str:
    return json.dumps(obj, default=str)


# ---------------------------------------------------------------------------------------------------- payloads
#: What an injected script does: count itself in ``window.__xss`` (a test reads it; it must stay undefined).
XSS = "window.__xss=(window.__xss||0)+1"
#: Strings that run a script, form a link or break out of markup when a view renders them as markup (handlers
#: quoted: Markdown passes an HTML tag through only if its attribute values are well formed).
PAYLOADS = (
    f'<img src=x onerror="{XSS}">',
    f'<svg onload="{XSS}">',
    f'b`<img src=x onerror="{XSS}">`',
    f"[x](javascript:{XSS})",
    f'"\'><img src=x onerror="{XSS}">',
    "<img src=x onerror=alert(1)>",
    f"**b** `c` _d_ # e <script>{XSS}</script> &lt;f&gt; ``g",
)

#: The payload run's metadata column (the views show '_' in a column name as a space: none here) and checkpoint.
PAYLOAD_COLUMN = "<svg onload=alert(1)>"
PAYLOAD_CHECKPOINT = "epoch-1 " + PAYLOADS[0]


def payload_run(path: Path, n: int = 24) -> Path:
    """A tiny model run whose strings are payloads: label names, example texts, a checkpoint name, a metadata
    column's name and its values; with dynamics (data map) and a projection, so every view has something to show.
    """
    from tests.fixtures import tiny_model, tiny_tokenizer

    from t3vis.models import model_info, save_model
    from t3vis.store import schema

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, n)
    frame = pd.DataFrame({
        "text": [f"{PAYLOADS[i % len(PAYLOADS)]} market team film {i}" for i in range(n)],
        "label": labels.astype(np.int16),
        "split": np.where(np.arange(n) % 4 == 0, "validation", "train"),
        PAYLOAD_COLUMN: [PAYLOADS[i % 2] for i in range(n)],
    })
    model = tiny_model(3, seed=5)
    tokenizer = tiny_tokenizer(path.parent / f".{path.name}-tokenizer")
    writer = RunWriter.create(path, examples=frame, label_names=[PAYLOADS[2], PAYLOADS[0], PAYLOADS[4]],
                              model=model_info(model, tokenizer), dataset={"name": PAYLOADS[0]},
                              name=PAYLOADS[1], extra_attrs={"training": {"max_length": 64}})
    writer.write_epoch(1, gold_prob=rng.random(n).astype(np.float32), pred=rng.integers(0, 3, n),
                       loss=rng.random(n).astype(np.float32))
    ckpt = PAYLOAD_CHECKPOINT
    save_model(model, tokenizer, path / writer.weights_dir(ckpt))
    writer.add_checkpoint(ckpt, step=10, epoch=1, weights=writer.weights_dir(ckpt))
    writer.write_array(schema.checkpoint_path(ckpt, "projection", "umap", schema.layer_key(2)),
                       rng.normal(0, 1, (n, 2)).astype(np.float32), attrs={"method": "umap", "layer": 2})
    return path


def stop(proc: subprocess.Popen) -> float:
    """SIGTERM, and the seconds until the process is gone."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - started
