"""Every subcommand refuses bad input with one line and exit 2, never a traceback.

The matrix comes from the parser itself: every subcommand, every argument with a ``type=``, and bad values made
from that type (below/above its range, not a number, a missing path, a read-only directory, a malformed address),
so a new subcommand or argument is covered without touching this file. Parsing runs in-process
(``t3vis.cli.main``); a few subprocess runs prove the real entry points.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from t3vis import argtypes
from t3vis.cli import build_parser, main

ROOT = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def never_exec(monkeypatch):
    """A bad value that slipped through must fail the test, not replace pytest with a server."""
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail(f"accepted and executed: {args[1]}"))


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode == 0


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Inputs and outputs to misuse: a missing path, a file, a directory, a read-only directory, a real run."""
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "file.txt").write_text("not a directory\n")
    (root / "dir").mkdir()
    readonly = root / "readonly"
    mounted = mount_tmpfs(readonly, "ro,size=1m")  # root writes through a 0555 directory: mount one read-only
    if not mounted:
        readonly.chmod(0o555)
    assert not os.access(readonly, os.W_OK), "could not make a read-only directory for the test"
    run = root / "run"
    assert main(["synth", str(run), "--n", "300", "--checkpoints", "2"]) == 0
    yield argparse.Namespace(root=root, missing=root / "missing" / "x", file=root / "file.txt", dir=root / "dir",
                             readonly=readonly, run=run)
    if mounted:
        subprocess.run(["umount", str(readonly)], check=True)


def bad_values(action: argparse.Action, paths) -> list[str]:
    """Values ``action`` must refuse, derived from its type."""
    t = action.type
    if isinstance(t, argtypes.IntRange):
        values = [str(t.low - 1), "abc", "1.5", ""]
        return values + ([str(t.high + 1)] if t.high is not None else [])
    if isinstance(t, argtypes.FloatRange):
        values = ["nan", "inf", "x"]
        values += [str(t.low if t.low_open else t.low - 0.5)] if t.low is not None else []
        values += [str(t.high if t.high_open else t.high + 0.5)] if t.high is not None else []
        return values
    paths_by_type = {
        argtypes.existing_path: [paths.missing, ""],
        argtypes.existing_file: [paths.missing, paths.dir],
        argtypes.existing_dir: [paths.missing, paths.file],
        argtypes.output_dir: [paths.readonly / "run", paths.readonly, paths.file, paths.file / "run"],
        argtypes.runs_dir: [paths.readonly / "runs", paths.file],
        argtypes.scheduler_address: ["nonsense", "tcp://127.0.0.1:notaport", "tcp://127.0.0.1:99999", "http://h:1"],
        argtypes.torch_device: ["gpu0", "cuda:x"],
    }
    if t in paths_by_type:
        return [str(v) for v in paths_by_type[t]]
    return ["not-a-valid-value!"]  # any other type (a flag word, say) must refuse garbage too


def cases(paths):
    for name, parser in subcommands().items():
        positionals = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
        for action in parser._actions:
            if action.type is None or action.type is str:
                continue
            for bad in bad_values(action, paths):
                if action.option_strings:
                    argv = [name, action.option_strings[-1], bad]
                else:  # earlier positionals get a valid value
                    before = positionals[:positionals.index(action)]
                    argv = [name, *[str(paths.run)] * len(before), bad]
                yield name, action, argv


def test_every_typed_argument_is_validated():
    """No subcommand takes a plain int/float: those accept 0, negatives, nan and inf."""
    loose = [(name, a.option_strings or a.dest) for name, p in subcommands().items() for a in p._actions
             if a.type in (int, float)]
    assert not loose, f"use a t3vis.argtypes type for {loose}"
    assert {"validate", "info", "synth", "serve", "demo", "train", "extract", "importance", "project",
            "pipeline"} <= set(subcommands())


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_bad_values_exit_2_with_one_line(name, paths, capsys):
    checked, failures = 0, []
    for command, action, argv in cases(paths):
        if command != name:
            continue
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        label = "/".join(action.option_strings) if action.option_strings else action.metavar or action.dest
        if not (exit_info.value.code == 2 and len(lines) == 1 and f"argument {label}" in err and
                "Traceback" not in out + err):
            failures.append((argv, exit_info.value.code, err))
        checked += 1
    assert not failures, failures[:5]
    if any(a.type not in (None, str) for a in subcommands()[name]._actions):
        assert checked > 0


def test_examples_from_the_adversarial_report(paths, capsys):
    """The reported tracebacks, and a silent one-row-per-task run, are one-line refusals now."""
    for argv, expected in [
        (["synth", "--n", "-5", str(paths.root / "s")], "argument --n: expected an integer >= 1, got -5"),
        (["importance", str(paths.run), "--sample", "0"], "argument --sample: expected an integer >= 1, got 0"),
        (["extract", str(paths.run), "--chunk-rows", "0"], "argument --chunk-rows: expected an integer >= 1"),
        (["synth", str(paths.readonly / "run")], f"cannot write {paths.readonly / 'run'}"),
        (["train", str(paths.file), "--model", str(paths.dir), "--run", str(paths.readonly / "r")],
         "argument --run: cannot write"),
        (["train", "--validation-fraction", "1", str(paths.file)], "expected a number in (0, 1)"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1, (argv, err)


@pytest.mark.parametrize("command", ["extract", "importance", "project", "pipeline"])
def test_unreachable_scheduler_is_one_line(command, paths, capsys):
    from tests.ui_fixtures import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    assert main([command, str(paths.run), "--scheduler", address, "--timeout", "1", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert f"Dask scheduler {address} did not answer within 1 s" in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.out + captured.err


def run_cli(*args, module="t3vis.cli"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_real_entry_points(paths):
    for proc, expected in [
        (run_cli("synth", "--n", "-5", paths.root / "s"), "t3vis synth: error: argument --n: expected an integer"),
        (run_cli("importance", paths.run, "--sample", "0", module="pipelines"), "argument --sample"),
        (run_cli("serve", "--address", "0.0.0.0"), "needs a login"),
    ]:
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stdout + proc.stderr


def test_a_full_disk_while_writing_is_one_line(tmp_path):
    """An OSError from the writer itself (the up-front check passes: the disk fills up mid-run)."""
    disk = tmp_path / "tiny"
    if not mount_tmpfs(disk, "size=256k"):
        pytest.fail("this test needs root to mount a small tmpfs (as CI has)")
    try:
        proc = run_cli("synth", disk / "run", "--n", "20000")
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert proc.returncode == 2, proc.stderr
    assert "No space left on device" in proc.stderr and "`t3vis synth`" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
