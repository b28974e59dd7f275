"""Run store: round-trip, lazy reads, atomic units and resume, validation of bad stores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t3vis.errors import ModelError, RunExistsError, SchemaVersionError, StoreError
from t3vis.store import Run, RunWriter, validate, validate_or_raise
from t3vis.store import schema

MODEL = dict(name_or_path="tiny", model_type="bert", num_layers=2, num_heads=2, hidden_size=4)


def make_frame(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "text": [f"example {i} é ünïcode" * (i % 3 + 1) for i in range(n)],
        "label": rng.integers(0, 3, n),
        "split": np.where(np.arange(n) % 5 == 0, "validation", "train"),
        "source": rng.choice(["web", "news"], n),
        "score": rng.random(n),
        "flipped": rng.random(n) < 0.2,
    })


def create(path, n=10, **kw):
    return RunWriter.create(path, examples=make_frame(n), label_names=["a", "b", "c"], model=MODEL,
                            dataset={"name": "toy"}, **kw)


def test_round_trip(tmp_path):
    frame = make_frame(12)
    w = RunWriter.create(tmp_path / "run", examples=frame, label_names=["a", "b", "c"], model=MODEL,
                         dataset={"name": "toy"}, chunk_rows=5)
    rng = np.random.default_rng(1)
    dyn = {e: dict(gold_prob=rng.random(12), pred=rng.integers(0, 3, 12), loss=rng.random(12)) for e in (1, 2)}
    for e, d in dyn.items():
        w.write_epoch(e, **d)
    w.add_checkpoint("epoch-1", step=10, epoch=1.0)
    hidden = rng.normal(size=(3, 12, 4)).astype(np.float16)
    w.write_array("checkpoints/epoch-1/hidden_cls", hidden, chunk_rows=4)
    w.write_array("checkpoints/epoch-1/projection/umap/layer_2", rng.normal(size=(12, 2)).astype(np.float32),
                  attrs={"aligned": True})

    run = Run(tmp_path / "run")
    assert run.n_examples == 12 and run.label_names == ["a", "b", "c"] and run.num_layers == 2
    ex = run.examples()
    assert list(ex["text"]) == list(frame["text"])
    assert (ex["label"].cat.codes.to_numpy() == frame["label"].to_numpy()).all()
    assert list(ex["split"].astype(str)) == list(frame["split"])
    assert list(ex["source"].astype(str)) == list(frame["source"])
    np.testing.assert_allclose(ex["score"], frame["score"], rtol=1e-6)
    assert ex["flipped"].dtype == bool and (ex["flipped"] == frame["flipped"]).all()
    assert run.column_attrs("score")["kind"] == "continuous"
    assert run.text(3) == frame["text"][3]
    d = run.dynamics()
    assert d.gold_prob.shape == (2, 12) and list(d.epochs) == [1, 2]
    np.testing.assert_allclose(d.gold_prob[1], dyn[2]["gold_prob"], rtol=1e-6)
    ck = run.checkpoint("epoch-1")
    np.testing.assert_array_equal(ck.hidden(1), hidden[1])
    np.testing.assert_array_equal(ck.hidden(2, rows=np.array([0, 5, 11])), hidden[2, [0, 5, 11]])
    assert ck.projections() == [("umap", 2)]
    assert ck.projection_attrs("umap", 2)["aligned"] is True
    assert validate(tmp_path / "run") == []


def test_fsspec_memory_url():
    w = create("memory://t3vis-test/run", overwrite=True)
    w.write_epoch(1, gold_prob=np.ones(10), pred=np.zeros(10), loss=np.zeros(10))
    run = Run("memory://t3vis-test/run")
    assert run.n_examples == 10 and run.epochs() == [1]
    assert validate("memory://t3vis-test/run") == []


def _garble_chunks(array_dir: Path, keep_prefix: str | None = None):
    """Overwrite chunk files (optionally all but those under ``c/<keep_prefix>``) with bytes no codec can decode."""
    n = 0
    for f in (array_dir / "c").rglob("*"):
        if f.is_file() and not (keep_prefix and f.relative_to(array_dir / "c").as_posix().startswith(keep_prefix)):
            f.write_bytes(b"not a blosc chunk")
            n += 1
    return n


def test_lazy_reads_touch_only_what_is_asked(tmp_path):
    w = create(tmp_path / "run", n=40)
    w.add_checkpoint("c", step=1, epoch=1)
    hidden = np.arange(3 * 40 * 4, dtype=np.float16).reshape(3, 40, 4)
    w.write_array("checkpoints/c/hidden_cls", hidden, chunk_rows=8)
    store = tmp_path / "run" / schema.STORE_DIR
    # every chunk of layers 0 and 2 becomes undecodable; reading layer 1 must not touch them
    assert _garble_chunks(store / "checkpoints/c/hidden_cls", keep_prefix="1/") > 0
    run = Run(tmp_path / "run")
    np.testing.assert_array_equal(run.checkpoint("c").hidden(1), hidden[1])
    with pytest.raises(StoreError, match=r"hidden_cls: chunk c/0/\d/0 is corrupt"):  # the first of layer 0's to fail
        run.checkpoint("c").hidden(0)
    # same for example columns: a garbled text column does not stop reading labels
    _garble_chunks(store / "examples" / "score")
    assert len(run.column("label")) == 40
    with pytest.raises(StoreError, match="examples/score: chunk c/0 is corrupt"):
        run.column("score")


def test_staged_unit_invisible_until_commit_and_resumes(tmp_path):
    w = create(tmp_path / "run", n=10)
    w.add_checkpoint("c", step=1, epoch=1)
    unit = "checkpoints/c/logits"
    a = w.staged_array(unit, (10, 3), "float32", (4, 3))
    a[0:4] = 1.0
    w.mark_chunk(unit, 0)
    assert "logits" not in Run(tmp_path / "run").checkpoint("c").arrays  # partial unit not visible
    # "crash", then a new writer resumes: finished chunks are kept and known
    w2 = RunWriter(tmp_path / "run")
    a2 = w2.staged_array(unit, (10, 3), "float32", (4, 3))
    assert w2.chunks_done(unit) == {0}
    np.testing.assert_array_equal(a2[0:4], 1.0)
    a2[4:8] = 2.0
    w2.mark_chunk(unit, 1)
    a2[8:10] = 3.0
    w2.mark_chunk(unit, 2)
    w2.commit(unit)
    got = Run(tmp_path / "run").checkpoint("c").read("logits")
    np.testing.assert_array_equal(got[:, 0], [1] * 4 + [2] * 4 + [3] * 2)
    assert w2.chunks_done(unit) == set()  # progress marks dropped with the commit
    # a staged array with a different shape is started afresh (old marks would lie)
    w2.staged_array("checkpoints/c/loss", (10,), "float32", (4,))
    w2.mark_chunk("checkpoints/c/loss", 0)
    w2.staged_array("checkpoints/c/loss", (12,), "float32", (4,))
    assert w2.chunks_done("checkpoints/c/loss") == set()


def test_create_killed_midway_leaves_no_run(tmp_path):
    """SIGKILL while the example columns are written: no store appears, and a retry succeeds."""
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
import numpy as np, pandas as pd
import t3vis.store.writer as wmod
orig = wmod.create_array
calls = []
def dying(*a, **k):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(*a, **k)
wmod.create_array = dying
frame = pd.DataFrame({{"text": ["a", "b"], "label": [0, 1], "split": ["train", "train"], "x": [1.0, 2.0]}})
wmod.RunWriter.create({str(tmp_path / "run")!r}, examples=frame, label_names=["n", "p"],
    model=dict(name_or_path="m", model_type="bert", num_layers=1, num_heads=1, hidden_size=2), dataset={{}})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert not (tmp_path / "run" / schema.STORE_DIR).exists()
    with pytest.raises(StoreError):
        Run(tmp_path / "run")
    create(tmp_path / "run")
    assert Run(tmp_path / "run").n_examples == 10


def test_overwrite_rules(tmp_path):
    create(tmp_path / "run", n=10)
    with pytest.raises(RunExistsError, match="overwrite"):
        create(tmp_path / "run", n=5)
    assert Run(tmp_path / "run").n_examples == 10
    # a failing replacement keeps the old run intact
    bad = make_frame(5)
    bad["label"] = 7
    with pytest.raises(StoreError, match="label"):
        RunWriter.create(tmp_path / "run", examples=bad, label_names=["a", "b", "c"], model=MODEL, dataset={},
                         overwrite=True)
    assert Run(tmp_path / "run").n_examples == 10
    create(tmp_path / "run", n=5, overwrite=True)
    assert Run(tmp_path / "run").n_examples == 5


@pytest.mark.parametrize("case", ["missing", "not_a_store", "corrupt_json", "wrong_version", "bad_shape", "bad_label",
                                  "missing_weights", "missing_column", "bad_dynamics", "bad_projection"])
def test_validator_names_each_problem(tmp_path, case):
    path = tmp_path / "run"
    store = path / schema.STORE_DIR
    expect = None
    if case == "missing":
        expect = "does not exist"
    elif case == "not_a_store":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
        expect = "not a t3vis run"
    else:
        w = create(path)
        w.add_checkpoint("c", step=1, epoch=1, weights="weights/c")
        os.makedirs(path / "weights" / "c")
        if case == "corrupt_json":
            (store / "zarr.json").write_text("{ not json")
            expect = "cannot be read"
        elif case == "wrong_version":
            meta = json.loads((store / "zarr.json").read_text())
            meta["attributes"]["schema_version"] = 99
            (store / "zarr.json").write_text(json.dumps(meta))
            expect = "schema_version is 99"
        elif case == "bad_shape":
            w.write_array("checkpoints/c/logits", np.zeros((10, 2), np.float32))  # 3 labels expected
            expect = "checkpoints/c/logits: shape (10, 2), expected (10, 3)"
        elif case == "bad_label":
            lab = w.root["examples/label"]
            lab[0] = 5
            expect = "examples/label: values outside 0..2"
        elif case == "missing_weights":
            os.rmdir(path / "weights" / "c")
            expect = "weights of checkpoint 'c' missing"
        elif case == "missing_column":
            import shutil
            shutil.rmtree(store / "examples" / "split")
            expect = "examples/split: required column missing"
        elif case == "bad_dynamics":
            w.write_group("dynamics/1", {"gold_prob": np.zeros(9, np.float32), "pred": np.zeros(10, np.int16),
                                         "loss": np.zeros(10, np.float32)})
            expect = "dynamics/1/gold_prob: shape (9,), expected (10,)"
        elif case == "bad_projection":
            w.write_array("checkpoints/c/projection/umap/layer_1", np.zeros((10, 3), np.float32))
            expect = "projection/umap/layer_1: shape (10, 3), expected (10, 2)"
    problems = validate(path)
    assert problems, case
    assert any(expect in str(p) for p in problems), [str(p) for p in problems]
    with pytest.raises(StoreError):
        validate_or_raise(path)


def test_wrong_schema_version_raises_specific_error(tmp_path):
    create(tmp_path / "run")
    meta_path = tmp_path / "run" / schema.STORE_DIR / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["schema_version"] = 0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SchemaVersionError, match="re-create"):
        Run(tmp_path / "run")


def test_bad_examples_rejected(tmp_path):
    frame = make_frame(4).drop(columns=["split"])
    with pytest.raises(StoreError, match="split"):
        RunWriter.create(tmp_path / "r", examples=frame, label_names=["a", "b", "c"], model=MODEL, dataset={})
    frame = make_frame(4)
    frame.loc[0, "split"] = "dev"
    with pytest.raises(StoreError, match="unknown split"):
        RunWriter.create(tmp_path / "r", examples=frame, label_names=["a", "b", "c"], model=MODEL, dataset={})
    assert not (tmp_path / "r" / schema.STORE_DIR).exists()


def test_checkpoint_completion_marker_written_last(tmp_path):
    w = create(tmp_path / "run")
    w.add_checkpoint("c", step=1, epoch=1)
    with pytest.raises(StoreError, match="missing"):
        w.mark_checkpoint_complete("c")
    assert not Run(tmp_path / "run").checkpoint("c").complete
    shapes = {"hidden_cls": (3, 10, 4), "hidden_mean": (3, 10, 4), "logits": (10, 3)}
    for name in schema.EXTRACTED_ARRAYS:
        w.write_array(f"checkpoints/c/{name}", np.zeros(shapes.get(name, (10,)), np.float32))
    w.mark_checkpoint_complete("c")
    assert Run(tmp_path / "run").checkpoint("c").complete
    with pytest.raises(StoreError, match="checkpoint name"):
        w.add_checkpoint("../evil", step=0, epoch=0)


def test_column_encoding_kinds(tmp_path):
    n = 300
    frame = pd.DataFrame({"text": ["t"] * n, "label": np.arange(n) % 3, "split": ["train"] * n,
                          "title": [f"title {i}" for i in range(n)],  # one per row: strings, not 300 categories
                          "topic": np.where(np.arange(n) % 2, "x", "y"), "original_label": (np.arange(n) + 1) % 3})
    RunWriter.create(tmp_path / "run", examples=frame, label_names=["a", "b", "c"], model=MODEL, dataset={})
    run = Run(tmp_path / "run")
    assert run.column_attrs("title")["kind"] == "string" and run.text(0) == "t"
    assert list(run.column("title", slice(0, 2))) == ["title 0", "title 1"]
    assert run.categories("topic") == ["x", "y"]
    assert run.categories("original_label") == ["a", "b", "c"]
    assert list(run.examples(slice(0, 2), ["original_label"])["original_label"]) == ["b", "c"]


# ------------------------------------------------------------------------------------------------ run facts
@pytest.mark.parametrize("cache_bytes", [0, 1, 1 << 20])
def test_row_reader_equals_a_direct_read_across_chunk_boundaries(tmp_path, cache_bytes):
    frame = make_frame(23)
    RunWriter.create(tmp_path / "run", examples=frame, label_names=["a", "b", "c"], model=MODEL, dataset={},
                     chunk_rows=5)
    run = Run(tmp_path / "run")
    for rows in (np.array([22, 0, 4, 5, 9, 10, 4, 17]), slice(3, 21), np.array([], np.int64), slice(20, 23)):
        for column in ("text", "score", "label"):
            expected = frame[column].to_numpy()[rows]
            got = run.rows(column, cache_bytes)(rows)
            assert len(got) == len(expected) and list(got) == pytest.approx(list(expected)), (column, rows)
            assert list(run.column(column, rows)) == list(got)
    assert list(run.rows("text", cache_bytes)()) == list(frame["text"])
    logits = np.random.default_rng(0).normal(size=(23, 3)).astype(np.float32)  # 2-D: rows of the first axis
    w = RunWriter(tmp_path / "run")
    w.add_checkpoint("c", step=1, epoch=1)
    w.write_array("checkpoints/c/logits", logits, chunk_rows=5)
    rows = np.array([21, 4, 5, 0])
    np.testing.assert_array_equal(Run(tmp_path / "run").checkpoint("c").read("logits", rows), logits[rows])


def test_row_reader_keeps_chunks_up_to_its_budget(tmp_path):
    frame = make_frame(20)
    RunWriter.create(tmp_path / "run", examples=frame, label_names=["a", "b", "c"], model=MODEL, dataset={},
                     chunk_rows=5)
    run = Run(tmp_path / "run")
    kept, small = run.rows("text", 1 << 20), run.rows("text", 1)
    assert list(kept(np.arange(20))) == list(frame["text"])  # every chunk read once, and kept
    assert list(small(np.array([0, 7]))) == [frame["text"][0], frame["text"][7]]  # keeps chunk 1 only
    _garble_chunks(tmp_path / "run" / schema.STORE_DIR / "examples" / "text")
    assert list(kept(np.array([19, 0]))) == [frame["text"][19], frame["text"][0]]  # from memory
    assert small(np.array([6]))[0] == frame["text"][6]
    with pytest.raises(StoreError, match="examples/text: chunk c/0 is corrupt"):  # evicted: read again, and fails
        small(np.array([0]))


def test_run_max_length_is_the_training_length_else_the_models(tmp_path):
    def run_with(model_max, training):
        extra = {"training": training} if training is not None else None
        RunWriter.create(tmp_path / "run", examples=make_frame(), label_names=["a", "b", "c"], overwrite=True,
                         model={**MODEL, **({"max_length": model_max} if model_max else {})}, dataset={},
                         extra_attrs=extra)
        return Run(tmp_path / "run").max_length

    assert run_with(512, {"max_length": 64, "status": "done"}) == 64
    assert run_with(512, {"status": "done"}) == 512
    assert run_with(512, {"max_length": None}) == 512
    assert run_with(None, {"max_length": "96"}) == 96
    assert run_with(None, None) is None


def test_checkpoint_logits_are_what_extraction_wrote_at_the_runs_truncation(tmp_path):
    n, rows = 11, 4
    RunWriter.create(tmp_path / "run", examples=make_frame(n), label_names=["a", "b", "c"], dataset={},
                     model={**MODEL, "max_length": 64})
    w = RunWriter(tmp_path / "run")
    w.add_checkpoint("c", step=1, epoch=1)
    assert Run(tmp_path / "run").checkpoint("c").logits([1, 2]) is None  # nothing extracted yet
    logits = np.random.default_rng(3).normal(size=(n, 3)).astype(np.float32)
    shapes = {"hidden_cls": (3, n, 4), "hidden_mean": (3, n, 4), "logits": (n, 3)}
    for name in schema.EXTRACTED_ARRAYS:  # the way the extract pipeline writes: staged, chunk by chunk
        shape = shapes.get(name, (n,))
        values = logits if name == "logits" else np.zeros(shape, np.float32)
        unit = f"checkpoints/c/{name}"
        w.staged_array(unit, shape, np.float32, schema.default_chunks(name, shape, rows))
        for index, part in enumerate(range(0, n, rows)):
            sl = (slice(None),) * schema.row_axis(name) + (slice(part, part + rows),)
            w.write_chunk(unit, index, values[sl])
            w.mark_chunk(unit, index)
        w.commit(unit)
    w.mark_checkpoint_complete("c", extract={"max_length": 64})
    checkpoint = Run(tmp_path / "run").checkpoint("c")
    assert checkpoint.complete
    np.testing.assert_array_equal(checkpoint.logits([9, 0, 4]), logits[[9, 0, 4]])
    np.testing.assert_array_equal(checkpoint.logits(), logits)
    np.testing.assert_array_equal(checkpoint.logits(slice(3, 9), 64), logits[3:9])
    assert checkpoint.logits([9], 32) is None  # asked at another truncation
    w.mark_checkpoint_complete("c", extract={"max_length": 128})  # extracted at another truncation than the run's
    assert Run(tmp_path / "run").checkpoint("c").logits([9]) is None


def test_write_chunk_writes_whole_checked_chunks_and_rejects_a_wrong_shape(tmp_path):
    w = create(tmp_path / "run", n=10)
    w.add_checkpoint("c", step=1, epoch=1)
    unit = "checkpoints/c/hidden_mean"
    hidden = np.arange(3 * 10 * 4, dtype=np.float32).reshape(3, 10, 4)
    w.staged_array(unit, (3, 10, 4), np.float16, (1, 4, 4))
    assert w.is_staged(unit) and not w.is_done(unit)
    with pytest.raises(StoreError, match=r"chunk 2 holds shape \(3, 2, 4\), got values of shape \(3, 4, 4\)"):
        w.write_chunk(unit, 2, hidden[:, 0:4])  # the last chunk has 2 rows
    with pytest.raises(StoreError, match="chunk 3"):
        w.write_chunk(unit, 3, hidden[:, 0:0])  # past the end
    staged = tmp_path / "run" / schema.STAGING_DIR / unit
    assert not (staged / "c").exists()  # nothing written by the failed calls
    for index in range(3):
        w.write_chunk(unit, index, hidden[:, 4 * index:4 * index + 4])
    w.commit(unit)
    stored = tmp_path / "run" / schema.STORE_DIR / unit
    meta = json.loads((stored / "zarr.json").read_text())
    assert meta["codecs"][-1]["name"] == "crc32c" and meta["data_type"] == "float16"
    assert len(list((stored / "c").rglob("*"))) - len([p for p in (stored / "c").rglob("*") if p.is_dir()]) == 9
    np.testing.assert_array_equal(Run(tmp_path / "run").checkpoint("c").hidden(2, "mean"), hidden[2])


def test_checkpoint_weights_lookup_names_what_is_missing(tmp_path):
    w = create(tmp_path / "run")
    rel = w.weights_dir("c")
    w.add_checkpoint("c", step=1, epoch=1, weights=rel)
    w.add_checkpoint("bare", step=2, epoch=2, weights=None)
    run = Run(tmp_path / "run")
    where = str(tmp_path / "run" / rel)
    with pytest.raises(ModelError, match=rf"weights of checkpoint 'c' of run 'run' are missing: .* at {where}, "
                                         "which does not exist"):
        run.checkpoint("c").weights()
    with pytest.raises(ModelError, match="checkpoint 'bare' of run 'run' has no model weights recorded"):
        run.checkpoint("bare").weights()
    os.makedirs(where + ".old")  # a save that replaced it was interrupted: the previous copy is complete
    assert run.checkpoint("c").weights() == where + ".old"
    os.makedirs(where)
    assert run.checkpoint("c").weights() == where


def test_stamp_and_crossfit_attrs_follow_what_is_written(tmp_path):
    w = create(tmp_path / "run")
    run = Run(tmp_path / "run")
    before = run.stamp()
    assert run.crossfit_attrs() is None and run.crossfit() is None
    w.write_epoch(1, gold_prob=np.ones(10), pred=np.zeros(10), loss=np.zeros(10))
    assert Run(tmp_path / "run").stamp() != before
    w.write_crossfit(np.full((10, 3), 1 / 3), np.zeros(10), {"folds": 2, "seed": 7})
    assert Run(tmp_path / "run").crossfit_attrs() == {"folds": 2, "seed": 7}
