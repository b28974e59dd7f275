"""The t3vis command as a user runs it: a real subprocess, exit codes, no tracebacks for user errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def t3vis(*args, check=False):
    proc = subprocess.run([sys.executable, "-m", "t3vis.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_for_every_subcommand():
    from tests.test_cli_errors import subcommands

    top = t3vis("--help", check=True).stdout
    commands = sorted(subcommands())
    assert {"validate", "info", "synth", "serve", "train", "pipeline"} <= set(commands)
    for cmd in commands:
        assert cmd in top
        out = t3vis(cmd, "--help", check=True).stdout
        assert out.startswith("usage: t3vis " + cmd), out


def test_synth_info_validate(tmp_path):
    run = tmp_path / "synth"
    t3vis("synth", run, "--n", 3000, check=True)
    assert "valid" in t3vis("validate", run, check=True).stdout
    info = json.loads(t3vis("info", run, "--json", check=True).stdout)
    assert info["examples"] == 3000 and len(info["checkpoints"]) == 4
    text = t3vis("info", run, check=True).stdout
    assert "3,000" in text and "epoch-3" in text
    again = t3vis("synth", run, "--n", 10)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("setup", ["missing", "empty_dir"])
def test_user_errors_exit_nonzero_without_traceback(tmp_path, setup):
    path = tmp_path / "run"
    if setup == "empty_dir":
        path.mkdir()
    info = t3vis("info", path)
    assert info.returncode == 2 and "Traceback" not in info.stderr and str(path) in info.stderr
    val = t3vis("validate", path)  # a missing path is a bad argument (2); a directory that is no run, a problem (1)
    assert val.returncode == (2 if setup == "missing" else 1) and str(path) in val.stderr
    assert "Traceback" not in val.stderr
