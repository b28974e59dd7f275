"""Fixtures for the explorer tests: small synthetic runs, a runs directory with broken runs, an in-process server.

Import the fixtures into a test module with ``from ui_fixtures import *``.
"""

from __future__ import annotations

import json
import socket
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
        servers.append(pn.serve({path: factory}, port=port, threaded=True, show=False, liveness=True))
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


def dump(obj) -> str:
    return json.dumps(obj, default=str)
