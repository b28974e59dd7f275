"""Extraction: per checkpoint and row chunk, one Dask task writes pooled hidden states, logits, loss, prediction,
gold-label probability and length for those rows.

Units and resume: each extracted array of a checkpoint is a staged unit (``RunWriter.staged_array``), chunked by
rows (hidden states ``[1, chunk_rows, D]``: a view reading one layer reads only that layer). A task writes whole
chunks of all seven arrays, then marks its chunk done in each; the driver commits the seven units once every chunk
is marked, then marks the checkpoint complete. A killed run keeps its marked chunks, and a rerun does only the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import time
from dataclasses import dataclass

import numpy as np

from t3vis.errors import PipelineError
from t3vis.store import schema
from t3vis.store.weights import local_weights
from t3vis.store.writer import RunWriter

from .cluster import gather, limit_threads
from .common import checkpoint_weights, open_run, read_rows, select_checkpoints, store_errors


@dataclass(frozen=True)
class ChunkTask:
    """Everything a worker needs for one chunk; small, so it travels through the graph cheaply."""

    run: str
    checkpoint: str
    weights: str
    index: int
    start: int
    stop: int
    dtype: str = "auto"
    batch_size: int = 64
    max_length: int | None = None
    device: str | None = None
    task: str | None = None  # the run's task (``t3vis.tasks``): how logits become per-unit outputs


def array_layout(run, chunk_rows: int) -> dict[str, tuple[tuple, np.dtype, tuple]]:
    """name -> (shape, dtype, chunks) of each extracted array of a checkpoint of ``run``."""
    return schema.extracted_layout(run.n_examples, run.num_layers, int(run.model["hidden_size"]),
                                   len(run.label_names), chunk_rows)


def unit_of(checkpoint: str, array: str) -> str:
    return schema.checkpoint_path(checkpoint, array)


def extract_chunk(task: ChunkTask) -> dict:
    """The Dask task: forward one chunk of rows, write every array's chunk, then mark it done."""
    import torch

    from t3vis.analysis.extraction import extract
    from t3vis.models.inference import cached_checkpoint
    from t3vis.tasks import get_task

    limit_threads()
    started = time.perf_counter()
    loaded = cached_checkpoint(local_weights(task.weights), dtype=task.dtype, device=task.device)
    run_task = get_task(task.task)
    if run_task.unit == "word":
        out = _extract_words(loaded, task, run_task)
    else:
        rows = slice(task.start, task.stop)
        texts = read_rows(task.run, "text", rows)
        labels = read_rows(task.run, "label", rows)
        out = extract(loaded.model, loaded.tokenizer, texts, labels, batch_size=task.batch_size,
                      max_length=task.max_length, task=run_task)
    writer = RunWriter(task.run)
    units = [unit_of(task.checkpoint, a) for a in schema.EXTRACTED_ARRAYS]
    if not all(writer.is_staged(unit) for unit in units):
        return {"skipped": True}  # committed or reset meanwhile, by another driver: write nothing
    writer.write_extracted_chunk(task.checkpoint, task.index, out)
    return {"rows": task.stop - task.start, "tokens": int(out["length"].sum()), "dtype": str(loaded.dtype),
            "seconds": time.perf_counter() - started, "torch_threads": torch.get_num_threads()}


def _extract_words(loaded, task: ChunkTask, run_task) -> dict:
    """A word chunk's arrays: the forward pass needs whole sentences, so the chunk is widened to the sentences its
    first and last words belong to, and only the chunk's own rows are kept."""
    from t3vis.analysis.extraction import extract_words
    from t3vis.tasks.token_classification import sentence_offsets

    sentence = read_rows(task.run, "sentence", slice(0, None))
    offsets = sentence_offsets(sentence)
    lo, hi = int(offsets[sentence[task.start]]), int(offsets[sentence[task.stop - 1] + 1])
    bounds = offsets[(offsets > lo) & (offsets < hi)] - lo
    words = np.split(np.asarray(read_rows(task.run, "text", slice(lo, hi)), object), bounds)
    tags = np.split(read_rows(task.run, "label", slice(lo, hi)).astype(np.int64), bounds)
    out = extract_words(loaded.model, loaded.tokenizer, [list(map(str, w)) for w in words], tags,
                        batch_size=task.batch_size, max_length=task.max_length, task=run_task)
    keep = slice(task.start - lo, task.stop - lo)
    return {name: values[:, keep] if name.startswith("hidden") else values[keep] for name, values in out.items()}


