"""Reading a run store lazily: a column, a layer or a page of rows reads only those chunks."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import pandas as pd
import zarr

from ..errors import SchemaVersionError, StoreError
from . import schema
from .location import Location


@dataclass(frozen=True)
class Dynamics:
    """Per-epoch training dynamics, arrays of shape [epochs, n]."""

    epochs: np.ndarray
    gold_prob: np.ndarray
    pred: np.ndarray
    loss: np.ndarray
    margin: np.ndarray | None = None


def _rows_of(arr: zarr.Array, rows: "slice | np.ndarray | None") -> np.ndarray:
    """All of ``arr``, or the given rows of its first axis (reading only the chunks that hold them)."""
    if rows is None:
        return arr[...]
    if isinstance(rows, slice):
        return arr[rows]
    rows = np.asarray(rows)
    return arr.get_orthogonal_selection((rows,) + (slice(None),) * (arr.ndim - 1)) if len(rows) else arr[:0]


class Run:
    """A read-only view of one run. Cheap to open; nothing is read until asked for."""

    def __init__(self, path: "str | Location", **storage_options):
        self.loc = Location.of(path, **storage_options)
        if not self.loc.exists():
            raise StoreError(f"{self.loc.url}: run directory does not exist")
        if not self.loc.exists(schema.STORE_DIR, "zarr.json"):
            raise StoreError(f"{self.loc.url}: not a t3vis run (expected {schema.STORE_DIR}/zarr.json)")
        try:
            self.root = self.loc.open_group(schema.STORE_DIR, mode="r")
            attrs = dict(self.root.attrs)
        except Exception as exc:  # corrupt metadata
            raise StoreError(f"{self.loc.url}/{schema.STORE_DIR}: cannot be read as a Zarr v3 group ({exc})") from exc
        version = attrs.get("schema_version")
        if version != schema.SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.loc.url}: schema_version is {version!r}, this t3vis reads version {schema.SCHEMA_VERSION}"
                " (re-create the run with this version of t3vis)")
        self.attrs = attrs

    def __repr__(self) -> str:
        return f"Run({self.loc.url!r}, n={self.n_examples}, checkpoints={self.checkpoints})"

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self.attrs["name"]

    @property
    def label_names(self) -> list[str]:
        return list(self.attrs["label_names"])

    @property
    def n_examples(self) -> int:
        return int(self.attrs["n_examples"])

    @property
    def model(self) -> dict:
        return dict(self.attrs["model"])

    @property
    def num_layers(self) -> int:
        return int(self.model["num_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.model["num_heads"])

    # ------------------------------------------------------------------ examples
    @cached_property
    def columns(self) -> list[str]:
        return sorted(self.root["examples"].array_keys())

    def column_attrs(self, name: str) -> dict:
        return dict(self._column_array(name).attrs)

    def _column_array(self, name: str) -> zarr.Array:
        try:
            return self.root[f"examples/{name}"]
        except KeyError:
            raise StoreError(f"{self.loc.url}: no example column '{name}' (have {self.columns})") from None

    def column(self, name: str, rows: "slice | np.ndarray | None" = None) -> np.ndarray:
        """One column (raw values: category codes for categorical columns)."""
        return _rows_of(self._column_array(name), rows)

    def categories(self, name: str) -> list[str] | None:
        return self.column_attrs(name).get("categories")

    def examples(self, rows: "slice | np.ndarray | None" = None, columns: Sequence[str] | None = None,
                 decode: bool = True) -> pd.DataFrame:
        """A DataFrame of the given rows/columns; category codes decoded to labels when ``decode``."""
        columns = list(columns) if columns is not None else self.columns
        data = {}
        for col in columns:
            values = self.column(col, rows)
            cats = self.categories(col)
            if decode and cats is not None:
                values = pd.Categorical.from_codes(values.astype(np.int64), categories=cats)
            data[col] = values
        return pd.DataFrame(data)

    def text(self, rows: "slice | np.ndarray | int") -> "str | np.ndarray":
        if isinstance(rows, (int, np.integer)):
            return str(self._column_array("text")[int(rows)])
        return self.column("text", rows)

    # ------------------------------------------------------------------ dynamics
    def epochs(self) -> list[int]:
        g = self.root["dynamics"]
        return sorted(int(k) for k in g.group_keys())

    def dynamics(self) -> Dynamics | None:
        """Stack every recorded epoch; ``None`` when none has been recorded."""
        epochs = self.epochs()
        if not epochs:
            return None
        g = self.root["dynamics"]
        stack = {key: np.stack([g[f"{e}/{key}"][:] for e in epochs]) for key in schema.DYNAMICS_ARRAYS}
        if all("margin" in g[str(e)] for e in epochs):
            stack["margin"] = np.stack([g[f"{e}/margin"][:] for e in epochs])
        return Dynamics(epochs=np.asarray(epochs), **stack)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> list[str]:
        """Checkpoint names ordered by training step."""
        g = self.root["checkpoints"]
        return sorted(g.group_keys(), key=lambda k: (g[k].attrs.get("step", 0), k))

    def checkpoint(self, name: str) -> "Checkpoint":
        if name not in self.checkpoints:
            raise StoreError(f"{self.loc.url}: no checkpoint '{name}' (have {self.checkpoints})")
        return Checkpoint(self, name)


class Checkpoint:
    """One checkpoint's arrays. Only arrays that were completely written are visible."""

    def __init__(self, run: Run, name: str):
        self.run = run
        self.name = name
        self.group: zarr.Group = run.root[f"checkpoints/{name}"]
        self.attrs = dict(self.group.attrs)

    def __repr__(self) -> str:
        return f"Checkpoint({self.name!r}, step={self.step}, arrays={self.arrays})"

    @property
    def step(self) -> int:
        return int(self.attrs.get("step", 0))

    @property
    def epoch(self) -> float:
        return float(self.attrs.get("epoch", 0))

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def weights_path(self) -> str | None:
        """Full path/URL of the weights directory (safetensors + config + tokenizer), if recorded."""
        rel = self.attrs.get("weights")
        return self.run.loc.url_of(rel) if rel else None

    @property
    def arrays(self) -> list[str]:
        return sorted(self.group.array_keys())

    def has(self, name: str) -> bool:
        return name in self.group

    def array(self, name: str) -> zarr.Array:
        """The lazy zarr array ``name`` (index it to read)."""
        try:
            return self.group[name]
        except KeyError:
            raise StoreError(f"checkpoint '{self.name}': '{name}' has not been written yet "
                             f"(have {self.arrays}; run `t3vis pipeline`)") from None

    def read(self, name: str, rows: "slice | np.ndarray | None" = None) -> np.ndarray:
        """Array ``name``, whole or the given rows (first axis; only their chunks are read)."""
        return _rows_of(self.array(name), rows)

    def hidden(self, layer: int, pooling: str = "cls", rows: "slice | np.ndarray | None" = None) -> np.ndarray:
        """Pooled hidden states of one layer ([n, d]); reads that layer's chunks only."""
        if pooling not in schema.POOLINGS:
            raise StoreError(f"pooling '{pooling}': expected one of {schema.POOLINGS}")
        arr = self.array(f"hidden_{pooling}")
        if not 0 <= layer < arr.shape[0]:
            raise StoreError(f"layer {layer}: expected 0..{arr.shape[0] - 1} (0 is the embedding output)")
        if rows is None:
            return arr[layer]
        if isinstance(rows, slice):
            return arr[layer, rows]
        return arr.get_orthogonal_selection((layer, np.asarray(rows), slice(None)))

    # projections ------------------------------------------------------------------
    def projections(self) -> list[tuple[str, int]]:
        """(method, layer) pairs available."""
        if "projection" not in self.group:
            return []
        g = self.group["projection"]
        return sorted((m, schema.parse_layer_key(k)) for m in g.group_keys() for k in g[m].array_keys())

    def projection(self, method: str, layer: int) -> np.ndarray:
        key = posixpath.join("projection", method, schema.layer_key(layer))
        if key not in self.group:
            raise StoreError(f"checkpoint '{self.name}': no {method} projection of layer {layer} "
                             f"(have {self.projections()}; run `t3vis project`)")
        return self.group[key][:]

    def projection_attrs(self, method: str, layer: int) -> dict[str, Any]:
        return dict(self.group[posixpath.join("projection", method, schema.layer_key(layer))].attrs)
