"""The Dask pipelines against a real scheduler and two real workers (subprocesses on loopback).

The store they write is checked against an in-process reference (one example at a time, no padding, no Dask);
a driver killed with SIGKILL mid-run and restarted must give the same store as an uninterrupted run; bad input
(missing or mismatched checkpoints, a dead scheduler, a read-only or full disk) must fail clearly and leave no
partial unit marked done.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines import dask_client, run_extract, run_pipeline
from pipelines.build import pipeline_fraction
from pipelines.extract import unit_of
from pipelines.importance import importance_sample
from t3vis.analysis.extraction import extract
from t3vis.analysis.importance import head_importance
from t3vis.analysis.projection import pca, procrustes_align
from t3vis.errors import ModelError, PipelineError
from t3vis.models import load_checkpoint, save_model
from t3vis.models.inference import fast_bf16, resolve_dtype
from t3vis.store import Run, schema, validate
from t3vis.store.writer import RunWriter
from tests.fixtures import make_tiny_run, tiny_model, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
FAST = dict(extract=dict(chunk_rows=16, dtype="float32", batch_size=8),
            importance=dict(sample=32, dtype="float32", attention_size=8),
            project=dict(methods=("pca",)))
FAST_ARGS = ["--chunk-rows", "16", "--dtype", "float32", "--batch-size", "8", "--sample", "32",
             "--attention-size", "8", "--method", "pca", "--no-progress"]

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------- cluster
@pytest.fixture(scope="module")
def scheduler_file(tmp_path_factory):
    """`dask scheduler` + two `dask worker` processes (1 thread each) on 127.0.0.1; yields the scheduler file."""
    from distributed import Client

    base = tmp_path_factory.mktemp("dask")
    sfile = base / "scheduler.json"
    log = open(base / "cluster.log", "wb")
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--scheduler-file", str(sfile), "--no-dashboard"], env=ENV, stdout=log, stderr=log)]
    try:
        deadline = time.time() + 120
        while not sfile.exists():
            assert time.time() < deadline and procs[0].poll() is None, (base / "cluster.log").read_text()
            time.sleep(0.2)
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(sfile), "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard", "--local-directory", str(base / f"worker{i}")],
                env=ENV, stdout=log, stderr=log))
        with Client(scheduler_file=str(sfile), timeout=60) as client:
            client.wait_for_workers(2, timeout=180)
        yield str(sfile)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


# ---------------------------------------------------------------------------------------------------- reference
def reference(run: Run, name: str) -> dict[str, np.ndarray]:
    """What the store should hold for a checkpoint, computed one example at a time (no padding, no batching)."""
    model, tokenizer = load_checkpoint(run.checkpoint(name).weights_path)
    out = {k: [] for k in schema.EXTRACTED_ARRAYS}
    with torch.no_grad():
        for text, label in zip(run.column("text"), run.column("label")):
            enc = tokenizer(str(text), truncation=True, max_length=64, return_tensors="pt")
            res = model(**enc, output_hidden_states=True)
            hidden = torch.stack(res.hidden_states)[:, 0]  # [L+1, T, D]
            logits = res.logits[0]
            out["hidden_cls"].append(hidden[:, 0].numpy())
            out["hidden_mean"].append(hidden.mean(1).numpy())
            out["logits"].append(logits.numpy())
            out["loss"].append(F.cross_entropy(logits[None], torch.tensor([int(label)])).item())
            out["pred"].append(int(logits.argmax()))
            out["gold_prob"].append(logits.softmax(-1)[int(label)].item())
            out["length"].append(enc["input_ids"].shape[1])
    arrays = {k: np.array(v) for k, v in out.items()}
    arrays["hidden_cls"] = arrays["hidden_cls"].transpose(1, 0, 2)
    arrays["hidden_mean"] = arrays["hidden_mean"].transpose(1, 0, 2)
    return arrays


def assert_matches_reference(run: Run, name: str) -> None:
    ckpt, ref = run.checkpoint(name), reference(run, name)
    assert ckpt.complete
    for key in ("hidden_cls", "hidden_mean"):
        np.testing.assert_allclose(ckpt.read(key).astype(np.float32), ref[key], rtol=2e-3, atol=2e-3, err_msg=key)
    for key in ("logits", "loss", "gold_prob"):
        np.testing.assert_allclose(ckpt.read(key), ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(ckpt.read("pred"), ref["pred"])
    np.testing.assert_array_equal(ckpt.read("length"), ref["length"])


def store_arrays(path) -> dict[str, tuple[np.ndarray, dict]]:
    """Every array below store.zarr with its attrs (timings dropped), for store-equality checks."""
    import zarr

    root = zarr.open_group(str(Path(path) / schema.STORE_DIR), mode="r")
    out = {}
    for name, arr in root.members(max_depth=None):
        if isinstance(arr, zarr.Array):
            attrs = {k: v for k, v in arr.attrs.items() if k != "seconds"}
            out[name] = (arr[...], attrs)
    return out


def assert_same_store(a, b) -> None:
    left, right = store_arrays(a), store_arrays(b)
    assert sorted(left) == sorted(right)
    for name in left:
        if left[name][0].dtype.kind in "fiu":
            np.testing.assert_allclose(left[name][0], right[name][0], rtol=1e-6, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(left[name][0], right[name][0], err_msg=name)
        assert left[name][1] == right[name][1], name


# ---------------------------------------------------------------------------------------------------- inference
def test_steps_opening_the_run_at_once_never_see_it_unwritable(tmp_path):
    """After extraction the other steps start together, each probing that the store is writable: with one shared
    probe file, one step's clean-up removed another's probe and it reported the store unwritable (a CI failure)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.common import open_run

    path = make_tiny_run(tmp_path, n=20, checkpoints=1)
    with ThreadPoolExecutor(8) as pool:
        opened = list(pool.map(lambda _: open_run(path)[0].n_examples, range(400)))
    assert opened == [20] * 400
    assert not [p for p in (Path(path) / schema.PROGRESS_DIR).glob(".write-test*")]  # each probe cleaned up