def worker_dtypes(client, dtype: str, device: str | None) -> str:
    """The compute dtype(s) the workers will use for ``dtype`` (``auto`` is decided per worker), e.g. "bfloat16"."""
    def resolve(dtype=dtype, device=device):
        from t3vis.models.inference import default_device, resolve_dtype

        return str(resolve_dtype(dtype, device or default_device())).replace("torch.", "")

    return ",".join(sorted(set(client.run(resolve).values())))


def plan_checkpoint(run, writer: RunWriter, name: str, chunk_rows: int) -> list[int] | None:
    """Chunk indices still to do for ``name`` (creating staged arrays as needed); None when all are committed."""
    units = {a: unit_of(name, a) for a in schema.EXTRACTED_ARRAYS}
    pending_units = {a: u for a, u in units.items() if not writer.is_done(u)}
    if not pending_units:
        return None
    layout = array_layout(run, chunk_rows)
    n_chunks = -(-run.n_examples // max(1, min(chunk_rows, run.n_examples)))
    done = set(range(n_chunks))
    for array, unit in pending_units.items():
        shape, dtype, chunks = layout[array]
        writer.staged_array(unit, shape, dtype, chunks, attrs=schema.HIDDEN_ATTRS.get(array))
        done &= writer.chunks_done(unit)
    return [i for i in range(n_chunks) if i not in done]


def run_extract(client, url: str, *, checkpoints: list[str] | None = None, chunk_rows: int = schema.CHUNK_ROWS,
                dtype: str = "auto", batch_size: int = 64, max_length: int | None = None, device: str | None = None,
                progress: "bool | Callable[[str, int, int], None]" = True) -> dict:
    """Extract every (checkpoint, chunk) not yet done, on ``client``'s cluster; returns a summary.

    Earlier checkpoints get higher priority, so workers finish one checkpoint (one model each) before the next.
    """
    run, writer = open_run(url)
    names = select_checkpoints(run, checkpoints)
    max_length = max_length or run.max_length
    summary = {"checkpoints": {}, "rows": 0, "tokens": 0, "tasks": 0}
    with store_errors(run.loc.url, "extract"):
        plans = {name: plan_checkpoint(run, writer, name, chunk_rows) for name in names}
        # every checkpoint with work left is checked before any task starts
        weights = {name: checkpoint_weights(run, name) for name, pending in plans.items() if pending is not None}
        attrs = {"dtype": worker_dtypes(client, dtype, device), "max_length": max_length, "chunk_rows": chunk_rows}
        for name, pending in plans.items():
            if pending is None or pending == []:  # [] when killed after the last chunk, before the commit
                if not run.checkpoint(name).complete:
                    writer.commit_checkpoint(name, extract=attrs)
                summary["checkpoints"][name] = "already done"
    futures, remaining, describe = [], {}, {}
    rows = max(1, min(chunk_rows, run.n_examples))
    for priority, name in enumerate(names):
        pending = plans[name]
        if not pending:
            continue
        remaining[name] = len(pending)
        summary["checkpoints"][name] = f"{len(pending)} chunk(s) to do"
        for index in pending:
            task = ChunkTask(run.loc.url, name, weights[name], index, index * rows,
                             min(run.n_examples, (index + 1) * rows), dtype=dtype, batch_size=batch_size,
                             max_length=max_length, device=device, task=run.task)
            future = client.submit(extract_chunk, task, pure=False, priority=-priority,
                                   key=f"extract-{name}-{index}-{time.time_ns()}")
            futures.append(future)
            describe[future.key] = (name, index)
    started = time.perf_counter()

    def on_result(future, result):
        name, index = describe[future.key]
        if result.get("skipped"):
            raise PipelineError(f"extract: checkpoint {name!r} chunk {index}: its staged arrays vanished while the "
                                "pipeline ran (is another pipeline writing this run?); rerun to resume")
        remaining[name] -= 1
        if remaining[name] == 0:
            writer.commit_checkpoint(name, extract=attrs)
            summary["checkpoints"][name] = "extracted"

    results = gather(client, futures, desc="extract", progress=progress, on_result=on_result,
                     describe=lambda f: "checkpoint {!r} chunk {}".format(*describe[f.key]))
    summary["seconds"] = time.perf_counter() - started
    summary["tasks"] = len(results)
    summary["rows"] = sum(r.get("rows", 0) for r in results)
    summary["tokens"] = sum(r.get("tokens", 0) for r in results)
    return summary
