"""The run store's layout, in one place, so the writer, reader and validator agree.

A run directory holds a Zarr v3 group ``store.zarr`` and the checkpoint weights (safetensors)::

    RUN/
      store.zarr/                      root attrs: schema_version, name, model, dataset, label_names, ...
        examples/<column>              one 1-D array per column, length n (text, label, split, length, ...);
                                       n counts units: examples, or words for token classification (TASK_COLUMNS)
        dynamics/<epoch>/{gold_prob,pred,loss}   one group per recorded epoch, arrays of length n
                         [margin, train_gold_prob, train_margin]   optional (OPTIONAL_DYNAMICS_ARRAYS), and for
                         [typed_gold_prob, type_prob, neighbour_type_prob]   token runs
        checkpoints/<name>/            attrs: step, epoch, weights, complete
          hidden_cls, hidden_mean      [layers + 1, n, hidden] float16 (embeddings output is layer 0)
          logits [n, C], loss, pred, gold_prob, length [n]
          projection/<method>/layer_<k>   [n, 2] float32
          neighbours/layer_<k>/{ids,sims}  cosine kNN graph of that layer's pooled hidden states: [n, K] int32 row
                                       ids and [n, K] float16 similarities, best first, the row itself left out
          head_importance, head_importance_raw   [layers, heads] float32
          attention                    [layers, heads, m, m] float32 (mean attention over a sample)
        crossfit/{probs,fold}          optional (`t3vis crossfit`): out-of-sample probabilities [n, C] float32
                                       (NaN where not cross-fitted) and each row's fold [n] (-1: none)
      weights/<name>/                  model.safetensors, config.json, tokenizer files
      .staging/, .progress/            units being written (never read by the app)

Every array or group below ``store.zarr`` appears only once it is complete: it is written under
``.staging/`` and renamed into place (see ``writer.py``).

Versions: 2 (this one) checksums every chunk (Zarr v3 ``crc32c`` codec, last in the codec chain) and stores every
chunk, even one equal to the fill value, so an absent chunk is damage and never silently reads as zeros
(``integrity.py``). Version 1 runs (no checksums; chunks equal to the fill value were not stored) still open and
read as before; ``validate`` reports them as unchecked. Arrays written into a version 1 run by this version (the
pipelines adding a checkpoint's arrays) carry checksums and are checked: the codec chain says which arrays are.
"""

from __future__ import annotations

import numpy as np

SCHEMA_VERSION = 2
#: Versions this t3vis opens; 1 is read without integrity guarantees (see the module docstring).
READABLE_VERSIONS = (1, 2)
STORE_DIR = "store.zarr"
#: The file that makes a directory a run: the root group's metadata.
ROOT_METADATA = STORE_DIR + "/zarr.json"
WEIGHTS_DIR = "weights"
STAGING_DIR = ".staging"
PROGRESS_DIR = ".progress"

#: Rows per chunk of the per-checkpoint arrays; pipelines write one chunk per unit.
CHUNK_ROWS = 4096
#: Rows per chunk of 1-D example columns and dynamics (large: the app reads whole columns).
COLUMN_CHUNK_ROWS = 1 << 18
#: Rows per chunk of string columns: a table page sorted by loss touches rows all over the run, and decoding a
#: small chunk of strings is cheap where a 262k-row one costs ~100 ms.
TEXT_CHUNK_ROWS = 1 << 14

REQUIRED_ROOT_ATTRS = ("schema_version", "name", "label_names", "model", "dataset", "n_examples")
REQUIRED_MODEL_ATTRS = ("name_or_path", "model_type", "num_layers", "num_heads", "hidden_size")
REQUIRED_COLUMNS = ("id", "text", "label", "split")
SPLITS = ("train", "validation")
#: Tasks a run can be recorded for (root attr ``task``; ``t3vis.tasks.TASKS`` implements each). Runs written
#: before tasks existed have no ``task`` attr and are sequence classification.
TASKS = ("sequence_classification", "token_classification")
DEFAULT_TASK = "sequence_classification"
#: Columns a task adds to ``examples/``. A token-classification run's rows are words (sentences in order, words in
#: order): ``sentence`` is the sentence's index, ``position`` the word's index in it (see
#: ``t3vis/tasks/token_classification.py``).
TASK_COLUMNS = {"token_classification": ("sentence", "position")}

#: Column attribute ``kind`` values: how views should treat a column.
KINDS = ("id", "text", "string", "categorical", "continuous", "flag")