def test_length_sorted_batches_equal_one_example_at_a_time(tmp_path):
    path = make_tiny_run(tmp_path, n=40, checkpoints=1)
    run = Run(path)
    model, tokenizer = load_checkpoint(run.checkpoint("epoch-0").weights_path, attn_implementation="sdpa")
    out = extract(model, tokenizer, run.column("text"), run.column("label"), batch_size=7, max_length=64)
    ref = reference(run, "epoch-0")
    assert len(set(ref["length"])) > 5  # lengths vary: padding and re-ordering were exercised
    for key in schema.EXTRACTED_ARRAYS:
        np.testing.assert_allclose(out[key].astype(np.float64), ref[key], rtol=2e-3, atol=2e-3, err_msg=key)


def test_auto_dtype_is_bf16_exactly_where_bf16_is_fast(tmp_path):
    flags = open("/proc/cpuinfo").read()
    fast = "amx_bf16" in flags or "avx512_bf16" in flags
    assert fast_bf16("cpu") == fast
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if fast else torch.float32)
    path = make_tiny_run(tmp_path, n=24, checkpoints=1)
    run = Run(path)
    weights = run.checkpoint("epoch-0").weights_path
    texts, labels = run.column("text"), run.column("label")
    full = extract(*load_checkpoint(weights, dtype=torch.float32), texts, labels)
    half = extract(*load_checkpoint(weights, dtype=torch.bfloat16), texts, labels)
    a, b = full["hidden_cls"][-1].astype(np.float32), half["hidden_cls"][-1].astype(np.float32)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99


