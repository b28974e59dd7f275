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


def test_info_shows_each_epochs_accuracy_and_loss_per_split(tmp_path):
    """A run trained by `t3vis train`: `info` prints, per epoch and split, the accuracy and mean loss of the
    predictions the run recorded at that epoch's end (recomputed here from the stored dynamics)."""
    import numpy as np
    import pandas as pd

    from t3vis.models import save_model
    from t3vis.store import Run
    from tests.fixtures import TOPICS, tiny_model, tiny_texts, tiny_tokenizer

    names = list(TOPICS)[:3]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 90)
    pd.DataFrame({"text": tiny_texts(90, labels, names, rng), "label": [names[i] for i in labels]}).to_csv(
        tmp_path / "data.csv", index=False)
    model = tiny_model(3)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    save_model(model, tiny_tokenizer(tmp_path / "tokenizer"), tmp_path / "model")
    run_dir = tmp_path / "run"
    t3vis("train", tmp_path / "data.csv", "--model", tmp_path / "model", "--run", run_dir, "--epochs", 2,
          "--learning-rate", "3e-3", "--no-pipeline", check=True)

    text = t3vis("info", run_dir, check=True).stdout
    run = Run(str(run_dir))
    dynamics, label, split = run.dynamics(), run.column("label"), run.examples()["split"].to_numpy()
    assert list(dynamics.epochs) == [1, 2]
    for i, epoch in enumerate(dynamics.epochs):
        parts = []
        for name in ("train", "validation"):
            rows = split == name
            accuracy = (dynamics.pred[i][rows] == label[rows]).mean()
            parts.append(f"{name} accuracy {accuracy:.3f}, loss {dynamics.loss[i][rows].mean():.3f}")
        assert f"    epoch {epoch}: " + "; ".join(parts) in text.splitlines(), text
