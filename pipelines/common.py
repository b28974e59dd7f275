"""What every step needs: an opened, writable run; checkpoint weights checked before any work; rows read on workers."""

from __future__ import annotations

import functools
import json
import posixpath
import uuid
from contextlib import contextmanager

import numpy as np

from t3vis.errors import ModelError, PipelineError, StoreError
from t3vis.store import Run, RunWriter, schema
from t3vis.store.location import Location

#: Decoded chunks of an example column a worker keeps: consecutive tasks share a text chunk (16,384 rows of text
#: hold four tasks' rows).
WORKER_CHUNK_BYTES = 32 << 20


@contextmanager
def store_errors(url: str, step: str):
    """A failing read or write of the store on the driver (full or read-only disk) becomes a PipelineError."""
    try:
        yield
    except OSError as err:
        raise PipelineError(f"{step}: cannot write the run store {url}: {err} (finished units are kept; fix the "
                            "cause and rerun to resume)") from None


def open_run(url: str) -> tuple[Run, RunWriter]:
    """The run for reading and writing; a PipelineError at once if the store cannot be written."""
    run = Run(url)
    writer = RunWriter(run.loc)
    # a name of its own: steps run at once after extraction, and one's clean-up must not remove another's probe
    probe = posixpath.join(schema.PROGRESS_DIR, f".write-test-{uuid.uuid4().hex}")
    try:
        run.loc.touch(probe)
        run.loc.rm(probe)
    except OSError as err:
        raise PipelineError(f"run store {run.loc.url} is not writable ({err}); the pipelines write into it: use a "
                            "writable copy or fix the permissions / free space") from None
    return run, writer


def select_checkpoints(run: Run, names: "list[str] | None") -> list[str]:
    """``names`` in training order (all checkpoints when None); unknown names are a StoreError."""
    have = run.checkpoints
    if not names:
        return have
    unknown = [n for n in names if n not in have]
    if unknown:
        raise StoreError(f"{run.loc.url}: no checkpoint(s) {unknown} (have {have})")
    return [n for n in have if n in names]


def checkpoint_weights(run: Run, name: str) -> str:
    """The checkpoint's weight directory, checked against the run: it exists (``Checkpoint.weights``), and its
    config fits the run.

    Checked on the driver so that a missing directory or a model with the wrong number of labels, layers or
    hidden size fails before any task starts, with the path and both values in the message.
    """
    weights = run.checkpoint(name).weights()
    loc = Location.of(weights)
    config_path = loc.path("config.json")
    try:
        if not loc.exists("config.json"):
            raise ModelError(f"checkpoint '{name}': {weights} has no config.json (expected a saved Hugging Face "
                             "model directory)")
        config = json.loads(loc.fs.cat_file(config_path))
    except (OSError, ValueError) as err:
        raise ModelError(f"checkpoint '{name}': cannot read {config_path} ({err})") from None
    expected = {
        "num_labels": len(run.label_names),
        "num_hidden_layers": run.num_layers,
        "hidden_size": int(run.model["hidden_size"]),
    }
    found = {
        "num_labels": len(config["id2label"]) if "id2label" in config else config.get("num_labels", 2),
        "num_hidden_layers": config.get("num_hidden_layers", config.get("n_layer", config.get("n_layers"))),
        "hidden_size": config.get("hidden_size", config.get("n_embd", config.get("dim"))),
    }
    for key, value in expected.items():
        if found[key] is not None and int(found[key]) != value:
            what = f"labels {run.label_names}" if key == "num_labels" else f"model.{key} = {value}"
            raise ModelError(f"checkpoint '{name}': {config_path} has {key} = {found[key]}, but the run has {what}; "
                             "the checkpoint does not belong to this run")
    return weights


@functools.lru_cache(maxsize=4)
def _column_rows(url: str, created: str, column: str):
    """A worker's reader of one example column, kept: consecutive tasks on a worker share its cached chunks.

    ``created`` (the run's creation time) is part of the key, so a run re-created at the same path is read anew.
    """
    return Run(url).rows(column, cache_bytes=WORKER_CHUNK_BYTES)


def read_rows(url: str, column: str, rows: slice) -> np.ndarray:
    """Rows ``rows`` of an example column, reading whole stored chunks once per worker."""
    return _column_rows(url, str(Run(url).attrs.get("created")), column)(rows)


def default_layers(num_layers: int) -> list[int]:
    """The middle and the last layer (0 is the embedding output)."""
    return sorted({max(1, num_layers // 2), num_layers})


def hidden_inputs(run, names: list[str], layers: list[int] | None, pooling: str | None) -> tuple[list[int], str]:
    """The layers (default: ``default_layers``) and pooling (default: the model type's) that ``project`` and
    ``neighbours`` read, checked against the run: every layer exists, every checkpoint has that hidden state."""
    from t3vis.models.inference import default_pooling

    layers = list(layers) if layers else default_layers(run.num_layers)
    for layer in layers:
        if not 0 <= layer <= run.num_layers:
            raise StoreError(f"layer {layer}: expected 0..{run.num_layers} (0 is the embedding output)")
    pooling = pooling or default_pooling(run.model.get("model_type", ""))
    if pooling not in schema.POOLINGS:
        raise StoreError(f"pooling {pooling!r}: expected one of {schema.POOLINGS}")
    not_extracted = [n for n in names if not run.checkpoint(n).has(f"hidden_{pooling}")]
    if not_extracted:
        raise StoreError(f"checkpoint(s) {not_extracted}: no hidden_{pooling} yet; run `t3vis extract` first")
    return layers, pooling