# ---------------------------------------------------------------------------------------------------- cluster runs
def test_pipeline_on_a_real_cluster_matches_in_process_reference(tmp_path, scheduler_file):
    from distributed import Client

    path = make_tiny_run(tmp_path, n=150, checkpoints=2)
    url = f"file://{path}"  # an fsspec URL, as a store on shared storage would be given
    reports = []  # (step, done, total) after each task, as the page's demo build follows them
    summary = run_pipeline(url, scheduler_file=scheduler_file, dashboard=False,
                           progress=lambda *report: reports.append(report), **FAST)
    assert summary["extract"]["rows"] == 300 and summary["extract"]["tasks"] == 20
    steps = list(dict.fromkeys(step for step, _, _ in reports))
    # extraction first; the other steps run at once after it, so their reports interleave
    assert steps[0] == "extract" and set(steps) == {s for s in ("extract", "importance", "project", "neighbours")
                                                    if s in summary}
    assert all(step == "extract" for step, _, _ in reports[:20])
    for step in steps:
        mine = [(done, total) for name, done, total in reports if name == step]
        assert [d for d, _ in mine] == list(range(1, len(mine) + 1)) and {t for _, t in mine} == {len(mine)}
    assert len([r for r in reports if r[0] == "extract"]) == 20
    finished, fractions = {}, []  # the pipelines' share of the ETA bar, as the demo build accumulates it
    for step, done, total in reports:
        finished[step] = done / total
        fractions.append(pipeline_fraction(finished))
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(pipeline_fraction(dict.fromkeys(steps, 1)))
    run = Run(path)
    assert validate(path, deep=True) == []
    for name in run.checkpoints:
        assert_matches_reference(run, name)
    # head importance and attention: the same computation in-process on the same sample
    sample, split = importance_sample(run, 32)
    assert split == "validation" and len(sample) == 32 and (run.column("split", sample) == 1).all()
    assert run.checkpoint("epoch-0").array("head_importance").attrs["n_examples"] == 32
    for name in run.checkpoints:
        model, tokenizer = load_checkpoint(run.checkpoint(name).weights_path)
        ref = head_importance(model, tokenizer, run.column("text", sample), run.column("label", sample),
                              max_length=64, attention_size=8)
        ckpt = run.checkpoint(name)
        np.testing.assert_allclose(ckpt.read("head_importance_raw"), ref.raw, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(ckpt.read("head_importance"), ref.normalized, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(ckpt.read("attention"), ref.attention, rtol=1e-4, atol=1e-6)
    # PCA of the middle and last layer, the second checkpoint aligned onto the first
    for layer in (1, 2):
        first = pca(run.checkpoint("epoch-0").hidden(layer, "cls"))
        second = procrustes_align(pca(run.checkpoint("epoch-1").hidden(layer, "cls")), first)
        np.testing.assert_allclose(run.checkpoint("epoch-0").projection("pca", layer), first, atol=1e-4)
        np.testing.assert_allclose(run.checkpoint("epoch-1").projection("pca", layer), second, atol=1e-4)
        attrs = run.checkpoint("epoch-1").projection_attrs("pca", layer)
        assert attrs["aligned_to"] == "epoch-0" and attrs["pooling"] == "cls" and attrs["disparity"] >= 0
    # each worker loaded each checkpoint once for extraction (20 tasks), plus once per importance task
    with Client(scheduler_file=scheduler_file) as client:
        loads = client.run(lambda: __import__("t3vis.models.inference", fromlist=["x"]).LOAD_COUNT["n"])
    assert len(loads) == 2 and sum(loads.values()) <= 2 * 2 + 2
    # a rerun finds everything done and changes nothing
    before = store_arrays(path)
    again = run_pipeline(url, scheduler_file=scheduler_file, dashboard=False, progress=False, **FAST)
    assert again["extract"]["tasks"] == 0 and again["project"]["done"] == 0
    assert sorted(store_arrays(path)) == sorted(before)


def progress_marks(path: Path) -> int:
    return sum(1 for _ in (path / schema.PROGRESS_DIR).rglob("*.done")) if (path / schema.PROGRESS_DIR).exists() else 0


def first_checkpoint_committed(path: Path) -> bool:
    return (path / schema.STORE_DIR / "checkpoints" / "epoch-0" / "length" / "zarr.json").exists()


KILL_POINTS = {
    "extracting": lambda path: progress_marks(path) >= 7 * 6,  # six chunks written and marked
    "first checkpoint committed": first_checkpoint_committed,
}


@pytest.mark.parametrize("kill_when", list(KILL_POINTS))
def test_driver_killed_mid_run_resumes_to_the_same_store(tmp_path, scheduler_file, kill_when):
    path = make_tiny_run(tmp_path, n=800, checkpoints=2)
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(path, uninterrupted)
    cmd = [sys.executable, "-m", "pipelines", "pipeline", str(path), "--scheduler-file", scheduler_file, *FAST_ARGS]
    driver = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not KILL_POINTS[kill_when](path) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.02)
    assert driver.poll() is None, "the pipeline finished before it could be killed: " + driver.stderr.read().decode()
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    driver.stderr.close()
    killed = Run(path)
    assert not all(killed.checkpoint(n).complete for n in killed.checkpoints)
    visible = {name: arr for name, arr in store_arrays(path).items() if "/" in name}  # what an app would see now

    resumed = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    run_pipeline(str(uninterrupted), scheduler_file=scheduler_file, dashboard=False, progress=False, **FAST)
    assert_same_store(path, uninterrupted)
    assert validate(path, deep=True) == []  # every chunk present and matching its checksum after the resume
    final = store_arrays(uninterrupted)
    checked = 0
    for name, (values, _) in visible.items():  # every unit visible at the kill was already complete
        if name.startswith("checkpoints/"):
            np.testing.assert_allclose(values, final[name][0], rtol=1e-6, err_msg=name)
            checked += 1
    assert checked > 0 if kill_when == "first checkpoint committed" else checked == 0
    assert not any((path / schema.STAGING_DIR).rglob("zarr.json"))  # nothing left half-done


# ---------------------------------------------------------------------------------------------------- bad input
def test_missing_unreadable_or_mismatched_checkpoints_fail_before_any_task(tmp_path, scheduler_file):
    path = make_tiny_run(tmp_path, n=20, checkpoints=2)
    weights = path / "weights" / "epoch-1"
    with dask_client(scheduler_file=scheduler_file, dashboard=False) as client:
        shutil.rmtree(weights)
        with pytest.raises(ModelError, match=r"checkpoint 'epoch-1'.*does not exist"):
            run_extract(client, str(path), progress=False)
        weights.mkdir()
        (weights / "config.json").write_text("{not json")
        with pytest.raises(ModelError, match=r"cannot read .*config.json"):
            run_extract(client, str(path), progress=False)
        save_model(tiny_model(4), tiny_tokenizer(tmp_path / "tok"), weights)  # 4 labels, the run has 3
        with pytest.raises(ModelError, match=r"num_labels = 4, but the run has labels \['business', 'sport', 'tech'\]"):
            run_extract(client, str(path), progress=False)
    run = Run(path)
    assert not any(run.checkpoint(n).has("hidden_cls") for n in run.checkpoints)
    assert progress_marks(path) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_fails_clearly_within_the_timeout(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.time()
    with pytest.raises(PipelineError, match=f"scheduler {address} did not answer within 2 s"):
        with dask_client(address, timeout=2):
            pass
    assert time.time() - started < 15
    path = make_tiny_run(tmp_path, n=8, checkpoints=1)
    cli = subprocess.run([sys.executable, "-m", "pipelines", "extract", str(path), "--scheduler", address,
                          "--timeout", "2"], env=ENV, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "did not answer within 2 s" in cli.stderr and "Traceback" not in cli.stderr


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own (we run as root), unmounted afterwards: a disk we can fill or make read-only."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_store_fails_clearly_and_changes_nothing(tmp_path, tmpfs):
    path = shutil.copytree(make_tiny_run(tmp_path, n=20, checkpoints=1), tmpfs / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(PipelineError, match=r"not writable .*Read-only file system"):
        run_pipeline(str(path), n_workers=1, processes=False, dashboard=False, progress=False, **FAST)
    assert not Run(path).checkpoint("epoch-0").has("hidden_cls")


def test_full_disk_fails_clearly_marks_nothing_partial_and_resumes(tmp_path, tmpfs):
    path = shutil.copytree(make_tiny_run(tmp_path, n=600, checkpoints=1), tmpfs / "run")
    used = int(subprocess.run(["df", "--output=used", "-B1", str(tmpfs)], capture_output=True, text=True,
                              check=True).stdout.split()[-1])
    subprocess.run(["mount", "-o", f"remount,size={used + 96 * 1024}", str(tmpfs)], check=True)
    with pytest.raises(PipelineError, match="No space left on device"):
        run_pipeline(str(path), ["extract"], n_workers=1, processes=False, dashboard=False, progress=False,
                     extract=dict(chunk_rows=16, dtype="float32"))
    run, writer = Run(path), RunWriter(path)
    assert not run.checkpoint("epoch-0").complete
    assert not any(writer.is_done(unit_of("epoch-0", a)) for a in schema.EXTRACTED_ARRAYS)
    # every chunk marked done holds exactly what the reference computes for its rows
    import zarr

    ref = reference(run, "epoch-0")
    marked = writer.chunks_done(unit_of("epoch-0", "hidden_mean"))
    staged = zarr.open_array(str(path / schema.STAGING_DIR / unit_of("epoch-0", "hidden_mean")), mode="r")
    for index in marked:
        rows = slice(16 * index, 16 * (index + 1))
        np.testing.assert_allclose(staged[:, rows].astype(np.float32), ref["hidden_mean"][:, rows], atol=2e-3)
    # with space again, a rerun finishes the job
    subprocess.run(["mount", "-o", "remount,size=16m", str(tmpfs)], check=True)
    run_pipeline(str(path), ["extract"], n_workers=1, processes=False, dashboard=False, progress=False,
                 extract=dict(chunk_rows=16, dtype="float32"))
    assert_matches_reference(Run(path), "epoch-0")
    assert validate(path, deep=True) == []
