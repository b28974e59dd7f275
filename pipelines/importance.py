"""Head importance and aggregate attention: one Dask task per checkpoint, over a fixed validation sample.

Each of the three arrays (``head_importance``, ``head_importance_raw``, ``attention``) is written as a whole unit
(staged, then renamed); a checkpoint is skipped on rerun once all three exist.
"""

from __future__ import annotations

from collections.abc import Callable

import time
from dataclasses import dataclass

import numpy as np

from t3vis.store import schema
from t3vis.store.weights import local_weights
from t3vis.store.writer import RunWriter

from .cluster import gather, limit_threads
from .common import checkpoint_weights, open_run, select_checkpoints

ARRAYS = ("head_importance_raw", "head_importance", "attention")


@dataclass(frozen=True)
class ImportanceTask:
    run: str
    checkpoint: str
    weights: str
    rows: tuple[int, ...]
    split: str
    dtype: str = "auto"
    batch_size: int = 32
    max_length: int | None = None
    attention_size: int = 64
    device: str | None = None


def importance_sample(run, size: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Up to ``size`` validation rows (sorted), the same for every checkpoint; all rows if there is no validation."""
    split = run.column("split")
    categories = run.categories("split") or list(schema.SPLITS)
    code = categories.index("validation") if "validation" in categories else -1
    rows, which = np.flatnonzero(split == code), "validation"
    if len(rows) == 0:
        rows, which = np.arange(run.n_examples), "all"
    if len(rows) > size:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))
    return rows, which


def importance_checkpoint(task: ImportanceTask) -> dict:
    """The Dask task: importance + attention for one checkpoint, written as three atomic units."""
    from t3vis.analysis.importance import head_importance, word_head_importance
    from t3vis.tasks import get_task
    from t3vis.tasks.token_classification import run_sentences
    from t3vis.models.inference import cached_checkpoint
    from t3vis.store import Run

    limit_threads()
    started = time.perf_counter()
    loaded = cached_checkpoint(local_weights(task.weights), dtype=task.dtype, device=task.device,
                               attn_implementation="eager")
    run = Run(task.run)
    rows = np.asarray(task.rows, dtype=np.int64)
    options = dict(batch_size=task.batch_size, max_length=task.max_length, attention_size=task.attention_size)
    if get_task(run.task).unit == "word":  # the sentences of the sampled words, whole
        sentences, tags = run_sentences(run, rows)
        result = word_head_importance(loaded.model, loaded.tokenizer, sentences, tags, **options)
    else:
        texts, labels = run.column("text", rows), run.column("label", rows)
        result = head_importance(loaded.model, loaded.tokenizer, texts, labels, **options)
    attrs = {"n_examples": result.n_examples, "split": task.split, "dtype": str(loaded.dtype),
             "batch_size": task.batch_size, "method": "michel2019: mean over batches of |d loss / d gate|"}
    writer = RunWriter(task.run)
    base = schema.checkpoint_path(task.checkpoint)
    writer.write_array(f"{base}/head_importance_raw", result.raw, attrs)
    writer.write_array(f"{base}/head_importance", result.normalized, {**attrs, "normalized": "per layer, L2"})
    writer.write_array(f"{base}/attention", result.attention,
                       {**attrs, "positions": task.attention_size,
                        "note": "mean attention over the sample, first m positions; [i, j] over examples having both"})
    return {"checkpoint": task.checkpoint, "seconds": time.perf_counter() - started, "n": result.n_examples}


def run_importance(client, url: str, *, checkpoints: list[str] | None = None, sample: int = 512, seed: int = 0,
                   dtype: str = "auto", batch_size: int = 32, max_length: int | None = None, attention_size: int = 64,
                   device: str | None = None, progress: "bool | Callable[[str, int, int], None]" = True) -> dict:
    """Head importance and aggregate attention for every checkpoint not yet done."""
    run, writer = open_run(url)
    names = select_checkpoints(run, checkpoints)
    rows, split = importance_sample(run, sample, seed)
    max_length = max_length or run.max_length
    summary = {"checkpoints": {}, "sample": len(rows), "split": split}
    todo = [name for name in names if not all(writer.is_done(schema.checkpoint_path(name, a)) for a in ARRAYS)]
    weights = {name: checkpoint_weights(run, name) for name in todo}  # all checked before any task starts
    summary["checkpoints"] = {name: "already done" for name in names if name not in todo}
    futures = []
    for priority, name in enumerate(todo):
        task = ImportanceTask(run.loc.url, name, weights[name], tuple(int(r) for r in rows), split,
                              dtype=dtype, batch_size=batch_size, max_length=max_length,
                              attention_size=attention_size, device=device)
        futures.append(client.submit(importance_checkpoint, task, pure=False, priority=-priority,
                                     key=f"importance-{name}-{time.time_ns()}"))
    started = time.perf_counter()
    for result in gather(client, futures, desc="importance", progress=progress):
        summary["checkpoints"][result["checkpoint"]] = f"done in {result['seconds']:.1f} s"
    summary["seconds"] = time.perf_counter() - started
    return summary
