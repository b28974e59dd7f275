"""``t3vis serve``: this machine only by default, a login required to serve a team, and a prompt SIGTERM exit.

The server tests start the documented command as a real subprocess (``panel serve apps/`` underneath).
"""

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from t3vis.cli import main
from t3vis.errors import T3VisError
from t3vis.serve import apps_dir, is_loopback, serve_command
from tests.ui_fixtures import free_port, stop

ROOT = Path(__file__).parents[1]
READY = "t3vis explorer ready"


# ------------------------------------------------------------------ the command it builds
def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def test_loopback_by_default():
    cmd = serve_command(port=5006, runs_dir="runs", environ={})
    assert cmd.argv[:5] == [sys.executable, "-m", "panel", "serve", str(apps_dir())]
    assert option(cmd.argv, "--address") == ["127.0.0.1"] and not cmd.team
    assert option(cmd.argv, "--allow-websocket-origin") == ["localhost:5006", "127.0.0.1:5006"]
    assert cmd.argv[-3:] == ["--args", "--runs-dir", str(Path("runs").resolve())]
    assert cmd.env == {} and cmd.url == "http://127.0.0.1:5006/apps"
    any_port = serve_command(port=0, environ={})  # a free port, chosen here: the websocket origins need its number
    port = int(option(any_port.argv, "--port")[0])
    assert port > 0 and f"127.0.0.1:{port}" in option(any_port.argv, "--allow-websocket-origin")


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.0.2.7", "myhost.example.org"])
def test_a_team_address_needs_a_login(address):
    with pytest.raises(T3VisError, match=f"--address {address} serves the explorer to other machines"):
        serve_command(address=address, environ={})


def test_a_team_server_with_a_login(tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"ana": "S3cret"}))
    with pytest.raises(T3VisError, match="--allow-websocket-origin"):  # every interface: which name do users type?
        serve_command(address="0.0.0.0", basic_auth=str(users), environ={})
    cmd = serve_command(address="0.0.0.0", port=8080, basic_auth=str(users), origins=["t3vis.example.org:443"],
                        num_threads=4, environ={})
    assert cmd.team and option(cmd.argv, "--allow-websocket-origin") == ["t3vis.example.org:443"]
    assert option(cmd.argv, "--basic-auth") == [str(users)] and option(cmd.argv, "--num-threads") == ["4"]
    assert len(cmd.env["PANEL_COOKIE_SECRET"]) >= 32  # signs the login cookie; not on the command line
    assert cmd.env["PANEL_COOKIE_SECRET"] not in " ".join(cmd.argv)
    oauth = serve_command(address="192.0.2.7", port=8080, environ={},
                          extra=["--", "--oauth-provider", "github", "--oauth-key", "k", "--oauth-secret", "s"])
    assert option(oauth.argv, "--allow-websocket-origin") == ["192.0.2.7:8080"]
    assert serve_command(address="0.0.0.0", origins=["h:1"], environ={"PANEL_OAUTH_PROVIDER": "github"}).team


def test_its_own_options_cannot_be_bypassed():
    with pytest.raises(T3VisError, match="--address: give it as a `t3vis serve` option"):
        serve_command(extra=["--", "--address=0.0.0.0"], environ={})


def test_refusals_are_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail(f"accepted and executed: {args[1]}"))
    assert main(["serve", "--address", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t3vis: error: --address 0.0.0.0") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("address,loopback", [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                              ("localhost", True), ("0.0.0.0", False), ("192.0.2.2", False),
                                              ("box.local", False)])
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


# ------------------------------------------------------------------ real servers
def start(*args, timeout=240) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "t3vis.cli", "serve", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if READY in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail("t3vis serve did not come up:\n" + "".join(lines[-30:]))


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (eth0's, say)."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                found.append(a.address)
    return found


def listening(pid: int, port: int) -> list[str]:
    return [c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve") / "runs"
    assert main(["synth", str(root / "synth"), "--n", "2000", "--checkpoints", "2"]) == 0
    return root


@pytest.mark.slow
def test_serves_this_machine_only_and_stops_on_sigterm(runs):
    port = free_port()
    proc = start("--port", port, "--runs-dir", runs)
    try:
        page = requests.get(f"http://127.0.0.1:{port}/apps", timeout=60)
        assert page.status_code == 200 and "t3vis explorer" in page.text
        bound = listening(proc.pid, port)
        assert bound and all(ipaddress.ip_address(ip).is_loopback for ip in bound), bound
        for address in other_addresses():  # where the machine has one, it must refuse us there
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=3).close()
    finally:
        seconds = stop(proc)
    assert proc.returncode == 0 and seconds < 5, f"exit {proc.returncode} after {seconds:.1f} s"


@pytest.mark.slow
def test_a_login_guards_the_page(tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"ana": "S3cret"}))  # mixed case: Panel lower-cases PANEL_BASIC_AUTH, not this
    port = free_port()
    proc = start("--port", port, "--runs-dir", tmp_path / "empty", "--basic-auth", users)
    try:
        anonymous = requests.get(f"http://127.0.0.1:{port}/apps", timeout=60)
        assert anonymous.url.startswith(f"http://127.0.0.1:{port}/login")
        session = requests.Session()
        wrong = session.post(f"http://127.0.0.1:{port}/login", data={"username": "ana", "password": "s3cret"},
                             timeout=60)
        assert "error=" in wrong.url and "user" not in session.cookies
        right = session.post(f"http://127.0.0.1:{port}/login", data={"username": "ana", "password": "S3cret"},
                             timeout=60)
        assert right.status_code == 200 and "user" in session.cookies  # signed with the generated cookie secret
        assert "t3vis explorer" in session.get(f"http://127.0.0.1:{port}/apps", timeout=60).text
    finally:
        stop(proc)
