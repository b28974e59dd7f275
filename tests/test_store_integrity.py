"""A run store that cannot rot silently: damage is found by ``validate`` (library and CLI) and is an error on read.

Each kind of damage is made to a real run on disk: a deleted chunk (Zarr alone reads it back as fill values), a
truncated chunk, one flipped byte, a truncated ``zarr.json``. Old runs without checksums (schema version 1) still
open, and ``validate`` says they are unchecked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from zarr.codecs import BloscCodec

from pipelines.common import read_rows
from t3vis.errors import StoreError
from t3vis.store import Run, RunWriter, schema, validate
from t3vis.store.integrity import checksum_problem, split_chunk_key
from t3vis.store.writer import open_array
from t3vis.ui.data import run_data

REPO = Path(__file__).resolve().parents[1]
MODEL = dict(name_or_path="tiny", model_type="bert", num_layers=2, num_heads=2, hidden_size=4)
N = 40


def make_run(path: Path) -> RunWriter:
    """Columns in 3 chunks (16 rows), two epochs, one checkpoint with hidden states and a projection."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"text": [f"text of example {i}" for i in range(N)], "label": np.arange(N) % 3,
                          "split": ["train"] * N, "flipped": np.zeros(N, bool)})  # all False: equal to fill value
    w = RunWriter.create(path, examples=frame, label_names=["a", "b", "c"], model=MODEL, dataset={},
                         chunk_rows=16)
    for e in (1, 2):
        w.write_epoch(e, gold_prob=rng.random(N), pred=np.zeros(N), loss=rng.random(N))  # pred all 0 too
    w.add_checkpoint("c", step=1, epoch=1)
    w.write_array("checkpoints/c/hidden_cls", rng.normal(size=(3, N, 4)).astype(np.float16), chunk_rows=16)
    w.write_array("checkpoints/c/loss", rng.random(N).astype(np.float32), chunk_rows=16)
    w.write_array("checkpoints/c/projection/pca/layer_2", rng.normal(size=(N, 2)).astype(np.float32))
    return w


def store(path: Path) -> Path:
    return path / schema.STORE_DIR