DYNAMICS_ARRAYS = {"gold_prob": np.float32, "pred": np.int16, "loss": np.float32}
#: Recorded when the recorder has full probabilities: gold-label probability minus the largest other one (AUM);
#: ``train_*``: the same from the training forward passes (before each update), the mean over the epoch's visits,
#: NaN for rows not trained on that epoch.
#: ``typed_gold_prob`` (token runs): the given tag's probability among the entity tags only (every tag but ``O``),
#: NaN for words tagged ``O``: whether the model agrees with a word's *type* once it is an entity.
#: ``type_prob`` (token runs): the same for the given *type*, its ``B-`` and ``I-`` tags summed.
#: ``neighbour_type_prob`` (token runs): the share of a word's nearest entity words (cosine, the epoch's last hidden
#: states, every split) given its type, Laplace-smoothed (``tasks.token_classification.neighbour_type_prob``).
OPTIONAL_DYNAMICS_ARRAYS = {"margin": np.float32, "train_gold_prob": np.float32, "train_margin": np.float32,
                            "typed_gold_prob": np.float32, "type_prob": np.float32,
                            "neighbour_type_prob": np.float32}

#: Optional group of K-fold cross-fitted class probabilities (``t3vis crossfit``); name -> dtype.
CROSSFIT_GROUP = "crossfit"
CROSSFIT_ARRAYS = {"probs": np.float32, "fold": np.int16}

#: name -> (shape template, dtype kind). Symbols: L layers, H heads, D hidden, n examples, C classes, m positions.
CHECKPOINT_ARRAYS = {
    "hidden_cls": (("L+1", "n", "D"), "f"),
    "hidden_mean": (("L+1", "n", "D"), "f"),
    "logits": (("n", "C"), "f"),
    "loss": (("n",), "f"),
    "pred": (("n",), "i"),
    "gold_prob": (("n",), "f"),
    "length": (("n",), "i"),
    "head_importance": (("L", "H"), "f"),
    "head_importance_raw": (("L", "H"), "f"),
    "attention": (("L", "H", "m", "m"), "f"),
}
#: Arrays the extract step writes; a checkpoint is ``complete`` once these exist.
EXTRACTED_ARRAYS = ("hidden_cls", "hidden_mean", "logits", "loss", "pred", "gold_prob", "length")
#: What each pooled hidden-state array holds (its attrs).
HIDDEN_ATTRS = {
    "hidden_cls": {"pooling": "cls", "note": "the token the classifier reads: first for encoders, last real token "
                                             "for decoders; layer 0 is the embedding output"},
    "hidden_mean": {"pooling": "mean", "note": "mean over real (non-padding) tokens; layer 0 is the embedding output"},
}


def extracted_layout(n: int, layers: int, hidden: int, classes: int,
                     chunk_rows: int = CHUNK_ROWS) -> dict[str, tuple[tuple, np.dtype, tuple]]:
    """name -> (shape, dtype, chunks) of each extracted array of a checkpoint (``layers``: the model's, without the
    embedding output); hidden states are chunked per layer, so a view reading one layer reads only that layer."""
    rows = max(1, min(chunk_rows, n))
    return {
        "hidden_cls": ((layers + 1, n, hidden), np.float16, (1, rows, hidden)),
        "hidden_mean": ((layers + 1, n, hidden), np.float16, (1, rows, hidden)),
        "logits": ((n, classes), np.float32, (rows, classes)),
        "loss": ((n,), np.float32, (rows,)),
        "pred": ((n,), np.int16, (rows,)),
        "gold_prob": ((n,), np.float32, (rows,)),
        "length": ((n,), np.int32, (rows,)),
    }


POOLINGS = ("cls", "mean")
PROJECTION_METHODS = ("umap", "tsne", "pca")
#: A checkpoint's kNN graph of one layer (``pipelines/neighbours.py``): array name -> dtype, each ``[n, K]``.
NEIGHBOURS_GROUP = "neighbours"
NEIGHBOURS_ARRAYS = {"ids": np.int32, "sims": np.float16}


def default_chunks(name: str, shape: tuple[int, ...], chunk_rows: int = CHUNK_ROWS) -> tuple[int, ...]:
    """Canonical chunking: hidden states per (layer, row block); per-example arrays by row block; small arrays whole."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith("hidden_") and len(shape) == 3:
        return (1, max(1, min(chunk_rows, shape[1])), shape[2])
    if base in ("head_importance", "head_importance_raw", "attention") or not shape:
        return tuple(max(1, s) for s in shape)
    return (max(1, min(chunk_rows, shape[0])),) + tuple(shape[1:])


def row_axis(name: str) -> int:
    """The axis of array ``name`` that runs over examples: the second for hidden states ``[layers + 1, n, D]``."""
    return 1 if name.rsplit("/", 1)[-1].startswith("hidden_") else 0


def expected_shape(template: tuple[str, ...], sizes: dict[str, int]) -> tuple[int | None, ...]:
    """Resolve a shape template; ``None`` where the size is free (``m``)."""
    out = []
    for sym in template:
        if sym == "L+1":
            out.append(sizes["L"] + 1)
        else:
            out.append(sizes.get(sym))
    return tuple(out)


def checkpoint_path(name: str, *parts: str) -> str:
    """The one spelling of a checkpoint's group and what lies under it: ``checkpoints/{name}/{parts...}``."""
    return "/".join(("checkpoints", str(name), *map(str, parts)))


def layer_key(layer: int) -> str:
    return f"layer_{int(layer)}"


def parse_layer_key(key: str) -> int:
    return int(key.split("_", 1)[1])
