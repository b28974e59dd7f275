"""Nothing outlives its owner: a LocalCluster's workers die with a SIGKILLed driver; ``panel serve apps/`` exits
within 5 s of SIGTERM, and so do the servers ``--num-procs`` forks. Real processes throughout: the pipelines' cluster
helper in a driver subprocess, and the plain ``panel serve`` command the README documents."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.ui_fixtures import free_port, stop

ROOT = Path(__file__).parents[1]
DRIVER = """
import os, sys
from pipelines.cluster import dask_client
with dask_client(n_workers=2, dashboard=False) as client:
    workers = client.run(os.getpid)
    print("up", *workers.values(), flush=True)
    sys.stdin.read()  # hold the cluster until killed
"""


def descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def alive(pids: set[int]) -> set[int]:
    def running(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    return {pid for pid in pids if running(pid)}


@pytest.mark.cluster
@pytest.mark.parametrize("when", ["starting", "running", "running-again"])
def test_workers_die_with_a_killed_driver(when):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pids: set[int] = set()
    try:
        if when == "starting":  # kill as soon as the first worker process exists, mid start-up
            deadline = time.monotonic() + 120
            while not pids and time.monotonic() < deadline and driver.poll() is None:
                pids = descendants(driver.pid)
                time.sleep(0.01)
        else:
            line = driver.stdout.readline().split()
            assert line and line[0] == "up", "the cluster did not start"
            pids = descendants(driver.pid) | {int(p) for p in line[1:]}
            assert len(pids) >= 2
        assert pids, "no worker process appeared"
        pids |= descendants(driver.pid)
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 5
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = alive(pids)
    for pid in survivors:  # never leave them behind, even when failing
        psutil.Process(pid).kill()
    assert not survivors, f"{len(survivors)} worker process(es) outlived the driver by 5 s"


@pytest.mark.slow
def test_plain_panel_serve_stops_within_5s_of_sigterm(tmp_path):
    from t3vis.cli import main

    assert main(["synth", str(tmp_path / "runs" / "synth"), "--n", "2000", "--checkpoints", "2"]) == 0
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", "apps", "--address", "127.0.0.1", "--port",
                             str(port), "--args", "--runs-dir", str(tmp_path / "runs")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "t3vis explorer ready" in line:
                break
        assert proc.poll() is None, "panel serve apps/ exited before it was ready"
        import requests

        assert "t3vis explorer" in requests.get(f"http://127.0.0.1:{port}/apps", timeout=60).text
    finally:
        seconds = stop(proc)
    assert proc.returncode == 0 and seconds < 5, f"exit {proc.returncode} after {seconds:.1f} s"


@pytest.mark.slow
def test_num_procs_servers_end_with_their_parent(tmp_path):
    """``panel serve apps/ --num-procs 2`` forks two servers; a SIGTERM to the parent ends them too (they kept
    serving before: nothing told them)."""
    from t3vis.cli import main

    assert main(["synth", str(tmp_path / "runs" / "synth"), "--n", "500", "--checkpoints", "2"]) == 0
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", "apps", "--address", "127.0.0.1", "--port",
                             str(port), "--num-procs", "2", "--args", "--runs-dir", str(tmp_path / "runs")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: set[int] = set()
    said: list[str] = []

    def read() -> None:  # in a thread: a server that never says it is ready fails the test, never hangs it
        for line in proc.stdout:
            said.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while "".join(said).count("t3vis explorer ready") < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "".join(said).count("t3vis explorer ready") >= 2 and proc.poll() is None, \
            "two forked servers did not come up:\n" + "".join(said[-30:])
        children = alive(descendants(proc.pid))
        assert len(children) >= 2, f"forked servers: {children}"
        proc.terminate()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10  # two servers shutting down at once on two busy cores
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = alive(children)
    finally:
        proc.kill()
        for pid in alive(children):  # never leave them behind, even when failing
            psutil.Process(pid).kill()
    assert not survivors, f"{len(survivors)} forked server(s) outlived their parent by 10 s"