def t3vis(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "t3vis.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


# ------------------------------------------------------------------------------------------------ damage
def delete_chunk(path):
    os.remove(store(path) / "examples/label/c/1")
    return "examples/label", "c/1"


def truncate_chunk(path):
    f = store(path) / "examples/text/c/0"
    f.write_bytes(f.read_bytes()[:-7])
    return "examples/text", "c/0"


def flip_byte(path):
    f = store(path) / "checkpoints/c/hidden_cls/c/1/2/0"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    return "checkpoints/c/hidden_cls", "c/1/2/0"


def truncate_metadata(path):
    f = store(path) / "checkpoints/c/loss/zarr.json"
    f.write_text(f.read_text()[:60])
    return "checkpoints/c/loss", "zarr.json"


READS = {  # each damaged array, read the ways the project reads it
    "examples/label": [lambda run: run.column("label"), lambda run: run.examples(slice(16, 20)),
                       lambda run: read_rows(str(run.loc.url), "label", slice(0, N))],
    "examples/text": [lambda run: run.column("text", np.array([1, 2])), lambda run: run.text(0),
                      lambda run: run_data(run).text(np.array([3]))],
    "checkpoints/c/hidden_cls": [lambda run: run.checkpoint("c").hidden(1),
                                 lambda run: run.checkpoint("c").hidden(1, rows=np.array([33]))],
    "checkpoints/c/loss": [lambda run: run.checkpoint("c").read("loss")],
}
DAMAGE = [delete_chunk, truncate_chunk, flip_byte, truncate_metadata]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_damage_is_reported_by_validate_and_raised_on_read(tmp_path, damage):
    path = tmp_path / "run"
    make_run(path)
    assert validate(path, deep=True) == []
    array, chunk = damage(path)

    problems = [str(p) for p in validate(path, deep=True)]
    assert len(problems) == 1, problems
    assert f"{schema.STORE_DIR}/{array}" in problems[0] and chunk in problems[0], problems

    cli = t3vis("validate", path)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"{array}" in cli.stderr and chunk in cli.stderr and "Traceback" not in cli.stdout + cli.stderr

    # a chunk gone is found without reading any chunk; altered bytes need the deep check
    quick = [str(p) for p in validate(path)]
    assert bool(quick) == (damage in (delete_chunk, truncate_metadata)), quick

    run = Run(path)
    for read in READS[array]:
        with pytest.raises(StoreError) as err:
            read(run)
        assert array in str(err.value) and chunk in str(err.value), str(err.value)
    # everything else still reads
    assert len(run.column("split")) == N and run.checkpoint("c").projection("pca", 2).shape == (N, 2)


def test_a_missing_chunk_that_held_only_zeros_is_still_an_error(tmp_path):
    """Zarr by default stores no chunk equal to the fill value, so a deleted one could not be told from it."""
    path = tmp_path / "run"
    make_run(path)
    assert sorted(os.listdir(store(path) / "examples/flipped/c")) == ["0", "1", "2"]
    assert os.listdir(store(path) / "dynamics/1/pred/c") == ["0"]
    assert not Run(path).column("flipped").any()
    os.remove(store(path) / "dynamics/1/pred/c/0")
    with pytest.raises(StoreError, match="dynamics/1/pred: chunk c/0 is missing"):
        Run(path).dynamics()
    assert any("dynamics/1/pred" in str(p) and "c/0" in str(p) for p in validate(path))


def test_staged_chunks_written_by_workers_keep_every_chunk(tmp_path):
    """The extraction reopens staged arrays on workers: an all-zero chunk written there is stored too."""
    path = tmp_path / "run"
    w = make_run(path)
    unit = "checkpoints/c/pred"
    w.staged_array(unit, (N,), "int16", (16,))
    target = open_array(w.loc.url_of(schema.STAGING_DIR, unit))
    for start in range(0, N, 16):
        target[start:start + 16] = 0
    w.commit(unit)
    assert sorted(os.listdir(store(path) / unit / "c")) == ["0", "1", "2"]
    assert validate(path, deep=True) == []


def test_unreadable_metadata_is_named_and_nothing_raises(tmp_path):
    path = tmp_path / "run"
    make_run(path)
    meta = store(path) / "examples/split/zarr.json"
    doc = json.loads(meta.read_text())
    doc["shape"] = "forty"  # valid JSON, invalid Zarr metadata
    meta.write_text(json.dumps(doc))
    os.remove(store(path) / "checkpoints/c/projection/pca/layer_2/zarr.json")  # the array vanishes for readers
    problems = [str(p) for p in validate(path)]
    assert any("examples/split/zarr.json: unreadable" in p for p in problems), problems
    assert any("projection/pca/layer_2: directory without zarr.json" in p for p in problems), problems
    with pytest.raises(StoreError, match="examples/split/zarr.json"):
        Run(path).column("split")
    with pytest.raises(StoreError, match="examples: the metadata of a member"):
        Run(path).columns
    cli = t3vis("validate", path, "--quick")
    assert cli.returncode == 1 and "Traceback" not in cli.stdout + cli.stderr
    assert "examples/split/zarr.json" in cli.stderr


def test_root_metadata_truncated(tmp_path):
    path = tmp_path / "run"
    make_run(path)
    root = store(path) / "zarr.json"
    root.write_text(root.read_text()[:30])
    problems = [str(p) for p in validate(path)]
    assert len(problems) == 1 and "cannot be read" in problems[0]
    cli = t3vis("validate", path)
    assert cli.returncode == 1 and "Traceback" not in cli.stdout + cli.stderr


# ------------------------------------------------------------------------------------------------ old runs
def make_v1_run(path: Path) -> None:
    """A run as schema version 1 wrote it: blosc only (no checksum), chunks equal to the fill value not stored."""
    make_run(path)
    for meta in sorted(store(path).rglob("zarr.json")):
        doc = json.loads(meta.read_text())
        if doc["node_type"] != "array":
            continue
        url = str(meta.parent)
        old = zarr.open_array(url, mode="r", zarr_format=3)
        values, attrs = old[...], dict(old.attrs)
        strings = values.dtype.kind in "TUO"
        new = zarr.create_array(url, shape=old.shape, dtype=str if strings else old.dtype, chunks=old.chunks,
                                compressors="auto" if strings else BloscCodec(cname="lz4", clevel=5,
                                                                                shuffle="shuffle"),
                                zarr_format=3, overwrite=True)
        new[...] = values
        new.attrs.update(attrs)
    root = zarr.open_group(str(store(path)), mode="r+", zarr_format=3)
    root.attrs["schema_version"] = 1


def test_old_runs_without_checksums_open_and_are_reported_unchecked(tmp_path):
    path = tmp_path / "old"
    make_v1_run(path)
    assert not (store(path) / "examples/flipped/c").exists()  # all False: v1 stored no chunk for it
    run = Run(path)
    assert not run.checked and run.attrs["schema_version"] == 1
    assert not run.column("flipped").any() and list(run.column("label")[:4]) == [0, 1, 2, 0]
    report = validate(path, deep=True)
    assert report == [] and any("schema version 1" in note for note in report.notes), report.notes
    assert any("examples/flipped" in note and "may be intact" in note for note in report.notes)
    cli = t3vis("validate", path)
    assert cli.returncode == 0 and "valid" in cli.stdout and "note: schema version 1" in cli.stdout

    # an old array's damage cannot be pinned on read, but is still an error, and the deep check names the chunk
    f = store(path) / "checkpoints/c/hidden_cls/c/1/0/0"
    f.write_bytes(f.read_bytes()[:9])
    with pytest.raises(StoreError, match="hidden_cls: cannot be decoded"):
        Run(path).checkpoint("c").hidden(1)
    assert any("hidden_cls: chunk c/1/0/0 does not decode" in str(p) for p in validate(path, deep=True))

    # an array this t3vis adds to the old run (as the pipelines do) is checksummed and checked
    RunWriter(path).write_array("checkpoints/c/gold_prob", np.ones(N, np.float32), chunk_rows=16)
    os.remove(store(path) / "checkpoints/c/gold_prob/c/2")
    with pytest.raises(StoreError, match="gold_prob: chunk c/2 is missing"):
        Run(path).checkpoint("c").read("gold_prob")


def test_chunk_keys_and_checksums():
    assert split_chunk_key("examples/label/c/0") == ("examples/label", "c/0")
    assert split_chunk_key("examples/c/c/3") == ("examples/c", "c/3")  # a column named "c"
    assert split_chunk_key("checkpoints/e/hidden_cls/c/1/2/0") == ("checkpoints/e/hidden_cls", "c/1/2/0")
    assert split_chunk_key("examples/label/zarr.json") is None and split_chunk_key("zarr.json") is None
    import google_crc32c

    payload = b"some chunk bytes"
    good = payload + google_crc32c.value(payload).to_bytes(4, "little")
    assert checksum_problem(good) is None
    assert "checksum mismatch" in checksum_problem(good[:-1] + bytes([good[-1] ^ 1]))
    assert "shorter than its checksum" in checksum_problem(good[:3])
